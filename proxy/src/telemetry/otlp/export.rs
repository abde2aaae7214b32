//! The exporters' tasks. Metrics: every interval (`OTEL_METRIC_EXPORT_INTERVAL`, 60 s by default)
//! the GenAI counters are encoded as cumulative histograms and sent; a failed export loses nothing,
//! since the next one carries the same sums. Logs: a call puts its access-log record in a bounded
//! queue and never waits; a task sends the records in batches; a full queue or a failed export
//! drops records and counts them. Neither can delay or fail a call.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};

use super::encode::{SpanIds, encode_log, encode_metrics};
use super::genai::{DEFAULT_MAX_SERIES, GenAiCall, GenAiMetrics};
use super::wire::{Signal, Target, Wire, WireError};
use crate::telemetry::access_log::AccessLine;
use crate::telemetry::metrics::OtlpCounters;
use crate::telemetry::trace::otlp::{LEN, Scope, encode_request, tag, varint};

/// How the GenAI metrics are exported.
#[derive(Clone, Debug)]
pub struct MetricsConfig {
    /// The collector.
    pub target: Target,
    /// Time between exports (`OTEL_METRIC_EXPORT_INTERVAL`).
    pub interval: Duration,
    /// Most distinct attribute sets; calls past them are counted under `otel.metric.overflow`.
    pub max_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            target: Target {
                timeout: Duration::from_secs(30),
                ..Target::default()
            },
            interval: Duration::from_secs(60),
            max_series: DEFAULT_MAX_SERIES,
        }
    }
}

/// How the access log's records are exported.
#[derive(Clone, Debug)]
pub struct LogsConfig {
    /// The collector.
    pub target: Target,
    /// Records that may wait for the exporter; beyond, they are dropped and counted.
    pub queue_records: usize,
    /// Most records in one export.
    pub batch_records: usize,
    /// Longest a record waits for a batch to fill.
    pub delay: Duration,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            target: Target::default(),
            queue_records: 2048,
            batch_records: 512,
            delay: Duration::from_secs(1),
        }
    }
}

/// The instrumentation scope of every metric and record.
fn scope() -> Scope<'static> {
    Scope {
        name: "tollgate-proxy",
        version: Some(env!("CARGO_PKG_VERSION")),
    }
}

/// The GenAI metrics and their periodic export.
pub struct MetricsExporter {
    metrics: GenAiMetrics,
    config: MetricsConfig,
    counters: OtlpCounters,
    wire: std::sync::OnceLock<Wire>,
}

impl MetricsExporter {
    /// Metrics counted from now on; exported once [`MetricsExporter::start`] has run.
    pub fn new(config: MetricsConfig, counters: OtlpCounters) -> Self {
        Self {
            metrics: GenAiMetrics::new(config.max_series, counters.metric_sets_folded.clone()),
            config,
            counters,
            wire: std::sync::OnceLock::new(),
        }
    }

    /// Counts one finished model call.
    pub fn record(&self, call: &GenAiCall<'_>) {
        self.metrics.record(call);
    }

    /// Connects the wire and starts the periodic export (once; later calls do nothing).
    pub fn start(self: &Arc<Self>) -> Result<(), WireError> {
        if self.wire.get().is_some() {
            return Ok(());
        }
        let wire = Wire::new(&self.config.target, Signal::Metrics)?;
        if self.wire.set(wire).is_err() {
            return Ok(());
        }
        let this = Arc::downgrade(self);
        let interval = self.config.interval.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is at once: nothing is counted yet.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(this) = this.upgrade() else { return };
                this.export().await;
            }
        });
        Ok(())
    }

    /// Exports the counters now (at shutdown, and in tests); does nothing before `start`.
    pub async fn export(&self) {
        let Some(wire) = self.wire.get() else { return };
        let mut items = Vec::with_capacity(4096);
        encode_metrics(&mut items, &self.metrics, SystemTime::now());
        if items.is_empty() {
            return;
        }
        let body = encode_request(&self.config.target.resource_attributes(), &scope(), &items);
        match wire.send(body).await {
            Ok(()) => {
                self.counters.metric_exports_ok.inc();
            }
            Err(error) => {
                tracing::debug!(%error, "metrics export failed");
                self.counters.metric_exports_failed.inc();
            }
        };
    }
}

enum Message {
    /// One record's fields (a `LogRecord` without its tag and length).
    Record(Vec<u8>),
    Flush(oneshot::Sender<()>),
}

/// The access log's records and their queue to the exporter task.
pub struct LogExporter {
    queue: mpsc::Sender<Message>,
    counters: OtlpCounters,
    pending: Mutex<Option<(mpsc::Receiver<Message>, LogsConfig)>>,
}

impl LogExporter {
    /// An exporter for `config`; its task starts with [`LogExporter::start`].
    pub fn new(config: LogsConfig, counters: OtlpCounters) -> Self {
        let (queue, receiver) = mpsc::channel(config.queue_records.max(1));
        Self {
            queue,
            counters,
            pending: Mutex::new(Some((receiver, config))),
        }
    }

    /// Encodes one call's line and queues it; drops and counts it if the queue is full.
    pub fn record(&self, line: &AccessLine<'_>, span: Option<SpanIds>) {
        let mut record = Vec::with_capacity(640);
        encode_log(&mut record, line, span, SystemTime::now());
        if self.queue.try_send(Message::Record(record)).is_err() {
            self.counters.log_records_dropped_queue_full.inc();
        }
    }

    /// Waits (up to `timeout`) until every record queued so far has been exported or dropped.
    pub async fn flush(&self, timeout: Duration) {
        let (done, finished) = oneshot::channel();
        let _ = tokio::time::timeout(timeout, async {
            if self.queue.send(Message::Flush(done)).await.is_ok() {
                let _ = finished.await;
            }
        })
        .await;
    }

    /// Connects the wire and starts the exporter task (once; later calls do nothing).
    pub fn start(&self) -> Result<(), WireError> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some((_, config)) = pending.as_ref() else {
            return Ok(());
        };
        let wire = Wire::new(&config.target, Signal::Logs)?;
        let (receiver, config) = pending.take().expect("checked above");
        tokio::spawn(run_logs(wire, receiver, config, self.counters.clone()));
        Ok(())
    }
}

/// Adds a queued message to the batch being gathered.
fn add(
    message: Message,
    batch: &mut Vec<u8>,
    records: &mut u64,
    flushed: &mut Vec<oneshot::Sender<()>>,
) {
    match message {
        Message::Record(record) => {
            // ScopeLogs.log_records = 2.
            tag(batch, 2, LEN);
            varint(batch, record.len() as u64);
            batch.extend_from_slice(&record);
            *records += 1;
        }
        Message::Flush(done) => flushed.push(done),
    }
}

/// The logs task: gathers records into batches (full, or `delay` old) and exports them.
async fn run_logs(
    wire: Wire,
    mut receiver: mpsc::Receiver<Message>,
    config: LogsConfig,
    counters: OtlpCounters,
) {
    let resource = config.target.resource_attributes();
    let mut batch: Vec<u8> = Vec::new();
    let mut records = 0u64;
    let mut flushed: Vec<oneshot::Sender<()>> = Vec::new();
    let mut closed = false;
    while !closed {
        // Idle until something comes, then up to `delay` more for the batch to fill.
        match receiver.recv().await {
            Some(message) => add(message, &mut batch, &mut records, &mut flushed),
            None => closed = true,
        }
        let due = tokio::time::Instant::now() + config.delay;
        while !closed && records < config.batch_records as u64 && flushed.is_empty() {
            match tokio::time::timeout_at(due, receiver.recv()).await {
                Ok(Some(message)) => add(message, &mut batch, &mut records, &mut flushed),
                Ok(None) => closed = true,
                Err(_) => break,
            }
        }
        if records > 0 {
            let body = encode_request(&resource, &scope(), &batch);
            batch.clear();
            let n = std::mem::take(&mut records);
            match wire.send(body).await {
                Ok(()) => {
                    counters.log_records_exported.inc_by(n);
                }
                Err(error) => {
                    tracing::debug!(%error, records = n, "log export failed");
                    counters.log_records_dropped_export_failed.inc_by(n);
                }
            }
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}
