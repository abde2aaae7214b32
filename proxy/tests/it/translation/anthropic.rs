//! OpenAI-format callers served by an Anthropic backend (a protocol-faithful fake of the Messages
//! API): golden request and response translations, streaming, a tool-call round trip, image input,
//! usage with cache tokens, and provider errors in OpenAI's shape without the credential.

use serde_json::{Value, json};
use tollgate_snapshot::ProviderType;

use crate::support::anthropic_fake;
use crate::support::chat_route::*;
use crate::support::fake_server::FakeServer;
use crate::support::*;

const KEY: &str = "sk-ant-api03-UPSTREAMSECRETKEY0001";
const MODEL: &str = "claude-sonnet-4-5";

async fn setup() -> (FakeServer, TestProxy) {
    let fake = anthropic_fake::start(KEY).await;
    let proxy = proxy_to(typed(ProviderType::Anthropic, &fake.url(), KEY, MODEL)).await;
    (fake, proxy)
}

const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn conversation() -> Value {
    json!({
        "model": "front-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is the weather where this photo was taken?"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}},
                {"type": "image_url", "image_url": {"url": "https://example.com/street.jpg", "detail": "high"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "18C and sunny"}
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }}],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "temperature": 1.4,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "user-42"
    })
}

#[tokio::test]
async fn golden_request_and_response_with_images_and_a_tool_result() {
    let (fake, proxy) = setup().await;
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &conversation()).await;
    reply.assert_status(200);

    let seen = fake.last();
    assert_eq!(seen.header("x-api-key"), Some(KEY));
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(
        seen.body,
        json!({
            "model": MODEL,
            "max_tokens": 4096,
            "system": "You are terse.\n\nUse metric units.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is the weather where this photo was taken?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/street.jpg"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_abc", "name": "get_weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_abc", "content": "18C and sunny"}
                ]}
            ],
            "temperature": 1.0,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "user-42"},
            "tools": [{"name": "get_weather", "description": "Current weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true}
        })
    );

    let mut body = reply.json();
    normalize(&mut body);
    assert_eq!(
        body,
        json!({
            "object": "chat.completion",
            "model": MODEL,
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "The tool said: 18C and sunny", "refusal": null}}],
            "usage": {"prompt_tokens": 130, "completion_tokens": 12, "total_tokens": 142,
                      "prompt_tokens_details": {"cached_tokens": 100}}
        })
    );
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(
        (line["tokens_in"].as_u64(), line["tokens_out"].as_u64()),
        (Some(130), Some(12))
    );
    assert_eq!(line["model_served"], MODEL);
}

#[tokio::test]
async fn tool_call_round_trip_streamed_then_whole() {
    let (fake, proxy) = setup().await;
    let ask = json!({
        "model": "front-model", "stream": true, "max_tokens": 200,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}
    });
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(
        fake.last().body["tool_choice"],
        json!({"type": "tool", "name": "get_weather"})
    );
    assert_eq!(fake.last().body["stream"], true);
    assert_eq!(fake.last().body["max_tokens"], 200);
    let chunks = openai_chunks(&reply.body);
    // Golden: role, the text block's three deltas, the tool call's start and two argument pieces
    // (the empty first `input_json_delta` sends nothing), finish, [DONE].
    let deltas: Vec<Value> = chunks
        .iter()
        .map(|c| {
            if c.is_string() {
                return c.clone();
            }
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], MODEL);
            assert!(c.get("usage").is_none(), "usage only when asked for");
            json!([c["choices"][0]["delta"], c["choices"][0]["finish_reason"]])
        })
        .collect();
    assert_eq!(
        deltas,
        vec![
            json!([{"role": "assistant", "content": ""}, null]),
            json!([{"content": "Let "}, null]),
            json!([{"content": "me "}, null]),
            json!([{"content": "check."}, null]),
            json!([{"tool_calls": [{"index": 0, "id": "toolu_01A", "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""}}]}, null]),
            json!([{"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}, null]),
            json!([{"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}, null]),
            json!([{}, "tool_calls"]),
            json!("[DONE]"),
        ]
    );
    let calls = assembled_tool_calls(&chunks);
    assert_eq!(
        calls,
        vec![(
            "toolu_01A".into(),
            "get_weather".into(),
            "{\"city\":\"Paris\"}".into()
        )]
    );
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["tokens_in"], 130);
    assert_eq!(line["tokens_out"], 12);

    // The client runs the tool and sends the result back, not streaming this time.
    let (id, name, args) = calls[0].clone();
    let follow = json!({
        "model": "front-model",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": id, "type": "function", "function": {"name": name, "arguments": args}}]},
            {"role": "tool", "tool_call_id": id, "content": "{\"temp\":18}"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    });
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &follow).await;
    reply.assert_status(200);
    assert_eq!(
        fake.last().body["messages"][1],
        json!({"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}]})
    );
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "The tool said: {\"temp\":18}"
    );
}

#[tokio::test]
async fn whole_tool_call_answer_and_streamed_usage_on_request() {
    let (_fake, proxy) = setup().await;
    let ask = json!({
        "model": "front-model",
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}]
    });
    let body = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await.json();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"],
        json!([{"id": "toolu_01A", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
    );
    assert_eq!(body["choices"][0]["message"]["content"], "Let me check.");

    let ask = json!({"model": "front-model", "stream": true, "stream_options": {"include_usage": true},
                     "messages": [{"role": "user", "content": "hi"}]});
    let chunks = openai_chunks(&post(&proxy.url(CHAT), CLIENT_KEY, &ask).await.body);
    assert_eq!(chunk_text(&chunks), "Hello from anthropic");
    let usage = &chunks[chunks.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 130, "completion_tokens": 12, "total_tokens": 142,
               "prompt_tokens_details": {"cached_tokens": 100}})
    );
}

#[tokio::test]
async fn image_input_reaches_anthropic() {
    let (fake, proxy) = setup().await;
    let ask = json!({"model": "front-model", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}},
        {"type": "text", "text": "What is this?"}]}]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "I see 1 image(s)"
    );
    assert_eq!(
        fake.last().body["messages"][0]["content"][0]["source"]["data"],
        PNG
    );
}

#[tokio::test]
async fn provider_errors_come_back_in_openai_shape_without_the_key() {
    let (fake, proxy) = setup().await;
    let ask = json!({"model": "front-model", "messages": [{"role": "user", "content": "hi"}]});

    fake.set(|c| {
        c.fail = Some((
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}}),
            vec![("retry-after".into(), "17".into())],
        ))
    });
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("17"));
    assert_eq!(reply.error_code(), "upstream_rate_limited");
    assert_eq!(reply.json()["error"]["type"], "rate_limit_error");

    fake.set(|c| c.fail = Some((529, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}), vec![])));
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.error_code(), "upstream_overloaded");

    // A 400 whose message quotes part of the key: passed on, the key fragment removed.
    fake.set(|c| {
        c.fail = Some((
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error",
        "message": "messages.0: bad input for key sk-ant-api03-UPSTREAMSEC..."}}),
            vec![],
        ))
    });
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_code(), "upstream_rejected");
    let text = String::from_utf8_lossy(&reply.body).to_string();
    assert!(text.contains("messages.0: bad input"), "{text}");
    assert!(
        !text.contains("UPSTREAMSEC") && !text.contains(KEY),
        "{text}"
    );

    fake.set(|c| c.fail = None);
    fake.set(|c| c.key = "another-key".into());
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_code(), "upstream_auth_failed");
    assert!(!String::from_utf8_lossy(&reply.body).contains("sk-ant"));

    // Embeddings: Anthropic has none.
    let reply = post(
        &proxy.url(EMBEDDINGS),
        CLIENT_KEY,
        &json!({"model": "front-model", "input": "x"}),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_code(), "unsupported_endpoint");
}

#[tokio::test]
async fn a_mid_stream_error_event_becomes_an_openai_error_event() {
    use crate::support::fake_server::{Answer, Control, FakeServer, Seen};
    use bytes::Bytes;
    fn overloaded(_: &Seen, _: &Control) -> Answer {
        let e = |n: &str, d: Value| Bytes::from(format!("event: {n}\ndata: {d}\n\n"));
        Answer::Stream {
            content_type: "text/event-stream",
            frames: vec![
                e(
                    "message_start",
                    json!({"type": "message_start", "message": {"id": "msg_1", "model": "c", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
                ),
                e(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ),
                e(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
                ),
                e(
                    "error",
                    json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                ),
            ],
        }
    }
    let fake = FakeServer::start(Control::new(KEY, "x"), overloaded).await;
    let proxy = proxy_to(typed(ProviderType::Anthropic, &fake.url(), KEY, MODEL)).await;
    let ask = json!({"model": "front-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    let chunks = openai_chunks(&reply.body);
    assert_eq!(chunk_text(&chunks), "Hi");
    let last = chunks.last().unwrap();
    assert_eq!(last["error"]["message"], "Overloaded");
    assert_eq!(last["error"]["type"], "server_error");
    assert!(!String::from_utf8_lossy(&reply.body).contains("[DONE]"));
}

#[tokio::test]
async fn reasoning_effort_becomes_extended_thinking_and_thinking_comes_back_as_reasoning_content() {
    let (fake, proxy) = setup().await;
    let ask = json!({"model": "front-model", "reasoning_effort": "medium", "temperature": 0.2,
                     "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    reply.assert_status(200);
    let sent = fake.last().body;
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 8192})
    );
    // The budget must stay below max_tokens, and Anthropic refuses a temperature with thinking.
    assert_eq!(sent["max_tokens"], 8192 + 1024);
    assert!(sent.get("temperature").is_none(), "{sent}");
    let message = &reply.json()["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], anthropic_fake::THOUGHT);
    assert_eq!(message["content"], "Hello from anthropic");

    let mut ask = ask;
    ask["stream"] = true.into();
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    let chunks = openai_chunks(&reply.body);
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(reasoning, anthropic_fake::THOUGHT);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from anthropic");
}
