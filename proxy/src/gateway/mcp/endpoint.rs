//! `POST <prefix>/mcp`: a route's prompt APIs and REST operations as MCP tools (and its prompt APIs
//! as MCP prompts) over Streamable HTTP, in both eras clients speak: the stateless 2026-07-28
//! revision (version in `_meta` and `MCP-Protocol-Version`, `Mcp-Method`/`Mcp-Name` checked against
//! the body, `server/discover`) and the legacy revisions with `initialize` and an `Mcp-Session-Id`
//! that is self-contained ([`super::session`]). Every answer is JSON; the key, the subscription and
//! the limits decide as they do for the route's other endpoints, and a tool call takes the same path
//! as `POST <prefix>/prompts/<name>` or `<prefix>/api/…`.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use tollgate_snapshot::{ConsumerIdx, ObjectRef, Phase, RouteIdx, Snapshot, Stage};

use super::jsonrpc::{
    self, HEADER_MISMATCH, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, Message, REFUSED,
    RpcError, UNSUPPORTED_VERSION,
};
use super::session::{self, Session};
use super::tools::{self, Target};
use crate::call::{self, Call, Endpoint, McpNote, ResponseBody, RestRequest, Shared};
use crate::clock;
use crate::error::ApiError;
use crate::gateway::admission::{self, Admitted, Notes};
use crate::gateway::body::read_body;
use crate::gateway::prompt;
use crate::gateway::routed::{Asked, model_call};

/// Where a route serves MCP, after its prefix.
pub const PATH: &str = "/mcp";
/// The stateless revision.
const MODERN: &str = "2026-07-28";
/// The revisions with `initialize` and sessions, newest first.
const LEGACY: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
/// `_meta` key of the protocol version (2026-07-28).
const VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
/// Largest tool answer turned into a tool result.
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// How long clients may keep list results (2026-07-28 cache hints): short, so that a changed route
/// shows within a second.
const LIST_TTL_MS: u64 = 1000;

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

/// Whose tools an MCP endpoint offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `<prefix>/mcp`: the route's own.
    Route,
    /// `/mcp` at the gateway's root: those of every route the calling consumer is approved for.
    Consumer,
}

/// Which MCP endpoint the request is for, if any: a route's (its prefix and `/mcp`), else the
/// consumer scope at `/mcp`.
pub fn scope(snapshot: &Snapshot, parts: &Parts) -> Option<Scope> {
    let host = parts
        .uri
        .host()
        .or_else(|| parts.headers.get(header::HOST)?.to_str().ok());
    let path = parts.uri.path();
    match snapshot.route_for(host, path) {
        Some(m) if m.rest == PATH => Some(Scope::Route),
        _ if path == PATH => Some(Scope::Consumer),
        _ => None,
    }
}

/// What the caller may reach through this endpoint: tools and prompts, each with its route.
struct Reach<'a> {
    /// The route, admitted, for the route scope; `None` for the consumer scope (each tool call is
    /// admitted to its own route).
    admitted: Option<Admitted<'a>>,
    /// The calling consumer.
    consumer: ConsumerIdx,
    /// Tools by name.
    tools: Vec<(String, RouteIdx, Target)>,
    /// Prompts by name: route and index among its prompts.
    prompts: Vec<(String, RouteIdx, u16)>,
}

/// Which era a request speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Era {
    /// 2026-07-28: every request stands alone.
    Modern,
    /// A legacy revision, the index in [`LEGACY`] (from the session, or offered to `initialize`).
    Legacy(u8),
}

/// A finished JSON-RPC answer: HTTP status, body, and the session id to announce.
struct Answer {
    status: StatusCode,
    body: Bytes,
    session: Option<String>,
}

impl Answer {
    fn error(status: StatusCode, e: &RpcError) -> Self {
        Self {
            status,
            body: e.body(),
            session: None,
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
    }));
    let answer = answer(shared, snapshot, scope, parts, body, call, notes).await;
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

fn note(call: &mut Call) -> &mut McpNote {
    call.mcp.get_or_insert_with(Box::default)
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
    let bytes = match read_body(body, &parts.headers, shared.limits.max_body_bytes).await {
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

    let era = match era(&parts.headers, &message) {
        Ok(era) => era,
        Err(e) => return Answer::error(StatusCode::BAD_REQUEST, &e),
    };
    let status_of = |refusal: StatusCode| match era {
        Era::Modern => refusal,
        // Legacy SDKs read JSON-RPC errors only from 2xx answers (the 1.x Python SDK raises on any
        // other status without reading the body), so the error travels in a 200.
        Era::Legacy(_) => StatusCode::OK,
    };

    let reached = match scope {
        Scope::Route => admission::admit(snapshot, &parts, call, notes).map(|admitted| {
            let consumer = call.consumer.expect("admitted callers are known");
            route_reach(snapshot, admitted, consumer)
        }),
        Scope::Consumer => admission::identify(snapshot, &parts.headers, call)
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
    let description = match &reach.admitted {
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
            let mut result = server_description(&description);
            result["protocolVersion"] = json!(LEGACY[chosen]);
            Ok(result)
        }
        "ping" => Ok(json!({})),
        "server/discover" if era == Era::Modern => {
            let mut result = server_description(&description);
            result["supportedVersions"] = json!([MODERN, LEGACY[0], LEGACY[1], LEGACY[2]]);
            result["ttlMs"] = json!(LIST_TTL_MS);
            result["cacheScope"] = json!("private");
            Ok(result)
        }
        "tools/list" => Ok(list_tools(snapshot, &reach, era)),
        "prompts/list" => Ok(list_prompts(snapshot, &reach, era)),
        "prompts/get" => get_prompt(snapshot, &reach, &message),
        "tools/call" => {
            call_tool(
                shared,
                snapshot,
                &parts.headers,
                &reach,
                &message,
                call,
                notes,
            )
            .await
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

/// At most 64 characters of a caller's text, for messages.
fn shown(text: &str) -> String {
    text.chars().take(64).collect()
}

/// A gateway refusal (key, lifecycle, subscription, limits) as a JSON-RPC error whose `data` has the
/// HTTP status and the same `type` and `code` as the route's other endpoints answer with.
fn refusal(id: Option<Value>, e: &ApiError) -> RpcError {
    RpcError::new(id, REFUSED, e.message.clone()).with_data(json!({
        "status": e.status.as_u16(),
        "type": e.kind,
        "code": e.code,
    }))
}

/// Refuses an `Origin` other than the request's own host (MCP's guard against DNS rebinding).
fn check_origin(headers: &HeaderMap) -> Option<RpcError> {
    let origin = headers.get(header::ORIGIN)?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    if origin_host.is_some() && origin_host == host {
        return None;
    }
    Some(RpcError::new(
        None,
        INVALID_REQUEST,
        "Forbidden: the Origin header names another site than this gateway.",
    ))
}

/// The era of a request, after checking its version headers against its body.
fn era(headers: &HeaderMap, message: &Message) -> Result<Era, RpcError> {
    let id = message.id.clone();
    let header_version = match headers.get("mcp-protocol-version") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            RpcError::new(
                id.clone(),
                HEADER_MISMATCH,
                "Header mismatch: MCP-Protocol-Version is not text.",
            )
        })?),
    };
    let meta = message.params.get("_meta");
    let meta_version = meta.and_then(|m| m.get(VERSION_META));
    let modern = message.method != "initialize"
        && (meta_version.is_some() || header_version == Some(MODERN));
    if !modern {
        return match header_version {
            None => Ok(Era::Legacy(0)),
            Some(v) => match LEGACY.iter().position(|l| *l == v) {
                Some(i) => Ok(Era::Legacy(i as u8)),
                None => Err(unsupported(id, v)),
            },
        };
    }
    let Some(meta_version) = meta_version else {
        return Err(RpcError::new(
            id,
            INVALID_PARAMS,
            format!("Invalid params: params._meta must carry {VERSION_META:?}."),
        ));
    };
    if header_version.is_none() || meta_version.as_str() != header_version {
        return Err(RpcError::new(
            id,
            HEADER_MISMATCH,
            "Header mismatch: MCP-Protocol-Version does not match params._meta's protocol version.",
        ));
    }
    let method_header = headers.get("mcp-method").and_then(|v| v.to_str().ok());
    if method_header != Some(message.method.as_str()) {
        return Err(RpcError::new(
            id,
            HEADER_MISMATCH,
            "Header mismatch: Mcp-Method does not match the request's method.",
        ));
    }
    if matches!(message.method.as_str(), "tools/call" | "prompts/get")
        && let Some(name) = message.params.get("name").and_then(Value::as_str)
    {
        let header = headers.get("mcp-name").and_then(|v| v.to_str().ok());
        if header.and_then(decode_header_value).as_deref() != Some(name) {
            return Err(RpcError::new(
                id,
                HEADER_MISMATCH,
                "Header mismatch: Mcp-Name does not match params.name.",
            ));
        }
    }
    let version = header_version.unwrap_or_default();
    if version != MODERN {
        return Err(unsupported(id, version));
    }
    Ok(Era::Modern)
}

/// A header value as MCP encodes it: plain, or `=?base64?…?=`.
fn decode_header_value(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(encoded) => String::from_utf8(STANDARD.decode(encoded).ok()?).ok(),
        None => Some(v.to_string()),
    }
}

fn unsupported(id: Option<Value>, requested: &str) -> RpcError {
    RpcError::new(id, UNSUPPORTED_VERSION, "Unsupported protocol version").with_data(json!({
        "supported": [MODERN, LEGACY[0], LEGACY[1], LEGACY[2]],
        "requested": shown(requested),
    }))
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
    let known = match scope {
        Scope::Route => admission::admit(snapshot, parts, call, notes).map(|_| ()),
        Scope::Consumer => admission::identify(snapshot, &parts.headers, call).map(|_| ()),
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
            }
        }
        Err((status, e)) => Answer::error(status, &e),
    }
}

/// What `initialize` and `server/discover` say about the server: its title and instructions.
fn server_description((title, instructions): &(String, Option<String>)) -> Value {
    let mut d = json!({
        "capabilities": {"tools": {"listChanged": false}, "prompts": {"listChanged": false}},
        "serverInfo": {"name": "tollgate", "title": title, "version": env!("CARGO_PKG_VERSION")},
    });
    d["_meta"] = json!({"io.modelcontextprotocol/serverInfo": d["serverInfo"].clone()});
    if let Some(text) = instructions {
        d["instructions"] = json!(text);
    }
    d
}

/// The route scope: the admitted route's tools and prompts under their own names.
fn route_reach<'a>(
    snapshot: &'a Snapshot,
    admitted: Admitted<'a>,
    consumer: ConsumerIdx,
) -> Reach<'a> {
    let at = admitted.route;
    let route = &snapshot.content.routes[at as usize];
    Reach {
        tools: tools::list(route)
            .into_iter()
            .map(|(name, target)| (name, at, target))
            .collect(),
        prompts: (0..route.prompts.len())
            .map(|i| (route.prompts[i].name.clone(), at, i as u16))
            .collect(),
        admitted: Some(admitted),
        consumer,
    }
}

/// The consumer scope: the tools and prompts of every route the consumer is approved for and may
/// see, named `<route>__<name>` (see [`tools::scoped_names`]).
fn consumer_reach(snapshot: &Snapshot, consumer: ConsumerIdx) -> Reach<'_> {
    let namespace = &snapshot.content.consumers[consumer as usize].id.namespace;
    let routes: Vec<RouteIdx> = (0..snapshot.content.routes.len() as RouteIdx)
        .filter(|r| {
            let route = &snapshot.content.routes[*r as usize];
            let visible = match route.stage {
                Stage::Retired => false,
                Stage::Draft => route.id.namespace == *namespace,
                Stage::Published | Stage::Deprecated => true,
            };
            visible
                && snapshot
                    .subscription(consumer, *r)
                    .is_some_and(|s| s.phase == Phase::Approved)
        })
        .collect();
    let ids: Vec<&ObjectRef> = routes
        .iter()
        .map(|r| &snapshot.content.routes[*r as usize].id)
        .collect();
    let mut tools = Vec::new();
    let mut prompts = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let route = &snapshot.content.routes[*r as usize];
        for (name, target) in tools::list(route) {
            tools.push((tools::scoped_name(&ids, i, &name), *r, target));
        }
        for (p, prompt) in route.prompts.iter().enumerate() {
            prompts.push((tools::scoped_name(&ids, i, &prompt.name), *r, p as u16));
        }
    }
    Reach {
        admitted: None,
        consumer,
        tools: tools::unique(tools),
        prompts: tools::unique(prompts),
    }
}

fn list_tools(snapshot: &Snapshot, reach: &Reach<'_>, era: Era) -> Value {
    let tools: Vec<Value> = reach
        .tools
        .iter()
        .map(|(name, r, target)| {
            tools::describe(&snapshot.content.routes[*r as usize], name, *target)
        })
        .collect();
    let mut r = json!({"tools": tools});
    cache_hints(&mut r, era);
    r
}

fn list_prompts(snapshot: &Snapshot, reach: &Reach<'_>, era: Era) -> Value {
    let prompts: Vec<Value> = reach
        .prompts
        .iter()
        .map(|(name, r, at)| {
            let p = &snapshot.content.routes[*r as usize].prompts[*at as usize];
            let arguments: Vec<Value> = p
                .variables
                .iter()
                .map(|v| {
                    let mut a =
                        json!({"name": v.name, "required": v.required && v.default.is_none()});
                    if let Some(d) = &v.description {
                        a["description"] = json!(d);
                    }
                    a
                })
                .collect();
            let mut entry = json!({"name": name, "arguments": arguments});
            if let Some(d) = &p.description {
                entry["description"] = json!(d);
            }
            entry
        })
        .collect();
    let mut r = json!({"prompts": prompts});
    cache_hints(&mut r, era);
    r
}

fn cache_hints(result: &mut Value, era: Era) {
    if era == Era::Modern {
        result["ttlMs"] = json!(LIST_TTL_MS);
        // Lists are the route's, shown only to subscribed consumers.
        result["cacheScope"] = json!("private");
    }
}

type Outcome = Result<Value, (StatusCode, RpcError)>;

fn invalid_params(message: String) -> (StatusCode, RpcError) {
    (StatusCode::OK, RpcError::new(None, INVALID_PARAMS, message))
}

/// `prompts/get`: the prompt's template with the caller's arguments put in (MCP prompt arguments
/// are strings; each is read as its variable's type), checked as a prompt API call checks them.
fn get_prompt(snapshot: &Snapshot, reach: &Reach<'_>, message: &Message) -> Outcome {
    let name = message
        .params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_params("Invalid params: prompts/get needs a name.".into()))?;
    let p = reach
        .prompts
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, r, at)| &snapshot.content.routes[*r as usize].prompts[*at as usize])
        .ok_or_else(|| {
            invalid_params(format!("Invalid params: unknown prompt {:?}.", shown(name)))
        })?;
    let mut variables = Map::new();
    match message.params.get("arguments") {
        None | Some(Value::Null) => {}
        Some(Value::Object(args)) => {
            for (k, v) in args {
                let typed = match (p.variables.iter().find(|x| x.name == *k), v) {
                    (Some(var), Value::String(s)) => typed_argument(var.kind, s),
                    _ => v.clone(),
                };
                variables.insert(k.clone(), typed);
            }
        }
        Some(_) => {
            return Err(invalid_params(
                "Invalid params: arguments must be an object of name: value.".into(),
            ));
        }
    }
    let body = serde_json::to_vec(&json!({"variables": variables})).expect("JSON values serialise");
    let rendered = prompt::render(p, &body)
        .map_err(|e| invalid_params(format!("Invalid params: {}", e.message)))?;
    let request: Value = serde_json::from_slice(&rendered).expect("render writes JSON");
    // MCP prompts have user and assistant turns: the template's system and developer turns are
    // given as user turns, in order.
    let messages: Vec<Value> = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let role = if m["role"] == "assistant" {
                "assistant"
            } else {
                "user"
            };
            json!({"role": role, "content": {"type": "text", "text": m["content"]}})
        })
        .collect();
    let mut r = json!({"messages": messages});
    if let Some(d) = &p.description {
        r["description"] = json!(d);
    }
    Ok(r)
}

/// A prompt argument's text as its variable's JSON type (left a string when it does not parse, so
/// that the prompt's own check names the problem).
fn typed_argument(kind: tollgate_snapshot::VariableType, text: &str) -> Value {
    use tollgate_snapshot::VariableType as T;
    match kind {
        T::Integer => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!(text)),
        T::Number => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| json!(text)),
        T::Boolean => match text.trim() {
            "true" => json!(true),
            "false" => json!(false),
            _ => json!(text),
        },
        T::String | T::Enum => json!(text),
    }
}

/// A tool result saying the tool ran and failed, for the model to read and correct.
fn tool_error(text: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": text.into()}], "isError": true})
}

/// `tools/call`: the prompt API or REST operation the tool stands for, through the route's own path.
async fn call_tool(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    headers: &HeaderMap,
    reach: &Reach<'_>,
    message: &Message,
    call: &mut Call,
    notes: &mut Notes,
) -> Outcome {
    let name = message
        .params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_params("Invalid params: tools/call needs a name.".into()))?;
    let (route, target) = reach
        .tools
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, r, t)| (*r, *t))
        .ok_or_else(|| invalid_params(format!("Unknown tool: {}.", shown(name))))?;
    note(call).name = Some(name.to_string());
    let args = match message.params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => {
            return Err(invalid_params(
                "Invalid params: arguments must be an object.".into(),
            ));
        }
    };
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
        Target::Prompt(i) => {
            call_prompt(shared, snapshot, headers, admitted, i, args, call, notes).await
        }
        Target::Rest(i) => call_rest(shared, snapshot, admitted, i, &args, call, notes).await,
    };
    match ran {
        Ok(result) => {
            note(call).outcome = if result["isError"] == true {
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

/// Whether a gateway error refuses the caller (403, 429…) rather than reporting the tool's failure.
fn is_refusal(e: &ApiError) -> bool {
    matches!(e.status.as_u16(), 401 | 403 | 410 | 429)
}

#[allow(clippy::too_many_arguments)]
async fn call_prompt(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    headers: &HeaderMap,
    admitted: &Admitted<'_>,
    at: u16,
    args: Map<String, Value>,
    call: &mut Call,
    notes: &mut Notes,
) -> Result<Value, ApiError> {
    let route: RouteIdx = admitted.route;
    let p = &snapshot.content.routes[route as usize].prompts[at as usize];
    call.prompt = Some(at);
    let body = serde_json::to_vec(&json!({"variables": args})).expect("JSON values serialise");
    let rendered = match prompt::render(p, &body) {
        Ok(r) => r,
        Err(e) => {
            call.fail(e.code);
            return Ok(tool_error(e.message));
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
            return Ok(tool_error(e.message));
        }
    };
    let status = response.status();
    let Some(bytes) = response.into_body().read_whole(call, MAX_ANSWER).await else {
        call.fail("upstream_error");
        return Ok(tool_error("The model's answer broke off."));
    };
    let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let text = doc["error"]["message"]
            .as_str()
            .unwrap_or("The model call failed.");
        return Ok(tool_error(text));
    }
    Ok(match &doc["output"] {
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
    })
}

async fn call_rest(
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

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn message(method: &str, params: Value) -> Message {
        Message {
            id: Some(json!(1)),
            method: method.into(),
            params: params.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn modern_requests_must_agree_with_their_headers() {
        let meta = json!({"_meta": {VERSION_META: MODERN}, "name": "summarise"});
        let good = headers(&[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "summarise"),
        ]);
        assert!(matches!(
            era(&good, &message("tools/call", meta.clone())),
            Ok(Era::Modern)
        ));
        let encoded = headers(&[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?c3VtbWFyaXNl?="),
        ]);
        assert!(matches!(
            era(&encoded, &message("tools/call", meta.clone())),
            Ok(Era::Modern)
        ));
        for bad in [
            headers(&[("mcp-method", "tools/call"), ("mcp-name", "summarise")]),
            headers(&[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/list"),
                ("mcp-name", "summarise"),
            ]),
            headers(&[
                ("mcp-protocol-version", MODERN),
                ("mcp-method", "tools/call"),
                ("mcp-name", "other"),
            ]),
            headers(&[
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "summarise"),
            ]),
        ] {
            let e = era(&bad, &message("tools/call", meta.clone()))
                .err()
                .unwrap();
            assert_eq!(e.code, HEADER_MISMATCH, "{bad:?}");
        }
        let old = json!({"_meta": {VERSION_META: "2099-01-01"}});
        let h = headers(&[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "tools/list"),
        ]);
        let e = era(&h, &message("tools/list", old)).err().unwrap();
        assert_eq!(e.code, UNSUPPORTED_VERSION);
        assert_eq!(e.data.unwrap()["requested"], "2099-01-01");
        let h = headers(&[
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/list"),
        ]);
        assert_eq!(
            era(&h, &message("tools/list", json!({})))
                .err()
                .unwrap()
                .code,
            INVALID_PARAMS
        );
    }

    #[test]
    fn legacy_requests_name_a_legacy_version_or_none() {
        assert!(matches!(
            era(&HeaderMap::new(), &message("initialize", json!({}))),
            Ok(Era::Legacy(0))
        ));
        let h = headers(&[("mcp-protocol-version", "2025-06-18")]);
        assert!(matches!(
            era(&h, &message("tools/list", json!({}))),
            Ok(Era::Legacy(1))
        ));
        let h = headers(&[("mcp-protocol-version", "2024-01-01")]);
        assert_eq!(
            era(&h, &message("tools/list", json!({})))
                .err()
                .unwrap()
                .code,
            UNSUPPORTED_VERSION
        );
    }

    #[test]
    fn origins_other_than_the_host_are_refused() {
        assert!(check_origin(&headers(&[("host", "gw:8080")])).is_none());
        assert!(
            check_origin(&headers(&[
                ("host", "gw:8080"),
                ("origin", "http://gw:8080")
            ]))
            .is_none()
        );
        assert!(
            check_origin(&headers(&[
                ("host", "gw:8080"),
                ("origin", "http://evil.example")
            ]))
            .is_some()
        );
        assert!(check_origin(&headers(&[("host", "gw:8080"), ("origin", "null")])).is_some());
    }

    #[test]
    fn prompt_arguments_take_their_variables_types() {
        use tollgate_snapshot::VariableType as T;
        assert_eq!(typed_argument(T::Integer, "42"), json!(42));
        assert_eq!(typed_argument(T::Integer, "4.2"), json!("4.2"));
        assert_eq!(typed_argument(T::Number, "0.5"), json!(0.5));
        assert_eq!(typed_argument(T::Boolean, "true"), json!(true));
        assert_eq!(typed_argument(T::String, "42"), json!("42"));
    }
}
