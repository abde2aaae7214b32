//! Watchers that keep the [`Store`] in step with the API server.
//!
//! Tollgate's kinds are watched as `DynamicObject`s and converted afterwards, so one object that does
//! not fit the Rust types (an older schema, a hand-edited status) is logged, recorded as malformed and
//! skipped, while the watch goes on. Secrets are watched only when labelled `tollgate.dev/secret=true`,
//! ConfigMaps only when labelled `tollgate.dev/config=true`: RBAC cannot grant by label, but the
//! selectors keep every unrelated Secret and ConfigMap of the cluster out of memory.

use std::{
    collections::HashMap,
    fmt::Debug,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject},
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tollgate_crds::{AIGuardrail, AIRoute, ApiSubscription, Consumer, MCPServer, ModelProvider};
use tollgate_snapshot::ObjectRef;

use crate::store::{Entry, Kind, Malformed, Store, Table, Tables};

/// The label a Secret needs for the controller to see it.
pub const SECRET_LABEL: &str = "tollgate.dev/secret";
/// The selector the Secret watch uses.
pub const SECRET_SELECTOR: &str = "tollgate.dev/secret=true";
/// The selector the ConfigMap watch uses (REST services' OpenAPI documents).
pub const CONFIG_MAP_SELECTOR: &str = "tollgate.dev/config=true";

/// Starts one watcher per kind and scope (every namespace when `namespaces` is empty), and one over
/// every Namespace: the compiler reads which paths each may claim from their annotations.
pub fn spawn_all(
    client: &Client,
    namespaces: &[String],
    store: &Arc<Store>,
    tasks: &mut JoinSet<()>,
) {
    tasks.spawn(run(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        None,
        store.clone(),
        Kind::Namespace,
        |t| &mut t.namespaces,
        Ok,
    ));
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    for scope in scopes {
        spawn_custom::<ModelProvider>(client, &scope, store, tasks, Kind::Provider, |t| {
            &mut t.providers
        });
        spawn_custom::<AIRoute>(client, &scope, store, tasks, Kind::Route, |t| &mut t.routes);
        spawn_custom::<Consumer>(client, &scope, store, tasks, Kind::Consumer, |t| {
            &mut t.consumers
        });
        spawn_custom::<ApiSubscription>(client, &scope, store, tasks, Kind::Subscription, |t| {
            &mut t.subscriptions
        });
        spawn_custom::<AIGuardrail>(client, &scope, store, tasks, Kind::Guardrail, |t| {
            &mut t.guardrails
        });
        spawn_custom::<MCPServer>(client, &scope, store, tasks, Kind::McpServer, |t| {
            &mut t.mcp_servers
        });
        let api: Api<Secret> = match &scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let config = watcher::Config::default().labels(SECRET_SELECTOR);
        tasks.spawn(run(
            api,
            config,
            scope.clone(),
            store.clone(),
            Kind::Secret,
            |t| &mut t.secrets,
            Ok,
        ));
        let api: Api<ConfigMap> = match &scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let config = watcher::Config::default().labels(CONFIG_MAP_SELECTOR);
        tasks.spawn(run(
            api,
            config,
            scope,
            store.clone(),
            Kind::ConfigMap,
            |t| &mut t.config_maps,
            Ok,
        ));
    }
}

fn spawn_custom<K>(
    client: &Client,
    scope: &Option<String>,
    store: &Arc<Store>,
    tasks: &mut JoinSet<()>,
    kind: Kind,
    table: fn(&mut Tables) -> &mut Table<K>,
) where
    K: Resource<DynamicType = ()> + DeserializeOwned + Send + Sync + 'static,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match scope {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    tasks.spawn(run(
        api,
        watcher::Config::default(),
        scope.clone(),
        store.clone(),
        kind,
        table,
        convert::<K>,
    ));
}

/// Reads a dynamic object as `K`, or says why it cannot be read.
pub fn convert<K: DeserializeOwned>(object: DynamicObject) -> Result<K, String> {
    let value = serde_json::to_value(&object).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}

async fn run<W, K>(
    api: Api<W>,
    config: watcher::Config,
    scope: Option<String>,
    store: Arc<Store>,
    kind: Kind,
    table: fn(&mut Tables) -> &mut Table<K>,
    convert: fn(W) -> Result<K, String>,
) where
    W: Resource + Clone + DeserializeOwned + serde::Serialize + Debug + Send + 'static,
{
    let where_ = scope.as_deref().unwrap_or("all namespaces");
    let entry = |mut object: W| -> (ObjectRef, Entry<K>) {
        // Often as large as the object itself, and nothing here reads it.
        object.meta_mut().managed_fields = None;
        let id = ObjectRef::new(object.namespace().unwrap_or_default(), object.name_any());
        let generation = object.meta().generation;
        let resource_version = object.meta().resource_version.clone();
        match convert(object) {
            Ok(k) => (id, Entry::Good(k)),
            Err(error) => {
                tracing::warn!(kind = kind.name(), object = %id, %error, "skipping an object that cannot be read");
                (
                    id,
                    Entry::Bad(Malformed {
                        generation,
                        resource_version,
                        error,
                    }),
                )
            }
        }
    };
    // What the compiler reads of each object, to tell status-only updates (our own writes, mostly) apart.
    let mut inputs: HashMap<ObjectRef, u64> = HashMap::new();
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(object)) => {
                let fingerprint = compiler_input_fingerprint(&object, kind);
                let (id, e) = entry(object);
                let unchanged = fingerprint.is_some() && inputs.get(&id) == fingerprint.as_ref();
                match fingerprint {
                    Some(f) => inputs.insert(id.clone(), f),
                    None => inputs.remove(&id),
                };
                if unchanged {
                    store.update_status(|t| table(t).apply(id, e));
                } else {
                    store.update(|t| table(t).apply(id, e));
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                let id = ObjectRef::new(object.namespace().unwrap_or_default(), object.name_any());
                inputs.remove(&id);
                store.update(|t| table(t).delete(&id));
            }
            Ok(watcher::Event::Init) => {
                inputs.clear();
                let scope = scope.clone();
                // No change is visible yet, so no need to wake the compiler.
                table(&mut store.lock()).relist_start(scope);
            }
            Ok(watcher::Event::InitApply(object)) => {
                let fingerprint = compiler_input_fingerprint(&object, kind);
                let (id, e) = entry(object);
                match fingerprint {
                    Some(f) => inputs.insert(id.clone(), f),
                    None => inputs.remove(&id),
                };
                table(&mut store.lock()).relist_apply(&scope, id, e);
            }
            Ok(watcher::Event::InitDone) => {
                tracing::debug!(kind = kind.name(), scope = where_, "listed");
                let scope = scope.clone();
                store.update(|t| table(t).relist_done(scope));
            }
            Err(error) => {
                tracing::warn!(kind = kind.name(), scope = where_, %error, "watch failed; retrying with backoff");
            }
        }
    }
}

/// A digest of everything in a custom resource except its status and bookkeeping, or `None` for kinds
/// whose every change matters (Secrets). Equal digests mean the compiler would see the same input.
fn compiler_input_fingerprint<W: Resource + serde::Serialize>(
    object: &W,
    kind: Kind,
) -> Option<u64> {
    if matches!(kind, Kind::Secret | Kind::ConfigMap) {
        return None;
    }
    let mut value = serde_json::to_value(object).ok()?;
    let fields = value.as_object_mut()?;
    fields.remove("status");
    if let Some(meta) = fields.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    let mut hasher = DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    Some(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tollgate.dev/v1alpha1",
            "kind": "AIRoute",
            "metadata": {"name": "r", "namespace": "team", "generation": 4, "resourceVersion": "7"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn an_object_that_does_not_fit_the_type_is_reported_not_fatal() {
        let good = dynamic(serde_json::json!({
            "prefix": "/r",
            "models": [{"name": "m", "backends": [{"provider": "p"}]}],
        }));
        let route: AIRoute = convert(good).unwrap();
        assert_eq!(route.spec.prefix, "/r");
        let bad = dynamic(serde_json::json!({"prefix": "/r", "models": "not a list"}));
        let error = convert::<AIRoute>(bad).unwrap_err();
        assert!(
            error.contains("models") || error.contains("sequence"),
            "{error}"
        );
    }

    #[test]
    fn status_and_bookkeeping_do_not_change_the_fingerprint() {
        let object = dynamic(serde_json::json!({"prefix": "/r"}));
        let mut written = object.clone();
        written.data["status"] = serde_json::json!({"phase": "Approved"});
        written.metadata.resource_version = Some("8".into());
        let print = |o: &DynamicObject| compiler_input_fingerprint(o, Kind::Route);
        assert_eq!(print(&object), print(&written));
        let mut edited = object.clone();
        edited.data["spec"]["prefix"] = "/s".into();
        assert_ne!(print(&object), print(&edited));
        assert_eq!(compiler_input_fingerprint(&object, Kind::Secret), None);
    }
}
