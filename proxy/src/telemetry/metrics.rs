//! Prometheus metrics, served in the text format on the admin port.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use tollgate_snapshot::{ConsumerIdx, FxHashMap, FxHasher, ProviderIdx, RouteIdx, Snapshot};

type FxHashSet<T> = std::collections::HashSet<T, std::hash::BuildHasherDefault<FxHasher>>;

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
struct TokenLabels {
    direction: &'static str,
    route: String,
    consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UsageLabels {
    route: String,
    consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LabelName {
    label: &'static str,
}

/// The value that routes or consumers beyond the cap are counted under.
pub const FOLDED: &str = "_other";

/// Most distinct route and consumer values (each) on the token and cost counters by default.
pub const DEFAULT_LABEL_CAP: usize = 1000;

/// The distinct values one label has been given, up to a cap; later values are folded into
/// [`FOLDED`], so that many consumers cannot grow the metrics without bound.
struct LabelCap {
    name: &'static str,
    cap: usize,
    admitted: FxHashSet<String>,
    folded: Counter,
}

impl LabelCap {
    /// The value to use for `value`: itself while there is room (or it is already admitted).
    fn admit(&mut self, value: String) -> String {
        if value.is_empty() || self.admitted.contains(&value) {
            return value;
        }
        if self.admitted.len() < self.cap {
            self.admitted.insert(value.clone());
            return value;
        }
        tracing::debug!(label = self.name, %value, "metric label value folded into {FOLDED}");
        self.folded.inc();
        FOLDED.to_string()
    }
}

/// The token and cost counters of one route and consumer.
#[derive(Clone)]
struct UsageSeries {
    input: Counter,
    output: Counter,
    cost: Counter<f64, AtomicU64>,
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
struct RefusalLabels {
    reason: &'static str,
    /// `subscription`, `consumer` or `route` (a route's total).
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

/// Metrics of limits, budgets and backend health.
struct TrafficMetrics {
    refused: Family<RefusalLabels, Counter>,
    redis_up: Gauge,
    redis_fallbacks: Counter,
    ejections: Family<ProviderLabel, Counter>,
    key_cooldowns: Family<ProviderLabel, Counter>,
    retries_denied: Counter,
    access_log_dropped: Counter,
}

impl TrafficMetrics {
    fn register(registry: &mut Registry) -> Self {
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "tollgate_limit_refusals",
            "Calls refused with 429 by a limit or budget, by reason (requests, tokens, budget) and scope (subscription, consumer, route)",
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
        let access_log_dropped = Counter::default();
        registry.register(
            "tollgate_access_log_dropped",
            "Access-log lines dropped because stdout did not keep up (16 MiB were waiting)",
            access_log_dropped.clone(),
        );
        Self {
            access_log_dropped,
            refused,
            redis_up,
            redis_fallbacks,
            ejections,
            key_cooldowns,
            retries_denied,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuardrailLabels {
    // The call's own name for the rule: counting a decision copies no text.
    rule: Arc<str>,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct McpLabel {
    route: String,
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// What happened to sampled calls' spans (shared with the trace exporter's task).
#[derive(Clone, Default)]
pub struct TraceCounters {
    /// Spans the collector accepted.
    pub exported: Counter,
    /// Spans dropped because the exporter's queue was full.
    pub dropped_queue_full: Counter,
    /// Spans dropped because their export failed or timed out.
    pub dropped_export_failed: Counter,
}

impl TraceCounters {
    fn register(registry: &mut Registry) -> Self {
        let counters = Self::default();
        registry.register(
            "tollgate_trace_spans_exported",
            "Spans of sampled calls accepted by the OTLP collector",
            counters.exported.clone(),
        );
        let dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "tollgate_trace_spans_dropped",
            "Spans of sampled calls dropped: queue_full (the exporter fell behind) or export_failed (the collector refused, failed or timed out)",
            dropped.clone(),
        );
        Self {
            dropped_queue_full: dropped.get_or_create_owned(&ReasonLabel {
                reason: "queue_full",
            }),
            dropped_export_failed: dropped.get_or_create_owned(&ReasonLabel {
                reason: "export_failed",
            }),
            ..counters
        }
    }
}

/// What happened to the OTLP metrics' exports and the access log's OTLP records (shared with their
/// exporters' tasks).
#[derive(Clone, Default)]
pub struct OtlpCounters {
    /// Metric exports the collector accepted.
    pub metric_exports_ok: Counter,
    /// Metric exports refused, failed or timed out (the next one carries the same sums).
    pub metric_exports_failed: Counter,
    /// Calls whose GenAI attribute set came past the cap (counted under `otel.metric.overflow`).
    pub metric_sets_folded: Counter,
    /// Log records the collector accepted.
    pub log_records_exported: Counter,
    /// Log records dropped because the exporter's queue was full.
    pub log_records_dropped_queue_full: Counter,
    /// Log records dropped because their export failed or timed out.
    pub log_records_dropped_export_failed: Counter,
}

impl OtlpCounters {
    fn register(registry: &mut Registry) -> Self {
        let counters = Self::default();
        let exports = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "tollgate_otlp_metric_exports",
            "Exports of the GenAI metrics over OTLP, by outcome (ok, failed: refused, unreachable or timed out)",
            exports.clone(),
        );
        registry.register(
            "tollgate_otlp_metric_sets_folded",
            "Calls counted under otel.metric.overflow=true in the GenAI metrics because their attribute set came past the cap",
            counters.metric_sets_folded.clone(),
        );
        registry.register(
            "tollgate_otlp_log_records_exported",
            "Access-log records accepted by the OTLP collector",
            counters.log_records_exported.clone(),
        );
        let dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "tollgate_otlp_log_records_dropped",
            "Access-log records not exported: queue_full (the exporter fell behind) or export_failed (the collector refused, failed or timed out)",
            dropped.clone(),
        );
        Self {
            metric_exports_ok: exports.get_or_create_owned(&OutcomeLabel { outcome: "ok" }),
            metric_exports_failed: exports.get_or_create_owned(&OutcomeLabel { outcome: "failed" }),
            log_records_dropped_queue_full: dropped.get_or_create_owned(&ReasonLabel {
                reason: "queue_full",
            }),
            log_records_dropped_export_failed: dropped.get_or_create_owned(&ReasonLabel {
                reason: "export_failed",
            }),
            ..counters
        }
    }
}

/// Metrics of the response cache.
struct CacheMetrics {
    lookups: Family<ResultLabel, Counter>,
    store_errors: Family<OpLabel, Counter>,
    evictions: Counter,
    bytes: Gauge,
    entries: Gauge,
    saved_tokens: Counter,
    saved_cost: Counter<f64, AtomicU64>,
}

impl CacheMetrics {
    fn register(registry: &mut Registry) -> Self {
        let lookups = Family::<ResultLabel, Counter>::default();
        registry.register(
            "tollgate_cache_lookups",
            "Model calls on routes with a cache, by result (hit, miss, bypass)",
            lookups.clone(),
        );
        let store_errors = Family::<OpLabel, Counter>::default();
        registry.register(
            "tollgate_cache_store_errors",
            "Redis cache reads or writes that failed or were skipped while Redis was down (the call went on as a miss)",
            store_errors.clone(),
        );
        let evictions = Counter::default();
        registry.register(
            "tollgate_cache_evictions",
            "Entries dropped from this replica's cache to stay within its byte budget",
            evictions.clone(),
        );
        let bytes = Gauge::default();
        registry.register_with_unit(
            "tollgate_cache",
            "Bytes held by this replica's cache",
            Unit::Bytes,
            bytes.clone(),
        );
        let entries = Gauge::default();
        registry.register(
            "tollgate_cache_entries",
            "Entries held by this replica's cache",
            entries.clone(),
        );
        let saved_tokens = Counter::default();
        registry.register(
            "tollgate_cache_saved_tokens",
            "Provider tokens not spent because a call was answered from the cache",
            saved_tokens.clone(),
        );
        let saved_cost = Counter::<f64, AtomicU64>::default();
        registry.register(
            "tollgate_cache_saved_cost_usd",
            "USD not spent because a call was answered from the cache: what the call that made the stored answer cost",
            saved_cost.clone(),
        );
        Self {
            lookups,
            store_errors,
            evictions,
            bytes,
            entries,
            saved_tokens,
            saved_cost,
        }
    }
}

/// `namespace/name` of the call's route, or empty.
fn route_label(of: Option<&SeriesOf<'_>>) -> String {
    of.and_then(|x| {
        Some(
            x.snapshot
                .content
                .routes
                .get(x.route as usize)?
                .id
                .to_string(),
        )
    })
    .unwrap_or_default()
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
    tokens: Family<TokenLabels, Counter>,
    cost: Family<UsageLabels, Counter<f64, AtomicU64>>,
    /// The caps of the route and consumer labels of `tokens` and `cost`.
    caps: Mutex<(LabelCap, LabelCap)>,
    in_flight: Gauge,
    snapshot_version: Gauge,
    snapshot_age: Gauge<f64, AtomicU64>,
    reloads: Family<OutcomeLabel, Counter>,
    traffic: TrafficMetrics,
    cache: CacheMetrics,
    trace: TraceCounters,
    otlp: OtlpCounters,
    guardrails: Family<GuardrailLabels, Counter>,
    mcp: Family<McpLabel, Counter>,
    series: Mutex<SeriesCache>,
}

/// One finished call, as metrics see it.
pub struct CallSample<'a> {
    /// Where it went, when a route matched.
    pub series: Option<SeriesOf<'a>>,
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
    /// The caller, once known (a label of the token and cost counters).
    pub consumer: Option<ConsumerIdx>,
}

/// A call's route, model and provider, as indexes into the snapshot it was served from.
pub struct SeriesOf<'a> {
    /// The snapshot.
    pub snapshot: &'a Snapshot,
    /// The route.
    pub route: RouteIdx,
    /// The route's model, when it serves the one asked for.
    pub model: Option<u32>,
    /// The provider that answered.
    pub provider: Option<ProviderIdx>,
}

/// The metric handles of one label combination, found once per snapshot instead of building label
/// strings and hashing them on every call.
#[derive(Default)]
struct SeriesCache {
    version: u64,
    hash: String,
    by_key: FxHashMap<SeriesKey, Series>,
    usage: FxHashMap<(Option<RouteIdx>, Option<ConsumerIdx>), UsageSeries>,
    /// `tollgate_mcp_calls_total` by route, method and outcome.
    mcp: FxHashMap<(Option<RouteIdx>, &'static str, &'static str), Counter>,
    /// `tollgate_guardrail_decisions_total` by the rule's own name (the snapshot's `Arc<str>`) and
    /// action, found by the name's pointer: the cache holds the name, so a pointer it holds is
    /// never another name's. Not cleared with a new snapshot (its names stay right); emptied when
    /// it holds [`GUARDRAIL_SERIES`].
    guardrails: Vec<(Arc<str>, &'static str, Counter)>,
}

/// How many guardrail decision counters [`SeriesCache`] keeps at most.
const GUARDRAIL_SERIES: usize = 64;

impl SeriesCache {
    /// Forgets the handles of an older snapshot (its indexes name other routes).
    fn follow(&mut self, snapshot: &Snapshot) {
        if self.version != snapshot.version || self.hash != snapshot.hash {
            self.version = snapshot.version;
            self.hash.clone_from(&snapshot.hash);
            self.by_key.clear();
            self.mcp.clear();
        }
    }
}

#[derive(Clone, Copy, Hash, PartialEq, Eq)]
struct SeriesKey {
    route: Option<RouteIdx>,
    model: Option<u32>,
    provider: Option<ProviderIdx>,
    status: u16,
}

struct Series {
    requests: Counter,
    duration: Histogram,
    /// Made on the first streamed call, so that routes without streams export no empty histogram.
    ttft: Option<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        Self::with_label_cap(DEFAULT_LABEL_CAP)
    }

    /// Registers every metric, with at most `label_cap` distinct routes and consumers (each) on the
    /// token and cost counters.
    pub fn with_label_cap(label_cap: usize) -> Self {
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
            "Time from the request's arrival to the first streamed chunk of a provider's answer (streams replayed from the cache are not observed)",
            Unit::Seconds,
            ttft.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tollgate_tokens",
            "Tokens used, by direction (input = prompt, output = completion), route and consumer (past the label cap, _other)",
            tokens.clone(),
        );
        let cost = Family::<UsageLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "tollgate_cost_usd",
            "Cost of answered calls in US dollars, from snapshot prices, by route and consumer (past the label cap, _other)",
            cost.clone(),
        );
        let folded = Family::<LabelName, Counter>::default();
        registry.register(
            "tollgate_metric_label_folded",
            "Route or consumer values counted as _other on the token and cost counters because they came past the label cap (once per value and configuration)",
            folded.clone(),
        );
        let cap = |name| LabelCap {
            name,
            cap: label_cap,
            admitted: FxHashSet::default(),
            folded: folded.get_or_create_owned(&LabelName { label: name }),
        };
        let caps = Mutex::new((cap("route"), cap("consumer")));
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
        let cache = CacheMetrics::register(&mut registry);
        let trace = TraceCounters::register(&mut registry);
        let otlp = OtlpCounters::register(&mut registry);
        let guardrails = Family::<GuardrailLabels, Counter>::default();
        registry.register(
            "tollgate_guardrail_decisions",
            "Guardrail rules that matched a call, by rule and action (mask, reject, monitor)",
            guardrails.clone(),
        );
        let mcp = Family::<McpLabel, Counter>::default();
        registry.register(
            "tollgate_mcp_calls",
            "MCP JSON-RPC calls, by route, method and outcome (ok, tool_error, refused, invalid, error)",
            mcp.clone(),
        );
        Self {
            mcp,
            cache,
            trace,
            otlp,
            guardrails,
            series: Mutex::default(),
            traffic,
            registry,
            requests,
            duration,
            ttft,
            tokens,
            cost,
            caps,
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
        let key = SeriesKey {
            route: s.series.as_ref().map(|x| x.route),
            model: s.series.as_ref().and_then(|x| x.model),
            provider: s.series.as_ref().and_then(|x| x.provider),
            status: s.status,
        };
        let mut cache = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(x) = &s.series {
            cache.follow(x.snapshot);
        }
        let series = cache
            .by_key
            .entry(key)
            .or_insert_with(|| self.series_of(s.series.as_ref(), s.status));
        series.requests.inc();
        series.duration.observe(s.duration_s);
        if let Some(ttft) = s.ttft_s {
            series
                .ttft
                .get_or_insert_with(|| {
                    self.ttft.get_or_create_owned(&RouteLabel {
                        route: route_label(s.series.as_ref()),
                    })
                })
                .observe(ttft);
        }
        if s.input_tokens == 0 && s.output_tokens == 0 && s.cost_usd <= 0.0 {
            return;
        }
        let usage = cache
            .usage
            .entry((key.route, s.consumer))
            .or_insert_with(|| self.usage_of(s.series.as_ref(), s.consumer))
            .clone();
        drop(cache);
        if s.input_tokens > 0 {
            usage.input.inc_by(s.input_tokens);
        }
        if s.output_tokens > 0 {
            usage.output.inc_by(s.output_tokens);
        }
        if s.cost_usd > 0.0 {
            usage.cost.inc_by(s.cost_usd);
        }
    }

    /// The token and cost counters of a call's route and consumer (once per snapshot and pair), their
    /// values admitted by the label caps.
    fn usage_of(&self, of: Option<&SeriesOf<'_>>, consumer: Option<ConsumerIdx>) -> UsageSeries {
        let consumer = of
            .zip(consumer)
            .and_then(|(x, c)| Some(x.snapshot.content.consumers.get(c as usize)?.id.to_string()))
            .unwrap_or_default();
        let (route, consumer) = {
            let mut caps = self.caps.lock().unwrap_or_else(|e| e.into_inner());
            (caps.0.admit(route_label(of)), caps.1.admit(consumer))
        };
        let tokens = |direction| TokenLabels {
            direction,
            route: route.clone(),
            consumer: consumer.clone(),
        };
        UsageSeries {
            input: self.tokens.get_or_create_owned(&tokens("input")),
            output: self.tokens.get_or_create_owned(&tokens("output")),
            cost: self.cost.get_or_create_owned(&UsageLabels {
                route: route.clone(),
                consumer: consumer.clone(),
            }),
        }
    }

    /// The handles for a label combination not seen yet with this snapshot.
    fn series_of(&self, of: Option<&SeriesOf<'_>>, status: u16) -> Series {
        let route = route_label(of);
        let model = of
            .and_then(|x| {
                let models = &x.snapshot.content.routes.get(x.route as usize)?.models;
                Some(models.get(x.model? as usize)?.name.to_string())
            })
            .unwrap_or_default();
        let provider = of
            .and_then(|x| {
                Some(
                    x.snapshot
                        .content
                        .providers
                        .get(x.provider? as usize)?
                        .id
                        .to_string(),
                )
            })
            .unwrap_or_default();
        let requests = self.requests.get_or_create_owned(&RequestLabels {
            route: route.clone(),
            model,
            provider,
            status,
        });
        let duration = self.duration.get_or_create_owned(&RouteLabel { route });
        Series {
            requests,
            duration,
            ttft: None,
        }
    }

    /// A configuration change was applied or refused.
    pub fn reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "refused" };
        self.reloads.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// A limit or budget refused a call (`requests`, `tokens` or `budget`).
    pub fn limit_refused(&self, reason: &'static str, scope: &'static str) {
        self.traffic
            .refused
            .get_or_create(&RefusalLabels { reason, scope })
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

    /// One MCP JSON-RPC call on the route `at` (labelled `namespace/name`; empty when none) ended
    /// with `outcome`. The counter is found once per snapshot, route, method and outcome.
    pub fn mcp_call(
        &self,
        at: Option<(&Snapshot, RouteIdx)>,
        method: &'static str,
        outcome: &'static str,
    ) {
        let mut cache = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((snapshot, _)) = at {
            cache.follow(snapshot);
        }
        let route = at.map(|(_, r)| r);
        cache
            .mcp
            .entry((route, method, outcome))
            .or_insert_with(|| {
                let route = at
                    .and_then(|(s, r)| Some(s.content.routes.get(r as usize)?.id.to_string()))
                    .unwrap_or_default();
                self.mcp.get_or_create_owned(&McpLabel {
                    route,
                    method,
                    outcome,
                })
            })
            .inc();
    }

    /// A retry was not made: the route's retry budget was spent.
    pub fn retry_denied(&self) {
        self.traffic.retries_denied.inc();
    }

    /// A cache lookup of a model call: `hit`, `miss` or `bypass`.
    pub fn cache_lookup(&self, result: &'static str) {
        self.cache
            .lookups
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// A Redis cache `get` or `set` failed, or was skipped while Redis was down.
    pub fn cache_store_error(&self, op: &'static str) {
        self.cache.store_errors.get_or_create(&OpLabel { op }).inc();
    }

    /// The local cache now holds `entries` entries of `bytes` bytes, after evicting `evicted`.
    pub fn cache_held(&self, entries: usize, bytes: usize, evicted: u64) {
        self.cache.entries.set(entries as i64);
        self.cache.bytes.set(bytes as i64);
        if evicted > 0 {
            self.cache.evictions.inc_by(evicted);
        }
    }

    /// A hit saved a provider these tokens, and this many USD.
    pub fn cache_saved(&self, tokens: u64, cost_usd: f64) {
        self.cache.saved_tokens.inc_by(tokens);
        if cost_usd > 0.0 {
            self.cache.saved_cost.inc_by(cost_usd);
        }
    }

    /// A guardrail rule matched a call (once per call and rule): `action` is `mask`, `reject` or
    /// `monitor`.
    pub fn guardrail_decision(&self, rule: &Arc<str>, action: &'static str) {
        let mut cache = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, counter)) = cache
            .guardrails
            .iter()
            .find(|(r, a, _)| Arc::ptr_eq(r, rule) && *a == action)
        {
            counter.inc();
            return;
        }
        let counter = self
            .guardrails
            .get_or_create(&GuardrailLabels {
                rule: Arc::clone(rule),
                action,
            })
            .clone();
        counter.inc();
        if cache.guardrails.len() == GUARDRAIL_SERIES {
            cache.guardrails.clear();
        }
        cache.guardrails.push((Arc::clone(rule), action, counter));
    }

    /// An access-log line was dropped: its writer is behind.
    pub fn access_log_dropped(&self) {
        self.traffic.access_log_dropped.inc();
    }

    /// The trace exporter's counters.
    pub fn trace_counters(&self) -> TraceCounters {
        self.trace.clone()
    }

    /// The counters the OTLP metrics and logs exporters add to.
    pub fn otlp_counters(&self) -> OtlpCounters {
        self.otlp.clone()
    }

    /// The text exposition, with the snapshot gauges set first from the served snapshot's version
    /// and its age in seconds (zero for both before the first snapshot).
    pub fn encode(&self, snapshot_version: Option<u64>, snapshot_age_s: Option<f64>) -> String {
        self.snapshot_version
            .set(snapshot_version.map(|v| v as i64).unwrap_or(0));
        self.snapshot_age.set(snapshot_age_s.unwrap_or(0.0));
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_snapshot::{
        Approval, Budget, Consumer, Content, Limits, ObjectRef, RetryBudget, Route, Stage,
    };

    fn snapshot(consumers: usize) -> Snapshot {
        let content = Content {
            routes: vec![Route {
                id: ObjectRef::new("team-a", "chat"),
                uid: String::new(),
                prefix: "/chat".into(),
                hostnames: vec![],
                stage: Stage::Published,
                sunset_unix: None,
                deprecation_unix: None,
                models: vec![],
                limits: Limits::default(),
                total_limits: Limits::default(),
                approval: Approval::Automatic,
                budget: Budget::default(),
                retry_budget: RetryBudget::default(),
                description: None,
                prompts: vec![],
                cache: None,
                rest: None,
                guardrails: Default::default(),
                mcp_servers: Vec::new(),
                capture_content: None,
            }],
            consumers: (0..consumers)
                .map(|i| Consumer {
                    id: ObjectRef::new("team-a", format!("app-{i}").as_str()),
                    uid: String::new(),
                    keys: vec![],
                    limits: Default::default(),
                    budget: Default::default(),
                    guardrails: Default::default(),
                })
                .collect(),
            ..Content::default()
        };
        Snapshot::from_content(1, content)
    }

    fn call(snapshot: &Snapshot, consumer: u32) -> CallSample<'_> {
        CallSample {
            series: Some(SeriesOf {
                snapshot,
                route: 0,
                model: None,
                provider: None,
            }),
            status: 200,
            duration_s: 0.1,
            ttft_s: None,
            input_tokens: 10,
            output_tokens: 1,
            cost_usd: 0.5,
            consumer: Some(consumer),
        }
    }

    #[test]
    fn consumers_past_the_cap_are_folded_into_one_value_and_counted() {
        let metrics = Metrics::with_label_cap(3);
        let snapshot = snapshot(5);
        for c in 0..5 {
            metrics.call_finished(&call(&snapshot, c));
        }
        // A folded consumer's later calls add to the same folded series.
        metrics.call_finished(&call(&snapshot, 4));
        let text = metrics.encode(None, None);
        for c in 0..3 {
            let want = format!(
                "tollgate_tokens_total{{direction=\"input\",route=\"team-a/chat\",consumer=\"team-a/app-{c}\"}} 10"
            );
            assert!(text.contains(&want), "{want} in\n{text}");
        }
        for c in 3..5 {
            assert!(!text.contains(&format!("team-a/app-{c}")), "{text}");
        }
        assert!(
            text.contains(
                "tollgate_tokens_total{direction=\"input\",route=\"team-a/chat\",consumer=\"_other\"} 30"
            ),
            "{text}"
        );
        assert!(
            text.contains("tollgate_cost_usd_total{route=\"team-a/chat\",consumer=\"_other\"} 1.5"),
            "{text}"
        );
        // Two consumers came past the cap, each once per snapshot.
        assert!(
            text.contains("tollgate_metric_label_folded_total{label=\"consumer\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tollgate_metric_label_folded_total{label=\"route\"} 0"),
            "{text}"
        );
    }

    /// Decisions are counted by the rule's name as text, however many copies of the name there are
    /// (each snapshot has its own), past the cache's size too.
    #[test]
    fn guardrail_decisions_are_counted_by_rule_name_and_action() {
        let metrics = Metrics::new();
        let emails: Arc<str> = Arc::from("emails");
        let again: Arc<str> = Arc::from("emails");
        metrics.guardrail_decision(&emails, "mask");
        metrics.guardrail_decision(&emails, "mask");
        metrics.guardrail_decision(&again, "mask");
        metrics.guardrail_decision(&emails, "monitor");
        for i in 0..GUARDRAIL_SERIES + 3 {
            metrics.guardrail_decision(
                &Arc::from(format!("rule-{}", i % (GUARDRAIL_SERIES + 1))),
                "reject",
            );
        }
        metrics.guardrail_decision(&again, "mask");
        let text = metrics.encode(None, None);
        for (series, count) in [
            ("rule=\"emails\",action=\"mask\"", 4),
            ("rule=\"emails\",action=\"monitor\"", 1),
            ("rule=\"rule-0\",action=\"reject\"", 2),
            ("rule=\"rule-3\",action=\"reject\"", 1),
        ] {
            let line = format!("tollgate_guardrail_decisions_total{{{series}}} {count}\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
    }
}
