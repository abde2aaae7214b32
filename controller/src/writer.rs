//! The leader's writes: status patches computed by [`crate::status`], Events, and generated keys.
//!
//! One task, woken by new verdicts or by winning the Lease; it does nothing while this replica does
//! not lead. It always works from the latest verdicts, so a burst of compiles costs one pass.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::{
    api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde_json::Value;
use tokio::sync::watch;
use tollgate_crds::{AIGuardrail, AIRoute, ApiSubscription, Consumer, MCPServer, ModelProvider};
use tollgate_snapshot::{Kind, ObjectRef, Verdict};

use crate::{keys::KeyGenerator, metrics::Metrics, status, store::Store, trace::Traces};

/// Status patches in flight at once.
const PARALLEL_WRITES: usize = 16;
/// Pause after a wake-up, so a burst of watch events costs one pass.
const COALESCE: Duration = Duration::from_millis(20);
/// When a write failed, try again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// A resource with a status subresource.
pub trait HasStatus {
    /// The status type.
    type Status: serde::Serialize;
    /// The status, if set.
    fn status(&self) -> Option<&Self::Status>;
}

macro_rules! has_status {
    ($($kind:ty => $status:ty),*) => {$(
        impl HasStatus for $kind {
            type Status = $status;
            fn status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
        }
    )*};
}

has_status!(
    ModelProvider => tollgate_crds::ModelProviderStatus,
    AIRoute => tollgate_crds::AIRouteStatus,
    Consumer => tollgate_crds::ConsumerStatus,
    ApiSubscription => tollgate_crds::ApiSubscriptionStatus,
    MCPServer => tollgate_crds::MCPServerStatus,
    AIGuardrail => tollgate_crds::AIGuardrailStatus
);

/// One status write to make.
struct Write {
    kind: Kind,
    id: ObjectRef,
    resource_version: Option<String>,
    patch: Value,
    notes: Vec<status::Note>,
    reference: Option<ObjectReference>,
}

/// Writes status, Events and keys while this replica leads.
pub struct Writer {
    client: Client,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    keys: KeyGenerator,
    /// The last patch sent per object and the resourceVersion it was computed from: until the watch
    /// shows a newer version, the same patch is not sent again.
    sent: HashMap<(Kind, ObjectRef), (Option<String>, Value)>,
    /// Objects found up to date, with the resourceVersion and verdict they were checked against: while
    /// neither changes, they are not looked at again (a pass costs what changed, not what exists).
    checked: HashMap<(Kind, ObjectRef), (Option<String>, Verdict)>,
    /// A span per batch of status writes.
    traces: Traces,
}

impl Writer {
    /// A writer reporting Events as `identity` of `tollgate-controller`.
    pub fn new(client: Client, store: Arc<Store>, metrics: Arc<Metrics>, identity: String) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "tollgate-controller".into(),
                instance: Some(identity),
            },
        );
        Self {
            keys: KeyGenerator::new(client.clone(), metrics.clone()),
            client,
            store,
            metrics,
            recorder,
            sent: HashMap::new(),
            checked: HashMap::new(),
            traces: Traces::off(),
        }
    }

    /// Records each batch of status writes as a span of `traces`.
    pub fn with_traces(mut self, traces: Traces) -> Self {
        self.traces = traces;
        self
    }

    /// Runs until the verdict channel closes.
    pub async fn run(
        mut self,
        mut verdicts: watch::Receiver<Arc<Vec<Verdict>>>,
        mut leader: watch::Receiver<bool>,
    ) {
        let mut statuses = self.store.subscribe_status();
        // Any change may be a rotation request on a key's Secret, which changes no verdict.
        let mut changes = self.store.subscribe();
        let mut retry = false;
        loop {
            let mut keys_only = false;
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() { return }
                    keys_only = true;
                }
                changed = verdicts.changed() => if changed.is_err() { return },
                changed = statuses.changed() => if changed.is_err() { return },
                changed = leader.changed() => {
                    if changed.is_err() { return }
                    // A new term: what the previous leader wrote is only known from the watch.
                    self.sent.clear();
                    self.checked.clear();
                }
                _ = tokio::time::sleep(RETRY_AFTER), if retry => {}
            }
            if !*leader.borrow_and_update() {
                retry = false;
                continue;
            }
            // Our own writes come back as a burst of status changes: take them in one pass.
            tokio::time::sleep(COALESCE).await;
            if keys_only {
                changes.borrow_and_update();
                self.keys.ensure(&self.store).await;
                continue;
            }
            statuses.borrow_and_update();
            let latest = verdicts.borrow_and_update().clone();
            let started = Instant::now();
            self.keys.ensure(&self.store).await;
            retry = !self.write_status(&latest).await;
            self.metrics.reconcile_duration.observe(started.elapsed());
        }
    }

    /// One pass; `false` if some write failed and should be retried.
    async fn write_status(&mut self, verdicts: &[Verdict]) -> bool {
        let now = Time(Timestamp::now());
        let writes = self.plan(verdicts, &now);
        if writes.is_empty() {
            return true;
        }
        tracing::debug!(count = writes.len(), "writing status");
        let span = self.traces.root("tollgate.status.write");
        span.set("tollgate.status.patches", writes.len() as i64);
        let client = &self.client;
        let results: Vec<(Write, kube::Result<()>)> = stream::iter(writes)
            .map(|w| async move {
                let result = send(client, &w).await;
                (w, result)
            })
            .buffer_unordered(PARALLEL_WRITES)
            .collect()
            .await;
        let mut all_written = true;
        let mut failed: Vec<String> = Vec::new();
        let mut first_error: Option<&'static str> = None;
        for (write, result) in results {
            match result {
                Ok(()) => {
                    self.metrics.status_writes.fetch_add(1, Ordering::Relaxed);
                    if let Some(reference) = &write.reference {
                        for note in &write.notes {
                            self.publish(note, reference).await;
                        }
                    }
                    self.sent.insert(
                        (write.kind, write.id),
                        (write.resource_version, write.patch),
                    );
                }
                Err(error) => {
                    all_written = false;
                    first_error.get_or_insert(error_type(&error));
                    failed.push(format!(
                        "{} {}: {}",
                        write.kind.as_str(),
                        write.id,
                        error_summary(&error)
                    ));
                    self.metrics
                        .status_write_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(kind = write.kind.as_str(), object = %write.id, %error, "status write failed");
                }
            }
        }
        span.set("tollgate.status.failed", failed.len() as i64);
        if let Some(error_type) = first_error {
            const NAMED: usize = 5;
            let more = failed.len().saturating_sub(NAMED);
            failed.truncate(NAMED);
            let mut description = format!("status writes failed: {}", failed.join("; "));
            if more > 0 {
                description.push_str(&format!(" and {more} more"));
            }
            span.fail(error_type, description);
        }
        all_written
    }

    /// Compares every verdict with the stored object and keeps the differences.
    fn plan(&mut self, verdicts: &[Verdict], now: &Time) -> Vec<Write> {
        let tables = self.store.lock();
        let mut writes = Vec::new();
        for verdict in verdicts {
            let key = (verdict.kind, verdict.id.clone());
            let version = match verdict.kind {
                Kind::ModelProvider => version(&tables.providers.objects, &verdict.id),
                Kind::AIRoute => version(&tables.routes.objects, &verdict.id),
                Kind::Consumer => version(&tables.consumers.objects, &verdict.id),
                Kind::ApiSubscription => version(&tables.subscriptions.objects, &verdict.id),
                Kind::MCPServer => version(&tables.mcp_servers.objects, &verdict.id),
                Kind::AIGuardrail => version(&tables.guardrails.objects, &verdict.id),
            };
            // Deleted since the compile (or not yet seen): nothing to write to.
            let Some(version) = version else {
                self.checked.remove(&key);
                continue;
            };
            if let Some((checked_version, checked_verdict)) = self.checked.get(&key)
                && *checked_version == version
                && checked_verdict == verdict
            {
                continue;
            }
            let found = match verdict.kind {
                Kind::ModelProvider => current(&tables.providers.objects, &verdict.id),
                Kind::AIRoute => current(&tables.routes.objects, &verdict.id),
                Kind::Consumer => current(&tables.consumers.objects, &verdict.id),
                Kind::ApiSubscription => current(&tables.subscriptions.objects, &verdict.id),
                Kind::MCPServer => current(&tables.mcp_servers.objects, &verdict.id),
                Kind::AIGuardrail => current(&tables.guardrails.objects, &verdict.id),
            };
            let Some((status, resource_version, reference)) = found else {
                continue;
            };
            let desired = status::desired(verdict, &status, now);
            let Some(patch) = status::patch(&desired, &status) else {
                self.checked.insert(key, (version, verdict.clone()));
                continue;
            };
            if self.sent.get(&key) == Some(&(resource_version.clone(), patch.clone())) {
                continue;
            }
            writes.push(Write {
                kind: verdict.kind,
                id: verdict.id.clone(),
                resource_version,
                notes: status::notes(verdict, &status),
                patch,
                reference: Some(reference),
            });
        }
        let malformed = [
            (Kind::ModelProvider, &tables.providers.malformed),
            (Kind::AIRoute, &tables.routes.malformed),
            (Kind::Consumer, &tables.consumers.malformed),
            (Kind::ApiSubscription, &tables.subscriptions.malformed),
            (Kind::MCPServer, &tables.mcp_servers.malformed),
            (Kind::AIGuardrail, &tables.guardrails.malformed),
        ];
        for (kind, objects) in malformed {
            for (id, bad) in objects {
                let desired = status::malformed(&bad.error, bad.generation, now);
                let patch = serde_json::json!({ "status": desired });
                let key = (kind, id.clone());
                if self.sent.get(&key) == Some(&(bad.resource_version.clone(), patch.clone())) {
                    continue;
                }
                writes.push(Write {
                    kind,
                    id: id.clone(),
                    resource_version: bad.resource_version.clone(),
                    patch,
                    notes: Vec::new(),
                    reference: None,
                });
            }
        }
        writes
    }

    async fn publish(&self, note: &status::Note, reference: &ObjectReference) {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.clone(),
            note: Some(note.message.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, reference).await {
            tracing::warn!(%error, reason = %note.reason, "could not publish an Event");
        }
    }
}

/// The stored object's resourceVersion, if it is stored.
fn version<K: Resource>(
    objects: &std::collections::BTreeMap<ObjectRef, Arc<K>>,
    id: &ObjectRef,
) -> Option<Option<String>> {
    objects.get(id).map(|o| o.meta().resource_version.clone())
}

/// The stored object's status, resourceVersion and reference.
fn current<K>(
    objects: &std::collections::BTreeMap<ObjectRef, Arc<K>>,
    id: &ObjectRef,
) -> Option<(Value, Option<String>, ObjectReference)>
where
    K: Resource<DynamicType = ()> + HasStatus,
{
    let object = objects.get(id)?;
    let status = object
        .status()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    Some((
        status,
        object.meta().resource_version.clone(),
        object.object_ref(&()),
    ))
}

fn resource(kind: Kind) -> ApiResource {
    match kind {
        Kind::ModelProvider => ApiResource::erase::<ModelProvider>(&()),
        Kind::AIRoute => ApiResource::erase::<AIRoute>(&()),
        Kind::Consumer => ApiResource::erase::<Consumer>(&()),
        Kind::ApiSubscription => ApiResource::erase::<ApiSubscription>(&()),
        Kind::MCPServer => ApiResource::erase::<MCPServer>(&()),
        Kind::AIGuardrail => ApiResource::erase::<AIGuardrail>(&()),
    }
}

/// A short, fixed word for a failed write (`error.type`): the API server's reason, or `transport`.
fn error_type(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) => match status.code {
            404 => "NotFound",
            409 => "Conflict",
            403 => "Forbidden",
            422 => "Invalid",
            429 => "TooManyRequests",
            500..=599 => "ServerError",
            _ => "ApiError",
        },
        _ => "transport",
    }
}

/// What went wrong, in a few words: the API server's code and reason (its message may quote the
/// patch, which holds status fields only, but is left out to keep the span short).
fn error_summary(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} {}", status.code, status.reason),
        _ => "the API server could not be reached".to_string(),
    }
}

async fn send(client: &Client, write: &Write) -> kube::Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &write.id.namespace, &resource(write.kind));
    api.patch_status(
        &write.id.name,
        &PatchParams::default(),
        &Patch::Merge(&write.patch),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use tollgate_snapshot::{Detail, Phase, SubscriptionDetail, VerdictCondition};

    use super::*;
    use crate::store::Entry;

    fn subscription(resource_version: &str, status: Option<Value>) -> ApiSubscription {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tollgate.dev/v1alpha1",
            "kind": "ApiSubscription",
            "metadata": {"name": "sub", "namespace": "team", "resourceVersion": resource_version, "generation": 1},
            "spec": {"consumer": "app", "route": {"name": "r"}},
            "status": status,
        }))
        .unwrap()
    }

    fn verdict(phase: Phase) -> Verdict {
        Verdict {
            kind: Kind::ApiSubscription,
            id: ObjectRef::new("team", "sub"),
            generation: Some(1),
            conditions: vec![VerdictCondition::new(
                "Ready",
                phase == Phase::Approved,
                "Decided",
                "decided",
            )],
            detail: Detail::Subscription(SubscriptionDetail {
                phase,
                effective_limits: None,
                effective_budget: None,
                route: "team/r".into(),
            }),
        }
    }

    #[tokio::test]
    async fn a_batch_that_fails_is_an_error_span_naming_the_objects() {
        let receiver = crate::trace::receiver::Receiver::start().await;
        let metrics = Arc::new(Metrics::default());
        let config = crate::trace::OtelArgs::parse_for_test(&["--otlp-endpoint", "http://x"])
            .traces(|_| None)
            .unwrap()
            .unwrap();
        let traces = crate::trace::TraceConfig {
            url: receiver.url.clone(),
            delay: Duration::from_millis(5),
            ..config
        };
        let traces = Traces::start(traces, "test", metrics.clone()).unwrap();
        // No API server there.
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let store = Store::new(1);
        store.update(|t| {
            t.subscriptions.apply(
                ObjectRef::new("team", "sub"),
                Entry::Good(subscription("1", None)),
            )
        });
        let mut writer =
            Writer::new(client, store, metrics.clone(), "test".into()).with_traces(traces.clone());
        assert!(!writer.write_status(&[verdict(Phase::Approved)]).await);
        traces.flush(Duration::from_secs(5)).await;
        let spans = receiver.spans();
        let span = spans
            .iter()
            .find(|s| s.span.name == "tollgate.status.write")
            .expect("a status-write span");
        assert_eq!(span.attr("tollgate.status.patches").as_deref(), Some("1"));
        assert_eq!(span.attr("tollgate.status.failed").as_deref(), Some("1"));
        assert_eq!(span.attr("error.type").as_deref(), Some("transport"));
        let status = span.span.status.as_ref().unwrap();
        assert_eq!(status.code, 2);
        assert!(
            status.message.contains("ApiSubscription team/sub"),
            "{}",
            status.message
        );
    }

    #[tokio::test]
    async fn a_pass_costs_only_what_changed_and_never_repeats_a_write() {
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let store = Store::new(1);
        let mut writer = Writer::new(
            client,
            store.clone(),
            Arc::new(Metrics::default()),
            "test".into(),
        );
        let put = |rv: &str, status: Option<Value>| {
            store.update(|t| {
                t.subscriptions.apply(
                    ObjectRef::new("team", "sub"),
                    Entry::Good(subscription(rv, status)),
                )
            })
        };
        let now = Time(Timestamp::now());
        put("1", None);
        let verdicts = vec![verdict(Phase::Approved)];

        let writes = writer.plan(&verdicts, &now);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].patch["status"]["phase"], "Approved");
        assert_eq!(writes[0].notes[0].reason, "Approved");
        // Sent, but the watch has not shown the result yet: not sent again.
        let write = writes.into_iter().next().unwrap();
        writer.sent.insert(
            (write.kind, write.id.clone()),
            (write.resource_version, write.patch.clone()),
        );
        assert!(writer.plan(&verdicts, &now).is_empty());

        // The watch shows our write: up to date, remembered, and then skipped without a look.
        put("2", Some(write.patch["status"].clone()));
        assert!(writer.plan(&verdicts, &now).is_empty());
        assert!(
            writer
                .checked
                .contains_key(&(Kind::ApiSubscription, ObjectRef::new("team", "sub")))
        );

        // A new verdict is looked at again.
        let revoked = vec![verdict(Phase::Revoked)];
        let writes = writer.plan(&revoked, &now);
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].patch["status"]["phase"], "Revoked");
    }
}
