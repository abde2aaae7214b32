//! Builders for resources in tests: short JSON specs in, typed objects out.

use k8s_openapi::api::core::v1::Secret;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tollgate_crds::{AIRoute, ApiSubscription, Consumer, ModelProvider};
use tollgate_snapshot::{Compiled, Inputs, Kind, ObjectRef, Verdict, compile};

/// 2026-11-01T00:00:00Z.
pub const NOW: i64 = 1_793_491_200;

fn object<T: DeserializeOwned>(kind: &str, ns: &str, name: &str, spec: Value) -> T {
    let mut metadata = json!({ "name": name, "generation": 1 });
    if !ns.is_empty() {
        metadata["namespace"] = json!(ns);
    }
    serde_json::from_value(json!({
        "apiVersion": "tollgate.dev/v1alpha1",
        "kind": kind,
        "metadata": metadata,
        "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("bad {kind} fixture {ns}/{name}: {e}"))
}

pub fn provider(ns: &str, name: &str, spec: Value) -> ModelProvider {
    object("ModelProvider", ns, name, spec)
}

pub fn route(ns: &str, name: &str, spec: Value) -> AIRoute {
    object("AIRoute", ns, name, spec)
}

pub fn consumer(ns: &str, name: &str, spec: Value) -> Consumer {
    object("Consumer", ns, name, spec)
}

pub fn subscription(ns: &str, name: &str, spec: Value) -> ApiSubscription {
    object("ApiSubscription", ns, name, spec)
}

/// A Secret whose values are given as `stringData`.
pub fn secret(ns: &str, name: &str, pairs: &[(&str, &str)]) -> Secret {
    let data: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "namespace": ns, "name": name },
        "stringData": data,
    }))
    .unwrap()
}

/// A Secret whose values are given as `data` (bytes).
pub fn secret_data(ns: &str, name: &str, pairs: &[(&str, &[u8])]) -> Secret {
    let mut s = secret(ns, name, &[]);
    s.string_data = None;
    s.data = Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.to_vec())))
            .collect(),
    );
    s
}

/// Sets `metadata.creationTimestamp` (RFC 3339).
pub fn created<T: HasMeta>(mut obj: T, at: &str) -> T {
    obj.meta_mut().creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        at.parse().expect("RFC 3339"),
    ));
    obj
}

pub trait HasMeta {
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
}

macro_rules! has_meta {
    ($($t:ty),*) => {$(
        impl HasMeta for $t {
            fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    )*};
}
has_meta!(ModelProvider, AIRoute, Consumer, ApiSubscription, Secret);

/// An OpenAI provider `ns/name` offering `models`, keyed by Secret `<name>-key`.
pub fn openai(ns: &str, name: &str, models: &[&str]) -> ModelProvider {
    let models: Vec<Value> = models.iter().map(|m| json!({ "name": m })).collect();
    provider(
        ns,
        name,
        json!({
            "type": "OpenAI",
            "credentials": { "secretRefs": [{ "name": format!("{name}-key") }] },
            "models": models,
        }),
    )
}

/// A route at `prefix` serving `model` from provider `provider` in the route's namespace.
pub fn simple_route(ns: &str, name: &str, prefix: &str, model: &str, provider: &str) -> AIRoute {
    route(
        ns,
        name,
        json!({ "prefix": prefix, "models": [{ "name": model, "backends": [{ "provider": provider }] }] }),
    )
}

/// A consumer with one key `primary` read from Secret `<name>-key`.
pub fn simple_consumer(ns: &str, name: &str) -> Consumer {
    consumer(
        ns,
        name,
        json!({ "keys": [{ "name": "primary", "secretRef": { "name": format!("{name}-key") } }] }),
    )
}

/// Team `team-a`: provider `openai` (gpt-4o-mini), route `chat` at `/team-a/chat`, consumer `app`
/// (key `sk-app`) with an approved subscription `app-chat`.
pub fn team_a() -> Inputs {
    Inputs {
        providers: vec![openai("team-a", "openai", &["gpt-4o-mini"])],
        routes: vec![simple_route(
            "team-a",
            "chat",
            "/team-a/chat",
            "gpt-4o-mini",
            "openai",
        )],
        consumers: vec![simple_consumer("team-a", "app")],
        subscriptions: vec![subscription(
            "team-a",
            "app-chat",
            json!({ "consumer": "app", "route": { "name": "chat" }, "decision": "Approved" }),
        )],
        secrets: vec![
            secret("team-a", "openai-key", &[("apiKey", "sk-upstream")]),
            secret(
                "team-a",
                "app-key",
                &[("apiKey", "sk-app-0123456789abcdef")],
            ),
        ],
        now_unix: NOW,
        ..Inputs::default()
    }
}

pub fn run(inputs: &Inputs) -> Compiled {
    compile(inputs, 1)
}

pub fn verdict<'a>(compiled: &'a Compiled, kind: Kind, ns: &str, name: &str) -> &'a Verdict {
    let id = ObjectRef::new(ns, name);
    compiled
        .verdicts
        .iter()
        .find(|v| v.kind == kind && v.id == id)
        .unwrap_or_else(|| panic!("no verdict for {kind:?} {id}"))
}

/// `(status, reason, message)` of one condition.
pub fn cond<'a>(v: &'a Verdict, type_: &str) -> (bool, &'a str, &'a str) {
    let c = v
        .condition(type_)
        .unwrap_or_else(|| panic!("{:?} {} has no {type_} condition", v.kind, v.id));
    (c.status, c.reason, &c.message)
}

pub mod world;
