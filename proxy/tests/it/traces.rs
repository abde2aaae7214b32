//! Traces into a real OpenTelemetry Collector (`support::collector`, built from its Go modules): the
//! span tree of a chat call with a fallback, its GenAI attributes, the caller's trace continued and
//! passed upstream, nothing secret exported; and a collector killed mid-run that no call notices.

use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};
use tollgate_proxy::{OtlpProtocol, Sampler, TraceConfig};
use tollgate_snapshot::ProviderType;

use crate::support::chat_route::{
    CHAT, CLIENT_KEY, FALLBACK_KEY, PRIMARY_KEY, failing_primary_and_fallback, table, typed,
};
use crate::support::collector::{Collector, attr};
use crate::support::openai_fake::{Behaviour, OpenAiFake};
use crate::support::{TestProxy, send, test_config};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
/// Words of the conversation: they must not reach the collector.
const CONTENT: &str = "the password is PERIWINKLE";

fn traced(endpoint: String, protocol: OtlpProtocol) -> TraceConfig {
    TraceConfig {
        endpoint: Some(endpoint),
        protocol,
        service_name: "tollgate-test".into(),
        resource: vec![("deployment.environment".into(), "test".into())],
        sampler: Sampler::default(),
        delay: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
        ..TraceConfig::default()
    }
}

/// A primary that answers 503 and a fallback that answers, behind a traced proxy.
async fn fallback_setup(config: TraceConfig) -> (TestProxy, OpenAiFake, OpenAiFake) {
    let (primary, fallback, content) = failing_primary_and_fallback().await;
    let mut proxy_config = test_config();
    proxy_config.traces = Some(config);
    let proxy = TestProxy::start_with(proxy_config, Some(content)).await;
    (proxy, primary, fallback)
}

async fn chat(proxy: &TestProxy, traceparent: Option<&str>) -> crate::support::Reply {
    let auth = format!("Bearer {CLIENT_KEY}");
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(tp) = traceparent {
        headers.push(("traceparent", tp));
        headers.push(("tracestate", "vendor=opaque"));
    }
    send(
        Method::POST,
        &proxy.url(CHAT),
        &headers,
        Some(&json!({
            "model": "front-model",
            "messages": [{"role": "user", "content": CONTENT}],
            "max_tokens": 50,
            "temperature": 0.5
        })),
    )
    .await
}

fn kind(span: &Value) -> i64 {
    span["kind"].as_i64().unwrap_or_default()
}

#[tokio::test]
async fn a_chat_call_with_a_fallback_is_one_server_span_and_two_client_spans() {
    let collector = Collector::start();
    let (proxy, primary, fallback) = fallback_setup(traced(
        collector.http_endpoint(),
        OtlpProtocol::HttpProtobuf,
    ))
    .await;
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let reply = chat(&proxy, Some(&traceparent)).await;
    reply.assert_status(200);

    let spans = collector.spans_of(TRACE_ID, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server: Vec<&Value> = spans.iter().filter(|s| kind(s) == 2).collect();
    let clients: Vec<&Value> = spans.iter().filter(|s| kind(s) == 3).collect();
    assert_eq!((server.len(), clients.len()), (1, 2), "{spans:#?}");
    let server = server[0];

    // The caller's trace continued: our server span's parent is the caller's span.
    assert_eq!(server["parentSpanId"], CALLER_SPAN);
    assert_eq!(server["traceState"], "vendor=opaque");
    assert_eq!(server["name"], "POST /v1/chat/completions");
    assert_eq!(attr(server, "tollgate.route"), Some(json!("team-a/chat")));
    assert_eq!(attr(server, "tollgate.consumer"), Some(json!("team-a/app")));
    assert_eq!(
        attr(server, "tollgate.subscription"),
        Some(json!("team-a/app-chat"))
    );
    assert_eq!(
        attr(server, "http.route"),
        Some(json!("/v1/chat/completions"))
    );
    assert_eq!(attr(server, "http.response.status_code"), Some(json!(200)));
    assert_eq!(
        attr(server, "gen_ai.request.model"),
        Some(json!("front-model"))
    );
    assert_eq!(attr(server, "tollgate.retries"), Some(json!(1)));
    let resource = &server["resource"]["attributes"];
    assert!(resource.to_string().contains("tollgate-test"), "{resource}");
    assert!(
        resource.to_string().contains("deployment.environment"),
        "{resource}"
    );

    // Both attempts are children of the server span, in the order they were made.
    let mut clients = clients;
    clients.sort_by_key(|s| {
        s["startTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse::<u128>()
            .unwrap()
    });
    for c in &clients {
        assert_eq!(c["parentSpanId"], server["spanId"]);
        assert_eq!(c["name"], "chat gpt-up");
        assert_eq!(attr(c, "gen_ai.operation.name"), Some(json!("chat")));
        assert_eq!(attr(c, "gen_ai.provider.name"), Some(json!("openai")));
        assert_eq!(attr(c, "gen_ai.request.model"), Some(json!("gpt-up")));
        assert_eq!(attr(c, "gen_ai.request.max_tokens"), Some(json!(50)));
        assert_eq!(attr(c, "gen_ai.request.temperature"), Some(json!(0.5)));
        assert_eq!(attr(c, "server.address"), Some(json!("127.0.0.1")));
        assert!(attr(c, "server.port").is_some());
        // Not a stream: the attribute is left out, as the conventions ask.
        assert_eq!(attr(c, "gen_ai.request.stream"), None);
    }
    let (failed, answered) = (clients[0], clients[1]);
    assert_eq!(attr(failed, "http.response.status_code"), Some(json!(503)));
    assert!(attr(failed, "error.type").is_some(), "{failed:#}");
    assert_eq!(failed["status"]["code"], 2, "an error status: {failed:#}");
    assert_eq!(attr(failed, "gen_ai.usage.input_tokens"), None);

    assert_eq!(attr(answered, "error.type"), None);
    assert_eq!(
        attr(answered, "http.response.status_code"),
        Some(json!(200))
    );
    assert_eq!(
        attr(answered, "gen_ai.response.id"),
        Some(json!("chatcmpl-fake"))
    );
    assert_eq!(
        attr(answered, "gen_ai.response.model"),
        Some(json!("gpt-up"))
    );
    assert_eq!(
        attr(answered, "gen_ai.response.finish_reasons"),
        Some(json!(["stop"]))
    );
    assert_eq!(attr(answered, "gen_ai.usage.input_tokens"), Some(json!(11)));
    assert_eq!(attr(answered, "gen_ai.usage.output_tokens"), Some(json!(7)));
    // 11 input tokens at $2/M and 7 output tokens at $8/M.
    let cost = attr(answered, "tollgate.cost_usd")
        .unwrap()
        .as_f64()
        .unwrap();
    assert!(
        (cost - (11.0 * 2.0 + 7.0 * 8.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );

    // Each upstream saw its own attempt's span as parent, in the caller's trace.
    let seen_tp = |fake: &OpenAiFake| {
        let seen = fake.seen();
        assert_eq!(seen.len(), 1);
        (
            seen[0].headers["traceparent"].to_str().unwrap().to_string(),
            seen[0].headers["tracestate"].to_str().unwrap().to_string(),
        )
    };
    for (fake, span) in [(&primary, failed), (&fallback, answered)] {
        let (tp, ts) = seen_tp(fake);
        assert_eq!(
            tp,
            format!("00-{TRACE_ID}-{}-01", span["spanId"].as_str().unwrap())
        );
        assert_eq!(ts, "vendor=opaque");
    }

    // No content and no credential anywhere in what the collector received.
    let raw = collector.raw();
    for secret in [CONTENT, "PERIWINKLE", CLIENT_KEY, PRIMARY_KEY, FALLBACK_KEY] {
        assert!(!raw.contains(secret), "{secret:?} reached the collector");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn over_grpc_a_call_without_traceparent_starts_a_trace_of_its_own() {
    let collector = Collector::start();
    let (proxy, _primary, fallback) =
        fallback_setup(traced(collector.grpc_endpoint(), OtlpProtocol::Grpc)).await;
    let reply = chat(&proxy, None).await;
    reply.assert_status(200);
    let tp = fallback.seen()[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    let trace_id = tp.split('-').nth(1).unwrap().to_string();
    assert_ne!(trace_id, TRACE_ID);
    let spans = collector.spans_of(&trace_id, 3).await;
    let server = spans.iter().find(|s| kind(s) == 2).expect("a server span");
    assert_eq!(
        server
            .get("parentSpanId")
            .and_then(Value::as_str)
            .unwrap_or(""),
        ""
    );
    assert!(fallback.seen()[0].headers.get("tracestate").is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn a_stream_has_its_first_chunk_time_and_the_answers_fields() {
    let collector = Collector::start();
    let (proxy, _primary, _fallback) = fallback_setup(traced(
        collector.http_endpoint(),
        OtlpProtocol::HttpProtobuf,
    ))
    .await;
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let auth = format!("Bearer {CLIENT_KEY}");
    let reply = send(
        Method::POST,
        &proxy.url(CHAT),
        &[("authorization", &auth), ("traceparent", &traceparent)],
        Some(&json!({
            "model": "front-model",
            "messages": [{"role": "user", "content": CONTENT}],
            "stream": true,
            "stream_options": {"include_usage": true}
        })),
    )
    .await;
    reply.assert_status(200);
    let spans = collector.spans_of(TRACE_ID, 3).await;
    let answered = spans
        .iter()
        .find(|s| kind(s) == 3 && attr(s, "error.type").is_none())
        .expect("the answering attempt's span");
    assert_eq!(attr(answered, "gen_ai.request.stream"), Some(json!(true)));
    assert_eq!(
        attr(answered, "gen_ai.response.id"),
        Some(json!("chatcmpl-fake"))
    );
    assert_eq!(
        attr(answered, "gen_ai.response.model"),
        Some(json!("gpt-up"))
    );
    assert_eq!(
        attr(answered, "gen_ai.response.finish_reasons"),
        Some(json!(["stop"]))
    );
    assert_eq!(attr(answered, "gen_ai.usage.input_tokens"), Some(json!(11)));
    let ttft = attr(answered, "gen_ai.response.time_to_first_chunk")
        .and_then(|v| v.as_f64())
        .expect("time to first chunk");
    assert!(ttft > 0.0 && ttft < 10.0, "{ttft}");
    assert!(!collector.raw().contains("PERIWINKLE"));
    proxy.stop().await;
}

#[tokio::test]
async fn unsampled_calls_pass_the_callers_context_on_and_export_nothing() {
    let collector = Collector::start();
    let (proxy, _primary, fallback) = fallback_setup(traced(
        collector.http_endpoint(),
        OtlpProtocol::HttpProtobuf,
    ))
    .await;
    // Parent-based: the caller did not sample, so neither do we.
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-00");
    chat(&proxy, Some(&traceparent)).await.assert_status(200);
    let seen = fallback.seen();
    assert_eq!(seen[0].headers["traceparent"], traceparent.as_str());
    assert_eq!(seen[0].headers["tracestate"], "vendor=opaque");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(collector.spans().is_empty(), "{:#?}", collector.spans());
    proxy.stop().await;
}

/// OTLP over TLS: a collector whose certificate chains to the configured CA gets the spans, over
/// HTTP and over gRPC; one the proxy cannot verify (the same collector, with only the public roots
/// trusted) gets none, and the spans are counted as dropped.
#[tokio::test]
async fn an_https_collector_is_reached_with_its_ca_and_never_without_it() {
    let (collector, ca) = Collector::start_tls();
    let mut config = traced(collector.https_endpoint(), OtlpProtocol::HttpProtobuf);
    config.ca_pem = Some(ca.clone());
    let (proxy, _primary, _fallback) = fallback_setup(config).await;
    chat(&proxy, Some(&format!("00-{TRACE_ID}-{CALLER_SPAN}-01")))
        .await
        .assert_status(200);
    let spans = collector.spans_of(TRACE_ID, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    proxy.stop().await;

    let other = "0af7651916cd43dd8448eb211c80319c";
    let untrusting = traced(collector.https_endpoint(), OtlpProtocol::HttpProtobuf);
    let (proxy, _primary, _fallback) = fallback_setup(untrusting).await;
    chat(&proxy, Some(&format!("00-{other}-{CALLER_SPAN}-01")))
        .await
        .assert_status(200);
    let deadline = Instant::now() + Duration::from_secs(15);
    let dropped = loop {
        let r = send(Method::GET, &proxy.admin_url("/metrics"), &[], None).await;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let dropped = metric(
            &text,
            "tollgate_trace_spans_dropped_total{reason=\"export_failed\"}",
        );
        if dropped >= 3.0 || Instant::now() > deadline {
            break dropped;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        dropped, 3.0,
        "the unverified collector's spans are counted as dropped"
    );
    assert!(
        !collector.raw().contains(other),
        "a collector the proxy could not verify got spans"
    );
    proxy.stop().await;

    // The same over gRPC.
    let over_grpc = "5b8aa5a2d2c872e8321cf37308d69df2";
    let mut config = traced(collector.grpcs_endpoint(), OtlpProtocol::Grpc);
    config.ca_pem = Some(ca);
    let (proxy, _primary, _fallback) = fallback_setup(config).await;
    chat(&proxy, Some(&format!("00-{over_grpc}-{CALLER_SPAN}-01")))
        .await
        .assert_status(200);
    let spans = collector.spans_of(over_grpc, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    proxy.stop().await;
}

/// Reads one sample of a Prometheus text exposition.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Times `n` calls through each proxy, taken in turns so that both see the same load on the machine.
async fn timed_calls(a: &TestProxy, b: &TestProxy, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let (mut took_a, mut took_b) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        for (proxy, took) in [(a, &mut took_a), (b, &mut took_b)] {
            let t = Instant::now();
            let tp = format!("00-{:032x}-{CALLER_SPAN}-01", fastrand::u128(1..));
            chat(proxy, Some(&tp)).await.assert_status(200);
            took.push(t.elapsed());
        }
    }
    took_a.sort();
    took_b.sort();
    (took_a, took_b)
}

#[tokio::test]
async fn a_dead_collector_fails_and_slows_no_call_its_spans_are_counted_and_export_resumes() {
    let mut collector = Collector::start();
    let mut config = traced(collector.http_endpoint(), OtlpProtocol::HttpProtobuf);
    config.queue_calls = 8;
    config.timeout = Duration::from_millis(500);
    // One backend that answers: a primary failing 120 times would spend the route's retry budget.
    let upstream = OpenAiFake::start(Behaviour::new("only", FALLBACK_KEY)).await;
    let content = table(
        vec![typed(
            ProviderType::OpenAI,
            &upstream.endpoint(),
            FALLBACK_KEY,
            "gpt-up",
        )],
        "gpt-up",
    );
    let mut proxy_config = test_config();
    proxy_config.traces = Some(config);
    let proxy = TestProxy::start_with(proxy_config, Some(content.clone())).await;
    // The yardstick: the same route through a proxy that traces nothing, timed in turns with the traced one,
    // so that the machine's load (the suite runs tests in parallel) weighs on both alike.
    let untraced = TestProxy::start_with(test_config(), Some(content)).await;
    let scrape = || async {
        let r = send(Method::GET, &proxy.admin_url("/metrics"), &[], None).await;
        String::from_utf8_lossy(&r.body).into_owned()
    };

    let (alive, _) = timed_calls(&proxy, &untraced, 60).await;
    collector.kill();
    let (dead, plain) = timed_calls(&proxy, &untraced, 60).await;
    let median = |d: &[Duration]| d[d.len() / 2];
    eprintln!(
        "median call with the collector up {:?}, down {:?}, untraced {:?}; slowest {:?} / {:?} / {:?}",
        median(&alive),
        median(&dead),
        median(&plain),
        alive.last().unwrap(),
        dead.last().unwrap(),
        plain.last().unwrap()
    );
    // Same work either way: the export runs on its own task, so only noise separates the two.
    assert!(
        median(&dead) <= median(&plain) * 2 + Duration::from_millis(10),
        "calls slowed while the collector was down: {:?} against {:?} untraced",
        median(&dead),
        median(&plain)
    );

    // The spans of the calls made while it was down were dropped, and counted.
    let deadline = Instant::now() + Duration::from_secs(15);
    let dropped = loop {
        let text = scrape().await;
        let dropped = metric(
            &text,
            "tollgate_trace_spans_dropped_total{reason=\"export_failed\"}",
        ) + metric(
            &text,
            "tollgate_trace_spans_dropped_total{reason=\"queue_full\"}",
        );
        if dropped >= 120.0 || Instant::now() > deadline {
            break dropped;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Two spans a call (server and client), 60 calls.
    assert!(dropped >= 120.0, "dropped spans counted: {dropped}");

    // Back on the same port: the next calls' spans get there.
    collector.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let trace = format!("{:032x}", fastrand::u128(1..));
        chat(&proxy, Some(&format!("00-{trace}-{CALLER_SPAN}-01")))
            .await
            .assert_status(200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if collector
            .spans()
            .iter()
            .any(|s| s["traceId"] == trace.as_str())
        {
            break;
        }
        assert!(Instant::now() < deadline, "export did not resume");
    }
    let text = scrape().await;
    assert!(
        metric(&text, "tollgate_trace_spans_exported_total") >= 3.0,
        "{text}"
    );
    proxy.stop().await;
}

/// An MCP call's server span follows the MCP conventions (`mcp.server`): named for its method and
/// tool, with the method, tool, operation, protocol version and request id; a call of an unknown
/// tool carries its JSON-RPC code as the error. The tool's arguments are content: never exported.
#[tokio::test]
async fn an_mcp_tool_call_is_a_server_span_named_for_its_tool() {
    use crate::mcp::{ENDPOINT, KEY, MODERN, content, modern_with, start_service};
    let collector = Collector::start();
    let (service, _) = start_service().await;
    let mut config = test_config();
    config.traces = Some(traced(
        collector.http_endpoint(),
        OtlpProtocol::HttpProtobuf,
    ));
    let proxy = TestProxy::start_with(config, Some(content(&service, None))).await;

    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let called = (
        7,
        "tools/call",
        json!({"name": "summarise", "arguments": {"text": CONTENT}}),
    );
    let reply = modern_with(
        &proxy,
        ENDPOINT,
        KEY,
        called,
        &[("traceparent", &traceparent)],
    )
    .await;
    reply.assert_status(200);
    assert_eq!(reply.json()["result"]["isError"], false, "{}", reply.json());
    let spans = collector.spans_of(TRACE_ID, 1).await;
    let server = spans.iter().find(|s| kind(s) == 2).expect("a server span");
    assert_eq!(server["name"], "tools/call summarise");
    assert_eq!(server["parentSpanId"], CALLER_SPAN);
    for (key, value) in [
        ("mcp.method.name", json!("tools/call")),
        ("gen_ai.tool.name", json!("summarise")),
        ("gen_ai.operation.name", json!("execute_tool")),
        ("mcp.protocol.version", json!(MODERN)),
        ("jsonrpc.request.id", json!("7")),
        ("network.transport", json!("tcp")),
        ("network.protocol.name", json!("http")),
        ("tollgate.route", json!("team-a/chat")),
    ] {
        assert_eq!(attr(server, key), Some(value), "{key} in {server:#}");
    }
    assert_eq!(attr(server, "error.type"), None);

    let other = "4bf92f3577b34da6a3ce929d0e0e4737";
    let traceparent = format!("00-{other}-{CALLER_SPAN}-01");
    let unknown = (8, "tools/call", json!({"name": "nope", "arguments": {}}));
    let reply = modern_with(
        &proxy,
        ENDPOINT,
        KEY,
        unknown,
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(reply.json()["error"]["code"], -32602, "{}", reply.json());
    let spans = collector.spans_of(other, 1).await;
    let server = spans.iter().find(|s| kind(s) == 2).expect("a server span");
    assert_eq!(server["name"], "tools/call");
    assert_eq!(attr(server, "error.type"), Some(json!("-32602")));
    assert_eq!(
        attr(server, "rpc.response.status_code"),
        Some(json!("-32602"))
    );
    assert_eq!(attr(server, "gen_ai.operation.name"), None);
    assert!(!collector.raw().contains("PERIWINKLE"));
}

/// A federated tool call carries the trace on to the upstream MCP server, in the `traceparent`
/// header and in `params._meta` as the MCP conventions place it, with the call's server span as the
/// parent; in both eras the upstream speaks.
#[tokio::test]
async fn a_federated_tool_call_passes_the_trace_to_the_upstream_server() {
    use crate::mcp::{ENDPOINT, KEY, content, modern_with, start_service};
    use crate::mcp_federation::{servers, with_servers};
    use crate::support::python::McpUpstream;
    let (old, new) = tokio::task::spawn_blocking(|| (McpUpstream::start(1), McpUpstream::start(2)))
        .await
        .unwrap();
    let collector = Collector::start();
    let (service, _) = start_service().await;
    let mut config = test_config();
    config.traces = Some(traced(
        collector.http_endpoint(),
        OtlpProtocol::HttpProtobuf,
    ));
    let routes = with_servers(content(&service, None), servers(&old, &new));
    let proxy = TestProxy::start_with(config, Some(routes)).await;

    for (n, (tool, upstream)) in [("old_add", &old), ("new_add", &new)]
        .into_iter()
        .enumerate()
    {
        let trace_id = format!("4bf92f3577b34da6a3ce929d0e0e474{n}");
        let traceparent = format!("00-{trace_id}-{CALLER_SPAN}-01");
        let headers = [
            ("traceparent", traceparent.as_str()),
            ("tracestate", "vendor=opaque"),
        ];
        let called = (
            9,
            "tools/call",
            json!({"name": tool, "arguments": {"a": 2, "b": 3}}),
        );
        let reply = modern_with(&proxy, ENDPOINT, KEY, called, &headers).await;
        assert_eq!(reply.json()["result"]["isError"], false, "{}", reply.json());
        let spans = collector.spans_of(&trace_id, 2).await;
        let server = spans.iter().find(|s| kind(s) == 2).expect("a server span");
        assert_eq!(server["name"], format!("tools/call {tool}"));
        // The request to the server is a client span beneath, named upstream as the parent.
        let client = spans.iter().find(|s| kind(s) == 3).expect("a client span");
        assert_eq!(client["parentSpanId"], server["spanId"]);
        assert_eq!(client["name"], "tools/call add", "{client:#}");
        assert_eq!(attr(client, "mcp.method.name"), Some(json!("tools/call")));
        assert_eq!(attr(client, "gen_ai.tool.name"), Some(json!("add")));
        assert_eq!(
            attr(client, "gen_ai.operation.name"),
            Some(json!("execute_tool"))
        );
        assert_eq!(attr(client, "http.request.method"), Some(json!("POST")));
        assert_eq!(attr(client, "server.address"), Some(json!("127.0.0.1")));
        assert_eq!(attr(client, "url.path"), Some(json!("/mcp")), "{client:#}");
        assert_eq!(attr(client, "error.type"), None);
        let expected = format!("00-{trace_id}-{}-01", client["spanId"].as_str().unwrap());
        let seen = upstream.requests();
        let call = seen
            .iter()
            .rev()
            .find(|h| h["traceparent"] == expected.as_str())
            .unwrap_or_else(|| panic!("no request with traceparent {expected}: {seen:#?}"));
        assert_eq!(call["tracestate"], "vendor=opaque");
        assert_eq!(call["_meta"]["traceparent"], expected.as_str(), "{call:#}");
        assert_eq!(call["_meta"]["tracestate"], "vendor=opaque", "{call:#}");
    }
    let raw = collector.raw();
    for secret in [KEY, crate::mcp_federation::UPSTREAM_SECRET] {
        assert!(!raw.contains(secret), "{secret:?} reached the collector");
    }
}
