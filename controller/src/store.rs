//! The controller's in-memory copy of every object it watches, fed by the watchers.
//!
//! Each kind lives in a [`Table`]. A watcher re-list (the `Init` … `InitDone` sequence) is buffered and
//! swapped in whole, so a restarted watch never shows a half-listed table to the compiler.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use tokio::sync::watch;
use tollgate_crds::{AIGuardrail, AIRoute, ApiSubscription, Consumer, MCPServer, ModelProvider};
use tollgate_snapshot::ObjectRef;

/// The kinds the controller watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `ModelProvider`.
    Provider,
    /// `AIRoute`.
    Route,
    /// `Consumer`.
    Consumer,
    /// `ApiSubscription`.
    Subscription,
    /// Labelled `Secret`s.
    Secret,
    /// `Namespace`s, whose annotations say which paths their routes may claim.
    Namespace,
    /// Labelled `ConfigMap`s (OpenAPI documents of REST services).
    ConfigMap,
    /// `AIGuardrail`.
    Guardrail,
    /// `MCPServer`.
    McpServer,
}

impl Kind {
    /// The Kubernetes kind name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Provider => "ModelProvider",
            Kind::Route => "AIRoute",
            Kind::Consumer => "Consumer",
            Kind::Subscription => "ApiSubscription",
            Kind::Secret => "Secret",
            Kind::Namespace => "Namespace",
            Kind::ConfigMap => "ConfigMap",
            Kind::Guardrail => "AIGuardrail",
            Kind::McpServer => "MCPServer",
        }
    }
}

/// An object that is stored but could not be read as its kind.
#[derive(Clone, Debug, PartialEq)]
pub struct Malformed {
    /// `metadata.generation`, for the condition's `observedGeneration`.
    pub generation: Option<i64>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// Why it could not be read.
    pub error: String,
}

/// The objects of one kind, by `namespace/name`.
#[derive(Debug)]
pub struct Table<K> {
    /// Objects that were read successfully.
    pub objects: BTreeMap<ObjectRef, Arc<K>>,
    /// Objects that exist but could not be read.
    pub malformed: BTreeMap<ObjectRef, Malformed>,
    /// Scopes (namespace, or `None` for all) whose initial list is complete.
    synced: Vec<Option<String>>,
    /// Re-lists in progress, by scope.
    relisting: BTreeMap<Option<String>, Relist<K>>,
}

#[derive(Debug)]
struct Relist<K> {
    objects: BTreeMap<ObjectRef, Arc<K>>,
    malformed: BTreeMap<ObjectRef, Malformed>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            malformed: BTreeMap::new(),
            synced: Vec::new(),
            relisting: BTreeMap::new(),
        }
    }
}

/// What one watch event says about one object.
#[derive(Debug)]
pub enum Entry<K> {
    /// Read successfully.
    Good(K),
    /// Present but unreadable.
    Bad(Malformed),
}

impl<K> Table<K> {
    /// An object was added or changed.
    pub fn apply(&mut self, id: ObjectRef, entry: Entry<K>) {
        match entry {
            Entry::Good(object) => {
                self.malformed.remove(&id);
                self.objects.insert(id, Arc::new(object));
            }
            Entry::Bad(bad) => {
                self.objects.remove(&id);
                self.malformed.insert(id, bad);
            }
        }
    }

    /// An object was deleted.
    pub fn delete(&mut self, id: &ObjectRef) {
        self.objects.remove(id);
        self.malformed.remove(id);
    }

    /// A watcher for `scope` starts listing from scratch.
    pub fn relist_start(&mut self, scope: Option<String>) {
        self.relisting.insert(
            scope,
            Relist {
                objects: BTreeMap::new(),
                malformed: BTreeMap::new(),
            },
        );
    }

    /// An object listed during a re-list.
    pub fn relist_apply(&mut self, scope: &Option<String>, id: ObjectRef, entry: Entry<K>) {
        let Some(relist) = self.relisting.get_mut(scope) else {
            // An InitApply without Init would be a watcher bug; treat it as a plain change.
            return self.apply(id, entry);
        };
        match entry {
            Entry::Good(object) => {
                relist.objects.insert(id, Arc::new(object));
            }
            Entry::Bad(bad) => {
                relist.malformed.insert(id, bad);
            }
        }
    }

    /// The re-list of `scope` is complete: replace everything in that scope at once.
    pub fn relist_done(&mut self, scope: Option<String>) {
        let Some(relist) = self.relisting.remove(&scope) else {
            return;
        };
        let in_scope = |id: &ObjectRef| scope.as_ref().is_none_or(|ns| *id.namespace == **ns);
        self.objects.retain(|id, _| !in_scope(id));
        self.malformed.retain(|id, _| !in_scope(id));
        self.objects.extend(relist.objects);
        self.malformed.extend(relist.malformed);
        if !self.synced.contains(&scope) {
            self.synced.push(scope);
        }
    }

    fn synced_scopes(&self) -> usize {
        self.synced.len()
    }
}

/// Every table.
#[derive(Debug, Default)]
pub struct Tables {
    /// `ModelProvider`s.
    pub providers: Table<ModelProvider>,
    /// `AIRoute`s.
    pub routes: Table<AIRoute>,
    /// `Consumer`s.
    pub consumers: Table<Consumer>,
    /// `ApiSubscription`s.
    pub subscriptions: Table<ApiSubscription>,
    /// Secrets labelled `tollgate.dev/secret=true`.
    pub secrets: Table<Secret>,
    /// Every Namespace of the cluster (watched cluster-wide even when the kinds above are not).
    pub namespaces: Table<Namespace>,
    /// ConfigMaps labelled `tollgate.dev/config=true`.
    pub config_maps: Table<ConfigMap>,
    /// `AIGuardrail`s.
    pub guardrails: Table<AIGuardrail>,
    /// `MCPServer`s.
    pub mcp_servers: Table<MCPServer>,
}

/// The shared store: tables behind a lock, and counters bumped on changes.
#[derive(Debug)]
pub struct Store {
    tables: Mutex<Tables>,
    /// Bumped when something the compiler reads changed.
    changes: watch::Sender<u64>,
    /// Bumped when only an object's status (or other bookkeeping) changed: nothing to recompile,
    /// but the status writer compares against the new status.
    status_changes: watch::Sender<u64>,
    /// Watchers per kind (one per namespace, or one for all).
    scopes_per_kind: usize,
}

impl Store {
    /// An empty store for watchers over `scopes_per_kind` scopes each.
    pub fn new(scopes_per_kind: usize) -> Arc<Self> {
        Arc::new(Self {
            tables: Mutex::new(Tables::default()),
            changes: watch::channel(0).0,
            status_changes: watch::channel(0).0,
            scopes_per_kind,
        })
    }

    /// Reads or edits the tables. Hold the guard briefly: watchers wait on it.
    pub fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Edits the tables and tells every subscriber that something changed.
    pub fn update(&self, edit: impl FnOnce(&mut Tables)) {
        edit(&mut self.lock());
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Edits the tables after a change the compiler does not read (a status update).
    pub fn update_status(&self, edit: impl FnOnce(&mut Tables)) {
        edit(&mut self.lock());
        self.status_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that wakes on status-only changes.
    pub fn subscribe_status(&self) -> watch::Receiver<u64> {
        self.status_changes.subscribe()
    }

    /// Whether every watcher has finished its first list, so the tables describe the cluster.
    pub fn synced(&self) -> bool {
        let t = self.lock();
        [
            t.providers.synced_scopes(),
            t.routes.synced_scopes(),
            t.consumers.synced_scopes(),
            t.subscriptions.synced_scopes(),
            t.secrets.synced_scopes(),
            t.config_maps.synced_scopes(),
            t.guardrails.synced_scopes(),
            t.mcp_servers.synced_scopes(),
        ]
        .iter()
        .all(|&n| n >= self.scopes_per_kind)
            && t.namespaces.synced_scopes() >= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ns: &str, name: &str) -> ObjectRef {
        ObjectRef::new(ns, name)
    }

    #[test]
    fn a_relist_replaces_only_its_scope_and_only_when_done() {
        let mut table = Table::<u32>::default();
        let a = Some("a".to_owned());
        let b = Some("b".to_owned());
        table.relist_start(a.clone());
        table.relist_apply(&a, id("a", "x"), Entry::Good(1));
        assert!(table.objects.is_empty(), "nothing visible before InitDone");
        table.relist_done(a.clone());
        table.relist_start(b.clone());
        table.relist_apply(&b, id("b", "y"), Entry::Good(2));
        table.relist_done(b.clone());
        assert_eq!(table.synced_scopes(), 2);

        // A second re-list of `a` drops x, adds z, and leaves b's objects alone.
        table.relist_start(a.clone());
        table.relist_apply(&a, id("a", "z"), Entry::Good(3));
        assert!(table.objects.contains_key(&id("a", "x")));
        table.relist_done(a);
        let names: Vec<_> = table.objects.keys().map(|k| k.to_string()).collect();
        assert_eq!(names, ["a/z", "b/y"]);
        assert_eq!(table.synced_scopes(), 2);
    }

    #[test]
    fn a_malformed_object_replaces_the_good_one_and_back() {
        let mut table = Table::<u32>::default();
        table.apply(id("a", "x"), Entry::Good(1));
        let bad = Malformed {
            generation: Some(2),
            resource_version: None,
            error: "nope".into(),
        };
        table.apply(id("a", "x"), Entry::Bad(bad));
        assert!(table.objects.is_empty());
        assert_eq!(table.malformed.len(), 1);
        table.apply(id("a", "x"), Entry::Good(3));
        assert!(table.malformed.is_empty());
        table.delete(&id("a", "x"));
        assert!(table.objects.is_empty());
    }
}
