//! `tools/call`: the prompt API or REST operation a tool stands for, called through the route's own
//! path (the prompt API's model call, the REST passthrough call), and its answer as a tool result.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use http::Method;
use http::header::HeaderMap;
use serde_json::{Map, Value, json};
use tollgate_snapshot::{RouteIdx, Snapshot};

use super::federated;
use super::jsonrpc::Message;
use super::reach::PATH;
use super::reach::Reach;
use super::reply::{ToolOutcome, ToolResult, invalid_params, note, refusal, shown, tool_error};
use super::tools::{self, Target};
use crate::call::{self, Call, Endpoint, RestRequest, Shared};
use crate::error::ApiError;
use crate::gateway::admission::{self, Admitted, Notes};
use crate::gateway::prompt;
use crate::gateway::routed::{Asked, model_call};
use crate::llm::json_scan::{self, Cursor};

/// Largest tool answer turned into a tool result.
pub(super) const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// `tools/call`: the prompt API or REST operation the tool stands for, through the route's own path.
pub(super) async fn call_tool(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    headers: &HeaderMap,
    reach: &Reach<'_>,
    message: &Message<'_>,
    call: &mut Call,
    notes: &mut Notes,
) -> ToolOutcome {
    let name = message
        .params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_params("Invalid params: tools/call needs a name.".into()))?;
    let (route, target) = match reach.find_tool(snapshot, name) {
        Some((route, target)) => (route, Called::Own(target)),
        None => match federated::owner(shared, snapshot, reach, name).await {
            Some(owner) => (owner.route, Called::Upstream(owner)),
            None => return Err(invalid_params(format!("Unknown tool: {}.", shown(name)))),
        },
    };
    note(call).name = Some(name.to_string());
    // Checked before admission, as a malformed request; read into values only for the tools that
    // need them (a prompt tool's go to the renderer as written).
    let raw_args = message.raw_arguments_object().map_err(invalid_params)?;
    // The consumer scope admits each call to its own route (stage, subscription), as that route's
    // own endpoint would.
    let fresh;
    let admitted = match &reach.admitted {
        Some(a) => a,
        None => {
            let requested = (&Method::POST, PATH);
            match admission::admit_to(
                snapshot,
                route,
                reach.consumer,
                true,
                requested,
                call,
                notes,
            ) {
                Ok(a) => {
                    fresh = a;
                    &fresh
                }
                Err(e) => {
                    note(call).outcome = "refused";
                    call.fail(e.code);
                    return Err((e.status, refusal(None, &e)));
                }
            }
        }
    };
    let ran = match target {
        Called::Upstream(owner) => {
            // Counted against the subscription's request limits like any call.
            if let Err(e) =
                admission::limit(shared, snapshot, admitted, (0, 0.0), call, notes).await
            {
                note(call).outcome = "refused";
                call.fail(e.code);
                return Err((e.status, refusal(None, &e)));
            }
            let mut args = Value::Object(message.arguments_object().map_err(invalid_params)?);
            if let Err(e) =
                check_tool_text(shared, snapshot, owner.route, &mut args, false, call).await
            {
                note(call).outcome = "refused";
                return Err((e.status, refusal(None, &e)));
            }
            let trace = call.start_client(|| federated::client_span(snapshot, &owner));
            let answer = federated::call(shared, snapshot, &owner, &args, headers, trace).await;
            if let Some(span) = call.client_span() {
                let failed = match &answer {
                    Ok(result) if result["isError"] == true => Some(Cow::Borrowed("tool_error")),
                    Ok(_) => None,
                    Err((_, e)) => {
                        if let Some(mcp) = span.mcp.as_mut() {
                            mcp.code = Some(e.code);
                        }
                        Some(Cow::Owned(e.code.to_string()))
                    }
                };
                span.finish(failed);
            }
            return match answer {
                Ok(mut result) => {
                    if let Err(e) =
                        check_tool_text(shared, snapshot, owner.route, &mut result, true, call)
                            .await
                    {
                        note(call).outcome = "refused";
                        return Err((e.status, refusal(None, &e)));
                    }
                    note(call).outcome = if result["isError"] == true {
                        "tool_error"
                    } else {
                        "ok"
                    };
                    Ok(ToolResult::Value(result))
                }
                Err(e) => {
                    note(call).outcome = "error";
                    call.fail("mcp_server_error");
                    Err(e)
                }
            };
        }
        Called::Own(Target::Prompt(i)) => {
            // The variables go to the renderer as the client wrote them, not serialised again.
            let raw = raw_args.unwrap_or("{}");
            call_prompt(shared, snapshot, headers, admitted, i, raw, call, notes).await
        }
        Called::Own(Target::Rest(i)) => {
            let args = message.arguments_object().map_err(invalid_params)?;
            guarded_rest(shared, snapshot, admitted, i, &args, call, notes)
                .await
                .map(ToolResult::Value)
        }
    };
    match ran {
        Ok(result) => {
            note(call).outcome = if result.is_error() {
                "tool_error"
            } else {
                "ok"
            };
            Ok(result)
        }
        Err(e) => {
            note(call).outcome = "refused";
            call.fail(e.code);
            Err((e.status, refusal(None, &e)))
        }
    }
}

/// What a tool name stands for: one of the routes' own tools, or an upstream server's.
enum Called {
    Own(Target),
    Upstream(federated::Owner),
}

/// The `Mcp` endpoint's guardrails on a tool call's arguments (`result`: false) or result (true):
/// the text rules (masking in place), then the moderation hooks.
async fn check_tool_text(
    shared: &Shared,
    snapshot: &Snapshot,
    route: RouteIdx,
    doc: &mut Value,
    result: bool,
    call: &mut Call,
) -> Result<(), ApiError> {
    if result {
        call::guard_tool_result(snapshot, route, doc, call)?;
    } else {
        call::guard_tool_arguments(snapshot, route, doc, call)?;
    }
    call::moderate_tool(shared, snapshot, route, doc, result, call).await
}

/// A REST operation's tool call with the `Mcp` endpoint's guardrails on its arguments and result.
async fn guarded_rest(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    admitted: &Admitted<'_>,
    at: u32,
    args: &Map<String, Value>,
    call: &mut Call,
    notes: &mut Notes,
) -> Result<Value, ApiError> {
    let route = admitted.route;
    if !call::any_guardrails(snapshot, route, call.consumer) {
        return call_rest(shared, snapshot, admitted, at, args, call, notes).await;
    }
    let mut guarded = Value::Object(args.clone());
    check_tool_text(shared, snapshot, route, &mut guarded, false, call).await?;
    let args = guarded.as_object().unwrap_or(args);
    let mut result = call_rest(shared, snapshot, admitted, at, args, call, notes).await?;
    check_tool_text(shared, snapshot, route, &mut result, true, call).await?;
    Ok(result)
}

/// Whether a gateway error refuses the caller (403, 429…) rather than reporting the tool's failure.
pub(super) fn is_refusal(e: &ApiError) -> bool {
    matches!(e.status.as_u16(), 401 | 403 | 410 | 429)
        // Guardrails refuse a call as the route's other endpoints do, not as a tool that failed.
        || matches!(
            e.code,
            "content_policy_violation" | "guardrail_unavailable" | "moderation_unavailable"
        )
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn call_prompt(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    headers: &HeaderMap,
    admitted: &Admitted<'_>,
    at: u16,
    arguments: &str,
    call: &mut Call,
    notes: &mut Notes,
) -> Result<ToolResult, ApiError> {
    let route: RouteIdx = admitted.route;
    let p = &snapshot.content.routes[route as usize].prompts[at as usize];
    call.prompt = Some(at);
    let rendered = match prompt::render_arguments(p, arguments) {
        Ok(r) => r,
        Err(e) => {
            call.fail(e.code);
            return Ok(ToolResult::Value(tool_error(e.message)));
        }
    };
    let asked = Asked {
        endpoint: Endpoint::Prompt {
            json_output: p.output.is_json(),
        },
        body: rendered,
        headers,
    };
    let response = match model_call(shared, snapshot, admitted, asked, call, notes).await {
        Ok(r) => r,
        Err(e) if is_refusal(&e) => return Err(e),
        Err(e) => {
            call.fail(e.code);
            return Ok(ToolResult::Value(tool_error(e.message)));
        }
    };
    let status = response.status();
    let Some(bytes) = response.into_body().read_whole(call, MAX_ANSWER).await else {
        call.fail("upstream_error");
        return Ok(ToolResult::Value(tool_error(
            "The model's answer broke off.",
        )));
    };
    if status.is_success()
        && let Some(text) = written_text(&bytes)
    {
        return Ok(ToolResult::Written {
            answer: bytes,
            text,
        });
    }
    let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let text = doc["error"]["message"]
            .as_str()
            .unwrap_or("The model call failed.");
        return Ok(ToolResult::Value(tool_error(text)));
    }
    Ok(ToolResult::Value(match &doc["output"] {
        Value::String(text) => {
            json!({"content": [{"type": "text", "text": text}], "isError": false})
        }
        output => {
            let mut r = json!({
                "content": [{"type": "text", "text": output.to_string()}],
                "isError": false,
            });
            if output.is_object() {
                r["structuredContent"] = output.clone();
            }
            r
        }
    }))
}

/// Where the `output` of a prompt API's whole result stands when it is text: the JSON string, quotes
/// included. The result is the gateway's own writing (valid UTF-8 and JSON, `id`, `object` and
/// `model` first, then `output`): its members are stepped over by their strings' ends, without a
/// second check. A result in any other order is walked member by member.
fn written_text(result: &[u8]) -> Option<Range<usize>> {
    const STEPS: [&[u8]; 3] = [
        br#"{"id":"#,
        br#","object":"prompt.result","model":"#,
        br#","output":"#,
    ];
    let mut at = 0;
    for (n, step) in STEPS.iter().enumerate() {
        if !result.get(at..)?.starts_with(step) {
            return written_text_walked(result);
        }
        at += step.len();
        if n < 2 {
            at = json_scan::string_end(result, at)?;
        }
    }
    let end = json_scan::string_end(result, at)?;
    Some(at..end)
}

/// [`written_text`] for a result whose members come in another order.
fn written_text_walked(result: &[u8]) -> Option<Range<usize>> {
    // The gateway writes `output` once, before `finish_reason` and `usage`: the walk stops there.
    let text = std::str::from_utf8(result).ok()?;
    let mut at = Cursor::new(text);
    at.enter_object()?;
    while let Some(key) = at.next_key()? {
        if key == "output" {
            // A value of valid JSON that opens with a quote is a whole string: no second scan.
            let output = at.value()?;
            if !output.starts_with('"') {
                return None;
            }
            let from = output.as_ptr() as usize - text.as_ptr() as usize;
            return Some(from..from + output.len());
        }
        at.skip()?;
    }
    None
}

pub(super) async fn call_rest(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    admitted: &Admitted<'_>,
    at: u32,
    args: &Map<String, Value>,
    call: &mut Call,
    notes: &mut Notes,
) -> Result<Value, ApiError> {
    let route = &snapshot.content.routes[admitted.route as usize];
    let rest = route
        .rest
        .as_ref()
        .expect("REST tools come from the route's service");
    let op = &rest.operations[at as usize];
    call.rest_operation = Some(at);
    let (path_and_query, headers, body) = match tools::rest_request(rest, op, args) {
        Ok(parts) => parts,
        Err(why) => {
            call.fail("invalid_arguments");
            return Ok(tool_error(why));
        }
    };
    if body.len() as u64 > rest.max_request_bytes {
        call.fail("request_too_large");
        return Ok(tool_error(format!(
            "The body is larger than the {} bytes the operation takes.",
            rest.max_request_bytes
        )));
    }
    admission::limit(shared, snapshot, admitted, (0, 0.0), call, notes).await?;
    let method = Method::from_bytes(op.method.as_bytes()).unwrap_or(Method::GET);
    let request = RestRequest {
        route: admitted.route,
        method,
        path_and_query,
        headers,
        body,
    };
    let response = match call::rest_call(shared, snapshot, request, call).await {
        Ok(r) => r,
        Err(e) => {
            call.fail(e.code);
            return Ok(tool_error(e.message));
        }
    };
    let status = response.status();
    let Some(bytes) = response.into_body().read_whole(call, MAX_ANSWER).await else {
        call.fail("upstream_error");
        return Ok(tool_error(
            "The service's answer broke off or was larger than 16 MiB.",
        ));
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let mut r =
        json!({"content": [{"type": "text", "text": text}], "isError": !status.is_success()});
    if !status.is_success() {
        call.fail("upstream_status");
        r["content"][0]["text"] = json!(format!("The service answered {status}: {text}"));
    } else if let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(&bytes) {
        r["structuredContent"] = v;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_output_is_copied_as_written_and_other_outputs_are_not() {
        let written = br#"{"id":"p\"1","object":"prompt.result","model":"m","output":"say \"hi\"\n","finish_reason":"stop"}"#;
        let reordered = br#"{"object":"prompt.result","output":"say \"hi\"\n","usage":{}}"#;
        for text in [&written[..], &reordered[..]] {
            let at = written_text(text).unwrap();
            assert_eq!(&text[at.clone()], br#""say \"hi\"\n""#);
            let result = [
                &br#"{"content":[{"type":"text","text":"#[..],
                &text[at],
                br#"}],"isError":false}"#,
            ]
            .concat();
            let v: Value = serde_json::from_slice(&result).unwrap();
            assert_eq!(v["content"][0]["text"], "say \"hi\"\n");
        }
        for other in [
            &br#"{"output":{"a":1}}"#[..],
            br#"{"output":null}"#,
            br#"{"id":"p1","object":"prompt.result","model":"m","output":{"a":"b"}}"#,
            br#"{"id":"p1","object":"prompt.result","model":"m","output":"cut"#,
            br#"{"error":{"message":"x"}}"#,
            b"data: {}\n\n",
        ] {
            assert_eq!(written_text(other), None);
        }
    }
}
