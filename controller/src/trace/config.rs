//! The controller's OpenTelemetry flags, named as the proxy's are and falling back on the same
//! standard `OTEL_*` variables, and the trace configuration they make.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use tollgate_otel::{Sampler, parse_pairs};

/// Traces over OTLP, off unless an endpoint is given (`--otlp-endpoint`,
/// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
#[derive(clap::Args, Debug, Clone)]
pub struct OtelArgs {
    /// The collector's base URL, e.g. `http://otel-collector:4318` (HTTP) or `:4317` (gRPC).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` or `grpc`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "http/protobuf",
          value_parser = ["http/protobuf", "grpc"])]
    pub otlp_protocol: String,
    /// More headers for the collector, `key=value,key2=value2` (values percent-encoded), besides
    /// those of `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_EXPORTER_OTLP_TRACES_HEADERS`.
    #[arg(long)]
    pub otlp_headers: Option<String>,
    /// A PEM file of the CA certificates an `https://` collector's certificate must chain to (only
    /// those are trusted then; without it, the public roots), over either wire.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CERTIFICATE")]
    pub otlp_certificate: Option<PathBuf>,
    /// `service.name` of the spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "tollgate-controller")]
    pub otel_service_name: String,
    /// More resource attributes, `key=value,key2=value2`.
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES")]
    pub otel_resource_attributes: Option<String>,
    /// always_on, always_off, traceidratio, parentbased_always_on (the default),
    /// parentbased_always_off or parentbased_traceidratio.
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER",
        default_value = "parentbased_always_on"
    )]
    pub otel_traces_sampler: String,
    /// The ratio of the ratio samplers, from 0 to 1.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG")]
    pub otel_traces_sampler_arg: Option<String>,
    /// Set to `true` to turn traces off.
    #[arg(long, env = "OTEL_SDK_DISABLED", default_value_t = false)]
    pub otel_sdk_disabled: bool,
    /// `otlp` (the default: spans go to the collector whenever one is configured) or `none`.
    #[arg(long, env = "OTEL_TRACES_EXPORTER", default_value = "otlp",
          value_parser = ["otlp", "none"])]
    pub otel_traces_exporter: String,
}

/// The OTLP wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies, to `<endpoint>/v1/traces`.
    HttpProtobuf,
    /// OTLP/gRPC.
    Grpc,
}

/// Where and how the controller's spans go.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// The URL spans are sent to: for HTTP the whole URL (`/v1/traces` included), for gRPC the
    /// collector's address.
    pub url: String,
    /// The wire.
    pub protocol: Protocol,
    /// Headers sent with every export.
    pub headers: Vec<(String, String)>,
    /// The PEM certificates an `https://` collector's certificate must chain to; `None`: the public
    /// roots.
    pub ca_pem: Option<String>,
    /// `service.name`.
    pub service_name: String,
    /// More resource attributes.
    pub resource: Vec<(String, String)>,
    /// Which traces are recorded.
    pub sampler: Sampler,
    /// Spans that may wait for the exporter; beyond, they are dropped and counted.
    pub queue_spans: usize,
    /// Most spans in one export.
    pub batch_spans: usize,
    /// Longest a span waits for a batch to fill.
    pub delay: Duration,
    /// Longest one export may take (its spans are dropped and counted after).
    pub timeout: Duration,
}

impl OtelArgs {
    /// The trace configuration, or `None` when no endpoint is set, `OTEL_TRACES_EXPORTER=none` or
    /// `OTEL_SDK_DISABLED=true`. `env` reads the variables the flags do not cover
    /// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, the two header variables).
    pub fn traces(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<TraceConfig>> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let own = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let base = self.otlp_endpoint.clone().filter(|e| !e.trim().is_empty());
        if self.otel_sdk_disabled || self.otel_traces_exporter != "otlp" {
            return Ok(None);
        }
        let protocol = match self.otlp_protocol.trim() {
            "grpc" => Protocol::Grpc,
            "http/protobuf" => Protocol::HttpProtobuf,
            other => anyhow::bail!("--otlp-protocol is http/protobuf or grpc, not {other:?}"),
        };
        // The signal's own variable wins over the base URL and is taken as it is, as the
        // specification says; the base URL gets the signal's path over HTTP.
        let url = match (own, base) {
            (Some(own), _) => own.trim().to_string(),
            (None, Some(base)) if protocol == Protocol::HttpProtobuf => {
                format!("{}/v1/traces", base.trim().trim_end_matches('/'))
            }
            (None, Some(base)) => base.trim().to_string(),
            (None, None) => return Ok(None),
        };
        anyhow::ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "the collector's URL starts with http:// or https://"
        );
        let sampler = Sampler::from_name(
            &self.otel_traces_sampler,
            self.otel_traces_sampler_arg.as_deref(),
        )?;
        let ca_pem = match &self.otlp_certificate {
            None => None,
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                format!("reading the collector's CA certificates {}", path.display())
            })?),
        };
        let mut headers: Vec<(String, String)> = [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ]
        .iter()
        .filter_map(|name| var(name))
        .flat_map(|list| parse_pairs(&list))
        .collect();
        headers.extend(
            self.otlp_headers
                .as_deref()
                .map(parse_pairs)
                .unwrap_or_default(),
        );
        Ok(Some(TraceConfig {
            url,
            protocol,
            headers,
            ca_pem,
            service_name: self.otel_service_name.clone(),
            resource: self
                .otel_resource_attributes
                .as_deref()
                .map(parse_pairs)
                .unwrap_or_default(),
            sampler,
            queue_spans: 2048,
            batch_spans: 512,
            delay: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }))
    }
}

#[cfg(test)]
impl OtelArgs {
    /// The flags parsed from `flags` alone (for other modules' tests).
    pub(crate) fn parse_for_test(flags: &[&str]) -> Self {
        tests::args(flags)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        otel: OtelArgs,
    }

    pub(super) fn args(flags: &[&str]) -> OtelArgs {
        let mut argv = vec!["tollgate-controller"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap().otel
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn off_without_an_endpoint_and_when_turned_off() {
        assert!(args(&[]).traces(no_env).unwrap().is_none());
        let on = ["--otlp-endpoint", "http://collector:4318"];
        assert!(args(&on).traces(no_env).unwrap().is_some());
        let none = [&on[..], &["--otel-traces-exporter", "none"]].concat();
        assert!(args(&none).traces(no_env).unwrap().is_none());
        let disabled = [&on[..], &["--otel-sdk-disabled"]].concat();
        assert!(args(&disabled).traces(no_env).unwrap().is_none());
        assert!(
            Cli::try_parse_from(["c", "--otel-traces-exporter", "jaeger"]).is_err(),
            "only otlp and none"
        );
    }

    #[test]
    fn flags_and_variables_make_the_configuration() {
        let config = args(&[
            "--otlp-endpoint",
            "http://collector:4318/",
            "--otlp-headers",
            "api-key=a%20b",
            "--otel-traces-sampler",
            "traceidratio",
            "--otel-traces-sampler-arg",
            "0.5",
            "--otel-resource-attributes",
            "deployment.environment=prod",
        ])
        .traces(|name| (name == "OTEL_EXPORTER_OTLP_HEADERS").then(|| "tenant=t1".to_string()))
        .unwrap()
        .unwrap();
        assert_eq!(config.url, "http://collector:4318/v1/traces");
        assert_eq!(config.protocol, Protocol::HttpProtobuf);
        assert_eq!(
            config.headers,
            [
                ("tenant".to_string(), "t1".to_string()),
                ("api-key".to_string(), "a b".to_string())
            ]
        );
        assert_eq!(
            config.sampler,
            Sampler::from_name("traceidratio", Some("0.5")).unwrap()
        );
        assert_eq!(config.service_name, "tollgate-controller");
        assert_eq!(
            config.resource,
            [("deployment.environment".to_string(), "prod".to_string())]
        );

        let grpc = args(&[
            "--otlp-endpoint",
            "https://c:4317",
            "--otlp-protocol",
            "grpc",
        ])
        .traces(no_env)
        .unwrap()
        .unwrap();
        assert_eq!(
            (grpc.url.as_str(), grpc.protocol),
            ("https://c:4317", Protocol::Grpc)
        );

        // The signal's own endpoint wins, as it is, and turns traces on by itself.
        let own = args(&["--otlp-endpoint", "http://base:4318"])
            .traces(|name| {
                (name == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").then(|| "http://own:4318/t".into())
            })
            .unwrap()
            .unwrap();
        assert_eq!(own.url, "http://own:4318/t");
        assert!(
            args(&[])
                .traces(|name| (name == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                    .then(|| "http://own:4318/t".into()))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn mistakes_stop_the_start() {
        let on = ["--otlp-endpoint", "http://collector:4318"];
        let bad_sampler = [&on[..], &["--otel-traces-sampler", "sometimes"]].concat();
        assert!(args(&bad_sampler).traces(no_env).is_err());
        assert!(
            args(&["--otlp-endpoint", "collector:4318"])
                .traces(no_env)
                .is_err()
        );
        let missing_ca = [&on[..], &["--otlp-certificate", "/nonexistent/ca.crt"]].concat();
        let error = args(&missing_ca).traces(no_env).unwrap_err();
        assert!(
            format!("{error:#}").contains("/nonexistent/ca.crt"),
            "{error:#}"
        );
    }
}
