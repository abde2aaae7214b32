//! The compiled routing table: what a proxy needs to serve requests, and nothing else.
//!
//! The serialisable part ([`Content`]) holds only vectors in a canonical order, so encoding is
//! deterministic. Hash maps for the hot path are rebuilt by [`Snapshot::from_content`] after decoding.
//!
//! Files from the bottom up: `shared_str` and `limits` stand alone; `refs` names objects; `provider`,
//! `route`, `consumer` and `subscription` are the four tables' rows; `index` looks rows up; `table`
//! holds them all.

mod consumer;
mod guardrail;
mod index;
mod limits;
mod mcp;
mod prompt;
mod provider;
mod refs;
mod rest;
mod route;
mod shared_str;
mod subscription;
mod table;

pub use consumer::{Consumer, ConsumerKey, KeyDigest};
pub use guardrail::{
    Detector, FailureMode, GuardRule, Guardrail, GuardrailAction, GuardrailDirection,
    GuardrailEndpoint, Matcher, ModerationApi, ModerationRule, PATTERN_SIZE_LIMIT, Pattern,
    default_mask,
};
pub use limits::{Budget, Limits, Price, budget_usd};
pub use mcp::{McpServer, ToolFilter};
pub use prompt::{
    Output, Parameters, Prompt, PromptRole, Segment, TemplateMessage, Variable, VariableType,
};
pub use provider::{
    AuthScheme, Credential, FakeBehaviour, GOOGLE_TOKEN_ENDPOINT, HealthPolicy, Provider,
    ProviderModel, ProviderType, Timeouts, VertexTarget,
};
pub use refs::{ConsumerIdx, ObjectRef, ProviderIdx, RouteIdx};
pub use rest::{RestCredential, RestOperation, RestService};
pub use route::{
    Approval, Backend, CacheEndpoint, CachePolicy, CacheScope, ContentCapture, ModelCache,
    RetryBudget, Route, RouteModel, SemanticPolicy, Stage,
};
pub use subscription::{Phase, Subscription};
pub use table::{Content, DecodeError, RouteMatch, Snapshot};

pub(crate) use limits::MICRO_USD;
pub(crate) use table::Assembly;
