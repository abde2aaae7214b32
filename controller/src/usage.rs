//! Usage roll-up: proxies report per-subscription deltas; the leader adds them to
//! `ApiSubscription.status.usage` for the current window.
//!
//! **Window**: the current calendar month in UTC (`windowStart` is its first instant), the period cost
//! budgets and invoices use. The first write after a month turns starts again from zero.
//!
//! **Precision**: proxies send deltas every few seconds; the leader writes every `--usage-flush`. What a
//! proxy counted but had not sent when it died is lost (at most one report interval of its traffic), and
//! so is what the leader had accepted but not yet written when it died (at most one flush interval).
//! Non-leaders refuse reports with 503, and the proxy keeps the deltas and retries, so a report is only
//! counted once it is accepted. Deltas are attributed to the window in force when they are written, so
//! traffic in the last seconds of a month may count in the next. Cost is kept in micro-dollars.
//! Each write is guarded by the object's `resourceVersion`, so a stale read never double-counts.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{Timestamp, tz::TimeZone},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::sync::watch;
use tollgate_crds::{ApiSubscription, Usage};
use tollgate_snapshot::ObjectRef;
use tollgate_snapshot::wire::UsageReport;

use crate::{metrics::Metrics, store::Store};

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Pending {
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
}

impl Pending {
    fn add(&mut self, other: &Pending) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_usd += other.cost_usd;
    }
}

/// A proxy not heard from for this long no longer counts among the replicas sharing the traffic
/// (proxies report every few seconds, idle or not).
pub const PROXY_LIVENESS: Duration = Duration::from_secs(20);

/// Deltas accepted and not yet written, and the proxies heard from.
#[derive(Debug, Default)]
pub struct Ledger {
    pending: Mutex<HashMap<ObjectRef, Pending>>,
    proxies: Mutex<HashMap<String, std::time::Instant>>,
}

impl Ledger {
    /// Adds a report's deltas. Negative or non-finite costs are ignored.
    pub fn add(&self, report: &UsageReport) {
        if let Some(proxy) = &report.proxy {
            self.proxies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(proxy.clone(), std::time::Instant::now());
        }
        let mut pending = self.lock();
        for d in &report.deltas {
            let cost_usd = if d.cost_usd.is_finite() && d.cost_usd > 0.0 {
                d.cost_usd
            } else {
                0.0
            };
            pending
                .entry(ObjectRef::new(d.namespace.clone(), d.name.clone()))
                .or_default()
                .add(&Pending {
                    requests: d.requests,
                    input_tokens: d.input_tokens,
                    output_tokens: d.output_tokens,
                    cost_usd,
                });
        }
    }

    /// Proxies that reported within `within` (forgetting the others): the replicas sharing the traffic.
    pub fn live_proxies(&self, within: Duration) -> u32 {
        let mut proxies = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        proxies.retain(|_, at| at.elapsed() <= within);
        u32::try_from(proxies.len()).unwrap_or(u32::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self) -> HashMap<ObjectRef, Pending> {
        std::mem::take(&mut *self.lock())
    }

    fn put_back(&self, id: ObjectRef, amount: Pending) {
        self.lock().entry(id).or_default().add(&amount);
    }
}

/// The start of the usage window containing `now`: the first instant of its UTC calendar month.
pub fn window_start(now: Timestamp) -> Timestamp {
    now.to_zoned(TimeZone::UTC)
        .date()
        .first_of_month()
        .to_zoned(TimeZone::UTC)
        .map(|z| z.timestamp())
        .unwrap_or(now)
}

/// Parses `costUsd` (`"12.345678"`) into micro-dollars.
fn micros(cost: &str) -> i64 {
    let (whole, frac) = cost.split_once('.').unwrap_or((cost, ""));
    let whole: i64 = whole.parse().unwrap_or(0);
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    whole * 1_000_000 + frac.parse::<i64>().unwrap_or(0)
}

/// Formats micro-dollars as `costUsd`.
fn dollars(micros: i64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// `current` (if it belongs to the window starting at `start`) plus `add`.
fn sum(current: Option<&Usage>, start: Timestamp, add: &Pending) -> Usage {
    let base = current
        .filter(|u| u.window_start.as_ref().map(|t| t.0) == Some(start))
        .cloned()
        .unwrap_or_default();
    let input = base.input_tokens + add.input_tokens as i64;
    let output = base.output_tokens + add.output_tokens as i64;
    Usage {
        window_start: Some(Time(start)),
        requests: base.requests + add.requests as i64,
        input_tokens: input,
        output_tokens: output,
        total_tokens: input + output,
        cost_usd: dollars(micros(&base.cost_usd) + (add.cost_usd * 1e6).round() as i64),
    }
}

/// Writes accepted deltas every `every` while this replica leads.
pub async fn flush_loop(
    client: Client,
    store: Arc<Store>,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    leader: watch::Receiver<bool>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            _ = crate::shutdown::stopping(&mut shutdown) => true,
        };
        // Only a leader accepts reports, so what is left at shutdown was accepted while leading; the
        // resourceVersion guard keeps this last write safe even if another replica leads by now.
        if *leader.borrow() || stop {
            flush(&client, &store, &ledger, &metrics).await;
        }
        if stop {
            return;
        }
    }
}

async fn flush(client: &Client, store: &Store, ledger: &Ledger, metrics: &Metrics) {
    let start = window_start(Timestamp::now());
    for (id, amount) in ledger.take() {
        let found = store.lock().subscriptions.objects.get(&id).map(|s| {
            (
                s.metadata.resource_version.clone(),
                s.status.as_ref().and_then(|st| st.usage.clone()),
            )
        });
        let Some((resource_version, current)) = found else {
            tracing::debug!(subscription = %id, "dropping usage of an unknown subscription");
            continue;
        };
        let usage = sum(current.as_ref(), start, &amount);
        // The resourceVersion makes the write fail if our copy is stale, rather than lose counts.
        let patch = json!({
            "metadata": { "resourceVersion": resource_version },
            "status": { "usage": usage },
        });
        let api: Api<ApiSubscription> = Api::namespaced(client.clone(), &id.namespace);
        match api
            .patch_status(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                metrics.status_writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                if !matches!(&error, kube::Error::Api(e) if e.code == 409) {
                    tracing::warn!(subscription = %id, %error, "usage write failed; retrying later");
                }
                ledger.put_back(id, amount);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tollgate_snapshot::wire::UsageDelta;

    use super::*;

    #[test]
    fn the_window_is_the_utc_calendar_month() {
        let now: Timestamp = "2025-03-17T13:45:00Z".parse().unwrap();
        assert_eq!(window_start(now).to_string(), "2025-03-01T00:00:00Z");
    }

    #[test]
    fn cost_round_trips_in_micro_dollars() {
        assert_eq!(micros("12.345678"), 12_345_678);
        assert_eq!(micros("0.5"), 500_000);
        assert_eq!(micros(""), 0);
        assert_eq!(dollars(12_345_678), "12.345678");
        assert_eq!(dollars(42), "0.000042");
    }

    #[test]
    fn deltas_add_within_the_window_and_restart_in_a_new_one() {
        let march: Timestamp = "2025-03-01T00:00:00Z".parse().unwrap();
        let april: Timestamp = "2025-04-01T00:00:00Z".parse().unwrap();
        let add = Pending {
            requests: 2,
            input_tokens: 10,
            output_tokens: 24,
            cost_usd: 0.000058,
        };
        let first = sum(None, march, &add);
        let second = sum(Some(&first), march, &add);
        assert_eq!(second.requests, 4);
        assert_eq!(second.total_tokens, 68);
        assert_eq!(second.cost_usd, "0.000116");
        let next_month = sum(Some(&second), april, &add);
        assert_eq!(next_month.requests, 2);
    }

    #[test]
    fn the_ledger_merges_reports_per_subscription() {
        let ledger = Ledger::default();
        let delta = UsageDelta {
            namespace: "t".into(),
            name: "s".into(),
            requests: 1,
            input_tokens: 3,
            output_tokens: 4,
            cost_usd: 0.5,
        };
        ledger.add(&UsageReport {
            proxy: None,
            deltas: vec![delta.clone(), delta],
        });
        let taken = ledger.take();
        assert_eq!(taken[&ObjectRef::new("t", "s")].requests, 2);
        assert!(ledger.take().is_empty());
    }

    #[test]
    fn live_proxies_are_those_heard_from_lately() {
        let ledger = Ledger::default();
        for proxy in ["a-1", "b-1", "a-1"] {
            ledger.add(&UsageReport {
                proxy: Some(proxy.into()),
                deltas: vec![],
            });
        }
        ledger.add(&UsageReport::default());
        assert_eq!(ledger.live_proxies(Duration::from_secs(20)), 2);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(ledger.live_proxies(Duration::from_millis(1)), 0);
        assert_eq!(ledger.live_proxies(Duration::from_secs(20)), 0, "forgotten");
    }
}
