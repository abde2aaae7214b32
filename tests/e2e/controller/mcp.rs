//! MCP servers end to end (issue 17): an `MCPServer` and an AIRoute that attaches it applied with
//! kubectl; the real controller compiles them and both proxies offer the server's tools at the
//! route's `<prefix>/mcp`, following a change of the route's tool filter. Invalid objects are refused
//! by the API server (schema and CEL) or reported in the route's `MCPServersValid` condition and the
//! server's own status.
//!
//! The upstream is the FastMCP server the proxy's own tests use (`proxy/tests/python/mcp_upstream.py`,
//! tools `add`, `echo` and `hidden`), run with line 2 of the official Python SDK from the venv that
//! `proxy/tests/python/ensure_mcp_venv.sh` makes: a real MCP server, not one written for this test.

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tollgate_e2e::{Process, eventually, free_port, repo_root, run};

use crate::fixtures::{KEY, base_yaml, condition, wait_condition};
use crate::support::{Proxy, Setup};

/// The stateless MCP revision; the proxy's route endpoint serves it without a session.
const MODERN: &str = "2026-07-28";
/// How quickly a change of the route's tool filter must reach every proxy's `tools/list`.
const FILTER_LIMIT: Duration = Duration::from_secs(1);

/// The FastMCP upstream of the SDK's 2.x line on a free port of 127.0.0.1, listening.
async fn upstream(dir: &std::path::Path) -> (Process, u16) {
    let root = repo_root();
    let mut ensure = Command::new("bash");
    ensure
        .arg(root.join("proxy/tests/python/ensure_mcp_venv.sh"))
        .arg("2");
    let python = tokio::task::spawn_blocking(move || run(ensure))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("making the MCP SDK 2.x venv: {e}"));
    let port = free_port();
    let mut cmd = Command::new(python.trim());
    cmd.arg(root.join("proxy/tests/python/mcp_upstream.py"))
        .arg(port.to_string())
        .arg(dir.join("upstream-headers.jsonl"));
    let mut process = Process::spawn("mcp-upstream", cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            process.running(),
            "the MCP upstream exited:\n{}",
            process.log()
        );
        assert!(
            Instant::now() < deadline,
            "the MCP upstream did not listen within 30 s:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (process, port)
}

fn server_yaml(port: u16) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: tools
spec:
  url: http://127.0.0.1:{port}/mcp
  forwardHeaders: [x-tenant]
  timeouts: {{connect: 2s, firstByte: 10s}}
"#
    )
}

/// The route `agents` attaching `tools` with the prefix `up_` and the filter `filter` (YAML flow).
fn route_yaml(filter: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata:
  name: agents
spec:
  prefix: /agents
  approval: Automatic
  models:
    - name: fake-chat
      backends: [{{provider: fake}}]
  mcp:
    servers:
      - name: tools
        toolPrefix: up_
        tools: {filter}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata:
  name: app-agents
spec:
  consumer: app
  route: {{name: agents}}
"#
    )
}

/// A 2026-07-28 JSON-RPC request to `<path>` on `proxy`: status and body.
async fn rpc(
    client: &Client<HttpConnector, Full<Bytes>>,
    proxy: &Proxy,
    path: &str,
    method: &str,
    mut params: Value,
) -> (u16, Value) {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let mut request = Request::post(format!("http://127.0.0.1:{}{path}", proxy.port))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method)
        .header("x-tenant", "tenant-e2e");
    if let Some(name) = params["name"].as_str() {
        request = request.header("mcp-name", name);
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let Ok(Ok(response)) =
        tokio::time::timeout(Duration::from_secs(10), client.request(request)).await
    else {
        return (0, Value::Null);
    };
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (
        status,
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into())),
    )
}

/// The tool names of `tools/list` at the route's endpoint, or why there are none.
async fn listed(
    client: &Client<HttpConnector, Full<Bytes>>,
    proxy: &Proxy,
) -> Result<Vec<String>, String> {
    match rpc(client, proxy, "/agents/mcp", "tools/list", json!({})).await {
        (200, v) => v["result"]["tools"]
            .as_array()
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|t| t["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .ok_or_else(|| format!("no tools in {v}")),
        (status, v) => Err(format!("{status} {v}")),
    }
}

/// Applies the route with `filter` and waits until every proxy lists exactly `want`; the time from
/// `kubectl apply` returning to the last proxy listing it.
async fn change_filter(
    setup: &Setup,
    client: &Client<HttpConnector, Full<Bytes>>,
    proxies: &[&Proxy],
    filter: &str,
    want: &[&str],
) -> Duration {
    setup.apply(&route_yaml(filter));
    let applied = Instant::now();
    for proxy in proxies {
        loop {
            let names = listed(client, proxy).await;
            if names.as_deref().is_ok_and(|n| n == want) {
                break;
            }
            assert!(
                applied.elapsed() < Duration::from_secs(20),
                "{} never listed {want:?} after the filter became {filter}: {names:?}",
                proxy.process.name
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    applied.elapsed()
}

/// kubectl apply's error for `yaml`, which the API server must refuse.
fn refused(setup: &Setup, yaml: &str) -> String {
    match setup.ns.apply_yaml(yaml) {
        Ok(out) => panic!("the API server accepted what it must refuse ({out}):\n{yaml}"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_server_applied_with_kubectl_is_federated_and_the_tool_list_follows_the_filter() {
    let _serial = crate::SERIAL.lock().await;
    let setup = Setup::new("ctl-mcp");
    let other = setup.cp.namespace("ctl-mcp-other");
    let (_upstream, port) = upstream(setup.dir.path()).await;
    let controller = setup
        .controller_watching("controller", &[other.name()])
        .await;
    let mut a = setup
        .proxy("proxy-a", controller.port, &setup.proxy_token)
        .await;
    let mut b = setup
        .proxy("proxy-b", controller.port, &setup.proxy_token)
        .await;
    a.wait_ready().await;
    b.wait_ready().await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    setup.apply(&base_yaml());
    setup.apply(&server_yaml(port));
    setup.apply(&route_yaml("{include: [add]}"));

    // Status: the server is Ready, the route's servers valid; the printer columns show both.
    let server = wait_condition(&setup, "mcpserver/tools", "Ready", "True").await;
    assert_eq!(condition(&server, "Accepted").unwrap()["status"], "True");
    let route = wait_condition(&setup, "airoute/agents", "MCPServersValid", "True").await;
    let valid = condition(&route, "MCPServersValid").unwrap();
    assert_eq!(
        valid["message"],
        format!(
            "Offering the tools of MCP servers {}/tools.",
            setup.ns.name()
        ),
        "{valid}"
    );
    let columns = setup.kubectl(&["get", "mcpservers"]).unwrap();
    println!("kubectl get mcpservers:\n{columns}");
    assert!(
        columns.contains("URL") && columns.contains(&format!("http://127.0.0.1:{port}/mcp")),
        "{columns}"
    );

    // Both proxies list the filtered tool under its prefix and call it on the server.
    for proxy in [&a, &b] {
        eventually(
            &format!("{} lists up_add", proxy.process.name),
            Duration::from_secs(20),
            || async {
                match listed(&client, proxy).await {
                    Ok(names) if names == ["up_add"] => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        let (status, v) = rpc(
            &client,
            proxy,
            "/agents/mcp",
            "tools/call",
            json!({"name": "up_add", "arguments": {"a": 2, "b": 3}}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["result"]["content"][0]["text"], "5", "{v}");
        // Filtered out: not callable either.
        let (_, v) = rpc(
            &client,
            proxy,
            "/agents/mcp",
            "tools/call",
            json!({"name": "up_echo", "arguments": {"text": "x"}}),
        )
        .await;
        assert_eq!(v["error"]["code"], -32602, "{v}");
    }
    let headers = std::fs::read_to_string(setup.dir.path().join("upstream-headers.jsonl"))
        .unwrap_or_default();
    assert!(
        headers.contains("tenant-e2e"),
        "the allowed header reached the server"
    );
    assert!(
        !headers.contains(KEY),
        "the caller's key never goes upstream"
    );

    // The tool list follows each change of the route's filter, on both proxies, within a second.
    let mut took = Vec::new();
    for (filter, want) in [
        ("{include: [add, echo]}", &["up_add", "up_echo"][..]),
        ("{includeRegex: \"e.*\"}", &["up_echo"][..]),
        (
            "{includeRegex: \"add|hidden\"}",
            &["up_add", "up_hidden"][..],
        ),
        ("{include: [add]}", &["up_add"][..]),
    ] {
        let t = change_filter(&setup, &client, &[&a, &b], filter, want).await;
        println!(
            "tools/list on both proxies follows the filter {filter} after {:.0} ms",
            t.as_secs_f64() * 1e3
        );
        took.push(t);
    }
    let slowest = took.iter().max().unwrap();
    assert!(
        *slowest < FILTER_LIMIT,
        "a filter change reached every proxy's tools/list after {slowest:?} (limit {FILTER_LIMIT:?})"
    );

    // The API server refuses what the schema and CEL rules forbid, with their messages.
    let e = refused(
        &setup,
        &route_yaml("{include: [add], includeRegex: \"a.*\"}"),
    );
    assert!(
        e.contains("a tool filter has exactly one of include and includeRegex"),
        "{e}"
    );
    let e = refused(&setup, &route_yaml("{}"));
    assert!(
        e.contains("a tool filter has exactly one of include and includeRegex"),
        "{e}"
    );
    for header in ["Authorization", "x-api-key", "Cookie", "mcp-session-id"] {
        let e = refused(
            &setup,
            &server_yaml(port).replace("[x-tenant]", &format!("[x-tenant, {header}]")),
        );
        assert!(
            e.contains("forwardHeaders cannot name a header that carries the caller's key"),
            "{header}: {e}"
        );
    }
    let e = refused(
        &setup,
        &server_yaml(port).replace("http://127.0.0.1", "ftp://127.0.0.1"),
    );
    assert!(e.contains("spec.url"), "{e}");
    println!("refused by the API server, e.g.: {}", e.trim());

    // What only the compiler can find is reported: on the route, a missing server, one not shared
    // with the route's namespace and a filter that does not compile; on a server, its own problems.
    // The route's good server is still offered.
    let ns = setup.ns.name();
    other
        .apply_yaml(&format!(
            r#"apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: private
spec:
  url: http://127.0.0.1:{port}/mcp
---
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: shared
spec:
  url: http://127.0.0.1:{port}/mcp
  allowedNamespaces: [{ns}]
"#
        ))
        .unwrap();
    setup.apply(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: locked
spec:
  url: http://127.0.0.1:9/mcp
  credentials:
    secretRef: {name: no-such-secret, key: token}
"#,
    );
    let locked = wait_condition(&setup, "mcpserver/locked", "Ready", "False").await;
    let refs = condition(&locked, "ResolvedRefs").unwrap();
    assert_eq!(refs["status"], "False", "{refs}");
    println!("MCPServer locked, ResolvedRefs: {}", refs["message"]);
    let columns = setup.kubectl(&["get", "mcpservers"]).unwrap();
    assert!(
        columns
            .lines()
            .any(|l| l.starts_with("locked") && l.contains("True")),
        "a server with a missing Secret is still Accepted: {columns}"
    );
    let o = other.name();
    setup.apply(&format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata:
  name: agents
spec:
  prefix: /agents
  approval: Automatic
  models:
    - name: fake-chat
      backends: [{{provider: fake}}]
  mcp:
    servers:
      - name: tools
        toolPrefix: up_
        tools: {{include: [add]}}
      - name: missing
      - name: private
        namespace: {o}
      - name: shared
        namespace: {o}
        tools: {{includeRegex: "(unclosed"}}
      - name: locked
"#
    ));
    let route = wait_condition(&setup, "airoute/agents", "MCPServersValid", "False").await;
    let invalid = condition(&route, "MCPServersValid").unwrap();
    let message = invalid["message"].as_str().unwrap();
    println!("MCPServersValid of a route with bad servers: {message}");
    assert_eq!(invalid["reason"], "InvalidMCPServers", "{invalid}");
    for expected in [
        format!("MCPServer {ns}/missing does not exist"),
        format!("MCPServer {o}/private does not list namespace {ns} in spec.allowedNamespaces"),
        format!("The tool filter of MCPServer {o}/shared: includeRegex does not compile"),
        format!("MCPServer {ns}/locked: it is not usable (see its status)"),
        "The tools of the other servers are offered.".to_owned(),
    ] {
        assert!(message.contains(&expected), "{expected:?} not in {message}");
    }
    let ready = condition(&route, "Ready").unwrap();
    assert_eq!(
        ready["status"], "True",
        "the route is still served: {ready}"
    );
    for proxy in [&a, &b] {
        assert_eq!(
            listed(&client, proxy).await.unwrap(),
            ["up_add"],
            "the good server's tools are still offered by {}",
            proxy.process.name
        );
    }
}
