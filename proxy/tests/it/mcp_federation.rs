//! Upstream MCP servers behind a route (`MCPServer`, `AIRoute.spec.mcp.servers`): two servers written
//! with the official SDK's FastMCP, one of each era (1.x: 2025-11-25 with sessions; 2.x: the
//! stateless 2026-07-28 revision), on 127.0.0.1. Their tools are listed under the route's prefixes,
//! filtered, and called on the server that owns them, with the server's credential and never the
//! caller's key; a server killed mid-test leaves the other listed and answers its own tools with a
//! JSON-RPC error; the official Python SDK of both lines calls a federated tool through the proxy.

use serde_json::{Value, json};
use tollgate_snapshot::{
    Content, Credential, McpServer, ObjectRef, Pattern, RestCredential, Timeouts, ToolFilter,
};

use crate::mcp::{ENDPOINT, KEY, MODERN, content, modern_with, sdk_checks_at, start_service, text};
use crate::support::python::McpUpstream;
use crate::support::*;
pub(crate) const UPSTREAM_SECRET: &str = "upstream-credential-7";

/// `old`: the 1.x server's `add` and `echo` as `old_add`, `old_echo` (by name), with a credential
/// and `x-tenant` passed on; `new`: the 2.x server's as `new_add`, `new_echo` (by pattern).
pub(crate) fn servers(old: &McpUpstream, new: &McpUpstream) -> Vec<McpServer> {
    let timeouts = Timeouts {
        first_byte_ms: 10_000,
        ..Timeouts::default()
    };
    vec![
        McpServer {
            id: ObjectRef::new("tools", "old"),
            url: old.url.clone(),
            credential: Some(RestCredential {
                header: "x-upstream-token".into(),
                value: Credential(UPSTREAM_SECRET.into()),
            }),
            forward_headers: vec!["x-tenant".into()],
            timeouts,
            tool_prefix: "old_".into(),
            filter: ToolFilter::Include(vec!["add".into(), "echo".into()]),
        },
        McpServer {
            id: ObjectRef::new("tools", "new"),
            url: new.url.clone(),
            credential: None,
            forward_headers: Vec::new(),
            timeouts,
            tool_prefix: "new_".into(),
            filter: ToolFilter::Matching(Pattern::new("add|echo").unwrap()),
        },
    ]
}

pub(crate) fn with_servers(mut content: Content, servers: Vec<McpServer>) -> Content {
    content.routes[0].mcp_servers = servers;
    content
}

/// A 2026-07-28 request to `endpoint` with the caller's `x-tenant` header.
async fn ask(proxy: &TestProxy, endpoint: &str, id: u64, method: &str, params: Value) -> Reply {
    let tenant = [("x-tenant", "tenant-9")];
    modern_with(proxy, endpoint, KEY, (id, method, params), &tenant).await
}

fn names(reply: &Reply) -> Vec<String> {
    let v = reply.json();
    v["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {v}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn upstream_tools_are_listed_filtered_and_called_and_a_dead_server_leaves_the_other() {
    let (mut old, new) =
        tokio::task::spawn_blocking(|| (McpUpstream::start(1), McpUpstream::start(2)))
            .await
            .unwrap();
    let (base, _) = start_service().await;
    let proxy = TestProxy::start(with_servers(content(&base, None), servers(&old, &new))).await;

    let r = ask(&proxy, ENDPOINT, 1, "tools/list", json!({})).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let listed = names(&r);
    assert_eq!(
        listed,
        [
            "summarise",
            "getItem",
            "old_add",
            "old_echo",
            "new_add",
            "new_echo"
        ],
        "the route's own tools, then each server's, prefixed and filtered"
    );
    let v = r.json();
    let add = &v["result"]["tools"][2];
    assert_eq!(add["inputSchema"]["required"], json!(["a", "b"]), "{add}");

    // Calls go to the owning server, each in its own era.
    for (id, tool) in [(2, "old_add"), (3, "new_add")] {
        let r = ask(
            &proxy,
            ENDPOINT,
            id,
            "tools/call",
            json!({"name": tool, "arguments": {"a": 2, "b": 3}}),
        )
        .await;
        let v = r.json();
        assert_eq!(v["result"]["content"][0]["text"], "5", "{tool}: {v}");
        assert_eq!(v["result"]["isError"], false);
        let line = proxy
            .log_line_of(r.headers["x-request-id"].to_str().unwrap())
            .await;
        assert_eq!(
            (line["api"].as_str(), line["operation"].as_str()),
            (Some("mcp"), Some(tool))
        );
    }
    let r = ask(
        &proxy,
        ENDPOINT,
        4,
        "tools/call",
        json!({"name": "new_echo", "arguments": {"text": "héllo"}}),
    )
    .await;
    assert_eq!(
        r.json()["result"]["content"][0]["text"],
        "héllo",
        "{}",
        text(&r)
    );
    // Filtered out: not listed, and not callable by name either.
    let r = ask(
        &proxy,
        ENDPOINT,
        5,
        "tools/call",
        json!({"name": "old_hidden", "arguments": {}}),
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32602, "{}", text(&r));
    // The upstream's own errors pass through: bad arguments.
    let r = ask(
        &proxy,
        ENDPOINT,
        6,
        "tools/call",
        json!({"name": "new_add", "arguments": {"a": "x"}}),
    )
    .await;
    let v = r.json();
    assert!(
        v["result"]["isError"] == true || v["error"].is_object(),
        "{v}"
    );

    // The consumer scope names them after the route.
    let r = ask(&proxy, "/mcp", 7, "tools/list", json!({})).await;
    let scoped = names(&r);
    assert!(
        scoped.contains(&"chat__old_add".to_string())
            && scoped.contains(&"chat__new_echo".to_string()),
        "{scoped:?}"
    );
    let r = ask(
        &proxy,
        "/mcp",
        8,
        "tools/call",
        json!({"name": "chat__old_echo", "arguments": {"text": "scoped"}}),
    )
    .await;
    assert_eq!(
        r.json()["result"]["content"][0]["text"],
        "scoped",
        "{}",
        text(&r)
    );

    // What reached the servers: the gateway's credential and the allowed header, never the key.
    let seen = old.requests();
    assert!(seen.len() >= 4, "{seen:?}");
    for headers in seen.iter().chain(new.requests().iter()) {
        let all = headers.to_string();
        assert!(
            !all.contains(KEY),
            "the caller's key reached an upstream: {all}"
        );
        assert!(headers.get("authorization").is_none(), "{all}");
    }
    assert!(
        seen.iter()
            .all(|h| h["x-upstream-token"] == UPSTREAM_SECRET),
        "{seen:?}"
    );
    assert!(seen.iter().any(|h| h["x-tenant"] == "tenant-9"), "{seen:?}");
    assert!(
        seen.iter().any(|h| h.get("mcp-session-id").is_some()),
        "the 1.x server is spoken to in a session"
    );
    assert!(
        new.requests()
            .iter()
            .all(|h| h["mcp-protocol-version"] == MODERN && h.get("x-upstream-token").is_none())
    );

    // The 1.x server dies: the other is still listed and called; its own tools answer a clear error.
    tokio::task::spawn_blocking(move || {
        old.kill();
        old
    })
    .await
    .unwrap();
    let r = ask(
        &proxy,
        ENDPOINT,
        9,
        "tools/call",
        json!({"name": "old_add", "arguments": {"a": 1, "b": 1}}),
    )
    .await;
    let v = r.json();
    assert_eq!(r.status, 200);
    assert_eq!(v["error"]["code"], -32603, "{v}");
    assert_eq!(v["error"]["data"]["code"], "mcp_server_unavailable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tools/old"),
        "{v}"
    );
    let r = ask(&proxy, ENDPOINT, 10, "tools/list", json!({})).await;
    let listed = names(&r);
    assert!(
        listed.contains(&"new_add".to_string()) && listed.contains(&"summarise".to_string()),
        "{listed:?}"
    );
    let r = ask(
        &proxy,
        ENDPOINT,
        11,
        "tools/call",
        json!({"name": "new_add", "arguments": {"a": 20, "b": 22}}),
    )
    .await;
    assert_eq!(
        r.json()["result"]["content"][0]["text"],
        "42",
        "{}",
        text(&r)
    );
    proxy.stop().await;
}

/// The official SDK of each line lists and calls a tool of each upstream server through the proxy
/// (besides the prompt and REST tools, prompts, bad key and unsubscribed consumer).
#[tokio::test]
async fn the_python_sdks_call_federated_tools() {
    let (old, new) = tokio::task::spawn_blocking(|| (McpUpstream::start(1), McpUpstream::start(2)))
        .await
        .unwrap();
    let (base, _) = start_service().await;
    let proxy = TestProxy::start(with_servers(content(&base, None), servers(&old, &new))).await;
    let url = proxy.url(ENDPOINT);
    tokio::task::spawn_blocking(move || {
        for line in [1, 2] {
            let federated = [("MCP_FEDERATED_TOOLS", "old_add,new_add")];
            sdk_checks_at(line, &url, ("summarise", "getItem"), &federated);
        }
        drop((old, new));
    })
    .await
    .unwrap();
    proxy.stop().await;
}
