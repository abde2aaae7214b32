//! OpenAI-format callers served by a Gemini backend (a protocol-faithful fake of the Gemini API):
//! golden request and response translations, SSE streaming, a function-call round trip, image input,
//! embeddings through `embedContent`/`batchEmbedContents`, and Google's error shapes.

use serde_json::{Value, json};
use tollgate_snapshot::ProviderType;

use crate::support::chat_route::*;
use crate::support::fake_server::FakeServer;
use crate::support::gemini_fake;
use crate::support::*;

const KEY: &str = "AIzaSyFAKE-GEMINI-UPSTREAM-KEY-0001";
const MODEL: &str = "gemini-2.5-flash";
const JPEG: &str = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8U";

async fn setup() -> (FakeServer, TestProxy) {
    let fake = gemini_fake::start(KEY).await;
    let proxy = proxy_to(typed(ProviderType::Gemini, &fake.url(), KEY, MODEL)).await;
    (fake, proxy)
}

#[tokio::test]
async fn golden_request_and_response_with_images_and_a_function_result() {
    let (fake, proxy) = setup().await;
    let ask = json!({
        "model": "front-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather where this was taken?"},
                {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{JPEG}")}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png?x=1"}}
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":18}"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "additionalProperties": false, "$schema": "http://json-schema.org/draft-07/schema#"}}}],
        "tool_choice": "required",
        "max_completion_tokens": 300,
        "temperature": 0.3,
        "stop": "END",
        "seed": 7,
        "response_format": {"type": "json_object"}
    });
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    reply.assert_status(200);
    let seen = fake.last();
    assert_eq!(seen.path, format!("/v1beta/models/{MODEL}:generateContent"));
    assert_eq!(seen.header("x-goog-api-key"), Some(KEY));
    assert_eq!(
        seen.body,
        json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "Weather where this was taken?"},
                    {"inlineData": {"mimeType": "image/jpeg", "data": JPEG}},
                    {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a.png?x=1"}}
                ]},
                {"role": "model", "parts": [
                    {"text": "Checking."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}}
                ]}
            ],
            "systemInstruction": {"parts": [{"text": "You are terse."}]},
            "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
            "generationConfig": {"maxOutputTokens": 300, "temperature": 0.3, "seed": 7,
                                 "stopSequences": ["END"], "responseMimeType": "application/json"}
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
                         "message": {"role": "assistant", "content": "The tool said: {\"temp\":18}", "refusal": null}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27,
                      "prompt_tokens_details": {"cached_tokens": 4}}
        })
    );
}

#[tokio::test]
async fn function_call_round_trip_streamed() {
    let (fake, proxy) = setup().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let ask = json!({"model": "front-model", "stream": true, "tools": tools,
                     "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    assert_eq!(reply.status, 200);
    let seen = fake.last();
    assert_eq!(
        seen.path,
        format!("/v1beta/models/{MODEL}:streamGenerateContent")
    );
    assert_eq!(seen.query, "alt=sse");
    let chunks = openai_chunks(&reply.body);
    let calls = assembled_tool_calls(&chunks);
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].1.as_str(), calls[0].2.as_str()),
        ("get_weather", "{\"city\":\"Paris\"}")
    );
    assert!(
        calls[0].0.starts_with("call_"),
        "Gemini gives no id: one is made up"
    );
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "tool_calls"
    );
    assert_eq!(chunks.last().unwrap(), "[DONE]");

    let (id, name, args) = calls[0].clone();
    let follow = json!({"model": "front-model", "stream": true, "tools": tools,
    "stream_options": {"include_usage": true},
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function",
            "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": id, "content": "sunny"}
    ]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &follow).await;
    reply.assert_status(200);
    assert_eq!(
        fake.last().body["contents"][2],
        json!({"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}]})
    );
    let chunks = openai_chunks(&reply.body);
    // Golden: role chunk, one chunk per Gemini event, finish, usage, [DONE].
    let deltas: Vec<Value> = chunks
        .iter()
        .map(|c| {
            json!([
                c["choices"][0]["delta"],
                c["choices"][0]["finish_reason"],
                c["usage"]
            ])
        })
        .collect();
    assert_eq!(
        deltas,
        vec![
            json!([{"role": "assistant", "content": ""}, null, null]),
            json!([{"content": "The "}, null, null]),
            json!([{"content": "tool "}, null, null]),
            json!([{"content": "said: "}, null, null]),
            json!([{"content": "{\"result\":\"sunny\"}"}, null, null]),
            json!([{}, "stop", null]),
            json!([null, null, {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27,
                                "prompt_tokens_details": {"cached_tokens": 4}}]),
            json!([null, null, null]),
        ]
    );
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(
        (line["tokens_in"].as_u64(), line["tokens_out"].as_u64()),
        (Some(20), Some(7))
    );
}

#[tokio::test]
async fn image_input_and_plain_streaming() {
    let (_fake, proxy) = setup().await;
    let ask = json!({"model": "front-model", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{JPEG}")}}]}]});
    let body = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await.json();
    assert_eq!(body["choices"][0]["message"]["content"], "I see 1 image(s)");

    let ask = json!({"model": "front-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let chunks = openai_chunks(&post(&proxy.url(CHAT), CLIENT_KEY, &ask).await.body);
    assert_eq!(chunk_text(&chunks), "Hello from gemini");
}

#[tokio::test]
async fn embeddings_single_and_batch() {
    let (fake, proxy) = setup().await;
    let reply = post(
        &proxy.url(EMBEDDINGS),
        CLIENT_KEY,
        &json!({"model": "front-model", "input": "hello", "encoding_format": "float", "dimensions": 3}),
    )
    .await;
    reply.assert_status(200);
    let seen = fake.last();
    assert_eq!(seen.path, format!("/v1beta/models/{MODEL}:embedContent"));
    assert_eq!(
        seen.body,
        json!({"model": format!("models/{MODEL}"), "content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 3})
    );
    assert_eq!(
        reply.json(),
        json!({"object": "list", "model": MODEL,
               "data": [{"object": "embedding", "index": 0, "embedding": [0.05, 0.06, 0.07]}],
               "usage": {"prompt_tokens": 2, "total_tokens": 2}})
    );

    let reply = post(
        &proxy.url(EMBEDDINGS),
        CLIENT_KEY,
        &json!({"model": "front-model", "input": ["a", "bb"], "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(
        fake.last().path,
        format!("/v1beta/models/{MODEL}:batchEmbedContents")
    );
    let v = reply.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["data"][1]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 4 * 4);
    assert_eq!(f32::from_le_bytes(raw[..4].try_into().unwrap()), 0.02);
}

#[tokio::test]
async fn google_errors_map_to_openai_errors() {
    let (fake, proxy) = setup().await;
    let ask = json!({"model": "front-model", "messages": [{"role": "user", "content": "hi"}]});
    fake.set(|c| {
        c.fail = Some((429, json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
            "message": "Resource has been exhausted (e.g. check quota).",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "21s"}]}}), vec![]))
    });
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("21"));
    assert_eq!(reply.error_code(), "upstream_rate_limited");

    // Google answers a bad key with 400 API_KEY_INVALID: that is the gateway's problem, not the caller's.
    fake.set(|c| {
        c.fail = None;
        c.key = "other".into();
    });
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_code(), "upstream_auth_failed");
    assert!(!String::from_utf8_lossy(&reply.body).contains(KEY));

    fake.set(|c| c.key = KEY.into());
    let bad = json!({"model": "front-model", "messages": [{"role": "user", "content": ""}]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &bad).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_code(), "upstream_rejected");
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("contents is not specified")
    );
}
