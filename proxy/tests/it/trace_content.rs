//! Message content on spans, against the real OpenTelemetry Collector: none without the route's
//! opt-in; with it, the input and output messages as the GenAI conventions shape them, masked by the
//! guardrails, cut to the route's cap, and never a key.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use tollgate_proxy::{OtlpProtocol, Sampler, TraceConfig};
use tollgate_snapshot::{
    CacheScope, Content, ContentCapture, Detector, GuardRule, Guardrail, GuardrailAction,
    GuardrailDirection, Matcher, ObjectRef, ProviderType, default_mask,
};

use crate::support::chat_route::{CHAT, CLIENT_KEY, table, typed};
use crate::support::collector::{Collector, attr};
use crate::support::fake_server::FakeServer;
use crate::support::{TestProxy, azure_fake, send, test_config};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const UPSTREAM_KEY: &str = "sk-upstream-content-3333";
const QUESTION: &str = "Mail the report to bob@example.com, the code word is MARIGOLD";
const ANSWER: &str = "Done: sent to alice@example.org as asked.";
const CONTENT_KEYS: [&str; 3] = [
    "gen_ai.input.messages",
    "gen_ai.system_instructions",
    "gen_ai.output.messages",
];

/// A traced proxy in front of a fake upstream answering `ANSWER`; the route records content up to
/// `capture` bytes, and masks e-mail addresses both ways when `masking`.
async fn setup(capture: Option<u32>, masking: bool) -> (Collector, FakeServer, TestProxy) {
    setup_cached(capture, masking, false).await
}

/// As [`setup`], the route caching answers when `cached`.
async fn setup_cached(
    capture: Option<u32>,
    masking: bool,
    cached: bool,
) -> (Collector, FakeServer, TestProxy) {
    let collector = Collector::start();
    let fake = azure_fake::start_openai(UPSTREAM_KEY).await;
    let pieces: Vec<String> = ANSWER.split_inclusive(' ').map(String::from).collect();
    fake.set(|c| c.pieces = pieces);
    let endpoint = format!("{}/v1", fake.url());
    let provider = typed(ProviderType::OpenAI, &endpoint, UPSTREAM_KEY, "up-model");
    let mut content: Content = table(vec![provider], "up-model");
    content.routes[0].capture_content = capture.map(|max_bytes| ContentCapture { max_bytes });
    if cached {
        content.routes[0].cache = Some(crate::cache::policy(CacheScope::Consumer));
    }
    if masking {
        content.routes[0].guardrails = vec![Guardrail {
            id: ObjectRef::new("team-a", "emails"),
            applies_to: GuardrailDirection::Both,
            endpoints: Vec::new(),
            rules: vec![GuardRule {
                name: "emails".into(),
                matcher: Matcher::Detector(Detector::Email),
                action: GuardrailAction::Mask,
                mask_as: default_mask(Some(Detector::Email)).into(),
            }],
            moderations: Vec::new(),
            max_input_chars: None,
            max_input_tokens: None,
            broken: false,
        }];
    }
    let mut config = test_config();
    config.traces = Some(TraceConfig {
        endpoint: Some(collector.http_endpoint()),
        protocol: OtlpProtocol::HttpProtobuf,
        service_name: "tollgate-test".into(),
        sampler: Sampler::default(),
        delay: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
        ..TraceConfig::default()
    });
    let proxy = TestProxy::start_with(config, Some(content)).await;
    (collector, fake, proxy)
}

/// A traced chat call (`stream` or not) with a system message and `question`; the client span.
async fn call(collector: &Collector, proxy: &TestProxy, question: &str, stream: bool) -> Value {
    let (reply, spans) = call_in(collector, proxy, question, stream, TRACE_ID, 2).await;
    reply.assert_status(200);
    spans
        .into_iter()
        .find(|s| s["kind"] == 3)
        .expect("the attempt's client span")
}

/// A traced chat call in the trace `trace_id`, and the trace's `count` spans once exported.
async fn call_in(
    collector: &Collector,
    proxy: &TestProxy,
    question: &str,
    stream: bool,
    trace_id: &str,
    count: usize,
) -> (crate::support::Reply, Vec<Value>) {
    let auth = format!("Bearer {CLIENT_KEY}");
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let reply = send(
        Method::POST,
        &proxy.url(CHAT),
        &[("authorization", &auth), ("traceparent", &traceparent)],
        Some(&json!({
            "model": "front-model",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": question}
            ],
            "stream": stream
        })),
    )
    .await;
    let spans = collector.spans_of(trace_id, count).await;
    (reply, spans)
}

/// A content attribute read back as the JSON it holds.
fn json_attr(span: &Value, key: &str) -> (String, Value) {
    let text = attr(span, key)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("{key} missing: {span:#}"));
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{key}: {e}: {text}"));
    (text, value)
}

#[tokio::test]
async fn without_the_routes_opt_in_no_content_is_exported() {
    let (collector, _fake, proxy) = setup(None, false).await;
    let client = call(&collector, &proxy, QUESTION, false).await;
    for key in CONTENT_KEYS {
        assert_eq!(attr(&client, key), None, "{key}");
    }
    let raw = collector.raw();
    for text in ["MARIGOLD", "Be brief", "alice@example.org", "Done: sent"] {
        assert!(!raw.contains(text), "{text:?} reached the collector");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn with_the_opt_in_the_messages_are_recorded_as_masked_and_never_a_key() {
    let (collector, fake, proxy) = setup(Some(4096), true).await;
    let client = call(&collector, &proxy, QUESTION, false).await;
    // The upstream got the masked question: that is what the span records.
    let masked_question = QUESTION.replace("bob@example.com", "[EMAIL]");
    assert_eq!(
        fake.seen()[0].body["messages"][1]["content"],
        json!(masked_question)
    );
    let (_, input) = json_attr(&client, "gen_ai.input.messages");
    assert_eq!(
        input,
        json!([
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "parts": [{"type": "text", "content": masked_question}]}
        ])
    );
    let (_, output) = json_attr(&client, "gen_ai.output.messages");
    assert_eq!(
        output,
        json!([{
            "role": "assistant",
            "parts": [{"type": "text", "content": "Done: sent to [EMAIL] as asked."}]
        }])
    );
    // Chat carries its system message among the messages, not apart.
    assert_eq!(attr(&client, "gen_ai.system_instructions"), None);
    let raw = collector.raw();
    for secret in [
        "bob@example.com",
        "alice@example.org",
        CLIENT_KEY,
        UPSTREAM_KEY,
    ] {
        assert!(!raw.contains(secret), "{secret:?} reached the collector");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_streamed_answer_is_recorded_as_it_was_sent_masked() {
    let (collector, _fake, proxy) = setup(Some(4096), true).await;
    let client = call(&collector, &proxy, QUESTION, true).await;
    let (_, output) = json_attr(&client, "gen_ai.output.messages");
    assert_eq!(
        output,
        json!([{
            "role": "assistant",
            "parts": [{"type": "text", "content": "Done: sent to [EMAIL] as asked."}]
        }])
    );
    assert!(!collector.raw().contains("alice@example.org"));
    proxy.stop().await;
}

#[tokio::test]
async fn content_longer_than_the_cap_is_cut_to_it_and_stays_json() {
    let (collector, _fake, proxy) = setup(Some(256), false).await;
    let long = format!("{QUESTION} {}", "é".repeat(2_000));
    let client = call(&collector, &proxy, &long, false).await;
    let (text, input) = json_attr(&client, "gen_ai.input.messages");
    assert!(text.len() <= 256, "{} bytes: {text}", text.len());
    assert_eq!(input[0]["parts"][0]["content"], "Be brief.");
    let cut = input[1]["parts"][0]["content"].as_str().unwrap();
    assert!(
        cut.starts_with("Mail the report") && cut.len() < long.len(),
        "{cut}"
    );
    let (text, _) = json_attr(&client, "gen_ai.output.messages");
    assert!(text.len() <= 256);
    proxy.stop().await;
}

#[tokio::test]
async fn a_cache_hit_records_its_content_on_the_server_span() {
    let (collector, fake, proxy) = setup_cached(Some(4096), true, true).await;
    let _ = call(&collector, &proxy, QUESTION, false).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319d";
    let (reply, spans) = call_in(&collector, &proxy, QUESTION, false, trace_id, 1).await;
    reply.assert_status(200);
    assert_eq!(reply.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(fake.seen().len(), 1, "the second call went upstream");
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let (_, input) = json_attr(&spans[0], "gen_ai.input.messages");
    assert_eq!(
        input[1]["parts"][0]["content"],
        json!(QUESTION.replace("bob@example.com", "[EMAIL]"))
    );
    let (_, output) = json_attr(&spans[0], "gen_ai.output.messages");
    assert_eq!(
        output[0]["parts"][0]["content"],
        "Done: sent to [EMAIL] as asked."
    );
    proxy.stop().await;
}
