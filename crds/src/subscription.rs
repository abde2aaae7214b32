//! `ApiSubscription`: a consumer's request to use a route, and the route owner's decision.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Budget, Limits, conditions_schema, referred_name_schema, referred_namespace_schema,
};

/// A consumer's request to call a route, possibly in another namespace. Lives in the consumer's namespace.
/// Setting `spec.decision` requires the `approve` verb on the target route (enforced by the API server).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ApiSubscription",
    namespaced,
    status = "ApiSubscriptionStatus",
    shortname = "apisub",
    category = "tollgate",
    doc = "A consumer's subscription to an AIRoute, with its limits and the approval decision.",
    printcolumn(name = "Consumer", type_ = "string", json_path = ".spec.consumer"),
    printcolumn(name = "Route", type_ = "string", json_path = ".spec.route.name"),
    printcolumn(
        name = "Route Namespace",
        type_ = "string",
        json_path = ".spec.route.namespace",
        priority = 1
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Requests",
        type_ = "integer",
        json_path = ".status.usage.requests",
        priority = 1
    ),
    printcolumn(
        name = "Tokens",
        type_ = "integer",
        json_path = ".status.usage.totalTokens",
        priority = 1
    ),
    printcolumn(
        name = "Cost USD",
        type_ = "string",
        json_path = ".status.usage.costUsd",
        priority = 1
    ),
    printcolumn(
        name = "Budget USD",
        type_ = "number",
        json_path = ".status.effectiveBudget.monthlyUsd",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ApiSubscriptionSpec {
    /// Name of the `Consumer` (in this namespace) that subscribes. Immutable.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.consumer is immutable: create a new subscription instead"))]
    pub consumer: String,
    /// The `AIRoute` subscribed to. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.route is immutable: create a new subscription instead"))]
    pub route: RouteRef,
    /// Limits wanted, within the route's; absent fields take the route's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Spend ceiling wanted, within the route's; absent fields take the route's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// The route owner's decision. Absent means pending (or approved, when the route approves automatically).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Why the decision was taken, for the subscriber to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub decision_reason: Option<String>,
}

/// Which route a subscription is for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteRef {
    /// Name of the `AIRoute`.
    #[schemars(schema_with = "referred_name_schema")]
    pub name: String,
    /// Namespace of the `AIRoute`; defaults to the subscription's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "referred_namespace_schema")]
    pub namespace: Option<String>,
}

/// The route owner's answer to a subscription.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum Decision {
    /// The consumer may call the route.
    Approved,
    /// The request was turned down.
    Rejected,
    /// An earlier approval was withdrawn.
    Revoked,
}

/// Where a subscription stands.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum Phase {
    /// Waiting for the route owner's decision.
    Pending,
    /// Calls are allowed.
    Approved,
    /// Turned down.
    Rejected,
    /// Approval withdrawn.
    Revoked,
    /// The consumer or route does not exist, or the route cannot take subscriptions.
    Invalid,
}

impl Phase {
    /// The name shown in `status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Approved => "Approved",
            Self::Rejected => "Rejected",
            Self::Revoked => "Revoked",
            Self::Invalid => "Invalid",
        }
    }
}

/// Calls, tokens and cost counted in the current usage window (the UTC calendar month), with the history
/// behind it: daily buckets for this month and the previous one, monthly totals for 12 months.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Start of the window (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<Time>,
    /// Calls answered.
    pub requests: i64,
    /// Input (prompt) tokens.
    pub input_tokens: i64,
    /// Output (completion) tokens.
    pub output_tokens: i64,
    /// Input plus output tokens.
    pub total_tokens: i64,
    /// Cost in US dollars, as a decimal string such as `0.012345`.
    pub cost_usd: String,
    /// One bucket per UTC day with traffic in the current and the previous month, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 62))]
    pub days: Vec<UsageBucket>,
    /// One bucket per UTC month with traffic in the last 12 months (this one included), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 12))]
    pub months: Vec<UsageBucket>,
    /// The latest roll-up write of each controller replica, newest first, so that a write whose answer
    /// was lost is not made twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub writes: Vec<UsageWrite>,
}

/// Calls, tokens and cost in one UTC day or month.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageBucket {
    /// The day (`2026-12-06`) or the month (`2026-12`).
    #[schemars(length(max = 10))]
    pub period: String,
    /// Calls answered.
    pub requests: i64,
    /// Input (prompt) tokens.
    pub input_tokens: i64,
    /// Output (completion) tokens.
    pub output_tokens: i64,
    /// Cost in US dollars, as a decimal string such as `0.012345`.
    #[schemars(length(max = 32))]
    pub cost_usd: String,
}

/// One roll-up write: the replica that made it and the number of its batch.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageWrite {
    /// The controller replica (its Lease identity).
    #[schemars(length(max = 253))]
    pub writer: String,
    /// The batch number; a replica's batches only grow.
    pub seq: i64,
}

/// What the controller reports about a subscription.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiSubscriptionStatus {
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted, ResolvedRefs, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Pending, Approved, Rejected, Revoked or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The route as `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Limits in force: the subscription's, clamped to the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_limits: Option<Limits>,
    /// Budget in force: the subscription's, clamped to the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_budget: Option<Budget>,
    /// Usage in the current window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}
