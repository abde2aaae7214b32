//! Usage roll-up: proxies report per-subscription deltas; the leader adds them to
//! `ApiSubscription.status.usage` (the current month's totals and the day and month history kept by
//! [`history`]), and adds the subscriptions up into their route's and consumer's `status.usage`.
//!
//! **How counts travel**: a proxy sends its deltas every few seconds and keeps them until a replica
//! accepts them; only the leader accepts (others answer 503). The leader files accepted deltas under the
//! UTC day it accepted them, and writes them every `--usage-flush`.
//!
//! **Leader changes**: the buckets live in the object's status in etcd, so a new leader knows exactly
//! what the old one wrote, and adds on top. Every write is a read-modify-write guarded by the object's
//! `resourceVersion` (two writers can only add to each other's work, never overwrite it) and carries the
//! batch's `(replica, seq)` mark, so a batch retried after a lost answer is not added twice (see
//! [`history`]). A replica that stops leading still writes what it accepted while it led, so a leader
//! change loses nothing it accepted. What is lost: a proxy's deltas not yet sent when it died, and a
//! leader's accepted deltas not yet written when it died without shutting down (at most one flush
//! interval). What may count twice: a report whose answer the proxy never got though the leader took it
//! (the proxy resends it; reports carry no id yet).
//!
//! Route and consumer totals are recomputed from their subscriptions' stored histories (not added), so
//! they are right whoever computes them; a deleted subscription's history leaves them.

pub mod history;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::jiff::{Timestamp, civil::Date};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use tokio::sync::watch;
use tollgate_crds::{AIRoute, ApiSubscription, Consumer, Usage};
use tollgate_snapshot::ObjectRef;
use tollgate_snapshot::wire::UsageReport;

use crate::{
    metrics::Metrics,
    store::{Store, Tables},
};
use history::Amount;

/// A proxy not heard from for this long no longer counts among the replicas sharing the traffic
/// (proxies report every few seconds, idle or not).
pub const PROXY_LIVENESS: Duration = Duration::from_secs(20);

/// Amounts of one subscription, per UTC day of acceptance, marked with the replica's batch number.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// This replica's number for the batch; a retry keeps it.
    pub seq: i64,
    /// Amounts per day.
    pub days: BTreeMap<Date, Amount>,
}

impl Batch {
    fn entries(&self) -> Vec<(Date, Amount)> {
        self.days.iter().map(|(d, a)| (*d, *a)).collect()
    }
}

/// Deltas accepted and not yet written, batches whose write is in doubt, and the proxies heard from.
#[derive(Debug)]
pub struct Ledger {
    pending: Mutex<HashMap<ObjectRef, BTreeMap<Date, Amount>>>,
    in_doubt: Mutex<HashMap<ObjectRef, Batch>>,
    next_seq: AtomicI64,
    proxies: Mutex<HashMap<String, std::time::Instant>>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            in_doubt: Mutex::default(),
            // Batch numbers start at the process's start in microseconds, so a replica restarted under
            // the same name never reuses one it wrote before.
            next_seq: AtomicI64::new(Timestamp::now().as_microsecond()),
            proxies: Mutex::default(),
        }
    }
}

impl Ledger {
    /// Adds a report's deltas under today's UTC date. Negative or non-finite costs are ignored.
    pub fn add(&self, report: &UsageReport) {
        self.add_on(report, history::today(Timestamp::now()));
    }

    /// Adds a report's deltas under `day`.
    pub fn add_on(&self, report: &UsageReport, day: Date) {
        if let Some(proxy) = &report.proxy {
            self.proxies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(proxy.clone(), std::time::Instant::now());
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for d in &report.deltas {
            let cost_usd = if d.cost_usd.is_finite() && d.cost_usd > 0.0 {
                d.cost_usd
            } else {
                0.0
            };
            pending
                .entry(ObjectRef::new(d.namespace.clone(), d.name.clone()))
                .or_default()
                .entry(day)
                .or_default()
                .add(&Amount {
                    requests: d.requests,
                    input_tokens: d.input_tokens,
                    output_tokens: d.output_tokens,
                    cost_micros: (cost_usd * 1e6).round() as i64,
                });
        }
    }

    /// Proxies that reported within `within` (forgetting the others): the replicas sharing the traffic.
    pub fn live_proxies(&self, within: Duration) -> u32 {
        let mut proxies = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        proxies.retain(|_, at| at.elapsed() <= within);
        u32::try_from(proxies.len()).unwrap_or(u32::MAX)
    }

    /// The batches to write now: each batch in doubt as it was (same seq), and a new batch for every
    /// other subscription with pending deltas. A subscription's new deltas wait while a batch of it is
    /// in doubt, so its batches are written in order.
    pub fn batches(&self) -> Vec<(ObjectRef, Batch)> {
        let mut out = std::mem::take(&mut *self.in_doubt.lock().unwrap_or_else(|p| p.into_inner()));
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let ready: Vec<ObjectRef> = pending
            .keys()
            .filter(|id| !out.contains_key(*id))
            .cloned()
            .collect();
        for id in ready {
            if let Some(days) = pending.remove(&id) {
                let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                out.insert(id, Batch { seq, days });
            }
        }
        out.into_iter().collect()
    }

    /// Keeps a batch whose write failed or whose answer was lost, to retry it with the same seq.
    pub fn in_doubt(&self, id: ObjectRef, batch: Batch) {
        self.in_doubt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, batch);
    }
}

/// The start of the usage window containing `now`: the first instant of its UTC calendar month.
pub fn window_start(now: Timestamp) -> Timestamp {
    history::Month::of(history::today(now)).start()
}

/// Writes accepted deltas every `every`, and (while leading) the route and consumer totals.
#[allow(clippy::too_many_arguments)]
pub async fn flush_loop(
    client: Client,
    store: Arc<Store>,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    identity: String,
    leader: watch::Receiver<bool>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(every) => false,
            _ = crate::shutdown::stopping(&mut shutdown) => true,
        };
        // Only a leader accepts reports, but what this replica accepted is written even once it no
        // longer leads: the resourceVersion guard and the batch marks keep that safe beside the new
        // leader's writes, and dropping it would lose counts.
        flush(&client, &store, &ledger, &metrics, &identity).await;
        if *leader.borrow() && !stop {
            write_totals(&client, &store, &metrics).await;
        }
        if stop {
            return;
        }
    }
}

async fn flush(client: &Client, store: &Store, ledger: &Ledger, metrics: &Metrics, writer: &str) {
    let today = history::today(Timestamp::now());
    for (id, batch) in ledger.batches() {
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
        if history::applied(current.as_ref(), writer, batch.seq) {
            // An earlier try landed though its answer was lost.
            continue;
        }
        let usage = history::add(current.as_ref(), &batch.entries(), writer, batch.seq, today);
        // The resourceVersion makes the write fail if our copy is stale, rather than lose counts.
        let patch = json!({
            "metadata": { "resourceVersion": resource_version },
            "status": { "usage": usage_patch(&usage) },
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
                ledger.in_doubt(id, batch);
            }
        }
    }
}

async fn patch_status<K>(client: &Client, id: &ObjectRef, patch: &Patch<Value>) -> kube::Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), &id.namespace)
        .patch_status(&id.name, &PatchParams::default(), patch)
        .await
        .map(drop)
}

/// `usage` as a merge patch: lists it leaves out (empty) are removed rather than left as they were.
fn usage_patch(usage: &Usage) -> serde_json::Value {
    let mut value = serde_json::to_value(usage).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        for list in ["days", "months", "writes"] {
            fields.entry(list).or_insert(serde_json::Value::Null);
        }
    }
    value
}

/// A kind whose status carries a usage history.
pub trait WithUsage {
    /// Its `status.usage`.
    fn usage(&self) -> Option<&Usage>;
}

impl WithUsage for ApiSubscription {
    fn usage(&self) -> Option<&Usage> {
        self.status.as_ref()?.usage.as_ref()
    }
}

impl WithUsage for AIRoute {
    fn usage(&self) -> Option<&Usage> {
        self.status.as_ref()?.usage.as_ref()
    }
}

impl WithUsage for Consumer {
    fn usage(&self) -> Option<&Usage> {
        self.status.as_ref()?.usage.as_ref()
    }
}

/// Which kind a total is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// An `AIRoute`: all subscriptions to it.
    Route,
    /// A `Consumer`: all its subscriptions.
    Consumer,
}

/// The objects totals are computed from, copied out of the store (the maps hold `Arc`s) so the lock
/// is held only for the copy.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Every subscription.
    pub subscriptions: BTreeMap<ObjectRef, Arc<ApiSubscription>>,
    /// Every route.
    pub routes: BTreeMap<ObjectRef, Arc<AIRoute>>,
    /// Every consumer.
    pub consumers: BTreeMap<ObjectRef, Arc<Consumer>>,
}

impl Objects {
    /// Copies the store's maps.
    pub fn of(tables: &Tables) -> Self {
        Self {
            subscriptions: tables.subscriptions.objects.clone(),
            routes: tables.routes.objects.clone(),
            consumers: tables.consumers.objects.clone(),
        }
    }
}

/// Route and consumer totals that differ from what their status holds: `(owner, object, usage)`.
pub fn stale_totals(objects: &Objects, today: Date) -> Vec<(Owner, ObjectRef, Usage)> {
    let mut routes: BTreeMap<ObjectRef, Vec<&Usage>> = BTreeMap::new();
    let mut consumers: BTreeMap<ObjectRef, Vec<&Usage>> = BTreeMap::new();
    for (id, sub) in &objects.subscriptions {
        let Some(usage) = sub.status.as_ref().and_then(|s| s.usage.as_ref()) else {
            continue;
        };
        let route_ns = sub
            .spec
            .route
            .namespace
            .clone()
            .unwrap_or_else(|| id.namespace.to_string());
        routes
            .entry(ObjectRef::new(route_ns, sub.spec.route.name.clone()))
            .or_default()
            .push(usage);
        consumers
            .entry(ObjectRef::new(
                id.namespace.clone(),
                sub.spec.consumer.clone(),
            ))
            .or_default()
            .push(usage);
    }
    let mut out = Vec::new();
    stale_of(Owner::Route, routes, &objects.routes, today, &mut out);
    stale_of(
        Owner::Consumer,
        consumers,
        &objects.consumers,
        today,
        &mut out,
    );
    out
}

/// Adds to `out` the objects (that exist) whose total of `sums` differs from their status.
fn stale_of<K: WithUsage>(
    owner: Owner,
    sums: BTreeMap<ObjectRef, Vec<&Usage>>,
    objects: &BTreeMap<ObjectRef, Arc<K>>,
    today: Date,
    out: &mut Vec<(Owner, ObjectRef, Usage)>,
) {
    for (id, usages) in sums {
        let Some(object) = objects.get(&id) else {
            continue;
        };
        if let Some(want) = history::total(usages, today)
            && object.usage() != Some(&want)
        {
            out.push((owner, id, want));
        }
    }
}

async fn write_totals(client: &Client, store: &Store, metrics: &Metrics) {
    let objects = Objects::of(&store.lock());
    let stale = stale_totals(&objects, history::today(Timestamp::now()));
    for (owner, id, usage) in stale {
        let patch = Patch::Merge(json!({ "status": { "usage": usage_patch(&usage) } }));
        let result = match owner {
            Owner::Route => patch_status::<AIRoute>(client, &id, &patch).await,
            Owner::Consumer => patch_status::<Consumer>(client, &id, &patch).await,
        };
        match result {
            Ok(()) => {
                metrics.status_writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(object = %id, ?owner, %error, "usage total write failed; retrying later");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tollgate_crds::{ApiSubscriptionSpec, ApiSubscriptionStatus, RouteRef};
    use tollgate_snapshot::wire::UsageDelta;

    use super::*;

    fn report(namespace: &str, name: &str, requests: u64) -> UsageReport {
        UsageReport {
            proxy: None,
            deltas: vec![UsageDelta {
                namespace: namespace.into(),
                name: name.into(),
                requests,
                input_tokens: 3,
                output_tokens: 4,
                cost_usd: 0.5,
            }],
        }
    }

    fn day(text: &str) -> Date {
        text.parse().unwrap()
    }

    #[test]
    fn the_window_is_the_utc_calendar_month() {
        let now: Timestamp = "2025-03-17T13:45:00Z".parse().unwrap();
        assert_eq!(window_start(now).to_string(), "2025-03-01T00:00:00Z");
    }

    #[test]
    fn the_ledger_merges_reports_per_subscription_and_day() {
        let ledger = Ledger::default();
        ledger.add_on(&report("t", "s", 1), day("2026-03-31"));
        ledger.add_on(&report("t", "s", 2), day("2026-03-31"));
        ledger.add_on(&report("t", "s", 4), day("2026-04-01"));
        let batches = ledger.batches();
        assert_eq!(batches.len(), 1);
        let (id, batch) = &batches[0];
        assert_eq!(id, &ObjectRef::new("t", "s"));
        assert_eq!(batch.days[&day("2026-03-31")].requests, 3);
        assert_eq!(batch.days[&day("2026-03-31")].cost_micros, 1_000_000);
        assert_eq!(batch.days[&day("2026-04-01")].requests, 4);
        assert!(ledger.batches().is_empty());
    }

    #[test]
    fn a_batch_in_doubt_is_retried_with_its_seq_and_new_deltas_wait_behind_it() {
        let ledger = Ledger::default();
        ledger.add_on(&report("t", "s", 1), day("2026-03-31"));
        let (id, first) = ledger.batches().remove(0);
        ledger.in_doubt(id.clone(), first.clone());
        ledger.add_on(&report("t", "s", 5), day("2026-03-31"));
        let retried = ledger.batches();
        assert_eq!(retried, vec![(id.clone(), first.clone())]);
        let (_, next) = ledger.batches().remove(0);
        assert!(next.seq > first.seq);
        assert_eq!(next.days[&day("2026-03-31")].requests, 5);
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

    fn subscription(namespace: &str, consumer: &str, route: &str, usage: Usage) -> ApiSubscription {
        let mut sub = ApiSubscription::new(
            consumer,
            ApiSubscriptionSpec {
                consumer: consumer.into(),
                route: RouteRef {
                    name: route.into(),
                    namespace: Some("apis".into()),
                },
                limits: None,
                budget: None,
                decision: None,
                decision_reason: None,
            },
        );
        sub.metadata.namespace = Some(namespace.into());
        sub.status = Some(ApiSubscriptionStatus {
            usage: Some(usage),
            ..ApiSubscriptionStatus::default()
        });
        sub
    }

    #[test]
    fn routes_and_consumers_get_their_subscriptions_totals_and_unchanged_ones_are_not_written() {
        let today = day("2026-03-20");
        let calls = |n| Amount {
            requests: n,
            ..Amount::default()
        };
        let mut tables = Tables::default();
        for (ns, consumer, n) in [("team-a", "app", 2), ("team-b", "app", 3)] {
            let usage = history::add(None, &[(today, calls(n))], "c-0", 1, today);
            let sub = subscription(ns, consumer, "chat", usage);
            tables
                .subscriptions
                .objects
                .insert(ObjectRef::new(ns, consumer), Arc::new(sub));
        }
        let mut route: AIRoute = serde_json::from_value(json!({
            "apiVersion": "tollgate.dev/v1alpha1",
            "kind": "AIRoute",
            "metadata": {"name": "chat", "namespace": "apis"},
            "spec": {"prefix": "/chat", "models": []},
        }))
        .unwrap();
        tables
            .routes
            .objects
            .insert(ObjectRef::new("apis", "chat"), Arc::new(route.clone()));
        let consumer: Consumer = serde_json::from_value(json!({
            "apiVersion": "tollgate.dev/v1alpha1",
            "kind": "Consumer",
            "metadata": {"name": "app", "namespace": "team-a"},
            "spec": {"keys": []},
        }))
        .unwrap();
        tables
            .consumers
            .objects
            .insert(ObjectRef::new("team-a", "app"), Arc::new(consumer));
        let stale = stale_totals(&Objects::of(&tables), today);
        let route_total = stale
            .iter()
            .find(|(o, _, _)| *o == Owner::Route)
            .map(|(_, _, u)| u.clone())
            .unwrap();
        assert_eq!(route_total.requests, 5);
        let consumer_total: Vec<_> = stale
            .iter()
            .filter(|(o, _, _)| *o == Owner::Consumer)
            .collect();
        assert_eq!(consumer_total.len(), 1, "team-b's consumer does not exist");
        assert_eq!(consumer_total[0].2.requests, 2);
        // Once written, the route is no longer stale.
        route.status = Some(tollgate_crds::AIRouteStatus {
            usage: Some(route_total),
            ..Default::default()
        });
        tables
            .routes
            .objects
            .insert(ObjectRef::new("apis", "chat"), Arc::new(route));
        assert!(
            stale_totals(&Objects::of(&tables), today)
                .iter()
                .all(|(o, _, _)| *o == Owner::Consumer)
        );
    }

    #[test]
    fn a_usage_patch_removes_lists_that_emptied() {
        let patch = usage_patch(&Usage::default());
        assert!(patch["days"].is_null() && patch.as_object().unwrap().contains_key("days"));
    }
}
