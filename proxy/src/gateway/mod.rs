//! One request's API surface: the endpoints of a route, admission (key → consumer → lifecycle →
//! subscription → limits), `/v1/models`, and answers in the caller's format (OpenAI's or Anthropic's
//! envelope). Prompt APIs, REST passthrough, OpenAPI documents and the MCP endpoint belong here too.

mod admission;
mod answer;
mod body;
mod mcp;
mod models;
mod openapi;
mod prompt;
mod request;
mod rest;
mod routed;

pub use mcp::key_from_secret as session_key_from_secret;
pub use request::handle;
