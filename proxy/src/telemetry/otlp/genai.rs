//! The GenAI metrics of the OpenTelemetry semantic conventions
//! (open-telemetry/semantic-conventions-genai, `docs/gen-ai/gen-ai-metrics.md` and
//! `model/gen-ai/metrics.yaml` at commit 7269173e, which link semantic conventions v1.41.1):
//! `gen_ai.client.token.usage`, `gen_ai.server.request.duration` and
//! `gen_ai.server.time_to_first_token`, with the units and bucket boundaries stated there.
//!
//! A call adds to plain atomic counters of its attribute set: a read lock and a hash to find the
//! set, then a few relaxed additions. Distinct sets are capped; past the cap a call is counted under
//! the set `otel.metric.overflow=true`, as the metrics SDK specification does with its cardinality
//! limit. The exporter reads the counters as cumulative sums.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// `gen_ai.client.token.usage`, `{token}`.
pub const TOKEN_BOUNDS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// `gen_ai.server.request.duration`, seconds.
pub const DURATION_BOUNDS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// `gen_ai.server.time_to_first_token`, seconds.
pub const TTFT_BOUNDS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Distinct attribute sets kept by default (as many as the Prometheus label cap's values).
pub const DEFAULT_MAX_SERIES: usize = 1000;

/// One finished model call, as the GenAI metrics see it.
pub struct GenAiCall<'a> {
    /// `gen_ai.operation.name`.
    pub operation: &'static str,
    /// `gen_ai.provider.name` of the backend that answered (or was tried last).
    pub provider: &'static str,
    /// `gen_ai.request.model`: the model the caller named, as the route serves it.
    pub request_model: &'a Arc<str>,
    /// `gen_ai.response.model`: the model the answering backend was asked for.
    pub response_model: &'a Arc<str>,
    /// `error.type`, when the call failed.
    pub error: Option<&'static str>,
    /// From the request's arrival to the end of its answer.
    pub duration: Duration,
    /// To the first streamed chunk, for a streamed answer.
    pub ttft: Option<Duration>,
    /// Input and output tokens, when the call was answered.
    pub tokens: Option<(u64, u64)>,
}

/// An attribute set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub operation: &'static str,
    pub provider: &'static str,
    pub request_model: Arc<str>,
    pub response_model: Arc<str>,
    pub error: Option<&'static str>,
}

/// A histogram of explicit buckets, in integer units (tokens, or nanoseconds for seconds).
pub struct Histogram {
    bounds: &'static [f64],
    /// `bounds.len() + 1` buckets; a value `v` counts in the first `i` with `v <= bounds[i]`.
    buckets: Box<[AtomicU64]>,
    /// The sum, in the recorded unit (tokens, or nanoseconds).
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Counts `value` (in the bounds' unit) adding `raw` (the integer unit) to the sum.
    fn record(&self, value: f64, raw: u64) {
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(raw, Ordering::Relaxed);
    }

    fn tokens(&self, n: u64) {
        self.record(n as f64, n);
    }

    fn seconds(&self, d: Duration) {
        self.record(
            d.as_secs_f64(),
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        );
    }

    /// The buckets' counts now, and the sum (in the integer unit).
    pub fn read(&self) -> (Vec<u64>, u64) {
        (
            self.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            self.sum.load(Ordering::Relaxed),
        )
    }

    /// The explicit bounds.
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }
}

/// The counters of one attribute set.
pub struct Series {
    /// When the set was first seen: the start of its cumulative sums.
    pub start: SystemTime,
    pub input_tokens: Histogram,
    pub output_tokens: Histogram,
    pub duration: Histogram,
    pub ttft: Histogram,
}

impl Series {
    fn new() -> Self {
        Self {
            start: SystemTime::now(),
            input_tokens: Histogram::new(&TOKEN_BOUNDS),
            output_tokens: Histogram::new(&TOKEN_BOUNDS),
            duration: Histogram::new(&DURATION_BOUNDS),
            ttft: Histogram::new(&TTFT_BOUNDS),
        }
    }

    fn record(&self, call: &GenAiCall<'_>) {
        self.duration.seconds(call.duration);
        if call.error.is_some() {
            return;
        }
        if let Some((input, output)) = call.tokens {
            self.input_tokens.tokens(input);
            self.output_tokens.tokens(output);
        }
        if let Some(ttft) = call.ttft {
            self.ttft.seconds(ttft);
        }
    }
}

/// The GenAI metrics of every call so far, by attribute set.
pub struct GenAiMetrics {
    series: RwLock<HashMap<Attributes, Arc<Series>>>,
    /// Calls counted past the cap.
    overflow: Series,
    max_series: usize,
    /// Calls whose attribute set came past the cap (a Prometheus counter, shared).
    folded: prometheus_client::metrics::counter::Counter,
}

impl GenAiMetrics {
    /// Metrics of at most `max_series` attribute sets; calls past them add to `folded` too.
    pub fn new(max_series: usize, folded: prometheus_client::metrics::counter::Counter) -> Self {
        Self {
            series: RwLock::default(),
            overflow: Series::new(),
            max_series,
            folded,
        }
    }

    /// Counts one finished call.
    pub fn record(&self, call: &GenAiCall<'_>) {
        let key = Attributes {
            operation: call.operation,
            provider: call.provider,
            request_model: Arc::clone(call.request_model),
            response_model: Arc::clone(call.response_model),
            error: call.error,
        };
        let found = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let series = match found {
            Some(series) => series,
            None => {
                let mut all = self.series.write().unwrap_or_else(|e| e.into_inner());
                if let Some(series) = all.get(&key) {
                    Arc::clone(series)
                } else if all.len() < self.max_series {
                    let series = Arc::new(Series::new());
                    all.insert(key, Arc::clone(&series));
                    series
                } else {
                    drop(all);
                    self.folded.inc();
                    self.overflow.record(call);
                    return;
                }
            }
        };
        series.record(call);
    }

    /// Every attribute set's counters (`None`: the overflow set), in no particular order.
    pub fn each(&self, mut f: impl FnMut(Option<&Attributes>, &Series)) {
        let all: Vec<(Attributes, Arc<Series>)> = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        for (attributes, series) in &all {
            f(Some(attributes), series);
        }
        f(None, &self.overflow);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(model: &'a Arc<str>, error: Option<&'static str>) -> GenAiCall<'a> {
        GenAiCall {
            operation: "chat",
            provider: "openai",
            request_model: model,
            response_model: model,
            error,
            duration: Duration::from_millis(30),
            ttft: Some(Duration::from_millis(5)),
            tokens: Some((12, 64)),
        }
    }

    #[test]
    fn a_value_on_a_bound_counts_in_that_bound_s_bucket() {
        let h = Histogram::new(&TOKEN_BOUNDS);
        h.tokens(0);
        h.tokens(1);
        h.tokens(2);
        h.tokens(64);
        h.tokens(100_000_000);
        let (buckets, sum) = h.read();
        assert_eq!(buckets.len(), TOKEN_BOUNDS.len() + 1);
        assert_eq!(&buckets[..5], &[2, 1, 0, 1, 0]);
        assert_eq!(buckets[TOKEN_BOUNDS.len()], 1);
        assert_eq!(sum, 100_000_067);
    }

    #[test]
    fn a_failed_call_adds_its_duration_only() {
        let folded = prometheus_client::metrics::counter::Counter::default();
        let m = GenAiMetrics::new(10, folded);
        let model: Arc<str> = "gpt".into();
        m.record(&call(&model, None));
        m.record(&call(&model, None));
        m.record(&call(&model, Some("upstream_5xx")));
        let mut seen = Vec::new();
        m.each(|attrs, s| {
            if let Some(attrs) = attrs {
                let count = |h: &Histogram| h.read().0.iter().sum::<u64>();
                seen.push((
                    attrs.error,
                    count(&s.duration),
                    count(&s.input_tokens),
                    s.output_tokens.read().1,
                    count(&s.ttft),
                ));
            }
        });
        seen.sort();
        assert_eq!(
            seen,
            [(None, 2, 2, 128, 2), (Some("upstream_5xx"), 1, 0, 0, 0)]
        );
    }

    #[test]
    fn sets_past_the_cap_fold_into_the_overflow_set_and_are_counted() {
        let folded = prometheus_client::metrics::counter::Counter::default();
        let m = GenAiMetrics::new(2, folded.clone());
        let models: Vec<Arc<str>> = (0..5).map(|i| format!("m{i}").into()).collect();
        for model in &models {
            m.record(&call(model, None));
        }
        // A model admitted before the cap keeps its own set.
        m.record(&call(&models[0], None));
        assert_eq!(folded.get(), 3);
        let mut own = 0;
        let mut overflow = 0;
        m.each(|attrs, s| {
            let n: u64 = s.duration.read().0.iter().sum();
            match attrs {
                Some(_) => own += n,
                None => overflow = n,
            }
        });
        assert_eq!((own, overflow), (3, 3));
    }
}
