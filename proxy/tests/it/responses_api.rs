//! Responses-API callers (`POST <prefix>/v1/responses`): translated for Anthropic (golden request),
//! Gemini, Bedrock and Fake backends, streams included; a fallback from a failing OpenAI backend to an
//! Anthropic one; provider errors in OpenAI's envelope. The SDK's view is in `sdk::openai_responses`.

use serde_json::{Value, json};
use tollgate_snapshot::{FakeBehaviour, ProviderType};

use crate::support::chat_route::*;
use crate::support::*;
use crate::support::{anthropic_fake, bedrock_fake, gemini_fake, responses_fake};

const KEY: &str = "upstream-key-for-responses-0001";
const RESPONSES: &str = "/team-a/chat/v1/responses";

async fn responses(proxy: &TestProxy, body: &Value) -> Reply {
    post(&proxy.url(RESPONSES), CLIENT_KEY, body).await
}

fn tool_ask(stream: bool) -> Value {
    json!({"model": "front-model", "stream": stream, "input": "Weather in Paris?",
           "tools": [{"type": "function", "name": "get_weather", "description": "Weather",
                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]})
}

fn follow_up(call_id: &str) -> Value {
    json!({"model": "front-model", "input": [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call_output", "call_id": call_id, "output": "sunny"}
    ], "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]})
}

/// Events of a Responses stream as (event name, data), checking that each names itself in its data
/// and that sequence numbers count up from zero.
fn events(body: &[u8]) -> Vec<(String, Value)> {
    let events = anthropic_events(body);
    for (i, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], i, "{data}");
    }
    events
}

fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["type"] == "message")
        .flat_map(|o| o["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["text"].as_str().map(str::to_string))
        .collect()
}

/// A streamed tool call: one function-call item whose argument deltas make `{"city":"Paris"}`.
fn assert_tool_stream(events: &[(String, Value)]) {
    assert_eq!(events[0].0, "response.created");
    let added: Vec<&Value> = events
        .iter()
        .filter(|(n, d)| n == "response.output_item.added" && d["item"]["type"] == "function_call")
        .map(|(_, d)| &d["item"])
        .collect();
    assert_eq!(added.len(), 1, "{events:?}");
    assert_eq!(added[0]["name"], "get_weather");
    let args: String = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "response.completed");
    assert_eq!(done["response"]["status"], "completed");
    assert!(done["response"]["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn anthropic_backends_get_the_request_translated() {
    let fake = anthropic_fake::start(KEY).await;
    let proxy = proxy_to(typed(ProviderType::Anthropic, &fake.url(), KEY, "claude-x")).await;
    let mut ask = tool_ask(false);
    ask["instructions"] = "Be terse.".into();
    ask["max_output_tokens"] = 300.into();
    ask["tool_choice"] = json!({"type": "function", "name": "get_weather"});
    ask["temperature"] = 0.5.into();
    let reply = responses(&proxy, &ask).await;
    reply.assert_status(200);
    assert_eq!(
        fake.last().body,
        json!({"model": "claude-x", "max_tokens": 300, "system": "Be terse.", "temperature": 0.5,
               "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}],
               "tools": [{"name": "get_weather", "description": "Weather",
                          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
               "tool_choice": {"type": "tool", "name": "get_weather"}})
    );
    let v = reply.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["instructions"], "Be terse.");
    assert_eq!(v["max_output_tokens"], 300);
    assert_eq!(output_text(&v), "Let me check.");
    assert_eq!(v["output"][1]["type"], "function_call");
    assert_eq!(v["output"][1]["call_id"], "toolu_01A");
    let (input, output, read, write) = anthropic_fake::USAGE;
    assert_eq!(v["usage"]["input_tokens"], input + read + write);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], read);
    assert_eq!(v["usage"]["output_tokens"], output);
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["tokens_in"], input + read + write);
    assert_eq!(line["path"], RESPONSES);

    let reply = responses(&proxy, &tool_ask(true)).await;
    reply.assert_status(200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_tool_stream(&events(&reply.body));
    let reply = responses(&proxy, &follow_up("toolu_01A")).await;
    assert_eq!(output_text(&reply.json()), "The tool said: sunny");
}

#[tokio::test]
async fn gemini_bedrock_and_fake_backends_serve_responses_callers() {
    let gemini = gemini_fake::start(KEY).await;
    let proxy = proxy_to(typed(
        ProviderType::Gemini,
        &gemini.url(),
        KEY,
        "gemini-2.5-flash",
    ))
    .await;
    let reply = responses(&proxy, &tool_ask(true)).await;
    reply.assert_status(200);
    assert_tool_stream(&events(&reply.body));
    let reply = responses(
        &proxy,
        &json!({"model": "front-model", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "https://example.com/cat.png"}]}]}),
    )
    .await;
    assert_eq!(output_text(&reply.json()), "I see 1 image(s)");
    assert_eq!(
        gemini.last().body["contents"][0]["parts"][1]["fileData"]["fileUri"],
        "https://example.com/cat.png"
    );

    let keys = format!("{}:secretsecretsecret", bedrock_fake::ACCESS_KEY_ID);
    let upstream = bedrock_fake::start(&keys).await;
    let proxy = proxy_to(bedrock(&upstream.url(), &keys, "amazon.nova-pro-v1:0")).await;
    let reply = responses(&proxy, &tool_ask(true)).await;
    reply.assert_status(200);
    assert_tool_stream(&events(&reply.body));
    let reply = responses(&proxy, &follow_up("tooluse_B1")).await;
    assert_eq!(output_text(&reply.json()), "The tool said: sunny");

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
    let ask = json!({"model": "front-model", "input": "hello"});
    let whole = responses(&proxy, &ask).await.json();
    assert_eq!(whole["usage"]["output_tokens"], 6);
    let mut ask = ask;
    ask["stream"] = true.into();
    let events = events(&responses(&proxy, &ask).await.body);
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert_eq!(text, output_text(&whole));
    assert_eq!(events.last().unwrap().0, "response.completed");
}

#[tokio::test]
async fn a_failing_openai_backend_falls_back_to_anthropic_and_errors_keep_openais_envelope() {
    let openai = responses_fake::start(KEY).await;
    let anthropic = anthropic_fake::start(KEY).await;
    let proxy = TestProxy::start(table(
        vec![
            typed(
                ProviderType::OpenAI,
                &format!("{}/v1", openai.url()),
                KEY,
                "model-x",
            ),
            typed(ProviderType::Anthropic, &anthropic.url(), KEY, "model-x"),
        ],
        "model-x",
    ))
    .await;
    let ask = json!({"model": "front-model", "input": "hello"});
    let reply = responses(&proxy, &ask).await;
    reply.assert_status(200);
    assert_eq!(output_text(&reply.json()), "Hello from openai");
    assert_eq!(
        openai.last().body,
        json!({"model": "model-x", "input": "hello"})
    );

    openai.set(|c| {
        c.fail = Some((
            503,
            json!({"error": {"message": "overloaded", "type": "server_error", "param": null, "code": null}}),
            vec![],
        ))
    });
    let reply = responses(&proxy, &ask).await;
    reply.assert_status(200);
    assert_eq!(output_text(&reply.json()), "Hello from anthropic");
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["retries"], 1, "{line}");

    anthropic.set(|c| {
        c.fail = Some((
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
            vec![("retry-after".into(), "5".into())],
        ))
    });
    let reply = responses(&proxy, &ask).await;
    assert_eq!(
        reply.status,
        429,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(reply.json()["error"]["type"], "rate_limit_error");
    reply.error_code();

    // Stored state reaches the OpenAI backend (still failing here) and is refused by the Anthropic
    // fallback, which cannot translate it, without a request to Anthropic.
    anthropic.set(|c| c.fail = None);
    let seen = anthropic.seen().len();
    let bad = responses(
        &proxy,
        &json!({"model": "front-model", "input": "x", "previous_response_id": "resp_1"}),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "previous_response_id");
    assert_eq!(anthropic.seen().len(), seen);
}
