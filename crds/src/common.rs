//! Shapes shared by several kinds: Secret references, limits, conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every Tollgate resource.
pub const GROUP: &str = "tollgate.dev";
/// The version of the API these types describe.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "tollgate.dev/v1alpha1";

/// The key read from a Secret when a reference does not name one.
pub const DEFAULT_SECRET_KEY: &str = "apiKey";

fn default_secret_key() -> String {
    DEFAULT_SECRET_KEY.to_string()
}

/// One key of a Secret in the same namespace as the object that refers to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Key inside the Secret's data; defaults to `apiKey`.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Request and token ceilings for one subscription (or the defaults a route gives each subscription).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Requests allowed per minute. Absent means no request limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000_000))]
    pub requests_per_minute: Option<u32>,
    /// Tokens (input plus output) allowed per minute. Absent means no token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000_000u64))]
    pub tokens_per_minute: Option<u64>,
}

/// Spend ceilings in US dollars, from the cost the gateway computes with the providers' prices.
/// When one is spent, calls get 429 with code `budget_exceeded` until its window (UTC) turns.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.dailyUsd) || !has(self.monthlyUsd) || self.dailyUsd <= self.monthlyUsd")
    .message("budget.dailyUsd cannot be larger than budget.monthlyUsd"))]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// US dollars per calendar month. Absent means no monthly ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1_000_000_000.0))]
    pub monthly_usd: Option<f64>,
    /// US dollars per calendar day. Absent means no daily ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1_000_000_000.0))]
    pub daily_usd: Option<f64>,
}

/// Standard condition types every Tollgate resource reports.
pub mod condition_type {
    /// The object is valid and was taken into the routing table.
    pub const ACCEPTED: &str = "Accepted";
    /// Every object this one refers to exists and is usable.
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    /// The object is being served.
    pub const READY: &str = "Ready";
    /// Every prompt API of a route compiled (routes with `spec.prompts` only).
    pub const PROMPTS_VALID: &str = "PromptsValid";
    /// Every guardrail a route or consumer attaches exists, may be used from its namespace and compiled.
    pub const GUARDRAILS_VALID: &str = "GuardrailsValid";
    /// Every MCP server a route attaches exists, may be used from its namespace and compiled.
    pub const MCP_SERVERS_VALID: &str = "MCPServersValid";
}

/// Marks a `Vec<Condition>` as a list-map keyed on `type`, as Kubernetes conventions require.
pub(crate) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

/// The name of an object another one refers to (a DNS subdomain), as in `AIRoute` backends,
/// subscriptions' routes and guardrail references.
pub(crate) fn referred_name_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 253,
        "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    })
}

/// The optional namespace of a cross-namespace reference (a DNS label); absent means the referrer's.
pub(crate) fn referred_namespace_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": 63,
        "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    })
}
