//! What calls report to: the access log, Prometheus metrics and the per-subscription usage tally.
//! Values come in as plain numbers and names; nothing here knows a call, a request or a response.

mod access_log;
pub mod metrics;
mod usage;

use std::sync::Arc;

pub use access_log::{AccessLine, AccessLog};
use metrics::Metrics;
pub use usage::{Tally, UsageTally};

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
