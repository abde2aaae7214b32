//! What the MCP modules share to answer: the call's note, refusals and invalid params as JSON-RPC
//! errors, tool errors as results, and callers' text cut short for messages.

use std::ops::Range;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::jsonrpc::{INVALID_PARAMS, REFUSED, RpcError};
use crate::call::{Call, McpNote};
use crate::error::ApiError;

pub(super) fn note(call: &mut Call) -> &mut McpNote {
    call.mcp.get_or_insert_with(Box::default)
}

/// At most 64 characters of a caller's text, for messages.
pub(super) fn shown(text: &str) -> String {
    text.chars().take(64).collect()
}

/// A gateway refusal (key, lifecycle, subscription, limits) as a JSON-RPC error whose `data` has the
/// HTTP status and the same `type` and `code` as the route's other endpoints answer with.
pub(super) fn refusal(id: Option<Value>, e: &ApiError) -> RpcError {
    RpcError::new(id, REFUSED, e.message.clone()).with_data(json!({
        "status": e.status.as_u16(),
        "type": e.kind,
        "code": e.code,
    }))
}

pub(super) type Outcome = Result<Value, (StatusCode, RpcError)>;

/// A tool call's result: a value, or a prompt tool's text answer as the prompt API wrote it, with
/// where its `output` string stands (quotes included). That string is copied into the result as it
/// came, never decoded and escaped again: it is the common case and its text the bulk of the answer.
pub(super) enum ToolResult {
    Value(Value),
    Written { answer: Bytes, text: Range<usize> },
}

impl ToolResult {
    /// Whether the tool reported an error (a written result never does).
    pub(super) fn is_error(&self) -> bool {
        matches!(self, ToolResult::Value(v) if v["isError"] == true)
    }
}

/// What `tools/call` answers.
pub(super) type ToolOutcome = Result<ToolResult, (StatusCode, RpcError)>;

pub(super) fn invalid_params(message: String) -> (StatusCode, RpcError) {
    (StatusCode::OK, RpcError::new(None, INVALID_PARAMS, message))
}

/// A tool result saying the tool ran and failed, for the model to read and correct.
pub(super) fn tool_error(text: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": text.into()}], "isError": true})
}
