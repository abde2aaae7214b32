//! Guardrails on a model call: the caller's text checked before it goes upstream (masked, or the call
//! refused), and the answer's text checked on its way back (see `guard_answer`).

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;
use tollgate_snapshot::{ConsumerIdx, GuardrailAction, GuardrailEndpoint, RouteIdx, Snapshot};

use super::ask::Endpoint;
use super::record::Call;
use crate::error::ApiError;
use crate::guard::{Decision, Policy, Refusal};

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
    let route = &snapshot.content.routes[route as usize].guardrails;
    let consumer = consumer
        .map(|c| &snapshot.content.consumers[c as usize].guardrails[..])
        .unwrap_or_default();
    if route.is_empty() && consumer.is_empty() {
        return None;
    }
    let policy = Policy::gather(
        route.iter().chain(consumer),
        guardrail_endpoint(endpoint),
        request,
    );
    (!policy.is_empty()).then_some(policy)
}

/// The access log's and metrics' word for an action.
pub(super) fn action_name(action: GuardrailAction) -> &'static str {
    match action {
        GuardrailAction::Mask => "mask",
        GuardrailAction::Reject => "reject",
        GuardrailAction::Monitor => "monitor",
    }
}

/// Notes decisions in the call's record.
pub(super) fn note(call: &mut Call, decisions: &[Decision]) {
    for d in decisions {
        call.guardrail(&d.rule, action_name(d.action));
    }
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
fn texts(doc: &mut Value, visit: &mut dyn FnMut(&mut String)) {
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
    let mut refusal: Option<Arc<str>> = None;
    let mut changed = false;
    let mut decisions: Vec<Decision> = Vec::new();
    texts(&mut doc, &mut |s| {
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
        return Err(rejected(&rule, "request"));
    }
    if !changed {
        return Ok(body);
    }
    Ok(Bytes::from(
        serde_json::to_vec(&doc).expect("a JSON value encodes"),
    ))
}
