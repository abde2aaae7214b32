//! Guardrails' moderation hooks on a model call: the caller's text, and a whole answer, posted to a
//! moderation service (a provider's OpenAI `/moderations`, or a webhook) after the text rules have
//! masked what they mask, so the service never sees what they hide.
//!
//! A flagged text is refused by a Reject rule (400 `content_policy_violation` naming the rule) and
//! only noted by a Monitor rule. A service that cannot be asked — no answer within the rule's
//! timeout, a refused connection, a status other than 2xx, an answer not in its contract — lets the
//! call through under `failureMode: Open` (noted `fail_open`) and refuses it under Closed (503
//! `moderation_unavailable`, noted `fail_closed`). Streamed answers are not moderated as they flow:
//! a stream whose answer a moderation rule would check is refused before it starts.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;
use tollgate_snapshot::{
    FailureMode, GuardrailAction, GuardrailEndpoint, ModerationRule, ObjectRef, RouteIdx, Snapshot,
};

use super::ask::Endpoint;
use super::body::ResponseBody;
use super::guard::{
    AnswerShape, argument_texts, guardrail_endpoint, read_whole_answer, rejected, stream_format,
    texts_of, tool_result_texts, with_body,
};
use super::record::Call;
use super::shared::Shared;
use crate::error::ApiError;
use crate::guard::moderation::{Subject, Verdict, read_answer, request_body};
use crate::guard::{Decision, stream_texts};
use crate::upstream::UpstreamError;

/// Largest answer read from a moderation service.
const MAX_ANSWER: usize = 1024 * 1024;
/// Largest streamed answer held for an answer-side moderation rule.
const MAX_HELD: usize = 16 * 1024 * 1024;

/// The moderation rules that check one side of a call, each with its guardrail (route's first).
fn rules(
    snapshot: &Snapshot,
    route: RouteIdx,
    consumer: Option<tollgate_snapshot::ConsumerIdx>,
    endpoint: GuardrailEndpoint,
    request: bool,
) -> Vec<(&ObjectRef, &ModerationRule)> {
    let route = &snapshot.content.routes[route as usize].guardrails;
    let consumer = consumer
        .map(|c| &snapshot.content.consumers[c as usize].guardrails[..])
        .unwrap_or_default();
    route
        .iter()
        .chain(consumer)
        .filter(|g| !g.broken && !g.moderations.is_empty() && g.covers(endpoint, request))
        .flat_map(|g| g.moderations.iter().map(move |m| (&g.id, m)))
        .collect()
}

fn endpoint_name(endpoint: GuardrailEndpoint) -> &'static str {
    match endpoint {
        GuardrailEndpoint::Chat => "chat",
        GuardrailEndpoint::Messages => "messages",
        GuardrailEndpoint::Prompts => "prompts",
        GuardrailEndpoint::Embeddings => "embeddings",
        GuardrailEndpoint::Mcp => "mcp",
    }
}

/// Asks the moderation rules of the request side about the caller's text (the body as it goes
/// upstream, masked already).
pub async fn moderate_request(
    shared: &Shared,
    snapshot: &Snapshot,
    route: RouteIdx,
    endpoint: Endpoint,
    body: &Bytes,
    call: &mut Call,
) -> Result<(), ApiError> {
    let side = guardrail_endpoint(endpoint);
    let found = rules(snapshot, route, call.consumer, side, true);
    if found.is_empty() {
        return Ok(());
    }
    // A body that is not JSON is refused with its own 400 when it is read as a request.
    let Some(collected) = texts_of(body, None) else {
        return Ok(());
    };
    let route_id = snapshot.content.routes[route as usize].id.to_string();
    moderate(shared, &found, &collected, "request", &route_id, side, call).await
}

/// Asks the moderation rules of the answer side about a whole answer's text. A streamed answer is
/// held until it has ended (through its text rules: masked, or ended by a Reject rule's error
/// event), its text asked about, and then sent whole, or refused like a whole answer: nothing of it
/// has reached the caller yet, so the refusal is the same 400 (or 503) in the caller's shape.
pub async fn moderate_answer(
    shared: &Shared,
    snapshot: &Snapshot,
    route: RouteIdx,
    endpoint: Endpoint,
    mut response: http::Response<ResponseBody>,
    call: &mut Call,
) -> Result<http::Response<ResponseBody>, ApiError> {
    let side = guardrail_endpoint(endpoint);
    if !response.status().is_success()
        || matches!(endpoint, Endpoint::Embeddings | Endpoint::CountTokens)
    {
        return Ok(response);
    }
    let found = rules(snapshot, route, call.consumer, side, false);
    if found.is_empty() {
        return Ok(response);
    }
    let route_id = snapshot.content.routes[route as usize].id.to_string();
    let streamed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streamed && let Some(format) = stream_format(endpoint) {
        let held = match response.body_mut().read_held(call, MAX_HELD).await {
            Ok(Some(held)) => held,
            Ok(None) => {
                let error = ApiError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "answer_too_large",
                    format!(
                        "The streamed answer is longer than the {} MiB a moderation rule of this API can hold to check.",
                        MAX_HELD >> 20
                    ),
                );
                call.fail(error.code);
                return Err(error);
            }
            Err(_) => {
                return Err(ApiError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    "The provider's answer broke off before it was complete.",
                ));
            }
        };
        let collected = stream_texts(format, &held);
        moderate(shared, &found, &collected, "answer", &route_id, side, call).await?;
        return Ok(with_body(response, Bytes::from(held)));
    }
    let body = read_whole_answer(&mut response, call).await?;
    if let Some(collected) = texts_of(&body, Some(AnswerShape::of(endpoint))) {
        moderate(shared, &found, &collected, "answer", &route_id, side, call).await?;
    }
    Ok(with_body(response, body))
}

/// Asks the moderation rules of the `Mcp` endpoint about an MCP tool call's arguments (`result`:
/// false) or its result (true), as [`guard_tool_arguments`](super::guard_tool_arguments) checks them.
pub async fn moderate_tool(
    shared: &Shared,
    snapshot: &Snapshot,
    route: RouteIdx,
    doc: &Value,
    result: bool,
    call: &mut Call,
) -> Result<(), ApiError> {
    let found = rules(
        snapshot,
        route,
        call.consumer,
        GuardrailEndpoint::Mcp,
        !result,
    );
    if found.is_empty() {
        return Ok(());
    }
    let mut doc = doc.clone();
    let mut collected = Vec::new();
    let walk = if result {
        tool_result_texts
    } else {
        argument_texts
    };
    walk(&mut doc, &mut |s| collected.push(s.clone()));
    let route_id = snapshot.content.routes[route as usize].id.to_string();
    let side = if result { "tool result" } else { "tool call" };
    moderate(
        shared,
        &found,
        &collected,
        side,
        &route_id,
        GuardrailEndpoint::Mcp,
        call,
    )
    .await
}

/// Asks each rule in turn; the first flagged Reject, or the first failure of a Closed rule, ends it.
async fn moderate(
    shared: &Shared,
    found: &[(&ObjectRef, &ModerationRule)],
    collected: &[String],
    side: &'static str,
    route: &str,
    endpoint: GuardrailEndpoint,
    call: &mut Call,
) -> Result<(), ApiError> {
    if collected.iter().all(|t| t.trim().is_empty()) {
        return Ok(());
    }
    for (guardrail, rule) in found {
        let guardrail_id = guardrail.to_string();
        let subject = Subject {
            direction: if matches!(side, "request" | "tool call") {
                "request"
            } else {
                "response"
            },
            route,
            endpoint: endpoint_name(endpoint),
            guardrail: &guardrail_id,
        };
        match ask(shared, rule, collected, &subject).await {
            Ok(Verdict::Clean) => {}
            Ok(Verdict::Flagged(_)) => {
                call.note_guardrails(&[Decision {
                    rule: Arc::clone(&rule.name),
                    action: rule.action,
                }]);
                if rule.action == GuardrailAction::Reject {
                    call.fail("content_policy_violation");
                    return Err(rejected(&rule.name, side));
                }
            }
            Err(why) => {
                tracing::warn!(
                    guardrail = %guardrail_id,
                    rule = %rule.name,
                    failure_mode = ?rule.failure_mode,
                    "the moderation service could not be asked: {why}"
                );
                match rule.failure_mode {
                    FailureMode::Open => call.note_guardrail(&rule.name, "fail_open"),
                    FailureMode::Closed => {
                        call.note_guardrail(&rule.name, "fail_closed");
                        let error = unavailable(&rule.name, &why);
                        call.fail(error.code);
                        return Err(error);
                    }
                }
            }
        }
    }
    Ok(())
}

/// 503: the rule's service could not be asked and the rule lets nothing through unmoderated. The
/// service is a dependency of this call that is down or slow for now, so the call may succeed if
/// retried: 503 rather than 502 (no upstream answered the call wrongly) or 504 (not every failure is
/// a timeout), and never 4xx (the caller did nothing wrong).
fn unavailable(rule: &str, why: &str) -> ApiError {
    ApiError::upstream(
        StatusCode::SERVICE_UNAVAILABLE,
        "moderation_unavailable",
        format!(
            "The moderation service of the guardrail rule {rule} could not be asked ({why}), and the rule refuses calls it cannot check. Try again later."
        ),
    )
}

/// One exchange with the rule's service, within its timeout. Failures say what went wrong in words
/// that name neither the URL nor the credential.
async fn ask(
    shared: &Shared,
    rule: &ModerationRule,
    texts: &[String],
    subject: &Subject<'_>,
) -> Result<Verdict, String> {
    let due = Duration::from_millis(rule.timeout_ms);
    let uri = Uri::try_from(rule.url.as_str()).map_err(|_| "its URL is not valid".to_string())?;
    let body = Bytes::from(request_body(rule, texts, subject));
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .body(Full::new(body))
        .expect("a request from valid parts");
    let headers = request.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    if let Some(c) = &rule.credential
        && let (Ok(name), Ok(mut value)) = (
            HeaderName::from_bytes(c.header.as_bytes()),
            HeaderValue::from_str(&c.value.0),
        )
    {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let exchange = async {
        let (response, checkin) =
            shared
                .moderation
                .send(request, due)
                .await
                .map_err(|e| match e {
                    UpstreamError::Timeout => format!("no answer within {} ms", rule.timeout_ms),
                    UpstreamError::Connect => "no connection could be made".to_string(),
                    _ => "the connection broke off".to_string(),
                })?;
        let status = response.status();
        let read = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|_| "its answer broke off or was too large".to_string())?
            .to_bytes();
        drop(checkin);
        if !status.is_success() {
            return Err(format!("it answered {}", status.as_u16()));
        }
        read_answer(rule, &read).map_err(str::to_string)
    };
    match tokio::time::timeout(due, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", rule.timeout_ms)),
    }
}
