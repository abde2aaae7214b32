//! Where sampled calls' spans go: bounded batches (`batch`), sent by a task of its own to an OTLP
//! collector (HTTP/protobuf encoded by hand in `otlp`, or gRPC through the `opentelemetry-otlp`
//! exporter). A call only ever tries to add its spans to a batch: when too many calls' spans wait
//! (the collector slow or gone) they are dropped and counted, and a failed export is dropped and
//! counted too, so a collector can neither delay nor fail a call.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::oneshot;

use super::batch::{Batch, Batches, Next};
use super::context::TraceParent;
use super::otlp::{self, HttpSender};
use super::span::{CallSummary, CallTrace, fresh_trace_id, spans};
use crate::telemetry::metrics::TraceCounters;
use tollgate_otel::Sampler;

/// The OTLP wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318, path `/v1/traces`).
    HttpProtobuf,
}

impl Protocol {
    /// `grpc` or `http/protobuf`, the values of `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }
}

thread_local! {
    /// The attributes of the routes and backends a worker's calls met, encoded.
    static RUNS: RefCell<otlp::Runs> = RefCell::new(otlp::Runs::default());
}

/// How traces are sampled and exported.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// The collector's base URL (`http://collector:4317`; for HTTP, `/v1/traces` is added). `None`:
    /// the exporter's own reading of `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    /// The wire.
    pub protocol: Protocol,
    /// Headers sent with every export (besides those of `OTEL_EXPORTER_OTLP_HEADERS`).
    pub headers: Vec<(String, String)>,
    /// `service.name`.
    pub service_name: String,
    /// More resource attributes (`OTEL_RESOURCE_ATTRIBUTES`).
    pub resource: Vec<(String, String)>,
    /// Which calls are traced.
    pub sampler: Sampler,
    /// Calls whose spans may wait for the exporter; beyond, they are dropped and counted.
    pub queue_calls: usize,
    /// Most spans in one export.
    pub batch_spans: usize,
    /// Longest a span waits for a batch to fill.
    pub delay: Duration,
    /// Longest one export may take (it is dropped and counted after).
    pub timeout: Duration,
    /// The PEM certificates an `https://` collector's certificate must chain to
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`); `None`: the public roots.
    pub ca_pem: Option<String>,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: Protocol::HttpProtobuf,
            headers: Vec::new(),
            service_name: "tollgate-proxy".into(),
            resource: Vec::new(),
            sampler: Sampler::default(),
            queue_calls: 2048,
            batch_spans: 512,
            delay: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            ca_pem: None,
        }
    }
}

/// Samples calls and queues their spans for the exporter task.
pub struct Tracer {
    sampler: Sampler,
    scope: InstrumentationScope,
    /// Whether spans are encoded here for OTLP/HTTP (else handed to the gRPC exporter as data).
    encode: bool,
    /// The envelope of every OTLP/HTTP export (its resource and scope), written once.
    head: Arc<otlp::RequestHead>,
    batches: Arc<Batches>,
    counters: TraceCounters,
    pending: std::sync::Mutex<Option<(Resource, TraceConfig)>>,
}

/// A way to begin a call's trace: recorded (sampled), or only passed on.
pub enum Begun {
    /// Sampled: spans will be made.
    Recorded(Box<CallTrace>),
    /// Not sampled: the caller's headers, if any, go upstream unchanged.
    PassedOn,
}

impl Tracer {
    /// A tracer for `config`; its exporter starts with [`Tracer::start`].
    pub fn new(config: TraceConfig, counters: TraceCounters) -> Self {
        let scope = InstrumentationScope::builder("tollgate-proxy")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let resource = Resource::builder_empty()
            .with_attributes(
                config
                    .resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .with_service_name(config.service_name.clone())
            .build();
        let head = otlp::RequestHead::new(
            &resource
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
            &otlp::Scope {
                name: scope.name(),
                version: scope.version(),
            },
        );
        let batches = Batches::new(
            config.queue_calls,
            config.batch_spans,
            config.delay,
            head.max_len(),
        );
        Self {
            sampler: config.sampler,
            encode: config.protocol == Protocol::HttpProtobuf,
            scope,
            head: Arc::new(head),
            batches: Arc::new(batches),
            counters,
            pending: std::sync::Mutex::new(Some((resource, config))),
        }
    }

    /// Decides whether a call whose caller sent `parent` (and `tracestate`) is recorded.
    pub fn begin(&self, parent: Option<&TraceParent>, tracestate: Option<&[u8]>) -> Begun {
        let trace_id = match parent {
            Some(p) => p.trace_id,
            None if self.sampler.needs_trace_id() => fresh_trace_id(),
            None => [0; 16],
        };
        if !self
            .sampler
            .sample(parent.map(TraceParent::sampled), &trace_id)
        {
            return Begun::PassedOn;
        }
        let trace_id = if trace_id == [0; 16] {
            fresh_trace_id()
        } else {
            trace_id
        };
        let tracestate = tracestate.and_then(|s| std::str::from_utf8(s).ok().map(str::to_owned));
        Begun::Recorded(Box::new(CallTrace::new(trace_id, parent, tracestate)))
    }

    /// Makes a finished call's spans and queues them; drops and counts them if the queue is full.
    pub fn finish(&self, trace: &CallTrace, summary: &CallSummary<'_>) {
        let now = SystemTime::now();
        let (n, queued) = if self.encode {
            RUNS.with_borrow_mut(|runs| {
                let mut n = 0;
                let queued = self.batches.add_encoding(|out| {
                    n = otlp::encode_call(out, trace, summary, now, runs);
                    n
                });
                if !queued {
                    // Dropped: encoded only to be counted.
                    n = otlp::encode_call(&mut Vec::new(), trace, summary, now, runs);
                }
                (n, queued)
            })
        } else {
            let data: Vec<SpanData> = spans(trace, summary)
                .iter()
                .map(|r| r.to_span_data(&self.scope))
                .collect();
            (data.len(), self.batches.add_data(data))
        };
        if !queued {
            self.counters.dropped_queue_full.inc_by(n as u64);
        }
    }

    /// Waits (up to `timeout`) until every span queued so far has been exported or dropped.
    pub async fn flush(&self, timeout: Duration) {
        let (done, finished) = oneshot::channel();
        self.batches.flush(done);
        let _ = tokio::time::timeout(timeout, finished).await;
    }

    /// Builds the exporter and starts its task (once; later calls do nothing).
    pub fn start(&self) -> Result<(), opentelemetry_otlp::ExporterBuildError> {
        let Some((resource, config)) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        let exporter = match config.protocol {
            Protocol::HttpProtobuf => {
                let url = http_url(&config)?;
                let tls =
                    crate::upstream::tls::client_config(config.ca_pem.as_deref()).map_err(|e| {
                        opentelemetry_otlp::ExporterBuildError::InvalidConfiguration(format!(
                            "the collector's CA certificates: {e}"
                        ))
                    })?;
                let mut headers = env_headers();
                headers.extend(config.headers.iter().cloned());
                Exporter::Http {
                    sender: Box::new(HttpSender::new(url, &headers, config.timeout, tls)),
                    head: Arc::clone(&self.head),
                }
            }
            Protocol::Grpc => {
                let mut exporter = build_exporter(&config)?;
                exporter.set_resource(&resource);
                Exporter::Grpc(Box::new(exporter))
            }
        };
        tokio::spawn(run(
            exporter,
            Arc::clone(&self.batches),
            config,
            self.counters.clone(),
        ));
        Ok(())
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.batches.close();
    }
}

/// How batches leave: OTLP/HTTP encoded here, or OTLP/gRPC through the exporter crate.
enum Exporter {
    Http {
        sender: Box<HttpSender>,
        /// The request's envelope, written into the room each batch keeps at its front.
        head: Arc<otlp::RequestHead>,
    },
    Grpc(Box<opentelemetry_otlp::SpanExporter>),
}

impl Exporter {
    async fn export(&self, batch: Batch) -> Result<(), String> {
        match self {
            Exporter::Http { sender, head } => {
                let body = request_body(head, batch);
                sender.send_bytes(body).await.map_err(|e| e.to_string())
            }
            Exporter::Grpc(exporter) => {
                exporter.export(batch.data).await.map_err(|e| e.to_string())
            }
        }
    }
}

/// The request of an encoded batch: the envelope written into the room at its front, and the
/// whole sent from there, not copied.
fn request_body(head: &otlp::RequestHead, batch: Batch) -> Bytes {
    let mut envelope = Vec::with_capacity(head.max_len());
    head.write(&mut envelope, batch.spans_bytes().len());
    let Some(at) = batch.head_room.checked_sub(envelope.len()) else {
        // Never so (the room is the envelope's largest size), but a copy is correct too.
        envelope.extend_from_slice(batch.spans_bytes());
        return Bytes::from(envelope);
    };
    let mut encoded = batch.encoded;
    encoded[at..batch.head_room].copy_from_slice(&envelope);
    Bytes::from(encoded).slice(at..)
}

/// The URL OTLP/HTTP traces go to: the configured base URL with `/v1/traces`, else
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, else `OTEL_EXPORTER_OTLP_ENDPOINT` with
/// `/v1/traces`, else the specification's default, `http://localhost:4318/v1/traces`.
fn http_url(config: &TraceConfig) -> Result<http::Uri, opentelemetry_otlp::ExporterBuildError> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let with_path = |base: &str| format!("{}/v1/traces", base.trim().trim_end_matches('/'));
    let url = match &config.endpoint {
        Some(base) => with_path(base),
        None => match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(url) => url.trim().to_string(),
            None => with_path(
                &var("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .unwrap_or_else(|| "http://localhost:4318".into()),
            ),
        },
    };
    let invalid = |why: &str| {
        opentelemetry_otlp::ExporterBuildError::InvalidConfiguration(format!(
            "endpoint {url:?}: {why}"
        ))
    };
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(invalid(
            "the collector's URL starts with http:// or https://",
        ));
    }
    url.parse().map_err(|_| invalid("not a valid URL"))
}

/// `OTEL_EXPORTER_OTLP_HEADERS`, then `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (the signal's own wins).
fn env_headers() -> Vec<(String, String)> {
    [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ]
    .iter()
    .filter_map(|name| std::env::var(name).ok())
    .flat_map(|v| tollgate_otel::parse_pairs(&v))
    .collect()
}

/// The OTLP/gRPC exporter (the exporter crate's, over tonic).
fn build_exporter(
    config: &TraceConfig,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    let invalid = |endpoint: &str, why: &str| {
        opentelemetry_otlp::ExporterBuildError::InvalidConfiguration(format!(
            "endpoint {endpoint:?}: {why}"
        ))
    };
    let https = match config.endpoint.as_deref() {
        Some(e) if e.starts_with("https://") => true,
        Some(e) if e.starts_with("http://") => false,
        Some(e) => {
            return Err(invalid(
                e,
                "the collector's URL starts with http:// or https://",
            ));
        }
        // The exporter reads the endpoint variables itself.
        None => config.ca_pem.is_some(),
    };
    let mut b = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_timeout(config.timeout);
    if https {
        let tls = super::otlp::grpc_tls(config.ca_pem.as_deref())
            .map_err(|why| invalid(config.endpoint.as_deref().unwrap_or_default(), why))?;
        b = b.with_tls_config(tls);
    }
    if let Some(endpoint) = &config.endpoint {
        b = b.with_endpoint(endpoint.clone());
    }
    if !config.headers.is_empty() {
        let mut headers = http::HeaderMap::new();
        for (k, v) in &config.headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        b = b.with_metadata(
            opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers),
        );
    }
    b.build()
}

/// The exporter task: sends batches as they fill, are due (`delay` after their first spans) or
/// are flushed.
async fn run(
    exporter: Exporter,
    batches: Arc<Batches>,
    config: TraceConfig,
    counters: TraceCounters,
) {
    loop {
        match batches.next() {
            Next::Export(batch) => {
                let n = batch.spans as u64;
                if n == 0 {
                    continue;
                }
                match tokio::time::timeout(config.timeout, exporter.export(batch)).await {
                    Ok(Ok(())) => {
                        counters.exported.inc_by(n);
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%error, spans = n, "trace export failed");
                        counters.dropped_export_failed.inc_by(n);
                    }
                    Err(_) => {
                        tracing::debug!(spans = n, "trace export timed out");
                        counters.dropped_export_failed.inc_by(n);
                    }
                }
            }
            Next::Flushed(flushes) => {
                for done in flushes {
                    let _ = done.send(());
                }
            }
            Next::WaitUntil(at) => batches.wait(Some(at)).await,
            Next::Wait => batches.wait(None).await,
            Next::Closed => return,
        }
    }
}
