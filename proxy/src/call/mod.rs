//! From a model name to an answer: what the client asked for, the plan of backends, one attempt for
//! every wire (the request in the provider's format, the answer relayed or translated back), the
//! Fake provider, the relay, the response body and the call record, with a typed cause for every
//! failed attempt; the response cache in front of the plan. Guardrails on the way out belong here too.

mod answer;
mod ask;
mod attempt;
mod body;
mod cache;
mod failure;
pub mod fake;
mod guard;
mod mcp_upstream;
mod model_call;
mod moderation;
mod outgoing;
mod policies;
mod record;
mod relay;
mod rest;
mod shared;

pub use answer::json;
pub use ask::{Endpoint, REQUEST_ID};
pub use body::ResponseBody;
pub use cache::{CacheConfig, ResponseCache, cached_call};
pub use guard::{guard_answer, guard_request, guard_tool_arguments, guard_tool_result};
pub use mcp_upstream::{McpFailure, McpUpstreams};
pub use model_call::route_call;
pub use moderation::{moderate_answer, moderate_request, moderate_tool};
pub use policies::any_guardrails;
pub use record::{Call, McpNote, TraceHeaders, client_span_to};
pub use rest::{RestRequest, rest_call};
pub use shared::{RequestLimits, Shared};
