//! Guardrails on the text of model calls: the built-in detectors, the rules of a call's side checked
//! against a text, and the check of a streamed answer with its hold-back window.
//!
//! Pure, like `llm/`: text in, spans, masked text and decisions out; no request, body or shared state.

mod block;
mod check;
mod detect;
pub mod json_text;
pub mod moderation;
#[cfg(test)]
mod oracle;
mod scan;
mod shape;
mod sse;
mod stream;
#[cfg(test)]
mod tests;

pub use check::{Decision, Policy, Refusal, apply};
#[cfg(test)]
use scan::find;
pub use sse::{AnswerStream, StreamFormat, stream_texts};
#[cfg(test)]
use stream::{HOLD_BACK_BYTES, MAX_PENDING_BYTES, StreamGuard};
