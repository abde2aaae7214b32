//! Where the controller's spans go: the SDK hands each ended span to [`QueueProcessor`], which only
//! tries to put it in a bounded queue; a task of its own drains the queue in batches to the
//! collector (OTLP/HTTP with a protobuf body, or OTLP/gRPC through `opentelemetry-otlp`). A full
//! queue or a failed export drops spans and counts them, so a slow or dead collector can neither
//! delay nor stop a compile or a status write.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Uri,
    header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue},
};
use hyper_util::rt::TokioIo;
use opentelemetry::{
    Context, KeyValue,
    trace::{Link, SpanKind, TraceContextExt, TraceId},
};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_proto::{
    tonic::collector::trace::v1::ExportTraceServiceRequest,
    transform::{
        common::tonic::ResourceAttributesWithSchema,
        trace::tonic::group_spans_by_resource_and_scope,
    },
};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{
        SamplingDecision, SamplingResult, ShouldSample, Span, SpanData, SpanExporter as _,
        SpanProcessor,
    },
};
use prost::Message as _;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::{mpsc, oneshot},
};

use super::config::{Protocol, TraceConfig};
use crate::metrics::Metrics;

/// What the exporter task is given.
pub(super) enum Message {
    /// An ended, sampled span.
    Span(Box<SpanData>),
    /// Answer once everything queued before has been exported or dropped.
    Flush(oneshot::Sender<()>),
}

/// The SDK's span processor: ended spans go into the queue or are dropped and counted.
#[derive(Debug)]
pub(super) struct QueueProcessor {
    queue: mpsc::Sender<Message>,
    metrics: Arc<Metrics>,
    /// Whether the first drop has been logged (later ones are only counted).
    warned: AtomicBool,
}

impl QueueProcessor {
    pub(super) fn new(queue: mpsc::Sender<Message>, metrics: Arc<Metrics>) -> Self {
        Self {
            queue,
            metrics,
            warned: AtomicBool::new(false),
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(Message::Span(Box::new(span))).is_err() {
            self.metrics
                .trace_spans_dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the trace export queue is full (the collector is slow or unreachable): \
                     spans are dropped, counted in tollgate_controller_trace_spans_dropped_total"
                );
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The standard samplers (`tollgate_otel`, as the proxy reads them) for the SDK.
#[derive(Clone, Debug)]
pub(super) struct Sampling(pub tollgate_otel::Sampler);

impl ShouldSample for Sampling {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let parent = parent
            .filter(|cx| cx.has_active_span())
            .map(|cx| cx.span().span_context().clone())
            .filter(|sc| sc.is_valid());
        let sampled = self.0.sample(
            parent.as_ref().map(|sc| sc.is_sampled()),
            &trace_id.to_bytes(),
        );
        SamplingResult {
            decision: if sampled {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::Drop
            },
            attributes: Vec::new(),
            trace_state: parent
                .map(|sc| sc.trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

/// How batches leave.
pub(super) enum Wire {
    /// OTLP/HTTP: one POST of an `ExportTraceServiceRequest` per batch.
    Http(Box<HttpWire>),
    /// OTLP/gRPC through the exporter crate (over tonic).
    Grpc(Box<opentelemetry_otlp::SpanExporter>),
}

/// An OTLP/HTTP destination.
pub(super) struct HttpWire {
    url: Uri,
    /// `host:port` to connect to, and the name the certificate must carry.
    address: (String, u16),
    tls: Option<tokio_rustls::TlsConnector>,
    headers: HeaderMap,
    resource: ResourceAttributesWithSchema,
}

impl Wire {
    /// The wire `config` names, sending `resource` with every batch.
    pub(super) fn new(config: &TraceConfig, resource: &Resource) -> anyhow::Result<Self> {
        let https = config.url.starts_with("https://");
        match config.protocol {
            Protocol::HttpProtobuf => {
                let url: Uri = config
                    .url
                    .parse()
                    .map_err(|_| anyhow::anyhow!("the collector's URL is not a valid URL"))?;
                let host = url
                    .host()
                    .ok_or_else(|| anyhow::anyhow!("the collector's URL names no host"))?
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
                let tls = if https {
                    Some(tokio_rustls::TlsConnector::from(Arc::new(client_tls(
                        config.ca_pem.as_deref(),
                    )?)))
                } else {
                    None
                };
                Ok(Wire::Http(Box::new(HttpWire {
                    url,
                    address: (host, port),
                    tls,
                    headers: header_map(&config.headers),
                    resource: resource.into(),
                })))
            }
            Protocol::Grpc => {
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(config.url.clone())
                    .with_timeout(config.timeout)
                    .with_metadata(
                        opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(
                            header_map(&config.headers),
                        ),
                    );
                if https {
                    let tls = tonic::transport::ClientTlsConfig::new();
                    let tls = match &config.ca_pem {
                        None => tls.with_webpki_roots(),
                        Some(pem) => {
                            // Refuse a CA file tonic would take in part, as the HTTP wire does.
                            client_tls(Some(pem))?;
                            tls.ca_certificate(tonic::transport::Certificate::from_pem(pem))
                        }
                    };
                    builder = builder.with_tls_config(tls);
                }
                let mut exporter = builder.build()?;
                exporter.set_resource(resource);
                Ok(Wire::Grpc(Box::new(exporter)))
            }
        }
    }

    async fn export(&self, batch: Vec<SpanData>) -> Result<(), String> {
        match self {
            Wire::Http(http) => http.post(batch).await,
            Wire::Grpc(exporter) => exporter.export(batch).await.map_err(|e| e.to_string()),
        }
    }
}

impl HttpWire {
    async fn post(&self, batch: Vec<SpanData>) -> Result<(), String> {
        let body = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        }
        .encode_to_vec();
        // Origin-form (`/v1/traces`), as a client speaking to the server itself sends it.
        let target = self.url.path_and_query().map_or("/", |p| p.as_str());
        let mut request = Request::post(target)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        if let Some(authority) = self.url.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            request.headers_mut().insert(HOST, host);
        }
        for (name, value) in &self.headers {
            request.headers_mut().insert(name, value.clone());
        }
        let (host, port) = &self.address;
        let tcp = TcpStream::connect((host.as_str(), *port))
            .await
            .map_err(|e| format!("connecting to the collector: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => exchange(tcp, request).await,
            Some(tls) => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| "the collector's host is not a valid TLS name".to_string())?;
                let tls = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with the collector: {e}"))?;
                exchange(tls, request).await
            }
        }
    }
}

/// Sends one request on a new HTTP/1.1 connection; `Ok` when the collector answered 2xx.
async fn exchange<Io>(io: Io, request: Request<Full<Bytes>>) -> Result<(), String>
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    let outcome = match response {
        Ok(response) if response.status().is_success() => {
            // Read the (small) answer so the connection ends cleanly.
            let _ = response.into_body().collect().await;
            Ok(())
        }
        Ok(response) => Err(format!("the collector answered {}", response.status())),
        Err(e) => Err(e),
    };
    connection.abort();
    outcome
}

/// Headers that are valid HTTP; others are left out (never logged: they may hold an API key).
fn header_map(headers: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            map.insert(name, value);
        }
    }
    map
}

/// TLS to the collector: the certificates of `ca_pem` alone when given, else the public roots. A CA
/// text with a certificate that cannot be a trust root, or with none, is refused.
fn client_tls(ca_pem: Option<&str>) -> anyhow::Result<rustls::ClientConfig> {
    let roots = match ca_pem {
        None => rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| anyhow::anyhow!("the collector's CA file: {e}"))?;
                roots.add(cert).map_err(|e| {
                    anyhow::anyhow!("the collector's CA file holds an unusable certificate: {e}")
                })?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "the collector's CA file holds no certificate"
            );
            roots
        }
    };
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The exporter task: gathers spans into batches (full, or `delay` old) and exports each within
/// `timeout`, until every sender is gone.
pub(super) async fn run(
    wire: Wire,
    mut queue: mpsc::Receiver<Message>,
    config: TraceConfig,
    metrics: Arc<Metrics>,
) {
    let mut batch: Vec<SpanData> = Vec::new();
    let mut flushed: Vec<oneshot::Sender<()>> = Vec::new();
    let mut warned = false;
    let mut closed = false;
    let take = |message: Message, batch: &mut Vec<SpanData>, flushed: &mut Vec<_>| match message {
        Message::Span(span) => batch.push(*span),
        Message::Flush(done) => flushed.push(done),
    };
    while !closed {
        // Idle until something comes, then up to `delay` more for the batch to fill.
        match queue.recv().await {
            Some(message) => take(message, &mut batch, &mut flushed),
            None => closed = true,
        }
        let due = tokio::time::Instant::now() + config.delay;
        while !closed && batch.len() < config.batch_spans && flushed.is_empty() {
            match tokio::time::timeout_at(due, queue.recv()).await {
                Ok(Some(message)) => take(message, &mut batch, &mut flushed),
                Ok(None) => closed = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let spans = std::mem::take(&mut batch);
            let n = spans.len() as u64;
            let outcome = match tokio::time::timeout(config.timeout, wire.export(spans)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no answer within {:?}", config.timeout)),
            };
            match outcome {
                Ok(()) => {
                    metrics.trace_spans_exported.fetch_add(n, Ordering::Relaxed);
                    warned = false;
                }
                Err(error) => {
                    metrics
                        .trace_spans_dropped_export_failed
                        .fetch_add(n, Ordering::Relaxed);
                    // Once per outage, not once per batch.
                    if !warned {
                        warned = true;
                        tracing::warn!(%error, spans = n, "trace export failed; spans dropped and counted until the collector answers");
                    }
                }
            }
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}
