//! `AIRoute`: one published OpenAI-compatible API.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Budget, Limits, conditions_schema, referred_name_schema, referred_namespace_schema,
};
use crate::prompt::PromptApi;

/// A published API: the OpenAI-compatible endpoints under `prefix`, the model names clients may send,
/// and the provider backends each name maps to.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "AIRoute",
    plural = "airoutes",
    namespaced,
    status = "AIRouteStatus",
    shortname = "air",
    category = "tollgate",
    doc = "A published AI API: a path prefix, the models it serves and their provider backends.",
    printcolumn(name = "Prefix", type_ = "string", json_path = ".spec.prefix"),
    printcolumn(name = "Stage", type_ = "string", json_path = ".spec.stage"),
    printcolumn(name = "Models", type_ = "string", json_path = ".status.models"),
    printcolumn(
        name = "Approval",
        type_ = "string",
        json_path = ".spec.approval",
        priority = 1
    ),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.stage != 'Deprecated' || has(self.sunset)")
    .message("a Deprecated route needs spec.sunset: the date after which it will be retired"))]
#[x_kube(validation = Rule::new("!has(self.deprecation) || !has(self.sunset) || timestamp(self.deprecation) <= timestamp(self.sunset)")
    .message("spec.deprecation must not be later than spec.sunset (RFC 9745)"))]
#[serde(rename_all = "camelCase")]
pub struct AIRouteSpec {
    /// Path prefix the API is served under; clients call `<prefix>/v1/chat/completions`.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^/([A-Za-z0-9_~/-]|\.[A-Za-z0-9_~/-])*\.?$")
    )]
    #[x_kube(
        validation = Rule::new("self == '/' || !self.endsWith('/')").message("prefix must not end with '/'"),
        validation = Rule::new("!self.contains('//')").message("prefix must not contain an empty segment ('//')")
    )]
    pub prefix: String,
    /// Hostnames the API answers on. Empty means any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub hostnames: Vec<Hostname>,
    /// Lifecycle stage. Draft routes answer only their own namespace's consumers; Retired ones answer 410.
    #[serde(default)]
    pub stage: Stage,
    /// When a Deprecated route will be retired (RFC 3339). Sent to clients in the `Sunset` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunset: Option<Time>,
    /// When the route was, or will be, deprecated (RFC 3339). Answers carry it as
    /// `Deprecation: @<unix seconds>` (RFC 9745): on a Deprecated route, and on a Published one as an
    /// announcement. A Deprecated route without it announces its creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation: Option<Time>,
    /// What the API is for, shown in the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub description: Option<String>,
    /// The model names clients may send, each with its backends.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub models: Vec<RouteModel>,
    /// How subscriptions to this route are approved.
    #[serde(default)]
    pub approval: Approval,
    /// Limits each subscription gets unless it asks for less.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Ceilings on all of the route's traffic together, whoever calls: every subscriber's calls count
    /// against them, on top of each subscription's own limits — for a provider quota that many
    /// subscribers share. Cluster-wide when the proxies count in Redis; otherwise each proxy replica
    /// holds its share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_limits: Option<Limits>,
    /// Budget each subscription gets unless it asks for less.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// How many retries and fallbacks the gateway may add on top of the calls, so that retries
    /// cannot multiply the load on struggling providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// Prompt templates published as REST operations: `POST <prefix>/prompts/<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub prompts: Vec<PromptApi>,
    /// Response caching for the route's model calls. Absent: nothing is cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSettings>,
    /// A REST service published under `<prefix>/api/`, described by its OpenAPI document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<crate::rest::RestService>,
    /// `AIGuardrail`s checked on every model call of this route, in order (a consumer's own come after).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub guardrails: Vec<crate::guardrail::GuardrailRef>,
    /// What the route's MCP endpoint (`<prefix>/mcp`) offers besides its prompt APIs and REST
    /// operations: the tools of upstream `MCPServer`s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<crate::mcp::RouteMcp>,
    /// What the route's OpenTelemetry spans may carry beyond the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<RouteTelemetry>,
}

/// A route's telemetry settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTelemetry {
    /// Records the messages of the route's model calls on their sampled spans. Absent: no message
    /// content is ever recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_content: Option<ContentCapture>,
}

/// Message content on a sampled model call's spans (`gen_ai.input.messages`,
/// `gen_ai.system_instructions`, `gen_ai.output.messages`), as the guardrails left it: masked text
/// is recorded masked. Headers and credentials are never recorded.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.enabled || !has(self.maxBytes)")
    .message("captureContent.maxBytes is set only with enabled: true (it does not turn capture on)"))]
#[serde(rename_all = "camelCase")]
pub struct ContentCapture {
    /// `true` records the content; `false` (the default) records none.
    #[serde(default)]
    pub enabled: bool,
    /// Most bytes of each of the three attributes; longer content is cut to fit. Default 4096,
    /// 64 to 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 64, max = 65536))]
    pub max_bytes: Option<u32>,
}

/// Response caching: an identical request (see the README for what makes two requests the same)
/// is answered from a stored answer without calling a provider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.ttl) || (duration(self.ttl) > duration('0s') && duration(self.ttl) <= duration('720h'))")
    .message("cache.ttl must be above 0 and at most 720h (30 days)"))]
#[x_kube(validation = Rule::new("has(self.mode) && self.mode == 'Semantic' ? has(self.semantic) : !has(self.semantic)")
    .message("cache.semantic is required with mode Semantic and allowed only with it"))]
#[serde(rename_all = "camelCase")]
pub struct CacheSettings {
    /// `false` turns caching off; on a model, for the calls to that model whatever the route's
    /// settings say. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// How requests are matched to stored answers. Default Exact.
    #[serde(default)]
    pub mode: CacheMode,
    /// How long an answer is kept, e.g. `10m` or `24h`. Default `1h`, at most `720h` (30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]{1,6}(ms|s|m|h))+$"))]
    pub ttl: Option<String>,
    /// Who shares stored answers. Default Consumer: entries are never shared between consumers.
    #[serde(default)]
    pub scope: CacheScope,
    /// Largest answer stored, in bytes; larger answers are passed on and not kept. Default 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 67108864))]
    pub max_entry_bytes: Option<u32>,
    /// Which endpoints are cached. Default Chat, Embeddings and Messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub endpoints: Vec<CacheEndpoint>,
    /// How Semantic mode finds a stored answer to a question asked in other words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<SemanticCache>,
}

/// Semantic mode: the last user turn of a chat or messages call is embedded, and a stored answer to
/// a question whose embedding is close enough answers it, when everything else in the request
/// (system prompt, earlier turns, sampling options, tools) is the same.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.threshold) || self.threshold > 0.0")
    .message("cache.semantic.threshold must be above 0"))]
#[serde(rename_all = "camelCase")]
pub struct SemanticCache {
    /// The embeddings model that embeds the questions: a model name this route serves.
    #[schemars(length(min = 1, max = 128))]
    pub embedding_model: String,
    /// Cosine similarity a stored question needs to answer a new one (above 0, at most 1).
    /// Default 0.95.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: Option<f64>,
    /// Calls with more user and assistant turns than this are not looked up semantically (an
    /// exact match still answers them). Default 1: single questions only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_turns: Option<u32>,
}

/// How requests are matched to stored answers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum CacheMode {
    /// The same normalised request (member order aside, fields that do not change the answer left out).
    #[default]
    Exact,
    /// Exact first; then, for chat and messages calls, a stored answer to a question close enough
    /// in meaning (see `semantic`).
    Semantic,
}

/// Who shares stored answers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum CacheScope {
    /// Each consumer has its own entries: one consumer's answer never reaches another.
    #[default]
    Consumer,
    /// Every subscriber of the route shares the entries.
    Route,
}

/// An endpoint whose answers may be cached.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum CacheEndpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/messages`.
    Messages,
    /// `<prefix>/prompts/<name>`: the prompt APIs (whole answers; streamed calls are passed on).
    Prompts,
    /// `/v1/responses`: OpenAI's Responses API (whole answers of calls that do not continue a
    /// stored response or conversation; streamed calls are passed on).
    Responses,
}

/// Retries allowed on top of the calls: a share of them, plus a floor per second.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Retries as a percentage of calls. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub percent: Option<u32>,
    /// Retries allowed per second whatever the traffic. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10000))]
    pub min_per_second: Option<u32>,
}

/// A DNS hostname, optionally with a leading `*.` wildcard.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(transparent)]
pub struct Hostname(
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
        )
    )]
    pub String,
);

/// Lifecycle stage of a route.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum Stage {
    /// Visible only to consumers in the route's own namespace.
    Draft,
    /// Open to every approved subscriber.
    #[default]
    Published,
    /// Still served, with `Deprecation` and `Sunset` headers on every answer.
    Deprecated,
    /// No longer served: clients get 410 Gone.
    Retired,
}

/// How new subscriptions are approved.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum Approval {
    /// Someone holding the `approve` verb on this route sets each subscription's decision.
    #[default]
    Manual,
    /// Subscriptions are approved as soon as they are created, unless rejected or revoked.
    Automatic,
}

/// A model name clients may send, and where it is served.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.backends.exists(b, b.weight > 0)")
    .message("every model needs at least one backend with a weight above 0"))]
#[serde(rename_all = "camelCase")]
pub struct RouteModel {
    /// The name clients put in `model`, e.g. `gpt-4o` or `team-default`.
    #[schemars(
        length(min = 1, max = 200),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
    )]
    pub name: String,
    /// Backends sharing the traffic by weight.
    #[schemars(length(min = 1, max = 16))]
    pub backends: Vec<BackendRef>,
    /// Backends tried in order when every weighted backend failed before answering.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub fallbacks: Vec<BackendRef>,
    /// How many tokens (prompt and completion together) the model takes, shown in the portal's
    /// catalog; defaults to the shipped price list's figure for the first backend's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub context_window: Option<u64>,
    /// This model's own cache settings, used instead of the route's `spec.cache` for calls to it
    /// (whole, not merged with the route's); `{enabled: false}` keeps its answers out of the cache.
    /// Absent: the route's settings apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSettings>,
}

fn default_weight() -> u32 {
    1
}

/// A model at a provider.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// Name of the `ModelProvider`.
    #[schemars(schema_with = "referred_name_schema")]
    pub provider: String,
    /// Namespace of the `ModelProvider`; defaults to the route's. The provider must allow this route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "referred_namespace_schema")]
    pub namespace: Option<String>,
    /// The model name sent upstream; defaults to the route's model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 200),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
    )]
    pub model: Option<String>,
    /// Share of traffic relative to the other backends; 0 keeps it configured but idle. Ignored in fallbacks.
    #[serde(default = "default_weight")]
    #[schemars(range(max = 10000))]
    pub weight: u32,
}

/// What the controller reports about a route.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AIRouteStatus {
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted, ResolvedRefs, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Base path of the API, e.g. `/team-a/chat/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Served model names (those with at least one usable backend), comma-separated, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<String>,
    /// Subscriptions currently approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_subscriptions: Option<i32>,
    /// Usage of all its subscriptions added up (history as in `ApiSubscription.status.usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::subscription::Usage>,
}
