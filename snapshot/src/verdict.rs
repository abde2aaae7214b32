//! What compiling said about each input object: the status the controller writes back.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::Serialize;
use tollgate_crds::{
    AIGuardrailStatus, AIRouteStatus, ApiSubscriptionStatus, ConsumerStatus, ModelProviderStatus,
    Phase,
};

use crate::message::Message;
use crate::model::{Budget, Limits, ObjectRef, budget_usd};

/// The kind of object a verdict is about. Verdicts are sorted in this order first.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `ModelProvider`.
    ModelProvider,
    /// `AIRoute`.
    AIRoute,
    /// `Consumer`.
    Consumer,
    /// `ApiSubscription`.
    ApiSubscription,
    /// `MCPServer`.
    MCPServer,
    /// `AIGuardrail`.
    AIGuardrail,
}

impl Kind {
    /// The Kubernetes `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModelProvider => "ModelProvider",
            Self::AIRoute => "AIRoute",
            Self::Consumer => "Consumer",
            Self::ApiSubscription => "ApiSubscription",
            Self::MCPServer => "MCPServer",
            Self::AIGuardrail => "AIGuardrail",
        }
    }
}

/// One status condition as compiled, without the timestamp the controller adds.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct VerdictCondition {
    /// `Accepted`, `ResolvedRefs` or `Ready`.
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// Whether the condition holds.
    pub status: bool,
    /// A CamelCase word for machines, e.g. `PathConflict`.
    pub reason: &'static str,
    /// A sentence for people, saying what to do.
    pub message: Message,
}

impl VerdictCondition {
    /// Builds a condition.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<Message>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }

    /// `"True"` or `"False"`, as Kubernetes writes it.
    pub fn status_str(&self) -> &'static str {
        if self.status { "True" } else { "False" }
    }

    /// The Kubernetes condition. The caller chooses the transition time (keep the old one when nothing changed).
    pub fn to_condition(
        &self,
        observed_generation: Option<i64>,
        last_transition_time: Time,
    ) -> Condition {
        Condition {
            type_: self.type_.to_string(),
            status: self.status_str().to_string(),
            reason: self.reason.to_string(),
            message: self.message.to_string(),
            observed_generation,
            last_transition_time,
        }
    }
}

/// What a provider's status reports beyond conditions.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ProviderDetail {
    /// Base URL requests go to, when the endpoint could be resolved.
    pub endpoint: Option<String>,
    /// Models offered, sorted by name.
    pub models: Vec<String>,
    /// API keys found in the referenced Secrets.
    pub credentials: u32,
}

/// What a route's status reports beyond conditions.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct RouteDetail {
    /// `<prefix>/v1`, the base URL clients use.
    pub endpoint: String,
    /// Model names with at least one usable backend, sorted.
    pub served_models: Vec<Arc<str>>,
    /// Subscriptions in phase Approved.
    pub approved_subscriptions: u32,
}

/// What a consumer's status reports beyond conditions.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ConsumerDetail {
    /// Keys that resolved, are unique and have not expired.
    pub active_keys: u32,
}

/// What a subscription's status reports beyond conditions.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionDetail {
    /// Where the subscription stands.
    pub phase: Phase,
    /// The subscription's limits clamped to the route's; absent when the route is unknown.
    pub effective_limits: Option<Limits>,
    /// The subscription's budget clamped to the route's; absent when the route is unknown.
    pub effective_budget: Option<Budget>,
    /// The route as `namespace/name` (shared by the subscriptions to one route).
    pub route: Arc<str>,
}

/// What an MCP server's status reports beyond conditions.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct McpServerDetail {
    /// The endpoint as compiled (empty when it is invalid).
    pub url: String,
}

/// What a guardrail's status reports beyond conditions.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct GuardrailDetail {
    /// Rules compiled (0 when the guardrail is not accepted).
    pub rules: u32,
}

/// Kind-specific status fields.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub enum Detail {
    /// For a `ModelProvider`.
    Provider(ProviderDetail),
    /// For an `AIRoute`.
    Route(RouteDetail),
    /// For a `Consumer`.
    Consumer(ConsumerDetail),
    /// For an `ApiSubscription`.
    Subscription(SubscriptionDetail),
    /// For an `MCPServer`.
    McpServer(McpServerDetail),
    /// For an `AIGuardrail`.
    Guardrail(GuardrailDetail),
}

/// The compiled judgement on one input object.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Which kind of object.
    pub kind: Kind,
    /// Which object (`default` namespace when the object named none).
    pub id: ObjectRef,
    /// `metadata.generation` of the object compiled; goes to `observedGeneration`.
    pub generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs` and `Ready`, in that order (a guardrail has `Accepted` only).
    pub conditions: Vec<VerdictCondition>,
    /// Kind-specific status fields.
    pub detail: Detail,
}

impl Verdict {
    /// The condition of a type, if reported.
    pub fn condition(&self, type_: &str) -> Option<&VerdictCondition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether the condition of a type is reported and true.
    pub fn is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status)
    }

    /// The object's `status` as JSON (usage left out: the leader writes it apart), every condition stamped
    /// `transition_time`. Callers keeping earlier transition times should patch conditions themselves.
    pub fn status_json(&self, transition_time: &Time) -> serde_json::Value {
        let conditions: Vec<Condition> = self
            .conditions
            .iter()
            .map(|c| c.to_condition(self.generation, transition_time.clone()))
            .collect();
        let observed_generation = self.generation;
        let value = match &self.detail {
            Detail::Provider(d) => serde_json::to_value(ModelProviderStatus {
                observed_generation,
                conditions,
                endpoint: d.endpoint.clone(),
                models: comma_list(&d.models),
                credentials: Some(saturating_i32(d.credentials)),
            }),
            Detail::Route(d) => serde_json::to_value(AIRouteStatus {
                observed_generation,
                conditions,
                endpoint: Some(d.endpoint.clone()),
                models: comma_list(&d.served_models),
                approved_subscriptions: Some(saturating_i32(d.approved_subscriptions)),
                // The usage roll-up writes it (`status.usage` is not the compile's).
                usage: None,
            }),
            Detail::Consumer(d) => serde_json::to_value(ConsumerStatus {
                observed_generation,
                conditions,
                active_keys: Some(saturating_i32(d.active_keys)),
                usage: None,
            }),
            Detail::Subscription(d) => serde_json::to_value(ApiSubscriptionStatus {
                observed_generation,
                conditions,
                phase: Some(d.phase),
                route: Some(d.route.to_string()),
                effective_limits: d.effective_limits.map(|l| tollgate_crds::Limits {
                    requests_per_minute: l.requests_per_minute,
                    tokens_per_minute: l.tokens_per_minute,
                }),
                effective_budget: d
                    .effective_budget
                    .filter(|b| !b.is_unlimited())
                    .map(budget_usd),
                usage: None,
            }),
            Detail::McpServer(_) => serde_json::to_value(tollgate_crds::MCPServerStatus {
                observed_generation,
                conditions,
            }),
            Detail::Guardrail(d) => serde_json::to_value(AIGuardrailStatus {
                observed_generation,
                conditions,
                rules: Some(saturating_i32(d.rules)),
            }),
        };
        value.expect("status types always serialise")
    }
}

/// `a,b,c` as the `MODELS` printer column shows it; absent when empty.
fn comma_list<S: std::borrow::Borrow<str>>(names: &[S]) -> Option<String> {
    (!names.is_empty()).then(|| names.join(","))
}

fn saturating_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
