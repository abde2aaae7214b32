//! The MCP endpoint (`POST <prefix>/mcp`) against a real proxy on 127.0.0.1: the route's prompt APIs
//! and REST operations as tools, with the official Python SDK of both lines (1.x: `initialize` and
//! sessions; 2.x: the stateless 2026-07-28 revision) as clients; the JSON-RPC errors and status codes
//! of both eras; sessions sealed by one replica and continued on another; the access log and metrics.

use std::sync::{Arc, Mutex};

use http::{Method, Request};
use serde_json::{Value, json};
use tollgate_crds::PromptApi;
use tollgate_proxy::ProxyConfig;
use tollgate_snapshot::{
    Content, FakeBehaviour, Limits, Phase, ProviderModel, RestOperation, RestService, Timeouts,
    compile_prompt_spec,
};

use crate::support::chat_route::table;
use crate::support::fake_server::{self, Seen};
use crate::support::python::run_mcp_script;
use crate::support::*;

pub(crate) const KEY: &str = "tg-mcp-client-key-0001";
pub(crate) const UNSUBSCRIBED: &str = "tg-mcp-stranger-key-0002";
const PENDING: &str = "tg-mcp-pending-key-0003";
const OTHER_APP: &str = "tg-mcp-other-app-key-0004";
pub(crate) const ENDPOINT: &str = "/team-a/chat/mcp";
pub(crate) const MODERN: &str = "2026-07-28";

fn summarise() -> tollgate_snapshot::Prompt {
    let spec: PromptApi = serde_json::from_value(json!({
        "name": "summarise",
        "description": "Summarises a text in a few words.",
        "version": "v2",
        "model": "front-model",
        "messages": [
            {"role": "system", "content": "You summarise. Be brief."},
            {"role": "user", "content": "Summarise in {{words}} words: {{text}}"}
        ],
        "variables": [
            {"name": "text", "maxLength": 200},
            {"name": "words", "type": "integer", "default": "12"}
        ]
    }))
    .unwrap();
    compile_prompt_spec(&spec, &["front-model"]).expect("the prompt compiles")
}

fn rest_service(base_url: &str) -> RestService {
    RestService {
        base_url: base_url.into(),
        timeouts: Timeouts {
            first_byte_ms: 2_000,
            ..Timeouts::default()
        },
        ca_pem: None,
        credential: None,
        max_request_bytes: 4096,
        operations: vec![RestOperation {
            method: "GET".into(),
            path: "/items/{id}".into(),
            operation_id: Some("getItem".into()),
            spec: json!({
                "summary": "One item.",
                "parameters": [
                    {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "verbose", "in": "query", "schema": {"type": "boolean"}}
                ]
            }),
        }],
        components: None,
    }
}

/// An echo service: answers every request with what it saw, as JSON.
pub(crate) async fn start_service() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let addr = fake_server::serve(move |req: Request<hyper::body::Incoming>| {
        let record = record.clone();
        async move {
            let seen = Seen::read(req).await;
            record.lock().unwrap().push(seen.clone());
            fake_server::json_response(
                200,
                &json!({"method": seen.method, "path": seen.path, "query": seen.query}),
            )
        }
    })
    .await;
    (format!("http://{addr}/v2"), seen)
}

/// Route `/team-a/chat` (Fake model, the `summarise` prompt, the echo service's `getItem`); the
/// consumer of `KEY` approved (at most `rpm` requests a minute), one of `PENDING` pending, one of
/// `UNSUBSCRIBED` with no subscription, and a second approved one of `OTHER_APP`.
pub(crate) fn content(base_url: &str, rpm: Option<u32>) -> Content {
    let mut fake = fake_provider("fake", FakeBehaviour::default());
    fake.models = vec![ProviderModel {
        name: "fake-chat".into(),
        deployment: None,
        price: price(),
    }];
    let mut content = table(vec![fake], "fake-chat");
    content.routes[0].prompts = vec![summarise()];
    content.routes[0].rest = Some(rest_service(base_url));
    content.routes[0].description = Some("Team A's tools.".into());
    content.consumers = vec![
        consumer(NS, "app", KEY),
        consumer(NS, "stranger", UNSUBSCRIBED),
        consumer(NS, "waiting", PENDING),
        consumer(NS, "other-app", OTHER_APP),
    ];
    let mut approved = subscription("app-chat", 0, 0, Phase::Approved);
    approved.limits = Limits {
        requests_per_minute: rpm,
        tokens_per_minute: None,
    };
    // A second route of the team, `/team-a/notes`, with the same prompt and no REST service; the
    // first consumer is approved for it too (the consumer scope shows both).
    let mut notes = content.routes[0].clone();
    notes.id = tollgate_snapshot::ObjectRef::new(NS, "notes");
    notes.prefix = "/team-a/notes".into();
    notes.rest = None;
    content.routes.push(notes);
    content.subscriptions = vec![
        approved,
        subscription("waiting-chat", 2, 0, Phase::Pending),
        subscription("other-app-chat", 3, 0, Phase::Approved),
        subscription("app-notes", 0, 1, Phase::Approved),
    ];
    content
}

/// A modern (2026-07-28) request: `_meta` and the three headers agreeing.
async fn modern(proxy: &TestProxy, key: &str, id: u64, method: &str, params: Value) -> Reply {
    modern_at(proxy, ENDPOINT, key, id, method, params).await
}

pub(crate) async fn modern_at(
    proxy: &TestProxy,
    endpoint: &str,
    key: &str,
    id: u64,
    method: &str,
    params: Value,
) -> Reply {
    modern_with(proxy, endpoint, key, (id, method, params), &[]).await
}

/// A modern request to `endpoint` carrying the caller's `extra` headers too.
pub(crate) async fn modern_with(
    proxy: &TestProxy,
    endpoint: &str,
    key: &str,
    (id, method, mut params): (u64, &str, Value),
    extra: &[(&str, &str)],
) -> Reply {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let name = params["name"].as_str().map(str::to_string);
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("mcp-protocol-version", MODERN),
        ("mcp-method", method),
    ];
    if let Some(name) = &name {
        headers.push(("mcp-name", name.as_str()));
    }
    headers.extend_from_slice(extra);
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    send(Method::POST, &proxy.url(endpoint), &headers, Some(&body)).await
}

/// `tests/python/test_mcp_sdk.py` with SDK line `line` against `url` as the app (and the
/// unsubscribed consumer), calling the prompt tool and REST tool `tools` by those names, with
/// `extra` settings; it fails the test when a check fails.
pub(crate) fn sdk_checks_at(line: u8, url: &str, tools: (&str, &str), extra: &[(&str, &str)]) {
    let mut env = vec![
        ("MCP_URL", url),
        ("MCP_KEY", KEY),
        ("MCP_UNSUBSCRIBED_KEY", UNSUBSCRIBED),
        ("MCP_PROMPT_TOOL", tools.0),
        ("MCP_REST_TOOL", tools.1),
    ];
    env.extend_from_slice(extra);
    run_mcp_script(line, "test_mcp_sdk.py", &env);
}

/// A legacy request with an optional session id.
async fn legacy(proxy: &TestProxy, session: Option<&str>, body: &Value) -> Reply {
    let auth = format!("Bearer {KEY}");
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(s) = session {
        headers.push(("mcp-session-id", s));
        headers.push(("mcp-protocol-version", "2025-11-25"));
    }
    send(Method::POST, &proxy.url(ENDPOINT), &headers, Some(body)).await
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}
    }})
}

pub(crate) fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// A POST of `body` exactly as given (not necessarily JSON).
async fn raw_post(url: &str, auth: &str, body: &'static str) -> Reply {
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = client().request(request).await.expect("request sent");
    let (parts, body) = response.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .expect("body read")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn session_key(byte: u8) -> ProxyConfig {
    ProxyConfig {
        mcp_session_key: Some([byte; 32]),
        ..test_config()
    }
}

#[tokio::test]
async fn tools_prompts_and_calls_in_the_stateless_revision() {
    let (base, seen) = start_service().await;
    let proxy = TestProxy::start(content(&base, None)).await;

    let r = modern(&proxy, KEY, 1, "server/discover", json!({})).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let v = r.json();
    assert_eq!(v["result"]["supportedVersions"][0], MODERN, "{v}");
    assert_eq!(v["result"]["resultType"], "complete");
    assert_eq!(v["result"]["instructions"], "Team A's tools.");

    let r = modern(&proxy, KEY, 2, "tools/list", json!({})).await;
    let v = r.json();
    let tools = v["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["summarise", "getItem"]);
    assert_eq!(tools[0]["inputSchema"]["required"], json!(["text"]));
    assert_eq!(
        tools[0]["inputSchema"]["properties"]["words"]["type"],
        "integer"
    );
    assert_eq!(tools[1]["inputSchema"]["required"], json!(["id"]));
    assert!(
        v["result"]["ttlMs"].is_u64() && v["result"]["cacheScope"] == "private",
        "{v}"
    );

    let r = modern(
        &proxy,
        KEY,
        3,
        "tools/call",
        json!({"name": "summarise", "arguments": {"text": "hello tools"}}),
    )
    .await;
    let v = r.json();
    assert_eq!(v["id"], 3);
    assert_eq!(v["result"]["isError"], false, "{v}");
    assert!(
        !v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{v}"
    );
    let id = r.headers["x-request-id"].to_str().unwrap().to_string();
    let line = proxy.log_line_of(&id).await;
    assert_eq!(line["api"], "mcp", "{line}");
    assert_eq!(line["mcp_method"], "tools/call");
    assert_eq!(line["operation"], "summarise");
    assert!(
        line["tokens_out"].as_u64().unwrap() > 0,
        "usage is counted: {line}"
    );
    assert_eq!(line["subscription"], "team-a/app-chat");

    let r = modern(
        &proxy,
        KEY,
        4,
        "tools/call",
        json!({"name": "getItem", "arguments": {"id": "a b", "verbose": true}}),
    )
    .await;
    let v = r.json();
    assert_eq!(
        v["result"]["structuredContent"]["path"], "/v2/items/a%20b",
        "{v}"
    );
    assert_eq!(v["result"]["structuredContent"]["query"], "verbose=true");
    let upstream = seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        upstream.headers.get("authorization").is_none(),
        "the caller's key never goes upstream"
    );
    let line = proxy
        .log_line_of(r.headers["x-request-id"].to_str().unwrap())
        .await;
    assert_eq!(
        (line["api"].as_str(), line["operation"].as_str()),
        (Some("mcp"), Some("getItem"))
    );

    let r = modern(
        &proxy,
        KEY,
        5,
        "prompts/get",
        json!({"name": "summarise", "arguments": {"text": "xyz", "words": "3"}}),
    )
    .await;
    let v = r.json();
    let messages = v["result"]["messages"].as_array().unwrap();
    assert_eq!(
        messages[1]["content"]["text"], "Summarise in 3 words: xyz",
        "{v}"
    );

    // Bad arguments are the tool's error, for the model to correct; an unknown tool is the protocol's.
    let r = modern(
        &proxy,
        KEY,
        6,
        "tools/call",
        json!({"name": "summarise", "arguments": {"text": 5}}),
    )
    .await;
    let v = r.json();
    assert_eq!(v["result"]["isError"], true, "{v}");
    let r = modern(
        &proxy,
        KEY,
        7,
        "tools/call",
        json!({"name": "nope", "arguments": {}}),
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32602);

    let metrics = text(&send(Method::GET, &proxy.admin_url("/metrics"), &[], None).await);
    assert!(
        metrics.contains(
            r#"tollgate_mcp_calls_total{route="team-a/chat",method="tools/call",outcome="ok"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"method="tools/call",outcome="tool_error"} 1"#),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn the_consumer_scope_offers_the_tools_of_every_approved_route() {
    let (base, _) = start_service().await;
    let proxy = TestProxy::start(content(&base, None)).await;
    let r = modern_at(&proxy, "/mcp", KEY, 1, "tools/list", json!({})).await;
    let v = r.json();
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["chat__summarise", "chat__getItem", "notes__summarise"]
    );

    let r = modern_at(
        &proxy,
        "/mcp",
        KEY,
        2,
        "tools/call",
        json!({"name": "notes__summarise", "arguments": {"text": "x"}}),
    )
    .await;
    assert_eq!(r.json()["result"]["isError"], false, "{}", text(&r));
    let line = proxy.log_line_of(&r.request_id()).await;
    assert_eq!(
        (line["route"].as_str(), line["operation"].as_str()),
        (Some("notes"), Some("notes__summarise"))
    );
    assert_eq!(line["subscription"], "team-a/app-notes");
    let r = modern_at(
        &proxy,
        "/mcp",
        KEY,
        3,
        "prompts/get",
        json!({"name": "chat__summarise", "arguments": {"text": "y"}}),
    )
    .await;
    assert_eq!(
        r.json()["result"]["messages"][1]["content"]["text"],
        "Summarise in 12 words: y"
    );

    // A consumer approved nowhere sees nothing; one approved for `chat` only sees `chat`'s tools.
    let r = modern_at(&proxy, "/mcp", UNSUBSCRIBED, 4, "tools/list", json!({})).await;
    assert_eq!(r.json()["result"]["tools"], json!([]));
    let r = modern_at(&proxy, "/mcp", OTHER_APP, 5, "tools/list", json!({})).await;
    assert_eq!(r.json()["result"]["tools"].as_array().unwrap().len(), 2);
    let r = modern_at(
        &proxy,
        "/mcp",
        OTHER_APP,
        6,
        "tools/call",
        json!({"name": "notes__summarise", "arguments": {"text": "x"}}),
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32602, "not offered, so unknown");
    let r = modern_at(&proxy, "/mcp", "tg-wrong", 7, "tools/list", json!({})).await;
    assert_eq!(r.status.as_u16(), 401);

    // The legacy era works there too.
    let r = send(
        Method::POST,
        &proxy.url("/mcp"),
        &[("authorization", &format!("Bearer {KEY}"))],
        Some(&initialize()),
    )
    .await;
    let session = r.headers["mcp-session-id"].to_str().unwrap().to_string();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let r = send(
        Method::POST,
        &proxy.url("/mcp"),
        &[
            ("authorization", &format!("Bearer {KEY}")),
            ("mcp-session-id", &session),
        ],
        Some(&list),
    )
    .await;
    assert_eq!(
        r.json()["result"]["tools"].as_array().unwrap().len(),
        3,
        "{}",
        text(&r)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn json_rpc_and_transport_errors_have_their_codes_and_statuses() {
    let (base, _) = start_service().await;
    let proxy = TestProxy::start(content(&base, None)).await;
    let url = proxy.url(ENDPOINT);
    let auth = format!("Bearer {KEY}");
    let a = [("authorization", auth.as_str())];

    let r = raw_post(&url, &auth, "{not json").await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"]["code"].as_i64()),
        (400, Some(-32700))
    );
    let r = raw_post(&url, &auth, r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"]["code"].as_i64()),
        (400, Some(-32600))
    );
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batches")
    );

    let r = modern(&proxy, KEY, 1, "resources/list", json!({})).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"]["code"].as_i64()),
        (404, Some(-32601))
    );

    // Headers that disagree with the body, and a version not served.
    let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}});
    let r = send(
        Method::POST,
        &url,
        &[
            a[0],
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
        ],
        Some(&body),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"]["code"].as_i64()),
        (400, Some(-32020))
    );
    let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2031-01-01"}}});
    let r = send(
        Method::POST,
        &url,
        &[
            a[0],
            ("mcp-protocol-version", "2031-01-01"),
            ("mcp-method", "tools/list"),
        ],
        Some(&body),
    )
    .await;
    let v = r.json();
    assert_eq!(
        (r.status.as_u16(), v["error"]["code"].as_i64()),
        (400, Some(-32022))
    );
    assert_eq!(v["error"]["data"]["supported"][0], MODERN);

    // No GET stream; a foreign Origin is refused; an oversize body is refused, saying so.
    let r = send(Method::GET, &url, &a, None).await;
    assert_eq!(r.status.as_u16(), 405);
    assert_eq!(r.headers["allow"], "POST, DELETE");
    let r = send(
        Method::POST,
        &url,
        &[a[0], ("origin", "http://evil.example")],
        Some(&initialize()),
    )
    .await;
    assert_eq!(r.status.as_u16(), 403);
    let big = json!({"jsonrpc": "2.0", "id": 4, "method": "ping", "params": {"pad": "x".repeat(9 * 1024 * 1024)}});
    let r = send(Method::POST, &url, &a, Some(&big)).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"]["code"].as_i64()),
        (413, Some(-32600))
    );

    // Refusals carry the HTTP 403s' codes in data; a bad key is a 401.
    let r = modern(&proxy, PENDING, 5, "tools/list", json!({})).await;
    let v = r.json();
    assert_eq!(r.status.as_u16(), 403);
    assert_eq!(
        v["error"]["data"],
        json!({"status": 403, "type": "permission_error", "code": "pending_approval"}),
        "{v}"
    );
    let r = modern(
        &proxy,
        UNSUBSCRIBED,
        6,
        "tools/call",
        json!({"name": "summarise", "arguments": {"text": "x"}}),
    )
    .await;
    assert_eq!(r.json()["error"]["data"]["code"], "not_subscribed");
    let r = modern(&proxy, "tg-wrong", 7, "tools/list", json!({})).await;
    assert_eq!(
        (
            r.status.as_u16(),
            r.json()["error"]["data"]["code"].as_str()
        ),
        (401, Some("invalid_api_key"))
    );
    // A legacy client gets its refusals in a 200 (its SDK reads no error bodies of other statuses).
    let r = send(
        Method::POST,
        &url,
        &[("authorization", &format!("Bearer {UNSUBSCRIBED}"))],
        Some(&initialize()),
    )
    .await;
    assert_eq!(
        (
            r.status.as_u16(),
            r.json()["error"]["data"]["code"].as_str()
        ),
        (200, Some("not_subscribed"))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_service_that_is_down_is_the_tools_error_not_the_callers() {
    // A port nothing listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = TestProxy::start(content(&format!("http://{closed}/v2"), None)).await;
    let r = modern(
        &proxy,
        KEY,
        1,
        "tools/call",
        json!({"name": "getItem", "arguments": {"id": "1"}}),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200);
    let v = r.json();
    assert_eq!(v["result"]["isError"], true, "{v}");
    let said = v["result"]["content"][0]["text"].as_str().unwrap();
    assert!(said.contains("could not be reached"), "{said}");
    let line = proxy.log_line_of(&r.request_id()).await;
    assert_eq!(line["error_class"], "upstream_unreachable", "{line}");
    proxy.stop().await;
}

#[tokio::test]
async fn every_tool_call_counts_against_the_subscriptions_request_limit() {
    let (base, _) = start_service().await;
    let proxy = TestProxy::start(content(&base, Some(2))).await;
    for id in 0..2 {
        let r = modern(
            &proxy,
            KEY,
            id,
            "tools/call",
            json!({"name": "getItem", "arguments": {"id": "1"}}),
        )
        .await;
        assert_eq!(r.json()["result"]["isError"], false);
    }
    let r = modern(
        &proxy,
        KEY,
        9,
        "tools/call",
        json!({"name": "getItem", "arguments": {"id": "1"}}),
    )
    .await;
    let v = r.json();
    assert_eq!(r.status.as_u16(), 429, "{v}");
    assert_eq!(v["error"]["data"]["status"], 429, "{v}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_legacy_session_begun_on_one_replica_continues_on_another() {
    let (base, _) = start_service().await;
    let a = TestProxy::start_with(session_key(1), Some(content(&base, None))).await;
    let b = TestProxy::start_with(session_key(1), Some(content(&base, None))).await;
    let other = TestProxy::start_with(session_key(2), Some(content(&base, None))).await;

    let r = legacy(&a, None, &initialize()).await;
    assert_eq!(r.json()["result"]["protocolVersion"], "2025-11-25");
    let session = r.headers["mcp-session-id"].to_str().unwrap().to_string();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let r = legacy(
        &b,
        Some(&session),
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(r.status.as_u16(), 202);
    let r = legacy(&b, Some(&session), &list).await;
    assert_eq!(
        r.json()["result"]["tools"][0]["name"],
        "summarise",
        "{}",
        text(&r)
    );
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "getItem", "arguments": {"id": "7"}}});
    let r = legacy(&b, Some(&session), &call).await;
    assert_eq!(
        r.json()["result"]["structuredContent"]["path"],
        "/v2/items/7"
    );

    // Another key, a forged id, no id: not this deployment's session.
    assert_eq!(
        legacy(&other, Some(&session), &list).await.status.as_u16(),
        404
    );
    let mut forged = session.clone().into_bytes();
    forged[5] = if forged[5] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        legacy(&b, Some(std::str::from_utf8(&forged).unwrap()), &list)
            .await
            .status
            .as_u16(),
        404
    );
    assert_eq!(legacy(&b, None, &list).await.status.as_u16(), 400);
    // The session belongs to its consumer: another subscribed consumer presenting it is not let in.
    let other_app = format!("Bearer {OTHER_APP}");
    let r = send(
        Method::POST,
        &b.url(ENDPOINT),
        &[("authorization", &other_app), ("mcp-session-id", &session)],
        Some(&list),
    )
    .await;
    assert_eq!(r.status.as_u16(), 404);

    let auth = format!("Bearer {KEY}");
    let r = send(
        Method::DELETE,
        &b.url(ENDPOINT),
        &[("authorization", &auth), ("mcp-session-id", &session)],
        None,
    )
    .await;
    assert_eq!(r.status.as_u16(), 204);
    for p in [a, b, other] {
        p.stop().await;
    }
}

async fn sdk_checks(line: u8) {
    let (base, _) = start_service().await;
    let proxy = TestProxy::start(content(&base, None)).await;
    let url = proxy.url(ENDPOINT);
    tokio::task::spawn_blocking(move || sdk_checks_at(line, &url, ("summarise", "getItem"), &[]))
        .await
        .unwrap();
    let lines = proxy.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l["api"] == "mcp" && l["operation"] == "getItem")
    );
    proxy.stop().await;
}

/// Both SDK lines at the consumer scope `/mcp`, where the route's tools are `chat__…`.
#[tokio::test]
async fn the_python_sdks_reach_the_consumer_scope() {
    let (base, _) = start_service().await;
    let proxy = TestProxy::start(content(&base, None)).await;
    let url = proxy.url("/mcp");
    tokio::task::spawn_blocking(move || {
        for line in [1, 2] {
            let tools = ("chat__summarise", "chat__getItem");
            sdk_checks_at(line, &url, tools, &[("MCP_CONSUMER_SCOPE", "1")]);
        }
    })
    .await
    .unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn the_python_sdk_1_x_lists_calls_and_is_refused() {
    sdk_checks(1).await;
}

#[tokio::test]
async fn the_python_sdk_2_x_lists_calls_and_is_refused() {
    sdk_checks(2).await;
}

/// Both SDK lines with every HTTP request sent to two replicas in turn: 1.x's session, sealed on one,
/// continues on the other; 2.x's stateless requests need nothing shared.
#[tokio::test]
async fn the_python_sdks_alternate_between_two_replicas() {
    let (base, _) = start_service().await;
    let a = TestProxy::start_with(session_key(9), Some(content(&base, None))).await;
    let b = TestProxy::start_with(session_key(9), Some(content(&base, None))).await;
    let (url, alt) = (a.url(ENDPOINT), b.url(ENDPOINT));
    tokio::task::spawn_blocking(move || {
        for line in [1, 2] {
            sdk_checks_at(
                line,
                &url,
                ("summarise", "getItem"),
                &[("MCP_ALT_URL", &alt)],
            );
        }
    })
    .await
    .unwrap();
    for p in [a, b] {
        assert!(
            p.log_lines().iter().any(|l| l["api"] == "mcp"),
            "both replicas served"
        );
        p.stop().await;
    }
}
