//! What calls report to: the access log, Prometheus metrics, the per-subscription usage tally and
//! OTLP traces.
//! Values come in as plain numbers and names; nothing here knows a call, a request or a response.

mod access_log;
pub mod metrics;
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
    log: AccessLog,
}

impl Recorder {
    /// A recorder writing to `log`.
    pub fn new(log: AccessLog) -> Self {
        Self::with_traces(log, None)
    }

    /// A recorder writing to `log` and, with `traces`, sampling calls and exporting their spans.
    pub fn with_traces(log: AccessLog, traces: Option<trace::TraceConfig>) -> Self {
        let metrics = Metrics::new();
        let traces = traces.map(|config| trace::Tracer::new(config, metrics.trace_counters()));
        Self {
            metrics,
            usage: Arc::new(UsageTally::new()),
            traces,
            log,
        }
    }

    /// Writes one access-log line; counts it in the metrics when it had to be dropped.
    pub fn write_line(&self, line: &AccessLine<'_>) {
        if !self.log.write(line) {
            self.metrics.access_log_dropped();
        }
    }

    /// Writes whatever access-log lines are still waiting (call before the process exits).
    pub fn flush_log(&self) {
        self.log.flush();
    }
}
