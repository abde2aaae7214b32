//! A route row: a published API, the models it serves and the backends behind each.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use tollgate_crds::{Approval, CacheEndpoint, CacheScope, Stage};

use super::limits::{Budget, Limits, Price};
use super::prompt::Prompt;
use super::refs::{ObjectRef, ProviderIdx};
use super::shared_str;

/// How many retries and fallbacks a route may add on top of its calls, so retries cannot multiply load.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBudget {
    /// Retries allowed as a percentage of calls.
    pub percent: u32,
    /// Retries allowed per second regardless of traffic, so a quiet route can still fail over.
    pub min_per_second: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            percent: 20,
            min_per_second: 10,
        }
    }
}

/// A model at a provider that a route model can send traffic to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Backend {
    /// The provider.
    pub provider: ProviderIdx,
    /// Model name sent upstream (shared by every backend naming the same model of a provider).
    #[serde(deserialize_with = "shared_str::deserialize")]
    pub upstream_model: Arc<str>,
    /// Relative share among the weighted backends (unused for fallbacks).
    pub weight: u32,
    /// Price of this model at this provider.
    pub price: Price,
}

/// A model name clients may send on a route, with only the backends that resolved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RouteModel {
    /// Client-facing name (routes serving one model share the string).
    #[serde(deserialize_with = "shared_str::deserialize")]
    pub name: Arc<str>,
    /// Weighted backends (weight > 0 only).
    pub backends: Vec<Backend>,
    /// Ordered fallbacks.
    pub fallbacks: Vec<Backend>,
    /// Tokens the model takes (prompt and completion): the route's figure, else the price list's
    /// for the first backend's model; unknown otherwise.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Whether calls to this model follow the route's cache policy, have their own, or are not
    /// cached. Left out of the encoding when it is the route's, so such models encode (and hash)
    /// as they did before.
    #[serde(default, skip_serializing_if = "ModelCache::is_route")]
    pub cache: ModelCache,
}

/// A model's cache settings where they differ from its route's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub enum ModelCache {
    /// The route's policy applies.
    #[default]
    Route,
    /// Calls to this model are not cached.
    Off,
    /// Calls to this model are cached by this policy instead of the route's.
    Own(CachePolicy),
}

impl ModelCache {
    /// Whether the route's policy applies.
    pub fn is_route(&self) -> bool {
        *self == ModelCache::Route
    }
}

impl RouteModel {
    /// The cache policy of calls to this model on `route` (its own, or the route's).
    pub fn cache_policy<'a>(&'a self, route: &'a Route) -> Option<&'a CachePolicy> {
        match &self.cache {
            ModelCache::Route => route.cache.as_ref(),
            ModelCache::Off => None,
            ModelCache::Own(policy) => Some(policy),
        }
    }
}

/// A published API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Route {
    /// The `AIRoute` object.
    pub id: ObjectRef,
    /// Its `metadata.uid` (empty when the object has none): see `Subscription::uid`. Left out of the
    /// encoding when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Path prefix without a trailing `/` (`""` for the root prefix `/`).
    pub prefix: String,
    /// Hostnames it answers on (lower-case; `*.example.com` wildcards allowed). Empty: any host.
    pub hostnames: Vec<String>,
    /// Lifecycle stage.
    pub stage: Stage,
    /// Sunset instant (Unix seconds) for Deprecated routes.
    pub sunset_unix: Option<i64>,
    /// Deprecation instant (Unix seconds) announced in `Deprecation` headers (RFC 9745): always set
    /// on a Deprecated route, set on a Published one only when it announces a deprecation. Left out
    /// of the encoding when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecation_unix: Option<i64>,
    /// Served models, sorted by name. Empty for Retired routes (never routed upstream).
    pub models: Vec<RouteModel>,
    /// Default per-subscription limits.
    pub limits: Limits,
    /// Ceilings on all of the route's calls together (`spec.totalLimits`). Left out of the encoding
    /// when unlimited.
    #[serde(default, skip_serializing_if = "Limits::is_unlimited")]
    pub total_limits: Limits,
    /// How subscriptions are approved.
    pub approval: Approval,
    /// Default (and ceiling of) each subscription's budget.
    #[serde(default)]
    pub budget: Budget,
    /// Retries and fallbacks allowed on top of the calls.
    #[serde(default)]
    pub retry_budget: RetryBudget,
    /// What the route is for (its `spec.description`), for its OpenAPI document.
    #[serde(default)]
    pub description: Option<String>,
    /// Prompt APIs that compiled, sorted by name.
    #[serde(default)]
    pub prompts: Vec<Prompt>,
    /// Response caching; `None` when the route caches nothing.
    #[serde(default)]
    pub cache: Option<CachePolicy>,
    /// The REST service published under `<prefix>/api/`, when it compiled. Left out of the encoding
    /// when absent, so routes without one encode (and hash) as they did before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<super::rest::RestService>,
    /// Guardrails that resolved, in `spec.guardrails` order. Left out of the encoding when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<super::guardrail::Guardrail>,
    /// Upstream MCP servers that resolved, in `spec.mcp.servers` order. Left out of the encoding
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<super::mcp::McpServer>,
    /// Message content recorded on sampled spans (`spec.telemetry.captureContent`); `None`: never.
    /// Left out of the encoding when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_content: Option<ContentCapture>,
}

/// A route's opt-in to message content on its sampled spans.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentCapture {
    /// Most bytes of each content attribute.
    pub max_bytes: u32,
}

impl ContentCapture {
    /// `maxBytes` when the route leaves it out.
    pub const DEFAULT_MAX_BYTES: u32 = 4096;
}

/// How a route caches answers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CachePolicy {
    /// How long an answer is kept.
    pub ttl_ms: u64,
    /// Who shares entries.
    pub scope: CacheScope,
    /// Largest answer kept, in bytes.
    pub max_entry_bytes: u32,
    /// Endpoints cached, sorted, without repeats.
    pub endpoints: Vec<CacheEndpoint>,
    /// Semantic lookups after the exact one; `None` in Exact mode. Left out of the encoding when
    /// absent, so Exact routes encode (and hash) as they did before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<SemanticPolicy>,
}

/// How a route looks up answers to questions asked in other words.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SemanticPolicy {
    /// The route's model name of the embeddings model that embeds questions.
    pub embedding_model: String,
    /// Cosine similarity a stored question needs to answer a new one, in (0, 1].
    pub threshold: f64,
    /// Most user and assistant turns a call may have to be looked up semantically.
    pub max_turns: u32,
}

impl SemanticPolicy {
    /// Default similarity needed: 0.95.
    pub const DEFAULT_THRESHOLD: f64 = 0.95;
    /// Default most turns: one question.
    pub const DEFAULT_MAX_TURNS: u32 = 1;
}

impl CachePolicy {
    /// Default time to live: one hour.
    pub const DEFAULT_TTL_MS: u64 = 3_600_000;
    /// Longest time to live: 30 days.
    pub const MAX_TTL_MS: u64 = 30 * 86_400_000;
    /// Default largest entry: 1 MiB.
    pub const DEFAULT_MAX_ENTRY_BYTES: u32 = 1 << 20;

    /// Whether answers of `endpoint` are cached.
    pub fn covers(&self, endpoint: CacheEndpoint) -> bool {
        self.endpoints.contains(&endpoint)
    }
}
