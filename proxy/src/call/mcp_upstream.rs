//! Tollgate as an MCP client of the upstream servers routes attach (`MCPServer`): their tool lists,
//! kept for a few seconds, and calls of their tools.
//!
//! Each server is spoken to in the revision it speaks: first the stateless 2026-07-28 revision (the
//! version in `_meta` and in `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`); a server that refuses
//! it (a 4xx, as a 2025 server without a session does) is spoken to in 2025-11-25 from then on:
//! `initialize`, `notifications/initialized`, and its `Mcp-Session-Id` on every request. One session
//! per server and proxy process, begun again when the server answers 404 (it forgot the session).
//!
//! Requests carry the server's own credential and the caller headers the server's spec allows, never
//! the caller's key. Answers are read whole as JSON or as an event stream (the response event is
//! taken, notifications before it are skipped), at most [`MAX_ANSWER`] bytes, within the server's
//! timeouts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tollgate_snapshot::{FxHashMap, McpServer, ObjectRef};

use super::record::{TraceHeaders, insert_trace};
use crate::llm::sse::{SseDecoder, SseEvent};
use crate::upstream::{McpPools, UpstreamError};

/// The stateless revision, tried first.
pub const MODERN: &str = "2026-07-28";
/// The revision asked for in `initialize` when a server does not speak [`MODERN`].
pub const LEGACY: &str = "2025-11-25";
/// Largest answer read from a server.
pub const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// How long a server's tool list is used before it is asked again.
pub const LIST_TTL: Duration = Duration::from_secs(5);
/// How long a server that failed is left alone before it is tried again (its last list, if any, is
/// used meanwhile), so that a server that is down does not slow every `tools/list`.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Headers that carry the caller's key: never sent upstream, whatever a spec says.
const CALLER_KEYS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "proxy-authorization",
];

/// Why a server could not answer.
#[derive(Debug, Clone, PartialEq)]
pub enum McpFailure {
    /// No answer: not reachable, too slow, broke off, or not MCP.
    Unreachable(String),
    /// The server answered with a JSON-RPC error, passed on as it is.
    Rpc {
        /// Its code.
        code: i64,
        /// Its message.
        message: String,
        /// Its data.
        data: Option<Value>,
    },
}

/// How a server is spoken to, once known.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Era {
    Modern,
    /// The session id (none when the server gives none) and the negotiated version.
    Legacy {
        session: Option<String>,
        version: String,
    },
}

/// What this process knows of one server (at one URL).
struct Known {
    url: String,
    /// How it is spoken to, once found out.
    era: Mutex<Option<Era>>,
    /// Held while a session is begun, so that concurrent calls begin one, not several.
    beginning: tokio::sync::Mutex<()>,
    /// Its tools as it listed them, and when; held while they are asked for, so that one request
    /// asks and the others wait for its answer.
    listed: tokio::sync::Mutex<Option<(Instant, Arc<Vec<Value>>)>>,
    /// When asking it last failed, and why.
    failed: Mutex<Option<(Instant, String)>>,
}

impl Known {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            era: Mutex::new(None),
            beginning: tokio::sync::Mutex::new(()),
            listed: tokio::sync::Mutex::new(None),
            failed: Mutex::new(None),
        }
    }

    fn era(&self) -> Option<Era> {
        self.era.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_era(&self, era: Option<Era>) {
        *self.era.lock().unwrap_or_else(|e| e.into_inner()) = era;
    }

    fn failed(&self) -> Option<(Instant, String)> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_failed(&self, failed: Option<(Instant, String)>) {
        *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = failed;
    }
}

/// The upstream servers' connections, sessions and tool lists.
#[derive(Default)]
pub struct McpUpstreams {
    pools: McpPools,
    known: Mutex<FxHashMap<ObjectRef, Arc<Known>>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// One request's answer: the JSON-RPC message, or none (a notification's 202).
struct Exchange {
    status: StatusCode,
    session: Option<String>,
    message: Option<Value>,
}

impl McpUpstreams {
    /// No server known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// What is known of `server`; a server whose URL changed starts over.
    fn known(&self, server: &McpServer) -> Arc<Known> {
        let mut all = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match all.get(&server.id) {
            Some(k) if k.url == server.url => k.clone(),
            _ => {
                let k = Arc::new(Known::new(&server.url));
                all.insert(server.id.clone(), k.clone());
                k
            }
        }
    }

    /// The server's tools as it lists them (unfiltered, with its own names): the list kept from the
    /// last [`LIST_TTL`], else asked for now. A server that cannot be asked gives its last list if
    /// it ever gave one, else the failure.
    pub async fn tools(&self, server: &McpServer) -> Result<Arc<Vec<Value>>, McpFailure> {
        let known = self.known(server);
        let mut listed = known.listed.lock().await;
        if let Some((at, tools)) = &*listed
            && at.elapsed() < LIST_TTL
        {
            return Ok(tools.clone());
        }
        if let Some((at, why)) = known.failed()
            && at.elapsed() < RETRY_AFTER
        {
            return match &*listed {
                Some((_, tools)) => Ok(tools.clone()),
                None => Err(McpFailure::Unreachable(why)),
            };
        }
        let mut tools = Vec::new();
        let mut cursor: Option<Value> = None;
        // Pages, at most 20 (a server that pages forever is cut off there).
        for _ in 0..20 {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            match self
                .request(
                    server,
                    &known,
                    "tools/list",
                    None,
                    params,
                    &HeaderMap::new(),
                )
                .await
            {
                Ok(result) => {
                    if let Some(page) = result["tools"].as_array() {
                        tools.extend(page.iter().filter(|t| t["name"].is_string()).cloned());
                    }
                    cursor = result.get("nextCursor").filter(|c| c.is_string()).cloned();
                    if cursor.is_none() {
                        break;
                    }
                }
                Err(failure) => {
                    let why = match &failure {
                        McpFailure::Unreachable(why) => why.clone(),
                        McpFailure::Rpc { message, .. } => message.clone(),
                    };
                    tracing::warn!(server = %server.id, "an MCP server's tools could not be listed: {why}");
                    known.set_failed(Some((Instant::now(), why)));
                    return match &*listed {
                        Some((_, tools)) => Ok(tools.clone()),
                        None => Err(failure),
                    };
                }
            }
        }
        let tools = Arc::new(tools);
        known.set_failed(None);
        *listed = Some((Instant::now(), tools.clone()));
        Ok(tools)
    }

    /// Calls the server's tool `name` (its own name) with `arguments`, passing on the allowed
    /// headers of `caller` and the trace context `trace` (as headers and in `params._meta`, as the
    /// MCP conventions carry it): the server's result as it is, or why there is none.
    pub async fn call_tool(
        &self,
        server: &McpServer,
        name: &str,
        arguments: &Value,
        caller: &HeaderMap,
        trace: Option<TraceHeaders>,
    ) -> Result<Value, McpFailure> {
        let known = self.known(server);
        let mut params = json!({ "name": name, "arguments": arguments });
        let mut forwarded = forwarded(server, caller);
        if let Some((parent, state)) = trace {
            let mut meta = serde_json::Map::new();
            if let Ok(text) = parent.to_str() {
                meta.insert("traceparent".into(), json!(text));
            }
            if let Some(text) = state.as_ref().and_then(|s| s.to_str().ok()) {
                meta.insert("tracestate".into(), json!(text));
            }
            insert_trace(&mut forwarded, (parent, state));
            params["_meta"] = Value::Object(meta);
        }
        let answer = self
            .request(server, &known, "tools/call", Some(name), params, &forwarded)
            .await;
        if let Err(McpFailure::Unreachable(why)) = &answer {
            known.set_failed(Some((Instant::now(), why.clone())));
        }
        answer
    }

    /// One request in the server's era (found out on the first request), its session begun again
    /// once when the server no longer knows it.
    async fn request(
        &self,
        server: &McpServer,
        known: &Known,
        method: &str,
        name: Option<&str>,
        params: Value,
        forwarded: &HeaderMap,
    ) -> Result<Value, McpFailure> {
        let era = known.era();
        if matches!(era, None | Some(Era::Modern)) {
            let modern = self
                .exchange(
                    server,
                    &Era::Modern,
                    method,
                    name,
                    params.clone(),
                    forwarded,
                )
                .await?;
            if modern.status.is_success() || era == Some(Era::Modern) {
                known.set_era(Some(Era::Modern));
                return result_of(modern);
            }
            // A 4xx to the stateless revision: a server of the 2025 revisions.
            if !modern.status.is_client_error()
                || matches!(modern.status.as_u16(), 401 | 403 | 413 | 429)
            {
                return result_of(modern);
            }
        }
        let mut stale = None;
        for _ in 0..2 {
            let era = self
                .session(server, known, forwarded, stale.as_ref())
                .await?;
            let answer = self
                .exchange(server, &era, method, name, params.clone(), forwarded)
                .await?;
            if answer.status == StatusCode::NOT_FOUND && stale.is_none() {
                // The session is gone (the server restarted or expired it): begin another.
                stale = Some(era);
                continue;
            }
            return result_of(answer);
        }
        Err(McpFailure::Unreachable(
            "it forgot two sessions in a row".into(),
        ))
    }

    /// The session to use: the one known, unless it is `stale`, else a new one.
    async fn session(
        &self,
        server: &McpServer,
        known: &Known,
        forwarded: &HeaderMap,
        stale: Option<&Era>,
    ) -> Result<Era, McpFailure> {
        let _one_at_a_time = known.beginning.lock().await;
        if let Some(era @ Era::Legacy { .. }) = known.era()
            && Some(&era) != stale
        {
            return Ok(era);
        }
        let era = self.initialize(server, forwarded).await?;
        known.set_era(Some(era.clone()));
        Ok(era)
    }

    /// `initialize` and `notifications/initialized`: the session of the 2025 revisions.
    async fn initialize(
        &self,
        server: &McpServer,
        forwarded: &HeaderMap,
    ) -> Result<Era, McpFailure> {
        let bare = Era::Legacy {
            session: None,
            version: LEGACY.to_string(),
        };
        let params = json!({
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "tollgate", "version": env!("CARGO_PKG_VERSION")},
        });
        let answer = self
            .exchange(server, &bare, "initialize", None, params, forwarded)
            .await?;
        let session = answer.session.clone();
        let result = result_of(answer)?;
        let version = result["protocolVersion"]
            .as_str()
            .unwrap_or(LEGACY)
            .to_string();
        let era = Era::Legacy { session, version };
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        self.send(
            server,
            &era,
            "notifications/initialized",
            None,
            note,
            forwarded,
        )
        .await?;
        Ok(era)
    }

    /// One JSON-RPC request with a fresh id, and its answer.
    async fn exchange(
        &self,
        server: &McpServer,
        era: &Era,
        method: &str,
        name: Option<&str>,
        mut params: Value,
        forwarded: &HeaderMap,
    ) -> Result<Exchange, McpFailure> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if *era == Era::Modern {
            // Beside what the caller of `exchange` put in `_meta` (the trace context).
            let meta = params["_meta"]
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .chain([
                    (
                        "io.modelcontextprotocol/protocolVersion".into(),
                        json!(MODERN),
                    ),
                    (
                        "io.modelcontextprotocol/clientCapabilities".into(),
                        json!({}),
                    ),
                    (
                        "io.modelcontextprotocol/clientInfo".into(),
                        json!({"name": "tollgate", "version": env!("CARGO_PKG_VERSION")}),
                    ),
                ]);
            params["_meta"] = Value::Object(meta.collect());
        }
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut answer = self
            .send(server, era, method, name, message, forwarded)
            .await?;
        if let Some(m) = &answer.message
            && m["id"] != json!(id)
        {
            answer.message = None;
        }
        Ok(answer)
    }

    /// Sends one message and reads the answer (JSON, or the response event of an event stream).
    async fn send(
        &self,
        server: &McpServer,
        era: &Era,
        method: &str,
        name: Option<&str>,
        message: Value,
        forwarded: &HeaderMap,
    ) -> Result<Exchange, McpFailure> {
        let unreachable = |why: String| McpFailure::Unreachable(why);
        let uri = Uri::try_from(server.url.as_str())
            .map_err(|_| unreachable(format!("its URL {} is not valid", server.url)))?;
        let body = Bytes::from(serde_json::to_vec(&message).expect("JSON values serialise"));
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(Full::new(body))
            .expect("a request from valid parts");
        let headers = request.headers_mut();
        headers.extend(forwarded.clone());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        let version = match era {
            Era::Modern => MODERN,
            Era::Legacy { version, .. } => version,
        };
        if let Ok(v) = HeaderValue::from_str(version) {
            headers.insert("mcp-protocol-version", v);
        }
        match era {
            Era::Modern => {
                if let Ok(v) = HeaderValue::from_str(method) {
                    headers.insert("mcp-method", v);
                }
                if let Some(name) = name {
                    headers.insert("mcp-name", name_header(name));
                }
            }
            Era::Legacy {
                session: Some(s), ..
            } => {
                if let Ok(v) = HeaderValue::from_str(s) {
                    headers.insert("mcp-session-id", v);
                }
            }
            Era::Legacy { .. } => {}
        }
        if let Some(c) = &server.credential
            && let (Ok(n), Ok(mut v)) = (
                HeaderName::from_bytes(c.header.as_bytes()),
                HeaderValue::from_str(&c.value.0),
            )
        {
            v.set_sensitive(true);
            headers.insert(n, v);
        }
        let due = Duration::from_millis(server.timeouts.first_byte_ms.max(1));
        let (response, checkin) = self.pools.send(server, request, due).await.map_err(|e| {
            unreachable(match e {
                UpstreamError::Connect => "it could not be reached".to_string(),
                UpstreamError::Timeout => "it did not answer in time".to_string(),
                UpstreamError::Broken => "its connection failed".to_string(),
            })
        })?;
        let status = response.status();
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let stream = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim_start().starts_with("text/event-stream"));
        let total = Duration::from_millis(server.timeouts.total_ms.max(1));
        let wanted = message.get("id").cloned();
        let read = read_answer(response.into_body(), stream, wanted.as_ref());
        let message = tokio::time::timeout(total, read)
            .await
            .map_err(|_| unreachable("its answer did not end in time".into()))?
            .map_err(unreachable)?;
        drop(checkin);
        Ok(Exchange {
            status,
            session,
            message,
        })
    }
}

/// The caller's headers that `server` may see.
fn forwarded(server: &McpServer, caller: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in &server.forward_headers {
        if CALLER_KEYS.contains(&name.as_str()) {
            continue;
        }
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            for v in caller.get_all(&n) {
                out.append(n.clone(), v.clone());
            }
        }
    }
    out
}

/// `Mcp-Name`: the name itself when it is plain ASCII, else `=?base64?…?=`.
fn name_header(name: &str) -> HeaderValue {
    use base64::Engine as _;
    if name.bytes().all(|b| b.is_ascii_graphic()) {
        return HeaderValue::from_str(name).expect("visible ASCII is a header value");
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(name.as_bytes());
    HeaderValue::from_str(&format!("=?base64?{encoded}?=")).expect("base64 is a header value")
}

/// The JSON-RPC result of an answer, its error, or why it is neither.
fn result_of(answer: Exchange) -> Result<Value, McpFailure> {
    let Some(mut message) = answer.message else {
        return Err(McpFailure::Unreachable(format!(
            "it answered {} without a JSON-RPC answer",
            answer.status
        )));
    };
    if let Some(error) = message.get("error") {
        return Err(McpFailure::Rpc {
            code: error["code"].as_i64().unwrap_or(-32603),
            message: error["message"]
                .as_str()
                .unwrap_or("The MCP server failed.")
                .to_string(),
            data: error.get("data").cloned(),
        });
    }
    match message.get_mut("result").map(Value::take) {
        Some(result @ Value::Object(_)) => Ok(result),
        _ => Err(McpFailure::Unreachable(
            "its answer has no result object".into(),
        )),
    }
}

/// Reads an answer's body: one JSON message, or the events of a stream until the message that
/// answers `wanted` (a stream without it gives `None`). Bodies over [`MAX_ANSWER`] fail.
async fn read_answer<B>(
    mut body: B,
    stream: bool,
    wanted: Option<&Value>,
) -> Result<Option<Value>, String>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let mut whole = Vec::new();
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    let mut read = 0usize;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Err(_)) => return Err("its answer broke off".into()),
            Some(Ok(frame)) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        read += data.len();
        if read > MAX_ANSWER {
            return Err(format!("its answer is larger than {MAX_ANSWER} bytes"));
        }
        if stream {
            decoder.feed(&data, &mut events);
            if let Some(found) = answer_in(&events, wanted) {
                return Ok(Some(found));
            }
        } else {
            whole.extend_from_slice(&data);
        }
    }
    if stream {
        decoder.finish(&mut events);
        return Ok(answer_in(&events, wanted));
    }
    if whole.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    Ok(serde_json::from_slice::<Value>(&whole)
        .ok()
        .filter(Value::is_object))
}

/// The message among `events` that answers `wanted`: a JSON object with that id and a result or an
/// error (requests and notifications the server sends meanwhile are skipped).
pub fn answer_in(events: &[SseEvent], wanted: Option<&Value>) -> Option<Value> {
    events.iter().find_map(|e| {
        let v: Value = serde_json::from_str(&e.data).ok()?;
        let answers = v.get("result").is_some() || v.get("error").is_some();
        (answers && wanted.is_none_or(|id| v.get("id") == Some(id))).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn events(text: &str) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut d = SseDecoder::new();
        d.feed(text.as_bytes(), &mut out);
        d.finish(&mut out);
        out
    }

    #[test]
    fn the_answer_is_the_event_with_the_request_id() {
        let text = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n\
                    event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":6,\"result\":{}}\n\n\
                    event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"a\":1}}\n\n";
        let got = answer_in(&events(text), Some(&json!(7))).unwrap();
        assert_eq!(got["result"]["a"], 1);
        assert!(answer_in(&events(text), Some(&json!(8))).is_none());
        assert!(answer_in(&events("data: not json\n\n"), Some(&json!(1))).is_none());
    }

    #[test]
    fn errors_pass_through_and_empty_answers_say_so() {
        let rpc = Exchange {
            status: StatusCode::OK,
            session: None,
            message: Some(json!({"id": 1, "error": {"code": -32602, "message": "Unknown tool"}})),
        };
        assert_eq!(
            result_of(rpc),
            Err(McpFailure::Rpc {
                code: -32602,
                message: "Unknown tool".into(),
                data: None
            })
        );
        let none = Exchange {
            status: StatusCode::BAD_GATEWAY,
            session: None,
            message: None,
        };
        let Err(McpFailure::Unreachable(why)) = result_of(none) else {
            panic!("no answer is a failure");
        };
        assert!(why.contains("502"), "{why}");
    }

    #[test]
    fn the_callers_key_is_never_forwarded() {
        let server = McpServer {
            id: ObjectRef::new("a", "s"),
            url: "http://x/mcp".into(),
            credential: None,
            forward_headers: vec!["x-tenant".into(), "authorization".into()],
            timeouts: Default::default(),
            tool_prefix: String::new(),
            filter: tollgate_snapshot::ToolFilter::All,
        };
        let mut caller = HeaderMap::new();
        caller.insert("authorization", HeaderValue::from_static("Bearer key"));
        caller.insert("x-tenant", HeaderValue::from_static("t1"));
        caller.insert("x-other", HeaderValue::from_static("o"));
        let out = forwarded(&server, &caller);
        assert_eq!(out.len(), 1);
        assert_eq!(out["x-tenant"], "t1");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Whatever a server streams, finding the answer never panics, and a well-formed answer
        /// anywhere in the stream is found.
        #[test]
        fn any_stream_is_read_without_panic(noise in proptest::collection::vec(any::<u8>(), 0..512), id in 0u64..1000) {
            let noise = String::from_utf8_lossy(&noise).into_owned();
            let _ = answer_in(&events(&noise), Some(&json!(id)));
            let text = format!("{noise}\n\ndata: {{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{}}}}\n\n");
            prop_assert!(answer_in(&events(&text), Some(&json!(id))).is_some());
        }
    }
}
