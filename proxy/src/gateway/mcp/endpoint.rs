//! One HTTP request to an MCP endpoint (`POST <prefix>/mcp` or the consumer scope's `POST /mcp`),
//! over Streamable HTTP in both eras clients speak: the stateless 2026-07-28 revision (checked in
//! [`super::era`]) and the legacy revisions with `initialize` and an `Mcp-Session-Id` that is
//! self-contained ([`super::session`]). The body is read and classified, the caller admitted, the
//! method dispatched: lists and prompts in [`super::reach`], tool calls in [`super::calls`]. Every
//! answer is JSON; the key, the subscription and the limits decide as they do for the route's other
//! endpoints.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tollgate_snapshot::Snapshot;

use super::calls::call_tool;
use super::era::{Era, LEGACY, MODERN, check_origin, era};
use super::federated;
use super::jsonrpc::{self, INVALID_REQUEST, METHOD_NOT_FOUND, REFUSED, RpcError};
use super::reach::Tools;
use super::reach::{
    LIST_TTL_MS, PATH, Scope, consumer_reach, get_prompt, list_prompts, list_tools, route_reach,
    server_description,
};
use super::reply::{ToolResult, note, refusal, shown};
use super::session::{self, Session};
use crate::call::{Call, McpNote, ResponseBody, Shared};
use crate::clock;
use crate::error::ApiError;
use crate::gateway::admission::{self, Notes};
use crate::gateway::body::read_body;

/// The MCP methods served, as the access log and the metrics name them.
const METHODS: [&str; 8] = [
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "notifications/initialized",
];

/// A finished JSON-RPC answer: HTTP status, body, and the session id to announce.
struct Answer {
    status: StatusCode,
    body: Bytes,
    session: Option<String>,
    /// The JSON-RPC error code answered, if an error.
    code: Option<i32>,
}

impl Answer {
    fn error(status: StatusCode, e: &RpcError) -> Self {
        Self {
            status,
            body: e.body(),
            session: None,
            code: Some(e.code),
        }
    }
}

/// Serves one HTTP request to the MCP endpoint. Never an `Err`: every problem is a JSON-RPC error.
pub async fn serve(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    scope: Scope,
    parts: Parts,
    body: Incoming,
    call: &mut Call,
    notes: &mut Notes,
) -> Result<Response<ResponseBody>, ApiError> {
    call.mcp = Some(Box::new(McpNote {
        method: "other",
        name: None,
        outcome: "invalid",
        ..McpNote::default()
    }));
    let answer = answer(shared, snapshot, scope, parts, body, call, notes).await;
    if answer.code.is_some() {
        note(call).code = answer.code;
    }
    let mut response = Response::new(ResponseBody::full(answer.body));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    if answer.status == StatusCode::ACCEPTED || answer.status == StatusCode::NO_CONTENT {
        return Ok(response);
    }
    if answer.status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = answer.session
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        headers.insert("mcp-session-id", v);
    }
    Ok(response)
}

async fn answer(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    scope: Scope,
    parts: Parts,
    body: Incoming,
    call: &mut Call,
    notes: &mut Notes,
) -> Answer {
    if let Some(refused) = check_origin(&parts.headers) {
        return Answer::error(StatusCode::FORBIDDEN, &refused);
    }
    match parts.method {
        Method::POST => {}
        Method::DELETE => return end_session(shared, snapshot, scope, &parts, call, notes),
        _ => {
            let e = RpcError::new(
                None,
                INVALID_REQUEST,
                "This MCP endpoint takes POST (and DELETE to end a session); it offers no GET stream.",
            );
            return Answer::error(StatusCode::METHOD_NOT_ALLOWED, &e);
        }
    }
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE)
        && !ct.to_str().is_ok_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
    {
        let e = RpcError::new(
            None,
            INVALID_REQUEST,
            "Send the JSON-RPC message as Content-Type: application/json.",
        );
        return Answer::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &e);
    }
    let bytes = match read_body(
        body,
        &parts.headers,
        shared.limits.max_body_bytes,
        shared.limits.body_pause,
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            let rpc = RpcError::new(
                None,
                INVALID_REQUEST,
                format!("Invalid request: {}", e.message),
            );
            return Answer::error(e.status, &rpc);
        }
    };
    let message = match jsonrpc::read(&bytes) {
        Ok(m) => m,
        Err(e) => return Answer::error(StatusCode::BAD_REQUEST, &e),
    };
    let method = METHODS
        .iter()
        .find(|m| **m == message.method)
        .copied()
        .unwrap_or(if message.id.is_none() {
            "notification"
        } else {
            "other"
        });
    note(call).method = method;
    if call.traced() {
        // The request's id for its span (`jsonrpc.request.id`); made only for a sampled call.
        note(call).rpc_id = message.id.as_ref().map(|id| match id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    }

    let era = match era(&parts.headers, &message) {
        Ok(era) => era,
        Err(e) => return Answer::error(StatusCode::BAD_REQUEST, &e),
    };
    note(call).version = Some(match era {
        Era::Modern => MODERN,
        Era::Legacy(i) => LEGACY[i as usize],
    });
    let status_of = |refusal: StatusCode| match era {
        Era::Modern => refusal,
        // Legacy SDKs read JSON-RPC errors only from 2xx answers (the 1.x Python SDK raises on any
        // other status without reading the body), so the error travels in a 200.
        Era::Legacy(_) => StatusCode::OK,
    };

    let now_unix = shared.key_clock.now_unix();
    let reached = match scope {
        Scope::Route(route) => admission::admit_matched(
            snapshot, &parts, route, PATH, now_unix, call, notes,
        )
        .map(|admitted| {
            let consumer = call.consumer.expect("admitted callers are known");
            route_reach(snapshot, admitted, consumer)
        }),
        Scope::Consumer => admission::identify(snapshot, &parts.headers, now_unix, call)
            .map(|(consumer, _)| consumer_reach(snapshot, consumer)),
    };
    let reach = match reached {
        Ok(r) => r,
        Err(e) => {
            note(call).outcome = "refused";
            call.fail(e.code);
            let rpc = refusal(message.id.clone(), &e);
            // A missing or wrong key is the transport's business in every era (401, as MCP's
            // authorization asks).
            let status = if e.status == StatusCode::UNAUTHORIZED {
                e.status
            } else {
                status_of(e.status)
            };
            return Answer::error(status, &rpc);
        }
    };
    // Only `initialize` and `server/discover` describe the server: made when asked.
    let description = || match &reach.admitted {
        Some(a) => {
            let route = &snapshot.content.routes[a.route as usize];
            (format!("Tollgate: {}", route.id), route.description.clone())
        }
        None => {
            let consumer = &snapshot.content.consumers[reach.consumer as usize];
            (format!("Tollgate: the APIs of {}", consumer.id), None)
        }
    };

    // Legacy requests other than `initialize` continue a session: sealed by a replica holding the
    // same key, for the same consumer.
    let mut session_out = None;
    if let Era::Legacy(_) = era
        && message.method != "initialize"
    {
        match continue_session(shared, snapshot, &parts.headers, call) {
            Ok(()) => {}
            Err((status, e)) => {
                let e = RpcError {
                    id: message.id.clone(),
                    ..e
                };
                return Answer::error(status, &e);
            }
        }
    }

    let Some(id) = message.id.clone() else {
        // Notifications (`notifications/initialized`, `notifications/cancelled`…) need no answer.
        note(call).outcome = "ok";
        return Answer {
            status: StatusCode::ACCEPTED,
            body: Bytes::new(),
            session: None,
            code: None,
        };
    };
    let result = match message.method.as_str() {
        "initialize" => {
            let offered = message
                .params
                .get("protocolVersion")
                .and_then(Value::as_str);
            let chosen = LEGACY.iter().position(|v| Some(*v) == offered).unwrap_or(0);
            let consumer = &snapshot.content.consumers[reach.consumer as usize];
            session_out = Some(session::seal(
                &shared.mcp_session_key,
                Session {
                    version: chosen as u8,
                    issued: clock::now_unix().max(0) as u64,
                    consumer: session::consumer_tag(&consumer.id.to_string()),
                },
            ));
            let mut result = server_description(&description());
            result["protocolVersion"] = json!(LEGACY[chosen]);
            Ok(result)
        }
        "ping" => Ok(json!({})),
        "server/discover" if era == Era::Modern => {
            let mut result = server_description(&description());
            result["supportedVersions"] = json!([MODERN, LEGACY[0], LEGACY[1], LEGACY[2]]);
            result["ttlMs"] = json!(LIST_TTL_MS);
            result["cacheScope"] = json!("private");
            Ok(result)
        }
        "tools/list" => {
            // Prepared once per snapshot and copied as it is (see `super::catalog`).
            let upstream = if has_servers(snapshot, &reach) {
                let own: std::collections::HashSet<&str> = match &reach.tools {
                    Tools::Consumer(named) => named.iter().map(|(n, _, _)| n.as_str()).collect(),
                    Tools::Route(_) => Default::default(),
                };
                let route_scope = matches!(reach.tools, Tools::Route(_));
                federated::list(shared, snapshot, &reach, |name| {
                    own.contains(name) || (route_scope && reach.has_own_tool(snapshot, name))
                })
                .await
            } else {
                Vec::new()
            };
            let listed = list_tools(snapshot, &reach, era, &upstream);
            note(call).outcome = "ok";
            return Answer {
                status: StatusCode::OK,
                body: jsonrpc::raw_result_body(&id, &listed),
                session: None,
                code: None,
            };
        }
        "prompts/list" => Ok(list_prompts(snapshot, &reach, era)),
        "prompts/get" => get_prompt(snapshot, &reach, &message),
        "tools/call" => {
            let called = call_tool(
                shared,
                snapshot,
                &parts.headers,
                &reach,
                &message,
                call,
                notes,
            )
            .await;
            match called {
                Ok(ToolResult::Value(result)) => Ok(result),
                Ok(ToolResult::Written { answer, text }) => {
                    let body = jsonrpc::text_result_body(&id, era == Era::Modern, &answer[text]);
                    return Answer {
                        status: StatusCode::OK,
                        body,
                        session: session_out,
                        code: None,
                    };
                }
                Err(e) => Err(e),
            }
        }
        _ => Err((
            match era {
                Era::Modern => StatusCode::NOT_FOUND,
                Era::Legacy(_) => StatusCode::OK,
            },
            RpcError::new(
                Some(id.clone()),
                METHOD_NOT_FOUND,
                format!("Method not found: {}.", shown(&message.method)),
            ),
        )),
    };
    match result {
        Ok(mut result) => {
            if era == Era::Modern
                && let Some(r) = result.as_object_mut()
            {
                r.insert("resultType".into(), json!("complete"));
            }
            let n = note(call);
            if n.outcome == "invalid" {
                n.outcome = "ok";
            }
            Answer {
                status: StatusCode::OK,
                body: jsonrpc::result_body(&id, result),
                session: session_out,
                code: None,
            }
        }
        Err((status, e)) => {
            let n = note(call);
            if n.outcome == "invalid" && e.code == REFUSED {
                n.outcome = "refused";
            }
            let status = if e.code == REFUSED {
                status_of(status)
            } else {
                status
            };
            Answer::error(status, &RpcError { id: Some(id), ..e })
        }
    }
}

/// Whether any route the caller reaches attaches an upstream MCP server.
fn has_servers(snapshot: &Snapshot, reach: &super::reach::Reach<'_>) -> bool {
    match &reach.tools {
        Tools::Route(r) => !snapshot.content.routes[*r as usize].mcp_servers.is_empty(),
        Tools::Consumer(_) => reach
            .labels
            .iter()
            .any(|(r, _)| !snapshot.content.routes[*r as usize].mcp_servers.is_empty()),
    }
}

/// Checks the `Mcp-Session-Id` of a legacy request: 400 without one, 404 for one that is not ours,
/// has expired, or belongs to another consumer (the client then starts a new session).
fn continue_session(
    shared: &Shared,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    call: &Call,
) -> Result<(), (StatusCode, RpcError)> {
    let Some(text) = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) else {
        return Err((
            StatusCode::BAD_REQUEST,
            RpcError::new(
                None,
                INVALID_REQUEST,
                format!(
                    "Bad request: send initialize first and then its Mcp-Session-Id, or use protocol version {MODERN} with params._meta."
                ),
            ),
        ));
    };
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            RpcError::new(
                None,
                INVALID_REQUEST,
                "Session not found: initialize a new one.",
            ),
        )
    };
    let session = session::open(
        &shared.mcp_session_key,
        text,
        clock::now_unix().max(0) as u64,
    )
    .map_err(|_| not_found())?;
    let consumer = call
        .consumer
        .map(|c| snapshot.content.consumers[c as usize].id.to_string());
    if consumer.map(|c| session::consumer_tag(&c)) != Some(session.consumer) {
        return Err(not_found());
    }
    Ok(())
}

/// `DELETE`: ends a legacy session. Sessions live in their ids, so there is nothing to forget: the
/// answer says the id was valid, and clients stop using it.
fn end_session(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    scope: Scope,
    parts: &Parts,
    call: &mut Call,
    notes: &mut Notes,
) -> Answer {
    note(call).method = "session/delete";
    let now_unix = shared.key_clock.now_unix();
    let known = match scope {
        Scope::Route(route) => {
            admission::admit_matched(snapshot, parts, route, PATH, now_unix, call, notes)
                .map(|_| ())
        }
        Scope::Consumer => {
            admission::identify(snapshot, &parts.headers, now_unix, call).map(|_| ())
        }
    };
    if let Err(e) = known {
        note(call).outcome = "refused";
        return Answer::error(e.status, &refusal(None, &e));
    }
    match continue_session(shared, snapshot, &parts.headers, call) {
        Ok(()) => {
            note(call).outcome = "ok";
            Answer {
                status: StatusCode::NO_CONTENT,
                body: Bytes::new(),
                session: None,
                code: None,
            }
        }
        Err((status, e)) => Answer::error(status, &e),
    }
}
