//! Where sampled calls' spans go: a bounded queue, drained by a task of its own that sends them in
//! batches to an OTLP collector (HTTP/protobuf encoded by hand in `otlp`, or gRPC through the
//! `opentelemetry-otlp` exporter). A call only ever tries to put its spans in the queue: when the
//! queue is full (the collector slow or gone) they are dropped and counted, and a failed export is
//! dropped and counted too, so a collector can neither delay nor fail a call.

use std::time::Duration;

use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};

use super::otlp::{self, HttpSender};
use tokio::sync::{mpsc, oneshot};

use super::context::TraceParent;
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

enum Message {
    /// One call's spans, encoded for OTLP/HTTP (`otlp::encode_spans`).
    Encoded {
        bytes: Vec<u8>,
        spans: usize,
    },
    /// One call's spans for the gRPC exporter.
    Data(Vec<SpanData>),
    Flush(oneshot::Sender<()>),
}

/// The spans gathered for the next export.
#[derive(Default)]
struct Batch {
    encoded: Vec<u8>,
    data: Vec<SpanData>,
    spans: usize,
}

impl Batch {
    fn add(&mut self, message: Message, flushed: &mut Vec<oneshot::Sender<()>>) {
        match message {
            Message::Encoded { bytes, spans } => {
                self.encoded.extend_from_slice(&bytes);
                self.spans += spans;
            }
            Message::Data(data) => {
                self.spans += data.len();
                self.data.extend(data);
            }
            Message::Flush(done) => flushed.push(done),
        }
    }
}

/// Samples calls and queues their spans for the exporter task.
pub struct Tracer {
    sampler: Sampler,
    scope: InstrumentationScope,
    /// Whether spans are encoded here for OTLP/HTTP (else handed to the gRPC exporter as data).
    encode: bool,
    queue: mpsc::Sender<Message>,
    counters: TraceCounters,
    pending: std::sync::Mutex<Option<(mpsc::Receiver<Message>, TraceConfig)>>,
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
        let (queue, receiver) = mpsc::channel(config.queue_calls.max(1));
        Self {
            sampler: config.sampler,
            encode: config.protocol == Protocol::HttpProtobuf,
            scope: InstrumentationScope::builder("tollgate-proxy")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            queue,
            counters,
            pending: std::sync::Mutex::new(Some((receiver, config))),
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
    pub fn finish(&self, trace: CallTrace, summary: &CallSummary<'_>) {
        let records = spans(&trace, summary);
        let n = records.len();
        let message = if self.encode {
            let mut bytes = Vec::with_capacity(768 * n);
            otlp::encode_spans(&mut bytes, &records);
            Message::Encoded { bytes, spans: n }
        } else {
            Message::Data(
                records
                    .iter()
                    .map(|r| r.to_span_data(&self.scope))
                    .collect(),
            )
        };
        if self.queue.try_send(message).is_err() {
            self.counters.dropped_queue_full.inc_by(n as u64);
        }
    }

    /// Waits (up to `timeout`) until every span queued so far has been exported or dropped.
    pub async fn flush(&self, timeout: Duration) {
        let (done, finished) = oneshot::channel();
        let _ = tokio::time::timeout(timeout, async {
            if self.queue.send(Message::Flush(done)).await.is_ok() {
                let _ = finished.await;
            }
        })
        .await;
    }

    /// Builds the exporter and starts its task (once; later calls do nothing).
    pub fn start(&self) -> Result<(), opentelemetry_otlp::ExporterBuildError> {
        let Some((receiver, config)) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        let mut resource = Resource::builder_empty()
            .with_attributes(
                config
                    .resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
        resource = resource.with_service_name(config.service_name.clone());
        let resource = resource.build();
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
                    resource: resource
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    scope: (
                        self.scope.name().to_string(),
                        self.scope.version().map(str::to_string),
                    ),
                }
            }
            Protocol::Grpc => {
                let mut exporter = build_exporter(&config)?;
                exporter.set_resource(&resource);
                Exporter::Grpc(Box::new(exporter))
            }
        };
        tokio::spawn(run(exporter, receiver, config, self.counters.clone()));
        Ok(())
    }
}

/// How batches leave: OTLP/HTTP encoded here, or OTLP/gRPC through the exporter crate.
enum Exporter {
    Http {
        sender: Box<HttpSender>,
        resource: Vec<(String, String)>,
        /// The instrumentation scope's name and version.
        scope: (String, Option<String>),
    },
    Grpc(Box<opentelemetry_otlp::SpanExporter>),
}

impl Exporter {
    async fn export(&self, batch: Batch) -> Result<(), String> {
        match self {
            Exporter::Http {
                sender,
                resource,
                scope: (name, version),
            } => {
                let scope = otlp::Scope {
                    name,
                    version: version.as_deref(),
                };
                let request = otlp::encode_request(resource, &scope, &batch.encoded);
                sender.send(request).await.map_err(|e| e.to_string())
            }
            Exporter::Grpc(exporter) => {
                exporter.export(batch.data).await.map_err(|e| e.to_string())
            }
        }
    }
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

/// The exporter task: gathers spans into batches (full, or `delay` old) and exports them.
async fn run(
    exporter: Exporter,
    mut receiver: mpsc::Receiver<Message>,
    config: TraceConfig,
    counters: TraceCounters,
) {
    let mut batch = Batch::default();
    let mut flushed: Vec<oneshot::Sender<()>> = Vec::new();
    let mut closed = false;
    while !closed {
        // Idle until something comes (no timer ticking while there is nothing to send), then up to
        // `delay` more for the batch to fill.
        match receiver.recv().await {
            Some(message) => batch.add(message, &mut flushed),
            None => closed = true,
        }
        let due = tokio::time::Instant::now() + config.delay;
        while !closed && batch.spans < config.batch_spans && flushed.is_empty() {
            match tokio::time::timeout_at(due, receiver.recv()).await {
                Ok(Some(message)) => batch.add(message, &mut flushed),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if batch.spans > 0 {
            let full = std::mem::take(&mut batch);
            let n = full.spans as u64;
            match tokio::time::timeout(config.timeout, exporter.export(full)).await {
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
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}
