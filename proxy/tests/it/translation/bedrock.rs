//! OpenAI-format callers served by Bedrock's Converse API (a protocol-faithful fake that verifies
//! every SigV4 signature): golden translations, the binary event stream, a tool-use round trip,
//! image input, session tokens, Bedrock API keys, and errors.

use serde_json::{Value, json};

use crate::support::bedrock_fake::{self, ACCESS_KEY_ID, REGION};
use crate::support::chat_route::*;
use crate::support::fake_server::FakeServer;
use crate::support::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiFAKESECRET1";
const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

async fn setup(credential: &str) -> (FakeServer, TestProxy) {
    let fake = bedrock_fake::start(credential).await;
    let proxy = proxy_to(bedrock(&fake.url(), credential, MODEL)).await;
    (fake, proxy)
}

fn keys() -> String {
    format!("{ACCESS_KEY_ID}:{SECRET}")
}

#[tokio::test]
async fn golden_signed_request_and_response_with_an_image_and_a_tool_result() {
    let (fake, proxy) = setup(&keys()).await;
    let ask = json!({
        "model": "front-model",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather where this was taken?"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "tooluse_B1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "tooluse_B1", "content": "18C"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "max_tokens": 512,
        "temperature": 0.5,
        "top_p": 0.8,
        "stop": ["END"]
    });
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    reply.assert_status(200);
    let seen = fake.last();
    assert_eq!(
        seen.path,
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    assert!(
        seen.header("authorization")
            .unwrap()
            .starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/"))
    );
    assert!(
        seen.header("authorization")
            .unwrap()
            .contains(&format!("/{REGION}/bedrock/aws4_request"))
    );
    assert!(!seen.headers.contains_key("x-amz-security-token"));
    assert_eq!(
        seen.body,
        json!({
            "messages": [
                {"role": "user", "content": [
                    {"text": "Weather where this was taken?"},
                    {"image": {"format": "png", "source": {"bytes": PNG}}}
                ]},
                {"role": "assistant", "content": [
                    {"toolUse": {"toolUseId": "tooluse_B1", "name": "get_weather", "input": {"city": "Paris"}}}
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "tooluse_B1", "content": [{"text": "18C"}], "status": "success"}}
                ]}
            ],
            "system": [{"text": "You are terse."}],
            "inferenceConfig": {"maxTokens": 512, "temperature": 0.5, "topP": 0.8, "stopSequences": ["END"]},
            "toolConfig": {
                "tools": [{"toolSpec": {"name": "get_weather", "description": "Weather",
                    "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}],
                "toolChoice": {"tool": {"name": "get_weather"}}
            }
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
                         "message": {"role": "assistant", "content": "The tool said: 18C", "refusal": null}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39,
                      "prompt_tokens_details": {"cached_tokens": 0}}
        })
    );
}

#[tokio::test]
async fn tool_use_round_trip_over_the_event_stream() {
    let (fake, proxy) = setup(&keys()).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let ask = json!({"model": "front-model", "stream": true, "tools": tools,
                     "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    reply.assert_status(200);
    let seen = fake.last();
    assert_eq!(
        seen.path,
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
    );
    assert_eq!(
        seen.header("accept"),
        Some("application/vnd.amazon.eventstream")
    );
    let chunks = openai_chunks(&reply.body);
    let deltas: Vec<Value> = chunks
        .iter()
        .map(|c| json!([c["choices"][0]["delta"], c["choices"][0]["finish_reason"]]))
        .collect();
    assert_eq!(
        deltas,
        vec![
            json!([{"role": "assistant", "content": ""}, null]),
            json!([{"tool_calls": [{"index": 0, "id": "tooluse_B1", "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""}}]}, null]),
            json!([{"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}, null]),
            json!([{"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}, null]),
            json!([{}, "tool_calls"]),
            json!([null, null]),
        ]
    );
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(
        (line["tokens_in"].as_u64(), line["tokens_out"].as_u64()),
        (Some(30), Some(9))
    );

    let (id, name, args) = assembled_tool_calls(&chunks)[0].clone();
    let follow = json!({"model": "front-model", "stream": true, "tools": tools, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function",
            "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": id, "content": "sunny"}]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &follow).await;
    reply.assert_status(200);
    assert_eq!(
        chunk_text(&openai_chunks(&reply.body)),
        "The tool said: sunny"
    );
}

#[tokio::test]
async fn session_tokens_and_bedrock_api_keys() {
    let with_token = format!("ASIAFAKE0001:{SECRET}:FwoGZXIvYXdzEJr//////////wEaDFAKETOKEN+/==");
    let fake = bedrock_fake::start(&with_token).await;
    let proxy = proxy_to(bedrock(&fake.url(), &with_token, MODEL)).await;
    let ask = json!({"model": "front-model", "messages": [{"role": "user", "content": "hi"}]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    reply.assert_status(200);
    assert_eq!(
        fake.last().header("x-amz-security-token"),
        Some("FwoGZXIvYXdzEJr//////////wEaDFAKETOKEN+/==")
    );

    let (fake, proxy) = setup("ABSKQmVkcm9ja0FQSUtleS1mYWtl").await;
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    reply.assert_status(200);
    assert_eq!(
        fake.last().header("authorization"),
        Some("Bearer ABSKQmVkcm9ja0FQSUtleS1mYWtl")
    );
}

#[tokio::test]
async fn errors_and_what_bedrock_cannot_take() {
    let (fake, proxy) = setup(&keys()).await;
    let ask = json!({"model": "front-model", "messages": [{"role": "user", "content": "hi"}]});
    fake.set(|c| {
        c.fail = Some((
            429,
            json!({"message": "Too many requests, please wait before trying again."}),
            vec![
                ("x-amzn-errortype".into(), "ThrottlingException".into()),
                ("retry-after".into(), "3".into()),
            ],
        ))
    });
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("3"));

    // A wrong secret: the fake's signature check fails with 403.
    fake.set(|c| {
        c.fail = None;
        c.key = format!("{ACCESS_KEY_ID}:a-different-secret");
    });
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_code(), "upstream_auth_failed");
    assert!(!String::from_utf8_lossy(&reply.body).contains(SECRET));

    fake.set(|c| c.key = keys());
    let by_url = json!({"model": "front-model", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &by_url).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_code(), "unsupported_image");

    let reply = post(
        &proxy.url(EMBEDDINGS),
        CLIENT_KEY,
        &json!({"model": "front-model", "input": "x"}),
    )
    .await;
    assert_eq!(reply.status, 400);
}

#[tokio::test]
async fn an_exception_in_the_stream_ends_it_with_an_error_event() {
    use crate::support::fake_server::{Answer, Control, FakeServer, Seen};
    fn throttled(_: &Seen, _: &Control) -> Answer {
        Answer::Stream {
            content_type: "application/vnd.amazon.eventstream",
            frames: vec![
                bedrock_fake::event("messageStart", json!({"role": "assistant"})),
                bedrock_fake::event(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
                ),
                bedrock_fake::exception("throttlingException", "Too many tokens, please wait"),
            ],
        }
    }
    let fake = FakeServer::start(
        crate::support::fake_server::Control::new(&keys(), "x"),
        throttled,
    )
    .await;
    let proxy = proxy_to(bedrock(&fake.url(), &keys(), MODEL)).await;
    let ask = json!({"model": "front-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let chunks = openai_chunks(&post(&proxy.url(CHAT), CLIENT_KEY, &ask).await.body);
    assert_eq!(chunk_text(&chunks), "Hi");
    assert_eq!(chunks.last().unwrap()["error"]["type"], "rate_limit_error");
    assert_eq!(
        chunks.last().unwrap()["error"]["message"],
        "Too many tokens, please wait"
    );
}

#[tokio::test]
async fn a_json_schema_asked_of_claude_is_answered_through_a_forced_tool() {
    let (fake, proxy) = setup(&keys()).await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"]});
    for stream in [false, true] {
        let ask = json!({"model": "front-model", "stream": stream,
            "messages": [{"role": "user", "content": "Which city?"}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "city", "schema": schema}}});
        let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
        reply.assert_status(200);
        let seen = fake.last();
        assert_eq!(
            seen.body["toolConfig"]["toolChoice"],
            json!({"tool": {"name": "city"}})
        );
        assert_eq!(
            seen.body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"],
            schema
        );
        assert!(seen.body.get("system").is_none(), "{}", seen.body);
        // The tool's input is the answer's text, and the answer simply stops.
        let (text, finish) = if stream {
            let chunks = openai_chunks(&reply.body);
            let text: String = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
                .collect();
            let finish = chunks.iter().find_map(|c| {
                c["choices"][0]["finish_reason"]
                    .as_str()
                    .map(str::to_string)
            });
            (text, finish.unwrap())
        } else {
            let body = reply.json();
            assert!(body["choices"][0]["message"].get("tool_calls").is_none());
            (
                body["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                body["choices"][0]["finish_reason"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        };
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"city": "Paris"})
        );
        assert_eq!(finish, "stop");
    }
}
