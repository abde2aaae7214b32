//! How the GenAI metrics and the access log's records reach a collector: the same two wires as the
//! spans. Bodies are always encoded here (`ExportMetricsServiceRequest`, `ExportLogsServiceRequest`);
//! OTLP/HTTP posts them with the traces' `HttpSender`, OTLP/gRPC sends them as they are through a
//! tonic channel with a codec that copies bytes. The exporter crate's metrics and logs features are
//! not used: they bring the SDK's own aggregation and log pipeline, which would redo per call
//! (attribute sets hashed and locked per instrument) what the atomic counters here already do, and
//! their protobuf types would be built only to be encoded again.

use std::time::Duration;

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::telemetry::trace::Protocol;
use crate::telemetry::trace::otlp::HttpSender;

/// An OTLP signal other than traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// `/v1/metrics`, `MetricsService/Export`.
    Metrics,
    /// `/v1/logs`, `LogsService/Export`.
    Logs,
}

impl Signal {
    fn http_path(self) -> &'static str {
        match self {
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }

    fn grpc_path(self) -> &'static str {
        match self {
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }

    /// The signal's own part of the `OTEL_EXPORTER_OTLP_<SIGNAL>_*` variables.
    fn env_name(self) -> &'static str {
        match self {
            Signal::Metrics => "METRICS",
            Signal::Logs => "LOGS",
        }
    }

    /// `metrics` or `logs` (a label of the exporters' counters).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

/// Where a signal goes and what it says about the process: the collector part of the OTLP
/// configuration, shared with the traces.
#[derive(Clone, Debug)]
pub struct Target {
    /// The collector's base URL (`http://collector:4318`; for HTTP, `/v1/metrics` or `/v1/logs` is
    /// added). `None`: `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT` as it is, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else the specification's default on localhost.
    pub endpoint: Option<String>,
    /// The wire.
    pub protocol: Protocol,
    /// Headers sent with every export (after those of `OTEL_EXPORTER_OTLP_HEADERS` and
    /// `OTEL_EXPORTER_OTLP_<SIGNAL>_HEADERS`).
    pub headers: Vec<(String, String)>,
    /// `service.name`.
    pub service_name: String,
    /// More resource attributes (`OTEL_RESOURCE_ATTRIBUTES`).
    pub resource: Vec<(String, String)>,
    /// Longest one export may take.
    pub timeout: Duration,
    /// The PEM certificates an `https://` collector's certificate must chain to
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`); `None`: the public roots.
    pub ca_pem: Option<String>,
}

impl Default for Target {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: Protocol::HttpProtobuf,
            headers: Vec::new(),
            service_name: "tollgate-proxy".into(),
            resource: Vec::new(),
            timeout: Duration::from_secs(10),
            ca_pem: None,
        }
    }
}

impl Target {
    /// The resource's attributes as exported: the configured ones, `service.name` and
    /// `service.version` (the named ones win over `OTEL_RESOURCE_ATTRIBUTES`, as in the traces).
    pub fn resource_attributes(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .resource
            .iter()
            .filter(|(k, _)| k != "service.name" && k != "service.version")
            .cloned()
            .collect();
        out.push(("service.name".into(), self.service_name.clone()));
        out.push(("service.version".into(), env!("CARGO_PKG_VERSION").into()));
        out
    }
}

/// Why a wire could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("OTLP {signal} endpoint {url:?}: {why}")]
pub struct WireError {
    signal: &'static str,
    url: String,
    why: &'static str,
}

/// One signal's way to the collector.
pub enum Wire {
    /// OTLP/HTTP protobuf.
    Http(Box<HttpSender>),
    /// OTLP/gRPC.
    Grpc {
        channel: tonic::transport::Channel,
        path: http::uri::PathAndQuery,
        metadata: tonic::metadata::MetadataMap,
        timeout: Duration,
    },
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `OTEL_EXPORTER_OTLP_HEADERS`, then the signal's own, then the configured ones.
fn headers(target: &Target, signal: Signal) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = [
        "OTEL_EXPORTER_OTLP_HEADERS".to_string(),
        format!("OTEL_EXPORTER_OTLP_{}_HEADERS", signal.env_name()),
    ]
    .iter()
    .filter_map(|name| var(name))
    .flat_map(|v| crate::telemetry::trace::parse_pairs(&v))
    .collect();
    out.extend(target.headers.iter().cloned());
    out
}

/// The URL a signal goes to. HTTP: the configured base URL with the signal's path, else
/// `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT` as it is, else `OTEL_EXPORTER_OTLP_ENDPOINT` with the
/// path, else `http://localhost:4318` with it. gRPC: the base URL, the signal's variable or the
/// general one as they are, else `http://localhost:4317`.
pub fn url(target: &Target, signal: Signal) -> String {
    let own = format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.env_name());
    match target.protocol {
        Protocol::HttpProtobuf => {
            let with_path =
                |base: &str| format!("{}{}", base.trim_end_matches('/'), signal.http_path());
            match &target.endpoint {
                Some(base) => with_path(base.trim()),
                None => var(&own).unwrap_or_else(|| {
                    with_path(
                        &var("OTEL_EXPORTER_OTLP_ENDPOINT")
                            .unwrap_or_else(|| "http://localhost:4318".into()),
                    )
                }),
            }
        }
        Protocol::Grpc => target
            .endpoint
            .as_deref()
            .map(|e| e.trim().to_string())
            .or_else(|| var(&own))
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .unwrap_or_else(|| "http://localhost:4317".into()),
    }
}

impl Wire {
    /// The wire for `signal` (a gRPC channel connects on first use; call within the runtime).
    pub fn new(target: &Target, signal: Signal) -> Result<Self, WireError> {
        let url = url(target, signal);
        let invalid = |why| WireError {
            signal: signal.name(),
            url: url.clone(),
            why,
        };
        let https = url.starts_with("https://");
        if !https && !url.starts_with("http://") {
            return Err(invalid(
                "the collector's URL starts with http:// or https://",
            ));
        }
        let headers = headers(target, signal);
        Ok(match target.protocol {
            Protocol::HttpProtobuf => {
                let uri: http::Uri = url.parse().map_err(|_| invalid("not a valid URL"))?;
                let tls = crate::upstream::tls::client_config(target.ca_pem.as_deref())
                    .map_err(|_| invalid("its CA certificates cannot be used as trust roots"))?;
                Wire::Http(Box::new(HttpSender::new(
                    uri,
                    &headers,
                    target.timeout,
                    tls,
                )))
            }
            Protocol::Grpc => {
                let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                    .map_err(|_| invalid("not a valid URL"))?
                    .timeout(target.timeout)
                    .connect_timeout(target.timeout);
                if https {
                    let tls = crate::telemetry::trace::otlp::grpc_tls(target.ca_pem.as_deref())
                        .map_err(invalid)?;
                    endpoint = endpoint
                        .tls_config(tls)
                        .map_err(|_| invalid("its TLS settings cannot be used"))?;
                }
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in &headers {
                    if let (Ok(k), Ok(v)) = (
                        tonic::metadata::MetadataKey::from_bytes(k.trim().as_bytes()),
                        tonic::metadata::MetadataValue::try_from(v.trim()),
                    ) {
                        metadata.insert(k, v);
                    }
                }
                Wire::Grpc {
                    channel: endpoint.connect_lazy(),
                    path: http::uri::PathAndQuery::from_static(signal.grpc_path()),
                    metadata,
                    timeout: target.timeout,
                }
            }
        })
    }

    /// Sends one encoded export request; the error is for the debug log only (never a URL's
    /// credentials: it names the status or the kind of failure).
    pub async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        match self {
            Wire::Http(sender) => sender.send(body).await.map_err(|e| e.to_string()),
            Wire::Grpc {
                channel,
                path,
                metadata,
                timeout,
            } => {
                let exported = async {
                    let mut grpc = tonic::client::Grpc::new(channel.clone());
                    grpc.ready()
                        .await
                        .map_err(|e| format!("the collector could not be reached: {e}"))?;
                    let mut request = tonic::Request::new(body);
                    *request.metadata_mut() = metadata.clone();
                    grpc.unary(request, path.clone(), Bytes)
                        .await
                        .map(|_| ())
                        .map_err(|status| format!("the collector answered {:?}", status.code()))
                };
                tokio::time::timeout(*timeout, exported)
                    .await
                    .unwrap_or_else(|_| Err(format!("the export took longer than {timeout:?}")))
            }
        }
    }
}

/// A gRPC codec for a message already encoded: its bytes go out as they are, and the answer
/// (an `Export*ServiceResponse`, whose partial-success details are not read) is skipped.
#[derive(Clone, Copy, Default)]
struct Bytes;

impl Codec for Bytes {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = Bytes;
    type Decoder = Bytes;

    fn encoder(&mut self) -> Self::Encoder {
        Bytes
    }

    fn decoder(&mut self) -> Self::Decoder {
        Bytes
    }
}

impl Encoder for Bytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Bytes {
    type Item = ();
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signal_has_its_path_on_the_base_url() {
        let target = Target {
            endpoint: Some("http://collector:4318/".into()),
            ..Target::default()
        };
        assert_eq!(
            url(&target, Signal::Metrics),
            "http://collector:4318/v1/metrics"
        );
        assert_eq!(url(&target, Signal::Logs), "http://collector:4318/v1/logs");
        let grpc = Target {
            endpoint: Some("http://collector:4317".into()),
            protocol: Protocol::Grpc,
            ..Target::default()
        };
        assert_eq!(url(&grpc, Signal::Logs), "http://collector:4317");
    }

    #[test]
    fn an_https_collector_needs_a_usable_ca_if_one_is_given() {
        let https = |protocol, ca_pem: Option<&str>| Target {
            endpoint: Some("https://collector:4318".into()),
            protocol,
            ca_pem: ca_pem.map(str::to_string),
            ..Target::default()
        };
        assert!(Wire::new(&https(Protocol::HttpProtobuf, None), Signal::Logs).is_ok());
        for protocol in [Protocol::HttpProtobuf, Protocol::Grpc] {
            let error = Wire::new(&https(protocol, Some("no PEM")), Signal::Logs)
                .err()
                .unwrap()
                .to_string();
            assert!(error.contains("CA certificates"), "{error}");
        }
        let error = Wire::new(
            &Target {
                endpoint: Some("ftp://collector:4318".into()),
                ..Target::default()
            },
            Signal::Metrics,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("http:// or https://"), "{error}");
    }

    #[test]
    fn named_resource_attributes_win() {
        let target = Target {
            service_name: "gw".into(),
            resource: vec![
                ("service.name".into(), "other".into()),
                ("deployment.environment".into(), "prod".into()),
            ],
            ..Target::default()
        };
        let attrs = target.resource_attributes();
        assert_eq!(attrs[0], ("deployment.environment".into(), "prod".into()));
        assert_eq!(attrs[1], ("service.name".into(), "gw".into()));
        assert_eq!(attrs[2].0, "service.version");
    }
}
