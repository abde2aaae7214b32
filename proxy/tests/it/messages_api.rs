//! Anthropic-format callers (`POST <prefix>/v1/messages`): passed through to Anthropic backends,
//! translated for OpenAI-compatible, Gemini, Bedrock and Fake backends, streams included, and errors
//! in Anthropic's envelope.

use http::Method;
use serde_json::{Value, json};
use tollgate_snapshot::{FakeBehaviour, ProviderType};

use crate::support::chat_route::*;
use crate::support::*;
use crate::support::{anthropic_fake, azure_fake, bedrock_fake, gemini_fake};

const KEY: &str = "upstream-key-for-messages-0001";

async fn messages(proxy: &TestProxy, body: &Value) -> Reply {
    send(
        Method::POST,
        &proxy.url(MESSAGES),
        &[
            ("x-api-key", CLIENT_KEY),
            ("anthropic-version", "2023-06-01"),
        ],
        Some(body),
    )
    .await
}

fn tool_ask(stream: bool) -> Value {
    json!({"model": "front-model", "max_tokens": 256, "stream": stream,
           "tools": [{"name": "get_weather", "description": "Weather",
                      "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
           "messages": [{"role": "user", "content": "Weather in Paris?"}]})
}

fn follow_up(id: &str, stream: bool) -> Value {
    json!({"model": "front-model", "max_tokens": 256, "stream": stream,
    "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "sunny"}]}
    ]})
}

#[tokio::test]
async fn anthropic_backends_get_the_callers_bytes() {
    let fake = anthropic_fake::start(KEY).await;
    let proxy = proxy_to(typed(ProviderType::Anthropic, &fake.url(), KEY, "claude-x")).await;
    let ask = tool_ask(false);
    let reply = messages(&proxy, &ask).await;
    reply.assert_status(200);
    let mut want = ask.clone();
    want["model"] = "claude-x".into();
    assert_eq!(fake.last().body, want, "only the model is rewritten");
    assert_eq!(fake.last().header("x-api-key"), Some(KEY));
    let body = reply.json();
    assert_eq!(body["id"], "msg_01XYZ");
    assert_eq!(body["content"][1]["type"], "tool_use");
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(
        (line["tokens_in"].as_u64(), line["tokens_out"].as_u64()),
        (Some(130), Some(12))
    );

    let reply = messages(&proxy, &follow_up("toolu_01A", true)).await;
    let events = anthropic_events(&reply.body);
    assert_eq!(events.first().unwrap().0, "message_start");
    assert_eq!(events.last().unwrap().0, "message_stop");
    assert!(
        events.iter().any(|(n, _)| n == "ping"),
        "passed through as sent"
    );
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(
        (line["tokens_in"].as_u64(), line["tokens_out"].as_u64()),
        (Some(130), Some(12))
    );
}

/// The golden event sequence of a translated tool-call stream (argument deltas as the backend split them).
fn assert_tool_stream(events: &[(String, Value)], model: &str) {
    let mut names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    names.dedup();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ],
        "{events:?}"
    );
    assert_eq!(events[0].1["message"]["model"], model);
    assert_eq!(events[0].1["message"]["role"], "assistant");
    assert_eq!(events[1].1["content_block"]["type"], "tool_use");
    assert_eq!(events[1].1["content_block"]["name"], "get_weather");
    let args: String = events
        .iter()
        .filter(|(n, d)| n == "content_block_delta" && d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "tool_use"
    );
}

#[tokio::test]
async fn openai_backends_are_translated_both_ways() {
    let fake = azure_fake::start_openai(KEY).await;
    let proxy = proxy_to(typed(
        ProviderType::OpenAI,
        &format!("{}/v1", fake.url()),
        KEY,
        "gpt-4o",
    ))
    .await;
    let reply = messages(&proxy, &tool_ask(false)).await;
    reply.assert_status(200);
    assert_eq!(
        fake.last().body,
        json!({"model": "gpt-4o", "max_completion_tokens": 256,
               "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}],
               "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]})
    );
    let mut body = reply.json();
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    body.as_object_mut().unwrap().remove("id");
    assert_eq!(
        body,
        json!({"type": "message", "role": "assistant", "model": "gpt-4o",
               "content": [{"type": "tool_use", "id": "call_az1", "name": "get_weather", "input": {"city": "Paris"}}],
               "stop_reason": "tool_use", "stop_sequence": null,
               "usage": {"input_tokens": 13, "output_tokens": 6, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}})
    );

    let reply = messages(&proxy, &tool_ask(true)).await;
    assert_eq!(
        fake.last().body["stream_options"],
        json!({"include_usage": true})
    );
    assert_tool_stream(&anthropic_events(&reply.body), "gpt-4o");

    let reply = messages(&proxy, &follow_up("call_az1", true)).await;
    let sent = fake.last().body;
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], "call_az1");
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "tool_call_id": "call_az1", "content": "sunny"})
    );
    let events = anthropic_events(&reply.body);
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "The tool said: sunny");
    assert_eq!(events[events.len() - 2].1["usage"]["output_tokens"], 6);
    assert_eq!(events[events.len() - 2].1["usage"]["input_tokens"], 13);
}

#[tokio::test]
async fn gemini_and_bedrock_backends_serve_anthropic_callers() {
    let gemini = gemini_fake::start(KEY).await;
    let proxy = proxy_to(typed(
        ProviderType::Gemini,
        &gemini.url(),
        KEY,
        "gemini-2.5-flash",
    ))
    .await;
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let image = json!({"model": "front-model", "max_tokens": 100, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "text", "text": "What is this?"}]}]});
    let reply = messages(&proxy, &image).await;
    reply.assert_status(200);
    assert_eq!(
        reply.json()["content"],
        json!([{"type": "text", "text": "I see 1 image(s)"}])
    );
    assert_eq!(
        gemini.last().body["contents"][0]["parts"][0]["inlineData"]["data"],
        png
    );
    let reply = messages(&proxy, &tool_ask(true)).await;
    let events = anthropic_events(&reply.body);
    assert_eq!(events[1].1["content_block"]["name"], "get_weather");
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "tool_use"
    );

    let keys = format!("{}:secretsecretsecret", bedrock_fake::ACCESS_KEY_ID);
    let upstream = bedrock_fake::start(&keys).await;
    let proxy = proxy_to(bedrock(&upstream.url(), &keys, "amazon.nova-pro-v1:0")).await;
    let reply = messages(&proxy, &tool_ask(true)).await;
    reply.assert_status(200);
    assert_tool_stream(&anthropic_events(&reply.body), "amazon.nova-pro-v1:0");
    let reply = messages(&proxy, &follow_up("tooluse_B1", false)).await;
    assert_eq!(reply.json()["content"][0]["text"], "The tool said: sunny");
}

#[tokio::test]
async fn the_fake_provider_serves_anthropic_callers() {
    let proxy = TestProxy::start(table(
        vec![fake_provider(
            "fake",
            FakeBehaviour {
                completion_tokens: 6,
                stream_chunks: 3,
                ..FakeBehaviour::default()
            },
        )],
        "fake-model",
    ))
    .await;
    let ask = json!({"model": "front-model", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]});
    let whole = messages(&proxy, &ask).await.json();
    assert_eq!(whole["type"], "message");
    assert_eq!(whole["usage"]["output_tokens"], 6);
    let mut ask = ask;
    ask["stream"] = true.into();
    let events = anthropic_events(&messages(&proxy, &ask).await.body);
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, whole["content"][0]["text"].as_str().unwrap());
    assert_eq!(events.last().unwrap().0, "message_stop");
}

#[tokio::test]
async fn errors_use_anthropics_envelope() {
    let fake = anthropic_fake::start(KEY).await;
    let proxy = proxy_to(typed(ProviderType::Anthropic, &fake.url(), KEY, "claude-x")).await;
    let bad_key = send(
        Method::POST,
        &proxy.url(MESSAGES),
        &[("x-api-key", "nope")],
        Some(&tool_ask(false)),
    )
    .await;
    assert_eq!(bad_key.status, 401);
    assert_eq!(
        bad_key.json(),
        json!({"type": "error", "error": {"type": "authentication_error", "message": "Incorrect API key provided."}})
    );
    let mut unknown = tool_ask(false);
    unknown["model"] = "nope".into();
    let reply = messages(&proxy, &unknown).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["type"], "not_found_error");

    fake.set(|c| {
        c.fail = Some((
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
            vec![("retry-after".into(), "5".into())],
        ))
    });
    let reply = messages(&proxy, &tool_ask(false)).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(reply.json()["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn error_events_in_a_passed_through_stream_are_scrubbed_of_the_key() {
    let fake = anthropic_fake::start(KEY).await;
    fake.set(|c| c.quote = Some(format!("{}***", &KEY[..16])));
    let proxy = proxy_to(typed(ProviderType::Anthropic, &fake.url(), KEY, "claude-x")).await;
    let reply = messages(&proxy, &follow_up("toolu_01A", true)).await;
    reply.assert_status(200);
    let text = String::from_utf8_lossy(&reply.body);
    assert!(!text.contains("upstream-key-fo"), "{text}");
    let events = anthropic_events(&reply.body);
    assert_eq!(events.first().unwrap().0, "message_start");
    assert_eq!(
        events.last().unwrap(),
        &(
            "error".to_string(),
            json!({"type": "error", "error": {"type": "overloaded_error",
                "message": "Overloaded while serving key [redacted]"}})
        )
    );
}
