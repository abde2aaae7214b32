//! Guardrails on a model call: the caller's text checked before it goes upstream (masked, or the call
//! refused), and the answer's text checked on its way back (see `guard_answer`).

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;
use tollgate_snapshot::{ConsumerIdx, GuardrailEndpoint, RouteIdx, Snapshot};

use super::ask::Endpoint;
use super::record::Call;
use crate::error::ApiError;
use crate::guard::{AnswerStream, Decision, Policy, Refusal, StreamFormat};

/// The guardrail endpoint a model endpoint counts as.
pub(super) fn guardrail_endpoint(endpoint: Endpoint) -> GuardrailEndpoint {
    match endpoint {
        Endpoint::Chat | Endpoint::Responses => GuardrailEndpoint::Chat,
        Endpoint::Messages | Endpoint::CountTokens => GuardrailEndpoint::Messages,
        Endpoint::Prompt { .. } => GuardrailEndpoint::Prompts,
        Endpoint::Embeddings => GuardrailEndpoint::Embeddings,
    }
}

/// The rules of one side of a call on `route` by `consumer` (route's guardrails first), or `None` when
/// nothing is checked.
pub(super) fn policy(
    snapshot: &Snapshot,
    route: RouteIdx,
    consumer: Option<ConsumerIdx>,
    endpoint: Endpoint,
    request: bool,
) -> Option<Policy> {
    policy_of(
        snapshot,
        route,
        consumer,
        guardrail_endpoint(endpoint),
        request,
    )
}

/// [`policy`] for a guardrail endpoint.
fn policy_of(
    snapshot: &Snapshot,
    route: RouteIdx,
    consumer: Option<ConsumerIdx>,
    endpoint: GuardrailEndpoint,
    request: bool,
) -> Option<Policy> {
    let route = &snapshot.content.routes[route as usize].guardrails;
    let consumer = consumer
        .map(|c| &snapshot.content.consumers[c as usize].guardrails[..])
        .unwrap_or_default();
    if route.is_empty() && consumer.is_empty() {
        return None;
    }
    let policy = Policy::gather(route.iter().chain(consumer), endpoint, request);
    (!policy.is_empty()).then_some(policy)
}

/// Notes decisions in the call's record.
pub(super) fn note(call: &mut Call, decisions: &[Decision]) {
    call.note_guardrails(decisions);
}

/// The 400 a Reject rule gives: names the rule, never the text it matched.
pub(super) fn rejected(rule: &str, side: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "content_policy_violation",
        format!("The {side} was refused by the guardrail rule {rule}."),
    )
}

fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::TooLong { unit, limit } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "content_policy_violation",
            format!(
                "The request's text is longer than a guardrail of this API allows ({limit} {unit})."
            ),
        ),
        Refusal::Broken(id) => ApiError::upstream(
            StatusCode::SERVICE_UNAVAILABLE,
            "guardrail_unavailable",
            format!(
                "The guardrail {id} of this API cannot be used (see GuardrailsValid in the route's or consumer's status), so calls it checks are refused."
            ),
        ),
    }
}

/// Members of a request whose strings are text a model reads (the rest are roles, ids, types, URLs).
const TEXT_KEYS: &[&str] = &[
    "content",
    "text",
    "input",
    "system",
    "instructions",
    "prompt",
];

/// Every text string of a request document, to `visit`.
pub(super) fn texts(doc: &mut Value, visit: &mut dyn FnMut(&mut String)) {
    fn walk(value: &mut Value, text: bool, visit: &mut dyn FnMut(&mut String)) {
        match value {
            Value::String(s) if text => visit(s),
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, text, visit)),
            Value::Object(members) => {
                for (key, v) in members.iter_mut() {
                    walk(v, TEXT_KEYS.contains(&key.as_str()), visit);
                }
            }
            _ => {}
        }
    }
    if let Value::Object(members) = doc {
        for (key, v) in members.iter_mut() {
            if key == "messages" {
                walk(v, false, visit);
            } else if TEXT_KEYS.contains(&key.as_str()) {
                walk(v, true, visit);
            }
        }
    }
}

/// A walker over the text strings of a document (`texts` for requests, `answer_texts` for answers).
type TextWalker = fn(&mut Value, &mut dyn FnMut(&mut String));

/// Checks every text `walk` finds in `doc` against `policy`, masking in place, and notes the decisions
/// in the call: whether anything was masked, or the 400 of the first Reject rule (`side`: `request` or
/// `answer`, for its message).
fn check_document(
    policy: &Policy,
    doc: &mut Value,
    walk: TextWalker,
    call: &mut Call,
    side: &str,
) -> Result<bool, ApiError> {
    let mut refusal: Option<Arc<str>> = None;
    let mut changed = false;
    let mut decisions: Vec<Decision> = Vec::new();
    walk(doc, &mut |s| {
        if refusal.is_some() {
            return;
        }
        let checked = policy.check(s);
        for d in &checked.decisions {
            if !decisions.contains(d) {
                decisions.push(d.clone());
            }
        }
        if let Some(rule) = checked.rejected {
            refusal = Some(rule);
        } else if !checked.masks.is_empty() {
            *s = checked.masked(s);
            changed = true;
        }
    });
    note(call, &decisions);
    if let Some(rule) = refusal {
        call.fail("content_policy_violation");
        return Err(rejected(&rule, side));
    }
    Ok(changed)
}

/// Checks the caller's text: the body to send on (masked where a Mask rule matched), or the refusal.
pub fn guard_request(
    snapshot: &Snapshot,
    route: RouteIdx,
    endpoint: Endpoint,
    body: Bytes,
    call: &mut Call,
) -> Result<Bytes, ApiError> {
    let Some(policy) = policy(snapshot, route, call.consumer, endpoint, true) else {
        return Ok(body);
    };
    // A body that is not JSON is refused with its own 400 when it is read as a request.
    let Ok(mut doc) = serde_json::from_slice::<Value>(&body) else {
        if let Some(id) = policy.broken {
            return Err(refused(Refusal::Broken(id)));
        }
        return Ok(body);
    };
    let mut chars = 0usize;
    texts(&mut doc, &mut |s| chars += s.chars().count());
    policy.admit(chars).map_err(|r| {
        let error = refused(r);
        call.fail(error.code);
        error
    })?;
    if policy.rules.is_empty() {
        return Ok(body);
    }
    if !check_document(&policy, &mut doc, texts, call, "request")? {
        return Ok(body);
    }
    Ok(Bytes::from(
        serde_json::to_vec(&doc).expect("a JSON value encodes"),
    ))
}

/// Members of an answer whose strings are text the model wrote (OpenAI's `content`, Anthropic's and
/// the Responses API's `text`, a prompt API's `output`).
const ANSWER_KEYS: &[&str] = &["content", "text", "output"];

pub(super) fn answer_texts(doc: &mut Value, visit: &mut dyn FnMut(&mut String)) {
    fn walk(value: &mut Value, text: bool, visit: &mut dyn FnMut(&mut String)) {
        match value {
            Value::String(s) if text => visit(s),
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, text, visit)),
            Value::Object(members) => {
                for (key, v) in members.iter_mut() {
                    walk(v, text || ANSWER_KEYS.contains(&key.as_str()), visit);
                }
            }
            _ => {}
        }
    }
    walk(doc, false, visit);
}

/// Checks the answer's text on its way to the caller: a whole answer is read, checked and masked here
/// (a Reject rule makes it a 400); a streamed one is checked as it flows (see `guard::AnswerStream`).
pub async fn guard_answer(
    snapshot: &Snapshot,
    route: RouteIdx,
    endpoint: Endpoint,
    mut response: http::Response<super::body::ResponseBody>,
    call: &mut Call,
) -> Result<http::Response<super::body::ResponseBody>, ApiError> {
    let Some(policy) = policy(snapshot, route, call.consumer, endpoint, false) else {
        return Ok(response);
    };
    // Embeddings and token counts answer with numbers, not text.
    if policy.rules.is_empty()
        || !response.status().is_success()
        || matches!(endpoint, Endpoint::Embeddings | Endpoint::CountTokens)
    {
        return Ok(response);
    }
    let streamed = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streamed {
        let format = match endpoint {
            Endpoint::Chat => StreamFormat::OpenAiChat,
            Endpoint::Messages => StreamFormat::AnthropicMessages,
            Endpoint::Prompt { .. } => StreamFormat::Prompt,
            Endpoint::Responses => StreamFormat::Responses,
            // Embeddings and token counts do not stream (and returned above).
            Endpoint::Embeddings | Endpoint::CountTokens => return Ok(response),
        };
        response
            .body_mut()
            .guard_with(AnswerStream::new(format, Arc::new(policy)));
        return Ok(response);
    }
    let body = read_whole_answer(&mut response, call).await?;
    let Ok(mut doc) = serde_json::from_slice::<Value>(&body) else {
        return Ok(with_body(response, Bytes::from(body)));
    };
    let changed = check_document(&policy, &mut doc, answer_texts, call, "answer")?;
    // Unchanged answers keep their own bytes.
    let bytes = if changed {
        Bytes::from(serde_json::to_vec(&doc).expect("a JSON value encodes"))
    } else {
        Bytes::from(body)
    };
    Ok(with_body(response, bytes))
}

/// Reads a whole (non-stream) answer's body; the call record takes its usage on the way.
pub(super) async fn read_whole_answer(
    response: &mut http::Response<super::body::ResponseBody>,
    call: &mut Call,
) -> Result<Vec<u8>, ApiError> {
    response.body_mut().read_answer(call).await.map_err(|_| {
        ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "The provider's answer broke off before it was complete.",
        )
    })
}

/// `response` with `bytes` for its body (read by [`read_whole_answer`]), the cache's copy handed to
/// the new body, and `Content-Length` dropped since masking may have changed the length.
pub(super) fn with_body(
    response: http::Response<super::body::ResponseBody>,
    bytes: Bytes,
) -> http::Response<super::body::ResponseBody> {
    let (mut parts, mut old) = response.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let mut new = super::body::ResponseBody::full(bytes);
    old.hand_copy_to(&mut new);
    http::Response::from_parts(parts, new)
}

/// Every string value in a tool call's arguments (tools take free-form JSON: any string may be text).
pub(super) fn argument_texts(doc: &mut Value, visit: &mut dyn FnMut(&mut String)) {
    match doc {
        Value::String(s) => visit(s),
        Value::Array(items) => items.iter_mut().for_each(|v| argument_texts(v, visit)),
        Value::Object(members) => members.values_mut().for_each(|v| argument_texts(v, visit)),
        _ => {}
    }
}

/// The text of a tool result: `content[].text` and every string of `structuredContent`.
pub(super) fn tool_result_texts(doc: &mut Value, visit: &mut dyn FnMut(&mut String)) {
    if let Some(items) = doc.get_mut("content").and_then(Value::as_array_mut) {
        for item in items {
            if let Some(Value::String(s)) = item.get_mut("text") {
                visit(s);
            }
        }
    }
    if let Some(structured) = doc.get_mut("structuredContent") {
        argument_texts(structured, visit);
    }
}

/// Checks the arguments of an MCP `tools/call` on `route` (a REST operation's or an upstream MCP
/// server's tool) against the guardrails of the `Mcp` endpoint: masked in place, or the refusal
/// (which the MCP endpoint gives as a JSON-RPC error).
pub fn guard_tool_arguments(
    snapshot: &Snapshot,
    route: RouteIdx,
    arguments: &mut Value,
    call: &mut Call,
) -> Result<(), ApiError> {
    let Some(policy) = policy_of(snapshot, route, call.consumer, GuardrailEndpoint::Mcp, true)
    else {
        return Ok(());
    };
    let mut chars = 0usize;
    argument_texts(arguments, &mut |s| chars += s.chars().count());
    policy.admit(chars).map_err(|r| {
        let error = refused(r);
        call.fail(error.code);
        error
    })?;
    if !policy.rules.is_empty() {
        check_document(&policy, arguments, argument_texts, call, "tool call")?;
    }
    Ok(())
}

/// Checks a tool's result on its way back, like [`guard_tool_arguments`] (answer side).
pub fn guard_tool_result(
    snapshot: &Snapshot,
    route: RouteIdx,
    result: &mut Value,
    call: &mut Call,
) -> Result<(), ApiError> {
    match policy_of(
        snapshot,
        route,
        call.consumer,
        GuardrailEndpoint::Mcp,
        false,
    ) {
        Some(policy) if !policy.rules.is_empty() => {
            check_document(&policy, result, tool_result_texts, call, "tool result").map(|_| ())
        }
        _ => Ok(()),
    }
}

/// Whether the route or the consumer attaches any guardrail (so a caller may skip copying a
/// document that nothing would check).
pub fn any_guardrails(snapshot: &Snapshot, route: RouteIdx, consumer: Option<ConsumerIdx>) -> bool {
    !snapshot.content.routes[route as usize]
        .guardrails
        .is_empty()
        || consumer.is_some_and(|c| !snapshot.content.consumers[c as usize].guardrails.is_empty())
}
