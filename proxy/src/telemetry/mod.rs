//! What calls report to: the access log, Prometheus metrics, the per-subscription usage tally,
//! OTLP traces, and OTLP metrics and logs (`otlp`).
//! Values come in as plain numbers and names; nothing here knows a call, a request or a response.

mod access_log;
pub mod metrics;
pub mod otlp;
pub mod trace;
mod usage;

use std::sync::Arc;

pub use access_log::{AccessLine, AccessLog, Saved};
use metrics::Metrics;
pub use usage::{Tally, UsageTally};

/// Metrics and access log together: what a finished call reports to.
pub struct Recorder {
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Per-subscription usage, reported to the controller when there is one.
    pub usage: Arc<UsageTally>,
    /// Sampling and export of traces, when an OTLP endpoint is configured.
    pub traces: Option<trace::Tracer>,
    /// The GenAI metrics over OTLP, when enabled.
    pub genai: Option<Arc<otlp::MetricsExporter>>,
    /// The access log's records over OTLP, when enabled.
    pub log_records: Option<otlp::LogExporter>,
    log: AccessLog,
}

/// The OTLP signals a recorder exports: each `None` is off.
#[derive(Clone, Debug, Default)]
pub struct OtlpSignals {
    /// Sampled calls' spans.
    pub traces: Option<trace::TraceConfig>,
    /// The GenAI metrics.
    pub metrics: Option<otlp::MetricsConfig>,
    /// The access log's lines as log records.
    pub logs: Option<otlp::LogsConfig>,
}

impl Recorder {
    /// A recorder writing to `log`.
    pub fn new(log: AccessLog) -> Self {
        Self::with_traces(log, None)
    }

    /// A recorder writing to `log` and, with `traces`, sampling calls and exporting their spans.
    pub fn with_traces(log: AccessLog, traces: Option<trace::TraceConfig>) -> Self {
        Self::with_signals(
            log,
            OtlpSignals {
                traces,
                ..OtlpSignals::default()
            },
        )
    }

    /// A recorder writing to `log` and exporting the OTLP `signals` configured.
    pub fn with_signals(log: AccessLog, signals: OtlpSignals) -> Self {
        let metrics = Metrics::new();
        let traces = signals
            .traces
            .map(|config| trace::Tracer::new(config, metrics.trace_counters()));
        let genai = signals
            .metrics
            .map(|config| Arc::new(otlp::MetricsExporter::new(config, metrics.otlp_counters())));
        let log_records = signals
            .logs
            .map(|config| otlp::LogExporter::new(config, metrics.otlp_counters()));
        Self {
            metrics,
            usage: Arc::new(UsageTally::new()),
            traces,
            genai,
            log_records,
            log,
        }
    }

    /// Starts the OTLP exporters' tasks (call within the runtime, once serving begins).
    pub fn start_exporters(&self) -> Result<(), otlp::WireError> {
        if let Some(genai) = &self.genai {
            genai.start()?;
        }
        if let Some(logs) = &self.log_records {
            logs.start()?;
        }
        Ok(())
    }

    /// Sends what the OTLP metrics and logs exporters hold (before the process exits).
    pub async fn flush_exporters(&self, timeout: std::time::Duration) {
        if let Some(logs) = &self.log_records {
            logs.flush(timeout).await;
        }
        if let Some(genai) = &self.genai {
            let _ = tokio::time::timeout(timeout, genai.export()).await;
        }
    }

    /// Writes one access-log line; counts it in the metrics when it had to be dropped.
    pub fn write_line(&self, line: &AccessLine<'_>) {
        if !self.log.write(line) {
            self.metrics.access_log_dropped();
        }
    }

    /// Queues one access-log line as an OTLP log record, when those are exported; `span` is the
    /// call's trace and server span when it was traced.
    pub fn export_line(&self, line: &AccessLine<'_>, span: Option<otlp::SpanIds>) {
        if let Some(logs) = &self.log_records {
            logs.record(line, span);
        }
    }

    /// Writes whatever access-log lines are still waiting (call before the process exits).
    pub fn flush_log(&self) {
        self.log.flush();
    }
}
