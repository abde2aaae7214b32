//! Per-call records: one JSON access-log line on stdout and the metrics, written exactly once per call.
//!
//! A [`Call`] is created when a request arrives and travels with it, into the response body when there is
//! one. Whatever ends the call (the body finishing, the client going away, the handler being dropped), the
//! `Drop` of [`Call`] writes the record, so no path can skip or double it.

use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tollgate_snapshot::{ConsumerIdx, Price, ProviderIdx, RouteIdx, Snapshot};

use crate::clock;
use crate::controller_client::UsageTally;
use crate::metrics::{CallSample, Metrics};

/// Where access-log lines go.
pub enum AccessLog {
    /// A background thread writes them to stdout, so a slow pipe never stalls a request.
    Stdout(mpsc::Sender<String>),
    /// Kept in memory (tests read them).
    Collect(Arc<Mutex<Vec<String>>>),
    /// Dropped.
    Discard,
}

impl AccessLog {
    /// Starts the stdout writer thread.
    pub fn stdout() -> Self {
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    // Batch whatever is already queued, then flush once.
                    while let Ok(more) = rx.try_recv() {
                        let _ = out.write_all(more.as_bytes());
                    }
                    let _ = out.flush();
                }
            })
            .expect("spawn access-log thread");
        Self::Stdout(tx)
    }

    fn write(&self, line: String) {
        match self {
            Self::Stdout(tx) => {
                let _ = tx.send(line);
            }
            Self::Collect(lines) => lines.lock().expect("log lock").push(line),
            Self::Discard => {}
        }
    }
}

/// Metrics and access log together: what a finished call reports to.
pub struct Recorder {
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Per-subscription usage, reported to the controller when there is one.
    pub usage: Arc<UsageTally>,
    log: AccessLog,
}

impl Recorder {
    /// A recorder writing to `log`.
    pub fn new(log: AccessLog) -> Self {
        Self {
            metrics: Metrics::new(),
            usage: Arc::new(UsageTally::new()),
            log,
        }
    }
}

/// Tokens of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
}

/// Which backend answered.
#[derive(Clone, Debug)]
pub struct Served {
    /// Provider index in the call's snapshot.
    pub provider: ProviderIdx,
    /// Model name sent upstream.
    pub model: String,
    /// Price of that model there.
    pub price: Price,
}

/// One call in progress. Dropping it writes its record.
pub struct Call {
    recorder: Arc<Recorder>,
    started: Instant,
    started_unix_ms: i64,
    /// Request id (sent back in `x-request-id`).
    pub request_id: String,
    /// HTTP method.
    pub method: &'static str,
    /// Request path (truncated).
    pub path: String,
    /// The snapshot the call is served from.
    pub snapshot: Option<Arc<Snapshot>>,
    /// Matched route.
    pub route: Option<RouteIdx>,
    /// Authenticated consumer.
    pub consumer: Option<ConsumerIdx>,
    /// `model` from the request body.
    pub model_requested: Option<String>,
    /// Whether the route serves `model_requested` (only then does it become a metric label).
    pub model_known: bool,
    /// Backend that answered.
    pub served: Option<Served>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// HTTP status sent; 0 until a response exists.
    pub status: u16,
    /// Tokens used, once known.
    pub usage: Option<Usage>,
    /// When the first body chunk reached the client (streams).
    pub first_chunk_at: Option<Instant>,
    /// Backends tried after the first.
    pub retries: u32,
    /// Why the call failed, if it did.
    pub error_class: Option<&'static str>,
    /// The limiter's claim, settled with the real usage and cost when the call ends.
    pub grant: Option<crate::limits::Grant>,
    /// Which key of the provider's pool the current attempt uses.
    pub key: Option<usize>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: &'a str,
    method: &'a str,
    path: &'a str,
    namespace: Option<&'a str>,
    route: Option<&'a str>,
    consumer: Option<String>,
    subscription: Option<String>,
    model_requested: Option<&'a str>,
    model_served: Option<&'a str>,
    provider: Option<String>,
    stream: bool,
    status: u16,
    latency_ms: f64,
    ttft_ms: Option<f64>,
    tokens_in: u64,
    tokens_out: u64,
    cost_usd: f64,
    retries: u32,
    error_class: Option<&'a str>,
    snapshot_version: Option<u64>,
}

impl Call {
    /// Starts recording a call.
    pub fn start(
        recorder: Arc<Recorder>,
        request_id: String,
        method: &http::Method,
        path: &str,
    ) -> Self {
        recorder.metrics.call_started();
        let path = if path.len() > 256 {
            let mut end = 256;
            while !path.is_char_boundary(end) {
                end -= 1;
            }
            path[..end].to_string()
        } else {
            path.to_string()
        };
        Self {
            recorder,
            started: Instant::now(),
            started_unix_ms: clock::now_unix_ms(),
            request_id,
            method: method_name(method),
            path,
            snapshot: None,
            route: None,
            consumer: None,
            model_requested: None,
            model_known: false,
            served: None,
            stream: false,
            status: 0,
            usage: None,
            first_chunk_at: None,
            retries: 0,
            error_class: None,
            grant: None,
            key: None,
        }
    }

    /// When the call started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Notes the first chunk sent to the client, once.
    pub fn mark_first_chunk(&mut self) {
        if self.first_chunk_at.is_none() {
            self.first_chunk_at = Some(Instant::now());
        }
    }

    /// Records an error class unless one is already set (the first cause wins).
    pub fn fail(&mut self, class: &'static str) {
        self.error_class.get_or_insert(class);
    }

    fn finish(&mut self) {
        if self.status == 0 {
            // The handler was dropped before answering: the client went away (nginx's 499).
            self.status = 499;
            self.fail("client_disconnected");
        }
        let elapsed = self.started.elapsed();
        let snapshot = self.snapshot.as_deref();
        let route = snapshot
            .zip(self.route)
            .map(|(s, r)| &s.content.routes[r as usize]);
        let consumer = snapshot
            .zip(self.consumer)
            .map(|(s, c)| &s.content.consumers[c as usize]);
        let subscription = match (snapshot, self.consumer, self.route) {
            (Some(s), Some(c), Some(r)) => s.subscription(c, r),
            _ => None,
        };
        let provider = snapshot
            .zip(self.served.as_ref())
            .map(|(s, b)| &s.provider(b.provider).id);
        let usage = self.usage.unwrap_or_default();
        let cost = self
            .served
            .as_ref()
            .map(|b| b.price.cost(usage.input, usage.output))
            .unwrap_or(0.0);
        if let Some(grant) = self.grant.take() {
            grant.settle(usage.input + usage.output, cost);
        }
        if let Some(sub) = subscription
            && (200..300).contains(&self.status)
        {
            self.recorder
                .usage
                .record(&sub.id, usage.input, usage.output, cost);
        }
        let ttft = self
            .first_chunk_at
            .filter(|_| self.stream)
            .map(|t| (t - self.started).as_secs_f64());
        let route_label = route.map(|r| r.id.to_string()).unwrap_or_default();
        let provider_label = provider.map(|p| p.to_string());
        let model_label = if self.model_known {
            self.model_requested.as_deref().unwrap_or("")
        } else {
            ""
        };
        self.recorder.metrics.call_finished(&CallSample {
            route: &route_label,
            model: model_label,
            provider: provider_label.as_deref().unwrap_or(""),
            status: self.status,
            duration_s: elapsed.as_secs_f64(),
            ttft_s: ttft,
            input_tokens: usage.input,
            output_tokens: usage.output,
            cost_usd: cost,
        });
        let line = Line {
            time: clock::rfc3339_ms(self.started_unix_ms),
            request_id: &self.request_id,
            method: self.method,
            path: &self.path,
            namespace: route.map(|r| r.id.namespace.as_str()),
            route: route.map(|r| r.id.name.as_str()),
            consumer: consumer.map(|c| c.id.to_string()),
            subscription: subscription.map(|s| s.id.to_string()),
            model_requested: self.model_requested.as_deref(),
            model_served: self.served.as_ref().map(|b| b.model.as_str()),
            provider: provider_label,
            stream: self.stream,
            status: self.status,
            latency_ms: round3(elapsed.as_secs_f64() * 1_000.0),
            ttft_ms: ttft.map(|t| round3(t * 1_000.0)),
            tokens_in: usage.input,
            tokens_out: usage.output,
            cost_usd: cost,
            retries: self.retries,
            error_class: self.error_class,
            snapshot_version: snapshot.map(|s| s.version),
        };
        let mut text = serde_json::to_string(&line).expect("log line serialises");
        text.push('\n');
        self.recorder.log.write(text);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish();
    }
}

fn round3(v: f64) -> f64 {
    (v * 1_000.0).round() / 1_000.0
}

fn method_name(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}
