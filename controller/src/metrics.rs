//! Prometheus metrics, rendered in the text exposition format on the admin port.

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;

/// Upper bounds (seconds) of the compile-duration histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Keeps [`Metrics::leader`] equal to whether this replica leads, until the election ends.
pub async fn follow_leader(metrics: Arc<Metrics>, mut leader: watch::Receiver<bool>) {
    while leader.changed().await.is_ok() {
        let leads = *leader.borrow_and_update();
        metrics.leader.store(i64::from(leads), Ordering::Relaxed);
    }
}

/// Every metric the controller exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Time to compile the stores into a snapshot.
    pub compile_duration: Histogram,
    /// Time for one reconcile pass (key generation and status diff) after a compile.
    pub reconcile_duration: Histogram,
    /// Version of the snapshot being served (Unix milliseconds at publish).
    pub snapshot_version: AtomicU64,
    /// Snapshots published (content hash changed).
    pub snapshots_published: AtomicU64,
    /// Encoded size of the current snapshot in bytes.
    pub snapshot_bytes: AtomicU64,
    /// Open snapshot streams.
    pub connected_proxies: AtomicI64,
    /// Status patches sent to the API server.
    pub status_writes: AtomicU64,
    /// Status patches the API server refused.
    pub status_write_errors: AtomicU64,
    /// Secrets created for generated consumer keys.
    pub keys_generated: AtomicU64,
    /// Usage reports accepted from proxies.
    pub usage_reports: AtomicU64,
    /// 1 while this replica holds the Lease.
    pub leader: AtomicI64,
    /// Stream or usage requests refused for want of a valid, allowed token.
    pub auth_denied: AtomicU64,
    /// Spans the collector took.
    pub trace_spans_exported: AtomicU64,
    /// Spans dropped because the export queue was full (the collector slow or gone).
    pub trace_spans_dropped_queue_full: AtomicU64,
    /// Spans dropped because their export failed or timed out.
    pub trace_spans_dropped_export_failed: AtomicU64,
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.compile_duration.render(
            &mut out,
            "tollgate_controller_compile_duration_seconds",
            "Time to compile the watched resources into a snapshot.",
        );
        self.reconcile_duration.render(
            &mut out,
            "tollgate_controller_reconcile_duration_seconds",
            "Time for one reconcile pass (generated keys, status diff) after a compile.",
        );
        let gauge = |out: &mut String, name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        gauge(
            &mut out,
            "tollgate_controller_snapshot_version",
            "gauge",
            "Version of the snapshot being served (Unix milliseconds at publish).",
            load(&self.snapshot_version),
        );
        gauge(
            &mut out,
            "tollgate_controller_snapshot_bytes",
            "gauge",
            "Encoded size of the snapshot being served.",
            load(&self.snapshot_bytes),
        );
        gauge(
            &mut out,
            "tollgate_controller_snapshots_published_total",
            "counter",
            "Snapshots published because the content hash changed.",
            load(&self.snapshots_published),
        );
        gauge(
            &mut out,
            "tollgate_controller_connected_proxies",
            "gauge",
            "Open snapshot streams.",
            self.connected_proxies.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "tollgate_controller_status_writes_total",
            "counter",
            "Status patches sent to the API server.",
            load(&self.status_writes),
        );
        gauge(
            &mut out,
            "tollgate_controller_status_write_errors_total",
            "counter",
            "Status patches the API server refused.",
            load(&self.status_write_errors),
        );
        gauge(
            &mut out,
            "tollgate_controller_keys_generated_total",
            "counter",
            "Secrets created for generated consumer keys.",
            load(&self.keys_generated),
        );
        gauge(
            &mut out,
            "tollgate_controller_usage_reports_total",
            "counter",
            "Usage reports accepted from proxies.",
            load(&self.usage_reports),
        );
        gauge(
            &mut out,
            "tollgate_controller_auth_denied_total",
            "counter",
            "Proxy requests refused for want of a valid, allowed token.",
            load(&self.auth_denied),
        );
        gauge(
            &mut out,
            "tollgate_controller_leader",
            "gauge",
            "1 while this replica holds the leader Lease.",
            self.leader.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "tollgate_controller_trace_spans_exported_total",
            "counter",
            "Spans sent to the OTLP collector.",
            load(&self.trace_spans_exported),
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_controller_trace_spans_dropped_total Spans never sent: the export queue \
             was full, or their export failed.\n# TYPE tollgate_controller_trace_spans_dropped_total \
             counter\ntollgate_controller_trace_spans_dropped_total{{reason=\"queue_full\"}} {}\n\
             tollgate_controller_trace_spans_dropped_total{{reason=\"export_failed\"}} {}",
            load(&self.trace_spans_dropped_queue_full),
            load(&self.trace_spans_dropped_export_failed),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.compile_duration.observe(Duration::from_millis(3));
        m.compile_duration.observe(Duration::from_millis(30));
        let text = m.render();
        assert!(
            text.contains("tollgate_controller_compile_duration_seconds_bucket{le=\"0.005\"} 1")
        );
        assert!(
            text.contains("tollgate_controller_compile_duration_seconds_bucket{le=\"0.05\"} 2")
        );
        assert!(text.contains("tollgate_controller_compile_duration_seconds_count 2"));
        assert!(text.contains("tollgate_controller_status_writes_total 0"));
    }
}
