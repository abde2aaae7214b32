//! Prometheus metrics, served in the text format on the admin port.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::state::SnapshotStore;

/// `Content-Type` of what [`Metrics::encode`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

const DURATION_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    model: String,
    provider: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

/// Metrics of limits, budgets and backend health.
struct TrafficMetrics {
    refused: Family<ReasonLabel, Counter>,
    redis_up: Gauge,
    redis_fallbacks: Counter,
    ejections: Family<ProviderLabel, Counter>,
    key_cooldowns: Family<ProviderLabel, Counter>,
    retries_denied: Counter,
}

impl TrafficMetrics {
    fn register(registry: &mut Registry) -> Self {
        let refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "tollgate_limit_refusals",
            "Calls refused with 429 by a limit or budget, by reason (requests, tokens, budget)",
            refused.clone(),
        );
        let redis_up = Gauge::default();
        registry.register(
            "tollgate_limits_redis_up",
            "1 while limits are counted cluster-wide in Redis, 0 while on this replica's share",
            redis_up.clone(),
        );
        let redis_fallbacks = Counter::default();
        registry.register(
            "tollgate_limits_redis_fallbacks",
            "Times Redis failed and limits fell back to this replica's share",
            redis_fallbacks.clone(),
        );
        let ejections = Family::<ProviderLabel, Counter>::default();
        registry.register(
            "tollgate_backend_ejections",
            "Times a provider was taken out of rotation after consecutive failures",
            ejections.clone(),
        );
        let key_cooldowns = Family::<ProviderLabel, Counter>::default();
        registry.register(
            "tollgate_provider_key_cooldowns",
            "Times a provider key was rested after a 401, 403 or 429",
            key_cooldowns.clone(),
        );
        let retries_denied = Counter::default();
        registry.register(
            "tollgate_retries_denied",
            "Retries or fallbacks not made because the route's retry budget was spent",
            retries_denied.clone(),
        );
        Self {
            refused,
            redis_up,
            redis_fallbacks,
            ejections,
            key_cooldowns,
            retries_denied,
        }
    }
}

type HistogramFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    ttft: HistogramFamily,
    input_tokens: Counter,
    output_tokens: Counter,
    cost: Counter<f64, AtomicU64>,
    in_flight: Gauge,
    snapshot_version: Gauge,
    snapshot_age: Gauge<f64, AtomicU64>,
    reloads: Family<OutcomeLabel, Counter>,
    traffic: TrafficMetrics,
}

/// One finished call, as metrics see it.
pub struct CallSample<'a> {
    /// `namespace/name` of the route, or empty.
    pub route: &'a str,
    /// Client-facing model name, or empty when the route does not serve it.
    pub model: &'a str,
    /// `namespace/name` of the provider that answered, or empty.
    pub provider: &'a str,
    /// HTTP status sent.
    pub status: u16,
    /// Whole call.
    pub duration_s: f64,
    /// Time to the first streamed chunk (streams only).
    pub ttft_s: Option<f64>,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Cost in USD.
    pub cost_usd: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "tollgate_requests",
            "Calls answered, by route, client-facing model, provider and HTTP status",
            requests.clone(),
        );
        let duration = HistogramFamily::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "tollgate_request_duration",
            "Time from the request's arrival to the end of its response",
            Unit::Seconds,
            duration.clone(),
        );
        let ttft = HistogramFamily::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "tollgate_time_to_first_token",
            "Time from the request's arrival to the first streamed chunk",
            Unit::Seconds,
            ttft.clone(),
        );
        let tokens = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "tollgate_tokens",
            "Tokens used, by direction (input = prompt, output = completion)",
            tokens.clone(),
        );
        let input_tokens = tokens.get_or_create_owned(&DirectionLabel { direction: "input" });
        let output_tokens = tokens.get_or_create_owned(&DirectionLabel {
            direction: "output",
        });
        let cost = Counter::<f64, AtomicU64>::default();
        registry.register(
            "tollgate_cost_usd",
            "Cost of answered calls in US dollars, from snapshot prices",
            cost.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "tollgate_in_flight_requests",
            "Calls being served right now",
            in_flight.clone(),
        );
        let snapshot_version = Gauge::default();
        registry.register(
            "tollgate_snapshot_version",
            "Version of the snapshot being served (0 before the first)",
            snapshot_version.clone(),
        );
        let snapshot_age = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "tollgate_snapshot_age",
            "Time since the snapshot being served was swapped in",
            Unit::Seconds,
            snapshot_age.clone(),
        );
        let reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "tollgate_snapshot_reloads",
            "Configuration changes seen, by outcome (applied, refused)",
            reloads.clone(),
        );
        let traffic = TrafficMetrics::register(&mut registry);
        Self {
            traffic,
            registry,
            requests,
            duration,
            ttft,
            input_tokens,
            output_tokens,
            cost,
            in_flight,
            snapshot_version,
            snapshot_age,
            reloads,
        }
    }

    /// A call started.
    pub fn call_started(&self) {
        self.in_flight.inc();
    }

    /// A call ended (however it ended).
    pub fn call_finished(&self, s: &CallSample<'_>) {
        self.in_flight.dec();
        self.requests
            .get_or_create(&RequestLabels {
                route: s.route.to_owned(),
                model: s.model.to_owned(),
                provider: s.provider.to_owned(),
                status: s.status,
            })
            .inc();
        let route = RouteLabel {
            route: s.route.to_owned(),
        };
        self.duration.get_or_create(&route).observe(s.duration_s);
        if let Some(ttft) = s.ttft_s {
            self.ttft.get_or_create(&route).observe(ttft);
        }
        if s.input_tokens > 0 {
            self.input_tokens.inc_by(s.input_tokens);
        }
        if s.output_tokens > 0 {
            self.output_tokens.inc_by(s.output_tokens);
        }
        if s.cost_usd > 0.0 {
            self.cost.inc_by(s.cost_usd);
        }
    }

    /// A configuration change was applied or refused.
    pub fn reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "refused" };
        self.reloads.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// A limit or budget refused a call (`requests`, `tokens` or `budget`).
    pub fn limit_refused(&self, reason: &'static str) {
        self.traffic
            .refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Whether limits are counted in Redis now.
    pub fn redis_up(&self, up: bool) {
        self.traffic.redis_up.set(i64::from(up));
    }

    /// Redis failed and limits fell back to local shares.
    pub fn redis_fallback(&self) {
        self.traffic.redis_fallbacks.inc();
    }

    /// A provider (`namespace/name`) was ejected.
    pub fn backend_ejected(&self, provider: String) {
        self.traffic
            .ejections
            .get_or_create(&ProviderLabel { provider })
            .inc();
    }

    /// A provider's key was rested.
    pub fn key_cooled(&self, provider: String) {
        self.traffic
            .key_cooldowns
            .get_or_create(&ProviderLabel { provider })
            .inc();
    }

    /// A retry was not made: the route's retry budget was spent.
    pub fn retry_denied(&self) {
        self.traffic.retries_denied.inc();
    }

    /// The text exposition, with the snapshot gauges refreshed first.
    pub fn encode(&self, store: &SnapshotStore) -> String {
        self.snapshot_version
            .set(store.version().map(|v| v as i64).unwrap_or(0));
        self.snapshot_age.set(store.age_seconds().unwrap_or(0.0));
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
