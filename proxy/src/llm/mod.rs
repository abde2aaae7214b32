//! Pure formats and translation: OpenAI's request document and usage, a JSON scanner, the neutral chat
//! and stream model every translation goes through, SSE and AWS event-stream framing, SigV4, each
//! provider's wire format (Anthropic, Gemini, Bedrock), Messages-format and Responses-format callers,
//! JSON-Schema answers through a forced tool, and error scrubbing.
//!
//! Nothing here sees a connection, a call record, a response body or shared state: functions take
//! bytes and values and return bytes, values and errors, so that each can be fuzzed and tested alone.
//! The layer check (`proxy/tests/it/layers.rs`) keeps it so, and keeps tokio and hyper out.

pub mod answer_head;
pub mod anthropic;
pub mod bedrock;
pub mod canonical_json;
pub mod chat;
pub mod eventstream;
#[cfg(test)]
mod fuzz;
pub mod gemini;
pub mod genai_content;
pub mod json_answer;
pub mod json_scan;
pub mod messages;
pub mod openai;
#[cfg(test)]
mod pricing_tests;
pub mod prompt;
pub mod replay;
pub mod responses;
pub mod responses_request;
pub mod responses_stream;
pub mod scrub;
pub mod sigv4;
pub mod sse;
pub mod stream;
#[cfg(test)]
mod translation_cost;
mod usage;
pub mod vertex;

pub use usage::Usage;
