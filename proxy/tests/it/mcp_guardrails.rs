//! Guardrails on MCP `tools/call` (the `Mcp` endpoint): the arguments of a REST operation's tool and
//! of an upstream MCP server's tool masked before the service or server sees them, a Reject rule on
//! the arguments or on the result answered as a JSON-RPC error naming the rule (never the text),
//! nothing sent upstream when the arguments are refused, and moderation hooks asked about both.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tollgate_snapshot::{
    Content, Detector, FailureMode, GuardRule, Guardrail, GuardrailAction, GuardrailDirection,
    GuardrailEndpoint, Matcher, McpServer, ModerationApi, ModerationRule, ObjectRef, Pattern,
    Timeouts, ToolFilter, default_mask,
};

use crate::mcp::{ENDPOINT, KEY, content, modern_at, start_service, text};
use crate::support::fake_server::{Seen, json_response, serve};
use crate::support::python::McpUpstream;
use crate::support::*;

fn rule(name: &str, matcher: Matcher, action: GuardrailAction, mask: &str) -> GuardRule {
    GuardRule {
        name: name.into(),
        matcher,
        action,
        mask_as: mask.into(),
    }
}

fn on_tools(name: &str, applies_to: GuardrailDirection, rules: Vec<GuardRule>) -> Guardrail {
    Guardrail {
        id: ObjectRef::new("team-a", name),
        applies_to,
        endpoints: vec![GuardrailEndpoint::Mcp],
        rules,
        moderations: Vec::new(),
        max_input_chars: None,
        max_input_tokens: None,
        broken: false,
    }
}

fn emails() -> GuardRule {
    rule(
        "emails",
        Matcher::Detector(Detector::Email),
        GuardrailAction::Mask,
        default_mask(Some(Detector::Email)),
    )
}

/// The MCP route of `tests/it/mcp.rs` with the 2.x SDK server's tools as `new_*`, guarded by `g`.
fn guarded(base: &str, server: &McpUpstream, g: Vec<Guardrail>) -> Content {
    let mut content = content(base, None);
    content.routes[0].mcp_servers = vec![McpServer {
        id: ObjectRef::new("tools", "new"),
        url: server.url.clone(),
        credential: None,
        forward_headers: Vec::new(),
        timeouts: Timeouts {
            first_byte_ms: 10_000,
            ..Timeouts::default()
        },
        tool_prefix: "new_".into(),
        filter: ToolFilter::All,
    }];
    content.routes[0].guardrails = g;
    content
}

async fn call_tool(proxy: &TestProxy, id: u64, name: &str, arguments: Value) -> Value {
    let r = modern_at(
        proxy,
        ENDPOINT,
        KEY,
        id,
        "tools/call",
        json!({"name": name, "arguments": arguments}),
    )
    .await;
    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("{}", text(&r)))
}

#[tokio::test]
async fn tool_arguments_are_masked_before_the_rest_service_and_the_upstream_mcp_server_see_them() {
    let server = tokio::task::spawn_blocking(|| McpUpstream::start(2))
        .await
        .unwrap();
    let (base, seen) = start_service().await;
    let g = vec![on_tools(
        "tools",
        GuardrailDirection::Request,
        vec![emails()],
    )];
    let proxy = TestProxy::start(guarded(&base, &server, g)).await;

    let v = call_tool(&proxy, 1, "getItem", json!({"id": "bob@example.com"})).await;
    assert_eq!(v["result"]["isError"], false, "{v}");
    let upstream = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(upstream.path, "/v2/items/%5BEMAIL%5D");

    // The echo tool answers with what it was sent; only requests are guarded here.
    let v = call_tool(
        &proxy,
        2,
        "new_echo",
        json!({"text": "write to bob@example.com"}),
    )
    .await;
    assert_eq!(v["result"]["content"][0]["text"], "write to [EMAIL]", "{v}");
    let line = proxy.log_lines().into_iter().last().unwrap();
    assert_eq!(
        line["guardrails"],
        json!([{"rule": "emails", "action": "mask"}])
    );
    assert!(!line.to_string().contains("bob@example.com"));
}

#[tokio::test]
async fn a_reject_rule_on_tool_arguments_or_results_is_a_json_rpc_error_naming_the_rule() {
    let server = tokio::task::spawn_blocking(|| McpUpstream::start(2))
        .await
        .unwrap();
    let (base, seen) = start_service().await;
    let mut g = vec![
        on_tools(
            "keys",
            GuardrailDirection::Both,
            vec![rule(
                "no-keys",
                Matcher::Detector(Detector::Secret),
                GuardrailAction::Reject,
                "[SECRET]",
            )],
        ),
        on_tools(
            "projects",
            GuardrailDirection::Response,
            vec![rule(
                "no-projects",
                Matcher::Pattern(Pattern::new(r"PRJ-\d{4}").unwrap()),
                GuardrailAction::Reject,
                "[REDACTED]",
            )],
        ),
    ];
    let mut prompts = g[0].clone();
    prompts.id = ObjectRef::new("team-a", "prompts");
    prompts.endpoints = vec![GuardrailEndpoint::Prompts];
    g.push(prompts);
    let proxy = TestProxy::start(guarded(&base, &server, g)).await;
    let key = "AKIAIOSFODNN7EXAMPLE";

    // A prompt tool is a prompt API's model call: the Prompts endpoint's rules refuse it the same way.
    let v = call_tool(
        &proxy,
        9,
        "summarise",
        json!({"text": format!("key {key}")}),
    )
    .await;
    assert_eq!(v["error"]["code"], -32001, "{v}");
    assert_eq!(
        v["error"]["data"]["code"], "content_policy_violation",
        "{v}"
    );

    for (id, tool, arguments) in [
        (1, "getItem", json!({"id": key})),
        (2, "new_echo", json!({"text": format!("key {key}")})),
    ] {
        let v = call_tool(&proxy, id, tool, arguments).await;
        let error = &v["error"];
        assert_eq!(error["code"], -32001, "{v}");
        assert_eq!(error["data"]["code"], "content_policy_violation", "{v}");
        assert_eq!(error["data"]["status"], 400, "{v}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("no-keys"), "{message}");
        assert!(!v.to_string().contains(key), "{v}");
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the service"
    );

    // The echo's result holds the project id: refused on its way back.
    let v = call_tool(&proxy, 3, "new_echo", json!({"text": "see PRJ-1234"})).await;
    assert_eq!(v["error"]["code"], -32001, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no-projects") && message.contains("tool result"),
        "{message}"
    );
    assert!(!v.to_string().contains("PRJ-1234"), "{v}");
}

#[tokio::test]
async fn moderation_hooks_check_tool_arguments_and_results_too() {
    let server = tokio::task::spawn_blocking(|| McpUpstream::start(2))
        .await
        .unwrap();
    let (base, seen) = start_service().await;
    // A webhook that flags any text holding `forbidden`.
    let asked: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = asked.clone();
    let hook = serve(move |req| {
        let record = record.clone();
        async move {
            let req = Seen::read(req).await;
            record.lock().unwrap().push(req.clone());
            let flagged = req.body["texts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t.as_str().unwrap().contains("forbidden"));
            json_response(200, &json!({"flagged": flagged}))
        }
    })
    .await;
    let mut g = on_tools("moderated", GuardrailDirection::Both, Vec::new());
    g.moderations = vec![ModerationRule {
        name: "hook".into(),
        action: GuardrailAction::Reject,
        api: ModerationApi::Webhook,
        url: format!("http://{hook}/check"),
        credential: None,
        categories: Vec::new(),
        threshold_millis: None,
        timeout_ms: 2_000,
        failure_mode: FailureMode::Closed,
    }];
    let proxy = TestProxy::start(guarded(&base, &server, vec![g])).await;

    let v = call_tool(&proxy, 1, "new_echo", json!({"text": "all clear"})).await;
    assert_eq!(v["result"]["content"][0]["text"], "all clear", "{v}");
    let bodies: Vec<Value> = asked
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.body.clone())
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[0]["direction"], "request");
    assert_eq!(bodies[0]["endpoint"], "mcp");
    assert_eq!(bodies[0]["texts"], json!(["all clear"]));
    assert_eq!(bodies[1]["direction"], "response");
    // The result's text content and its structuredContent's strings.
    let texts = bodies[1]["texts"].as_array().unwrap();
    assert!(
        !texts.is_empty() && texts.iter().all(|t| t == "all clear"),
        "{texts:?}"
    );

    for (id, tool, arguments) in [
        (2, "new_echo", json!({"text": "something forbidden"})),
        (3, "getItem", json!({"id": "forbidden"})),
    ] {
        let v = call_tool(&proxy, id, tool, arguments).await;
        assert_eq!(v["error"]["code"], -32001, "{v}");
        assert_eq!(
            v["error"]["data"]["code"], "content_policy_violation",
            "{v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains("hook"),
            "{v}"
        );
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the service"
    );
}
