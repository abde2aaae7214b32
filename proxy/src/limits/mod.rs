//! Request and token limits and budgets, per subscription and per consumer, and route-wide totals.
//!
//! A call is admitted against every limited scope it belongs to (its subscription, its consumer and its
//! route's total) at once: if any scope refuses, none is charged. With Redis configured and reachable the counters are
//! cluster-wide ([`redis`]); otherwise each replica counts locally ([`local`]) against its share of
//! every ceiling — the ceiling divided by the replica count from the snapshot (or `--replicas`). When
//! Redis fails, calls fall back to local shares at once, the event is counted, and Redis is used again
//! as soon as it answers.
//!
//! Counters live outside the snapshot, keyed by the object's identity, so swaps keep them: its
//! `metadata.uid` in Redis (its `namespace/name` only when it has no uid, as standalone YAML may
//! omit it), and locally its `namespace/name` with the uid beside it, so that a subscription or consumer
//! deleted and created again under the same name starts from zero rather than inheriting its
//! predecessor's spend.
//!
//! A route's total is shared by every consumer, so in Redis it cannot live in the consumer's hash slot.
//! On a plain Redis one admission script still covers all three scopes; on a Redis in cluster mode the
//! route's is checked by a second script sent in the same pipeline (one round trip), and when one of
//! the two refuses, what the other charged is given back (see `Limiter::admit_redis`).

pub mod local;
pub mod redis;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tollgate_snapshot::FxHashMap;

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;
use tollgate_snapshot::{Budget, Consumer, Limits, ObjectRef, Route, Snapshot, Subscription};

use crate::clock;
use crate::error::ApiError;
use crate::telemetry::Recorder;
use local::{Ceilings, Counters, Exceeded, Gauges, Instant, Refusal};
use redis::{RedisCounters, RedisScope, SettledKey, Settlement};

/// How limits are counted. Its `Debug` shows no secret.
#[derive(Clone, Default)]
pub struct LimitsConfig {
    /// Redis URL for cluster-wide counting; `None` counts locally only. May carry a password.
    pub redis_url: Option<String>,
    /// ACL user, password and CA beyond the URL.
    pub redis_login: redis::RedisLogin,
    /// Longest wait for Redis before a call falls back to local shares.
    pub redis_timeout: Duration,
    /// Replica count for local shares, overriding the snapshot's (standalone mode).
    pub replicas: Option<u32>,
}

/// Counters by object, with the uid of the object they count for.
impl std::fmt::Debug for LimitsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitsConfig")
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("redis_login", &self.redis_login)
            .field("redis_timeout", &self.redis_timeout)
            .field("replicas", &self.replicas)
            .finish()
    }
}

/// Counters by object, with the uid of the object they count for.
type Table = RwLock<FxHashMap<ObjectRef, (Box<str>, Arc<Mutex<Counters>>)>>;

/// The process-wide limiter.
pub struct Limiter {
    subscriptions: Table,
    consumers: Table,
    routes: Table,
    redis: Option<Arc<RedisCounters>>,
    replicas: Option<u32>,
    recorder: Arc<Recorder>,
}

/// Which kind of object a scope is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScopeKind {
    Subscription,
    Consumer,
    /// A route's total for all its callers.
    Route,
}

impl ScopeKind {
    /// Whether the caller may see this scope's levels in its `x-ratelimit-*` headers: its own
    /// subscription's and consumer's, not the route's total, which counts every team's calls.
    fn tells_caller(self) -> bool {
        self != Self::Route
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Subscription => "subscription",
            Self::Consumer => "consumer",
            Self::Route => "route",
        }
    }
}

/// One limited object a call counts against.
struct Scope<'a> {
    kind: ScopeKind,
    id: &'a ObjectRef,
    /// `metadata.uid`, empty when unknown.
    uid: &'a str,
    ceilings: Ceilings,
}

fn ceilings(limits: &Limits, budget: &Budget) -> Ceilings {
    Ceilings {
        requests: limits.requests_per_minute.map(u64::from),
        tokens: limits.tokens_per_minute,
        daily_micro_usd: budget.daily_micro_usd,
        monthly_micro_usd: budget.monthly_micro_usd,
    }
}

/// The counters a call was admitted against, with the ceilings it was held to.
type Held = SmallVec<[(Arc<Mutex<Counters>>, Ceilings); 3]>;

/// How an admitted call is settled when it ends.
enum Settle {
    Local(Held),
    /// The keys of each hash slot the call was admitted in (its consumer's first, then its route's
    /// total when the route has one), and the reservation epoch.
    Redis(SmallVec<[KeyGroup; 2]>, i64),
}

/// The Redis keys of one hash slot that admitted a call.
struct KeyGroup {
    keys: Vec<SettledKey>,
    /// Whether the group holds spend (a route's total counts requests and tokens only).
    spends: bool,
}

impl KeyGroup {
    /// The group of `scopes`, whose keys it takes.
    fn of(scopes: impl Iterator<Item = RedisScope>, spends: bool) -> Self {
        let limit = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        Self {
            keys: scopes
                .map(|s| SettledKey {
                    tokens: limit(s.ceilings.tokens),
                    requests: limit(s.ceilings.requests),
                    key: s.key,
                })
                .collect(),
            spends,
        }
    }
}

/// An admitted call's claim on the limiter; [`Grant::settle`] it with the real usage.
pub struct Grant {
    limiter: Arc<Limiter>,
    estimate: u64,
    /// Budget held while the call runs (local counting; micro-dollars).
    reserved_micro_usd: u64,
    settle: Settle,
}

impl Grant {
    /// Replaces the token estimate with `tokens` really used and spends `cost_usd`.
    pub fn settle(self, tokens: u64, cost_usd: f64) {
        let cost = (cost_usd * 1_000_000.0).round().max(0.0) as u64;
        if tokens == self.estimate && cost == 0 && self.reserved_micro_usd == 0 {
            return;
        }
        let at = Instant::at(clock::now_unix_ms());
        match self.settle {
            Settle::Local(scopes) => {
                for (counters, c) in scopes {
                    let mut counters = counters.lock().expect("limit counters lock");
                    counters.release(&c, self.reserved_micro_usd);
                    counters.settle(&c, &at, self.estimate, tokens, cost);
                }
            }
            Settle::Redis(groups, reserved_in) => {
                if let Some(redis) = &self.limiter.redis {
                    for group in groups {
                        let spends = group.spends;
                        redis.settle(Settlement {
                            keys: group.keys,
                            give_back_request: false,
                            estimate: self.estimate,
                            used: tokens,
                            cost_micro_usd: if spends { cost } else { 0 },
                            reserved_micro_usd: if spends { self.reserved_micro_usd } else { 0 },
                            reserved_in,
                            day: at.day,
                            month: at.month,
                        });
                    }
                }
            }
        }
    }
}

/// The limit headers and retry hints a response carries.
#[derive(Clone, Copy, Debug, Default)]
pub struct RateNotes {
    /// `x-ratelimit-*` values.
    pub gauges: Gauges,
    /// `Retry-After` for a refusal.
    pub retry_after_ms: Option<u64>,
    /// Tell SDKs not to retry (a spent budget does not come back in seconds).
    pub do_not_retry: bool,
}

/// A call the limiter let through.
pub struct Admitted {
    /// Headers for the response.
    pub notes: RateNotes,
    /// To settle when the call ends.
    pub grant: Grant,
}

/// A call the limiter refused.
pub struct Refused {
    /// Headers for the 429.
    pub notes: RateNotes,
    /// The 429 itself.
    pub error: ApiError,
}

impl Limiter {
    /// A limiter; call [`Limiter::start`] inside the runtime to connect Redis. A Redis URL that does not
    /// parse is logged and counting stays local (the binary checks the URL before it gets here).
    pub fn new(config: &LimitsConfig, recorder: Arc<Recorder>) -> Self {
        let timeout = config.redis_timeout.max(Duration::from_millis(1));
        let redis = config.redis_url.as_deref().and_then(|url| {
            match RedisCounters::new(url, &config.redis_login, timeout) {
                Ok(r) => Some(Arc::new(r)),
                Err(error) => {
                    tracing::error!(%error, "the Redis URL is not valid: counting limits locally");
                    None
                }
            }
        });
        Self {
            subscriptions: RwLock::default(),
            consumers: RwLock::default(),
            routes: RwLock::default(),
            redis,
            replicas: config.replicas,
            recorder,
        }
    }

    /// The Redis connection keeper, when Redis is configured: the response cache shares it.
    pub fn redis_link(&self) -> Option<Arc<RedisCounters>> {
        self.redis.clone()
    }

    /// Starts the Redis connection keeper (no-op without Redis).
    pub fn start(&self) {
        if let Some(redis) = &self.redis {
            let recorder = self.recorder.clone();
            tokio::spawn(
                redis
                    .clone()
                    .maintain(Duration::from_millis(500), move |up| {
                        recorder.metrics.redis_up(up)
                    }),
            );
        }
    }

    /// Admits or refuses a call of `consumer` on `subscription` to `route` that is estimated at
    /// `tokens` tokens and could cost up to `cost_ceiling_usd`, which budgets hold for it until it is
    /// settled. `Ok(None)` when none of the three is limited (nothing is counted).
    pub async fn admit(
        self: &Arc<Self>,
        snapshot: &Snapshot,
        route: &Route,
        subscription: &Subscription,
        consumer: &Consumer,
        tokens: u64,
        cost_ceiling_usd: f64,
    ) -> Result<Option<Admitted>, Box<Refused>> {
        let mut scopes: [Option<Scope<'_>>; 3] = [None, None, None];
        let sub = ceilings(&subscription.limits, &subscription.budget);
        if !sub.is_unlimited() {
            scopes[0] = Some(Scope {
                kind: ScopeKind::Subscription,
                id: &subscription.id,
                uid: &subscription.uid,
                ceilings: sub,
            });
        }
        let con = ceilings(&consumer.limits, &consumer.budget);
        if !con.is_unlimited() {
            scopes[1] = Some(Scope {
                kind: ScopeKind::Consumer,
                id: &consumer.id,
                uid: &consumer.uid,
                ceilings: con,
            });
        }
        let total = ceilings(&route.total_limits, &Budget::default());
        if !total.is_unlimited() {
            scopes[2] = Some(Scope {
                kind: ScopeKind::Route,
                id: &route.id,
                uid: &route.uid,
                ceilings: total,
            });
        }
        if scopes.iter().all(Option::is_none) {
            return Ok(None);
        }
        // At most three scopes, in the order subscription, consumer, route: kept inline, like the
        // counters they lead to, with no allocation.
        let scopes: SmallVec<[Scope<'_>; 3]> = scopes.into_iter().flatten().collect();
        let reserve = (cost_ceiling_usd * 1_000_000.0).ceil().max(0.0) as u64;
        if let Some(redis) = &self.redis
            && redis.is_up()
        {
            match self
                .admit_redis(redis, &scopes, consumer, tokens, reserve)
                .await
            {
                Ok(decided) => return decided,
                Err(error) => {
                    if redis.mark_down() {
                        tracing::warn!(%error, "Redis failed: counting limits on this replica's share until it is back");
                        self.recorder.metrics.redis_fallback();
                        self.recorder.metrics.redis_up(false);
                    }
                }
            }
        }
        let replicas = self
            .replicas
            .unwrap_or(snapshot.content.proxy_replicas)
            .max(1);
        self.admit_local(&scopes, replicas, tokens, reserve)
    }

    /// The counters of `scope`'s object; fresh ones when the name now belongs to another object (a new
    /// uid: deleted and created again).
    fn counters(&self, scope: &Scope<'_>) -> Arc<Mutex<Counters>> {
        let table = match scope.kind {
            ScopeKind::Subscription => &self.subscriptions,
            ScopeKind::Consumer => &self.consumers,
            ScopeKind::Route => &self.routes,
        };
        if let Some((uid, c)) = table.read().expect("limit table lock").get(scope.id)
            && **uid == *scope.uid
        {
            return c.clone();
        }
        let mut table = table.write().expect("limit table lock");
        let entry = table.entry(scope.id.clone()).or_default();
        if *entry.0 != *scope.uid {
            *entry = (scope.uid.into(), Arc::default());
        }
        entry.1.clone()
    }

    fn admit_local(
        self: &Arc<Self>,
        scopes: &[Scope<'_>],
        replicas: u32,
        tokens: u64,
        reserve: u64,
    ) -> Result<Option<Admitted>, Box<Refused>> {
        let at = Instant::at(clock::now_unix_ms());
        let held: Held = scopes
            .iter()
            .map(|s| (self.counters(s), s.ceilings.share(replicas)))
            .collect();
        // Locks are always taken subscription first, then consumer, then route: no two calls wait on
        // each other.
        let mut guards: SmallVec<[_; 3]> = held
            .iter()
            .map(|(c, _)| c.lock().expect("limit counters lock"))
            .collect();
        let mut gauges = Gauges::default();
        for (i, (guard, (_, c))) in guards.iter().zip(&held).enumerate() {
            match guard.check_reserving(c, &at, tokens, reserve) {
                Ok(g) if scopes[i].kind.tells_caller() => gauges = gauges.merge(g),
                Ok(_) => {}
                Err(refusal) => {
                    // The caller's own scopes, as they stand without this call.
                    let own = (0..i)
                        .filter(|&j| scopes[j].kind.tells_caller())
                        .map(|j| guards[j].levels(&held[j].1, at.now_ms))
                        .fold(Gauges::default(), Gauges::merge);
                    return Err(Box::new(self.refused(&scopes[i], refusal, replicas, own)));
                }
            }
        }
        for (guard, (_, c)) in guards.iter_mut().zip(&held) {
            guard.commit(c, &at, tokens);
            guard.reserve(c, reserve);
        }
        drop(guards);
        Ok(Some(Admitted {
            notes: RateNotes {
                gauges,
                ..RateNotes::default()
            },
            grant: Grant {
                limiter: self.clone(),
                estimate: tokens,
                reserved_micro_usd: reserve,
                settle: Settle::Local(held),
            },
        }))
    }

    async fn admit_redis(
        self: &Arc<Self>,
        redis: &RedisCounters,
        scopes: &[Scope<'_>],
        consumer: &Consumer,
        tokens: u64,
        reserve: u64,
    ) -> Result<Result<Option<Admitted>, Box<Refused>>, redis::RedisError> {
        let at = Instant::at(clock::now_unix_ms());
        let keyed: SmallVec<[RedisScope; 3]> = scopes
            .iter()
            .map(|s| RedisScope {
                key: redis_key(s, consumer),
                ceilings: s.ceilings,
            })
            .collect();
        // The route's total (last when there is one) lies in a hash slot of its own, which only a
        // Redis in cluster mode keeps apart: there it gets a script call of its own.
        let own = scopes
            .iter()
            .position(|s| s.kind == ScopeKind::Route)
            .filter(|_| redis.is_cluster())
            .unwrap_or(scopes.len());
        let (mine, total) = keyed.split_at(own);
        let groups: SmallVec<[(&[RedisScope], usize); 2]> = [(mine, 0), (total, own)]
            .into_iter()
            .filter(|(g, _)| !g.is_empty())
            .collect();
        let slices: SmallVec<[&[RedisScope]; 2]> = groups.iter().map(|(g, _)| *g).collect();
        let decisions = redis
            .admit(&slices, tokens, reserve, at.day, at.month)
            .await?;
        let at = Instant {
            now_ms: decisions[0].now_ms,
            ..at
        };
        let epoch = decisions[0].now_ms.div_euclid(redis::RESERVATION_EPOCH_MS);
        let counters = || decisions.iter().flat_map(|d| &d.counters).zip(scopes);
        if let Some(g) = decisions.iter().position(|d| d.verdict != 0) {
            // What the groups that admitted the call charged is given back.
            for ((group, first), d) in groups.iter().zip(&decisions) {
                if d.verdict == 0 {
                    let spends = *first == 0 && scopes[0].kind != ScopeKind::Route;
                    let keys = group.iter().map(|s| RedisScope {
                        key: s.key.clone(),
                        ceilings: s.ceilings,
                    });
                    redis.settle(Settlement {
                        keys: KeyGroup::of(keys, spends).keys,
                        give_back_request: true,
                        estimate: tokens,
                        used: 0,
                        cost_micro_usd: 0,
                        reserved_micro_usd: if spends { reserve } else { 0 },
                        reserved_in: epoch,
                        day: at.day,
                        month: at.month,
                    });
                }
            }
            let d = &decisions[g];
            let within = d.scope.min(groups[g].0.len() - 1);
            let i = groups[g].1 + within;
            let refusal = d.counters[within]
                .check_reserving(&scopes[i].ceilings, &at, tokens, reserve)
                .err()
                .unwrap_or_else(|| rounding_refusal(d.verdict, &scopes[i].ceilings, tokens));
            // The caller's own scopes, as they stand without this call.
            let own = counters()
                .filter(|(_, s)| s.kind.tells_caller())
                .map(|(c, s)| c.levels(&s.ceilings, at.now_ms))
                .fold(Gauges::default(), Gauges::merge);
            return Ok(Err(Box::new(self.refused(&scopes[i], refusal, 1, own))));
        }
        let mut gauges = Gauges::default();
        for (counters, s) in counters() {
            if !s.kind.tells_caller() {
                continue;
            }
            let g = match counters.check(&s.ceilings, &at, tokens) {
                Ok(g) => g,
                Err(r) => r.gauges,
            };
            gauges = gauges.merge(g);
        }
        // The keys move into the settlement: one group per script call, in order.
        let shape: SmallVec<[(usize, usize); 2]> =
            groups.iter().map(|(g, first)| (g.len(), *first)).collect();
        drop((groups, slices));
        let mut keys = keyed.into_iter();
        let settle = shape
            .into_iter()
            .map(|(len, first)| {
                let spends = first == 0 && scopes[0].kind != ScopeKind::Route;
                KeyGroup::of(keys.by_ref().take(len), spends)
            })
            .collect();
        Ok(Ok(Some(Admitted {
            notes: RateNotes {
                gauges,
                ..RateNotes::default()
            },
            grant: Grant {
                limiter: self.clone(),
                estimate: tokens,
                reserved_micro_usd: reserve,
                settle: Settle::Redis(settle, epoch),
            },
        })))
    }

    /// The 429 for `scope`'s `refusal`; `own` holds the levels of the caller's own scopes checked
    /// before it, which a route's refusal shows instead of the route's.
    fn refused(&self, scope: &Scope<'_>, refusal: Refusal, replicas: u32, own: Gauges) -> Refused {
        let reason = match refusal.exceeded {
            Exceeded::Requests => "requests",
            Exceeded::Tokens => "tokens",
            Exceeded::DailyBudget | Exceeded::MonthlyBudget => "budget",
        };
        self.recorder
            .metrics
            .limit_refused(reason, scope.kind.as_str());
        Refused {
            notes: RateNotes {
                // A route's total is all its callers' traffic together: how much of it others used is
                // theirs to know, not this caller's, who sees its own subscription's and consumer's.
                gauges: if scope.kind.tells_caller() {
                    refusal.gauges
                } else {
                    own
                },
                retry_after_ms: Some(refusal.retry_after_ms),
                do_not_retry: reason == "budget",
            },
            error: refusal_error(scope.kind, scope.id, &refusal, replicas),
        }
    }
}

/// When Redis refused on a boundary the local arithmetic rounds the other way: a one-second wait.
fn rounding_refusal(verdict: i64, c: &Ceilings, tokens: u64) -> Refusal {
    let (exceeded, limit) = match verdict {
        1 => (Exceeded::Requests, c.requests),
        2 => (Exceeded::Tokens, c.tokens),
        3 => (Exceeded::DailyBudget, c.daily_micro_usd),
        _ => (Exceeded::MonthlyBudget, c.monthly_micro_usd),
    };
    let limit = limit.unwrap_or(0);
    Refusal {
        exceeded,
        limit,
        used: limit,
        requested: tokens,
        retry_after_ms: 1_000,
        gauges: Gauges::default(),
    }
}

/// The hash of one scope, named by the object's uid (`namespace/name` when it has none: a uid never
/// holds a `/`, so the two cannot meet). A subscription's and a consumer's key carry the consumer as
/// Redis Cluster hash tag (`{...}`): a subscription belongs to one consumer, so both lie in one slot
/// and one admission script covers them without CROSSSLOT. A route's total is every consumer's, so its
/// key is tagged by the route (`{r:...}`) and has a script call of its own.
fn redis_key(scope: &Scope<'_>, consumer: &Consumer) -> String {
    use std::fmt::Write;
    fn identity(out: &mut String, id: &ObjectRef, uid: &str) {
        let _ = if uid.is_empty() {
            write!(out, "{id}")
        } else {
            write!(out, "{uid}")
        };
    }
    let mut key = String::with_capacity(64);
    key.push_str("tollgate:limits:{");
    let kind = match scope.kind {
        ScopeKind::Route => {
            key.push_str("r:");
            identity(&mut key, scope.id, scope.uid);
            key.push_str("}:r");
            return key;
        }
        ScopeKind::Subscription => "}:s:",
        ScopeKind::Consumer => "}:c:",
    };
    identity(&mut key, &consumer.id, &consumer.uid);
    key.push_str(kind);
    identity(&mut key, scope.id, scope.uid);
    key
}

/// OpenAI's shape for a limit refusal: `type` names the dimension, `code` is `rate_limit_exceeded`
/// (or `budget_exceeded` for spend), and the message says what was used and when to retry — except
/// for a route's total, whose use is every caller's together: its message names the ceiling only.
fn refusal_error(kind: ScopeKind, id: &ObjectRef, r: &Refusal, replicas: u32) -> ApiError {
    let wait = format_duration(r.retry_after_ms);
    if kind == ScopeKind::Route {
        let (type_, per) = match r.exceeded {
            Exceeded::Tokens => ("tokens", "tokens per min (TPM)"),
            _ => ("requests", "requests per min (RPM)"),
        };
        let share = if replicas > 1 {
            format!(" (this gateway replica's share of it: 1/{replicas})")
        } else {
            String::new()
        };
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            type_,
            "rate_limit_exceeded",
            format!(
                "Rate limit reached for route {id}, shared by all its callers, on {per}: Limit {}{share}. Please try again in {wait}.",
                r.limit
            ),
        );
    }
    let kind = kind.as_str();
    let share = if replicas > 1 {
        format!(
            " (this gateway replica's share of it while cluster-wide counting is unavailable: 1/{replicas})"
        )
    } else {
        String::new()
    };
    let (type_, code, message) = match r.exceeded {
        Exceeded::Requests => (
            "requests",
            "rate_limit_exceeded",
            format!(
                "Rate limit reached for {kind} {id} on requests per min (RPM): Limit {}, Used {}, Requested 1{share}. Please try again in {wait}.",
                r.limit, r.used
            ),
        ),
        Exceeded::Tokens => (
            "tokens",
            "rate_limit_exceeded",
            format!(
                "Rate limit reached for {kind} {id} on tokens per min (TPM): Limit {}, Used {}, Requested {}{share}. Please try again in {wait}.",
                r.limit, r.used, r.requested
            ),
        ),
        Exceeded::DailyBudget | Exceeded::MonthlyBudget => {
            let period = if r.exceeded == Exceeded::DailyBudget {
                "daily"
            } else {
                "monthly"
            };
            (
                "insufficient_quota",
                "budget_exceeded",
                format!(
                    "The {period} budget of {kind} {id} is spent: USD {:.2} of USD {:.2}{share}. It resets in {wait}.",
                    r.used as f64 / 1e6,
                    r.limit as f64 / 1e6
                ),
            )
        }
    };
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, type_, code, message)
}

/// A duration as OpenAI writes `x-ratelimit-reset-*`: `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
pub fn format_duration(ms: u64) -> String {
    let mut out = String::with_capacity(16);
    write_duration(&mut out, ms);
    out
}

/// [`format_duration`] into `out`.
fn write_duration(out: &mut String, ms: u64) {
    let mut digits = itoa::Buffer::new();
    if ms < 1_000 {
        out.push_str(digits.format(ms));
        out.push_str("ms");
        return;
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    if h > 0 {
        out.push_str(digits.format(h));
        out.push('h');
    }
    if h > 0 || m > 0 {
        out.push_str(digits.format(m));
        out.push('m');
    }
    out.push_str(digits.format(rest / 1_000));
    let millis = rest % 1_000;
    if millis > 0 {
        out.push('.');
        out.push_str(&digits.format(1_000 + millis)[1..]);
        while out.ends_with('0') {
            out.pop();
        }
    }
    out.push('s');
}

const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

impl RateNotes {
    /// Writes the `x-ratelimit-*` headers (for each limited dimension) and any retry hints.
    pub fn write(&self, headers: &mut HeaderMap) {
        // Every value is written into one buffer and each header takes a slice of it: one allocation
        // for all of them instead of one per header (this runs on every call of a limited route).
        // Written out value by value: closures behind `dyn` and an array of optional names cost
        // more than the values themselves.
        let mut text = String::with_capacity(96);
        let mut digits = itoa::Buffer::new();
        let mut ends = [0usize; 8];
        let mut names = [RateHeader::LimitRequests; 8];
        let mut n = 0;
        let mut push = |text: &mut String, name: RateHeader| {
            names[n] = name;
            ends[n] = text.len();
            n += 1;
        };
        if let Some(g) = self.gauges.requests {
            text.push_str(digits.format(g.limit));
            push(&mut text, RateHeader::LimitRequests);
            text.push_str(digits.format(g.remaining));
            push(&mut text, RateHeader::RemainingRequests);
            write_duration(&mut text, g.reset_ms);
            push(&mut text, RateHeader::ResetRequests);
        }
        if let Some(g) = self.gauges.tokens {
            text.push_str(digits.format(g.limit));
            push(&mut text, RateHeader::LimitTokens);
            text.push_str(digits.format(g.remaining));
            push(&mut text, RateHeader::RemainingTokens);
            write_duration(&mut text, g.reset_ms);
            push(&mut text, RateHeader::ResetTokens);
        }
        if let Some(ms) = self.retry_after_ms {
            text.push_str(digits.format(ms.div_ceil(1_000).max(1)));
            push(&mut text, RateHeader::RetryAfter);
            text.push_str(digits.format(ms));
            push(&mut text, RateHeader::RetryAfterMs);
        }
        let text = bytes::Bytes::from(text);
        // Growing the answer's header map while inserting would rehash it more than once.
        headers.reserve(n + usize::from(self.do_not_retry));
        let mut start = 0;
        for (&name, &end) in names.iter().zip(&ends).take(n) {
            let v = HeaderValue::from_maybe_shared(text.slice(start..end))
                .expect("digits and duration units are a valid header value");
            headers.insert(name.header(), v);
            start = end;
        }
        if self.do_not_retry {
            headers.insert(SHOULD_RETRY, HeaderValue::from_static("false"));
        }
    }
}

/// The headers [`RateNotes::write`] writes values for.
#[derive(Clone, Copy)]
enum RateHeader {
    LimitRequests,
    RemainingRequests,
    ResetRequests,
    LimitTokens,
    RemainingTokens,
    ResetTokens,
    RetryAfter,
    RetryAfterMs,
}

impl RateHeader {
    fn header(self) -> HeaderName {
        match self {
            Self::LimitRequests => LIMIT_REQUESTS,
            Self::RemainingRequests => REMAINING_REQUESTS,
            Self::ResetRequests => RESET_REQUESTS,
            Self::LimitTokens => LIMIT_TOKENS,
            Self::RemainingTokens => REMAINING_TOKENS,
            Self::ResetTokens => RESET_TOKENS,
            Self::RetryAfter => http::header::RETRY_AFTER,
            Self::RetryAfterMs => RETRY_AFTER_MS,
        }
    }
}

/// The tokens a call is admitted on, before anyone has counted them: the prompt at about four bytes a
/// token of the body as read (chunked or not), plus the output ceiling the caller set
/// (`max_tokens` and the like), since the answer may use all of it. The real usage replaces the
/// estimate when the call is settled.
pub fn estimate_tokens(body_bytes: u64, max_output_tokens: Option<u64>) -> u64 {
    body_bytes
        .div_ceil(4)
        .saturating_add(max_output_tokens.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash tag of a key as Redis Cluster reads it: between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + 1 + key[open + 1..].find('}').unwrap();
        &key[open + 1..close]
    }

    fn consumer(name: &str, uid: &str) -> Consumer {
        Consumer {
            id: ObjectRef::new("team-a", name),
            uid: uid.into(),
            keys: Vec::new(),
            limits: Limits::default(),
            budget: Budget::default(),
            guardrails: Vec::new(),
        }
    }

    fn scope<'a>(kind: ScopeKind, id: &'a ObjectRef, uid: &'a str) -> Scope<'a> {
        Scope {
            kind,
            id,
            uid,
            ceilings: Ceilings::default(),
        }
    }

    #[test]
    fn every_key_of_one_call_lies_in_one_cluster_slot() {
        let app = consumer("app", "c0ffee00-0000-4000-8000-000000000001");
        let subscription = ObjectRef::new("team-a", "app-chat");
        let sub_uid = "5ab5c41b-0000-4000-8000-000000000002";
        let sub = redis_key(
            &scope(ScopeKind::Subscription, &subscription, sub_uid),
            &app,
        );
        let con = redis_key(&scope(ScopeKind::Consumer, &app.id, &app.uid), &app);
        assert_eq!(
            sub,
            "tollgate:limits:{c0ffee00-0000-4000-8000-000000000001}:s:5ab5c41b-0000-4000-8000-000000000002"
        );
        assert_eq!(
            con,
            "tollgate:limits:{c0ffee00-0000-4000-8000-000000000001}:c:c0ffee00-0000-4000-8000-000000000001"
        );
        assert_eq!(hash_tag(&sub), hash_tag(&con));
        // Other consumers' keys spread over other slots.
        let bot = consumer("bot", "b0700000-0000-4000-8000-000000000003");
        let other = redis_key(&scope(ScopeKind::Consumer, &bot.id, &bot.uid), &bot);
        assert_ne!(hash_tag(&other), hash_tag(&con));
    }

    #[test]
    fn a_routes_total_has_one_key_for_every_consumer_in_a_slot_of_its_own() {
        let route = ObjectRef::new("team-a", "chat");
        let route_uid = "7007e000-0000-4000-8000-000000000004";
        let app = consumer("app", "c0ffee00-0000-4000-8000-000000000001");
        let bot = consumer("bot", "b0700000-0000-4000-8000-000000000003");
        let total = scope(ScopeKind::Route, &route, route_uid);
        let of_app = redis_key(&total, &app);
        assert_eq!(of_app, redis_key(&total, &bot));
        assert_eq!(
            of_app,
            "tollgate:limits:{r:7007e000-0000-4000-8000-000000000004}:r"
        );
        let con = redis_key(&scope(ScopeKind::Consumer, &app.id, &app.uid), &app);
        assert_ne!(hash_tag(&of_app), hash_tag(&con));
        // Without a uid: by namespace/name, which a uid never looks like.
        assert_eq!(
            redis_key(&scope(ScopeKind::Route, &route, ""), &app),
            "tollgate:limits:{r:team-a/chat}:r"
        );
    }

    #[test]
    fn objects_without_a_uid_are_keyed_by_namespace_and_name() {
        let app = consumer("app", "");
        let subscription = ObjectRef::new("team-a", "app-chat");
        let sub = redis_key(&scope(ScopeKind::Subscription, &subscription, ""), &app);
        assert_eq!(sub, "tollgate:limits:{team-a/app}:s:team-a/app-chat");
        let con = redis_key(&scope(ScopeKind::Consumer, &app.id, ""), &app);
        assert_eq!(con, "tollgate:limits:{team-a/app}:c:team-a/app");
    }

    #[test]
    fn the_estimate_is_the_body_at_four_bytes_a_token_plus_the_output_ceiling() {
        assert_eq!(estimate_tokens(0, None), 0);
        assert_eq!(estimate_tokens(9, None), 3);
        assert_eq!(estimate_tokens(9, Some(1_000)), 1_003);
        assert_eq!(estimate_tokens(8, Some(u64::MAX)), u64::MAX);
    }

    #[test]
    fn durations_are_written_like_openai_does() {
        assert_eq!(format_duration(0), "0ms");
        assert_eq!(format_duration(20), "20ms");
        assert_eq!(format_duration(1_000), "1s");
        assert_eq!(format_duration(1_500), "1.5s");
        assert_eq!(format_duration(360_000), "6m0s");
        assert_eq!(format_duration(3_723_250), "1h2m3.25s");
        assert_eq!(format_duration(60_010), "1m0.01s");
        assert_eq!(format_duration(7_200_000), "2h0m0s");
    }

    #[test]
    fn refusals_have_openais_shape_and_words() {
        let id = ObjectRef::new("team-a", "app-chat");
        let r = Refusal {
            exceeded: Exceeded::Tokens,
            limit: 1000,
            used: 900,
            requested: 200,
            retry_after_ms: 6_000,
            gauges: Gauges::default(),
        };
        let e = refusal_error(ScopeKind::Subscription, &id, &r, 1);
        assert_eq!(
            (e.status.as_u16(), e.kind, e.code),
            (429, "tokens", "rate_limit_exceeded")
        );
        assert_eq!(
            e.message,
            "Rate limit reached for subscription team-a/app-chat on tokens per min (TPM): Limit 1000, Used 900, Requested 200. Please try again in 6s."
        );
        let budget = Refusal {
            exceeded: Exceeded::MonthlyBudget,
            limit: 5_000_000,
            used: 5_000_100,
            requested: 0,
            retry_after_ms: 86_400_000,
            gauges: Gauges::default(),
        };
        let e = refusal_error(ScopeKind::Consumer, &id, &budget, 2);
        assert_eq!((e.kind, e.code), ("insufficient_quota", "budget_exceeded"));
        assert!(e.message.contains("USD 5.00 of USD 5.00"), "{}", e.message);
        assert!(e.message.contains("1/2"), "{}", e.message);
        let mut headers = HeaderMap::new();
        RateNotes {
            gauges: Gauges {
                requests: Some(local::Gauge {
                    limit: 60,
                    remaining: 0,
                    reset_ms: 60_000,
                }),
                tokens: None,
            },
            retry_after_ms: Some(1_200),
            do_not_retry: true,
        }
        .write(&mut headers);
        assert_eq!(headers["x-ratelimit-limit-requests"], "60");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
        assert_eq!(headers["x-ratelimit-reset-requests"], "1m0s");
        assert_eq!(headers["retry-after"], "2");
        assert_eq!(headers["retry-after-ms"], "1200");
        assert_eq!(headers["x-should-retry"], "false");
        assert!(headers.get("x-ratelimit-limit-tokens").is_none());
    }

    #[test]
    fn rate_headers_of_both_dimensions_replace_any_already_there() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from_static("stale"),
        );
        headers.insert("x-upstream", HeaderValue::from_static("kept"));
        RateNotes {
            gauges: Gauges {
                requests: Some(local::Gauge {
                    limit: 100_000_000,
                    remaining: 99_999_999,
                    reset_ms: 1,
                }),
                tokens: Some(local::Gauge {
                    limit: 1_000_000_000_000,
                    remaining: 0,
                    reset_ms: 3_723_450,
                }),
            },
            retry_after_ms: None,
            do_not_retry: false,
        }
        .write(&mut headers);
        let written: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            written,
            [
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-upstream", "kept"),
                ("x-ratelimit-limit-requests", "100000000"),
                ("x-ratelimit-remaining-requests", "99999999"),
                ("x-ratelimit-reset-requests", "1ms"),
                ("x-ratelimit-limit-tokens", "1000000000000"),
                ("x-ratelimit-reset-tokens", "1h2m3.45s"),
            ]
        );
    }
}
