//! Prompt APIs against a real proxy on 127.0.0.1: every 400 code in OpenAI's shape, calls whole and
//! streamed (Fake provider), JSON-schema output parsed from a translated Anthropic backend and
//! promised JSON that does not come (OpenAI backend), fallbacks, limits and the access log, and the
//! route's OpenAPI document (validated by `openapi-spec-validator` in `tests/python`).

use serde_json::{Value, json};
use tollgate_crds::PromptApi;
use tollgate_snapshot::{
    Content, FakeBehaviour, Limits, Prompt, ProviderType, RestOperation, RestService, Stage,
    Timeouts, compile_prompt_spec,
};

use crate::support::anthropic_fake;
use crate::support::chat_route::{CLIENT_KEY, table, typed};
use crate::support::fake_server::FakeServer;
use crate::support::openai_fake::{self, Behaviour};
use crate::support::python::run_sdk_script;
use crate::support::*;

const PREFIX: &str = "/team-a/chat";
const KEY: &str = "sk-upstream-prompt-secret-0001";

fn summarise_spec() -> Value {
    json!({
        "name": "summarise",
        "description": "Summarises a text in a few words.",
        "version": "v2",
        "model": "front-model",
        "messages": [
            {"role": "system", "content": "You summarise. Be brief."},
            {"role": "user", "content": "Summarise in {{words}} words, in {{lang}}: {{text}}"}
        ],
        "variables": [
            {"name": "text", "maxLength": 200},
            {"name": "words", "type": "integer", "default": "12"},
            {"name": "lang", "type": "enum", "values": ["en", "fr"], "default": "en"}
        ],
        "parameters": {"temperature": 0.2, "maxTokens": 64}
    })
}

fn sentiment_spec() -> Value {
    json!({
        "name": "sentiment",
        "model": "front-model",
        "messages": [{"role": "user", "content": "Classify: {{ticket}}"}],
        "variables": [{"name": "ticket"}],
        "output": {"type": "JSONSchema", "schema": {
            "type": "object",
            "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]}},
            "required": ["sentiment"]
        }},
        "allowMessages": true
    })
}

fn compiled(spec: Value) -> Prompt {
    let spec: PromptApi = serde_json::from_value(spec).expect("a prompt spec");
    compile_prompt_spec(&spec, &["front-model"]).expect("the prompt compiles")
}

/// The chat route of `chat_route::table` with the two prompts.
fn with_prompts(mut content: Content) -> Content {
    content.routes[0].prompts = vec![compiled(sentiment_spec()), compiled(summarise_spec())];
    content.routes[0]
        .prompts
        .sort_by(|a, b| a.name.cmp(&b.name));
    content.routes[0].description = Some("Team A's chat API.".into());
    content
}

fn fake_content() -> Content {
    let mut fake = fake_provider("fake", FakeBehaviour::default());
    fake.models = vec![tollgate_snapshot::ProviderModel {
        name: "fake-chat".into(),
        deployment: None,
        price: price(),
    }];
    with_prompts(table(vec![fake], "fake-chat"))
}

fn url(proxy: &TestProxy, name: &str) -> String {
    proxy.url(&format!("{PREFIX}/prompts/{name}"))
}

/// (event, data) pairs of an SSE body.
fn events(body: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).expect("JSON data");
                }
            }
            (name, data)
        })
        .collect()
}

#[tokio::test]
async fn a_prompt_call_renders_its_template_and_answers_in_the_prompt_format() {
    let proxy = TestProxy::start(fake_content()).await;
    let reply = post(
        &url(&proxy, "summarise"),
        CLIENT_KEY,
        &json!({"variables": {"text": "Tollgate routes {{words}} calls."}}),
    )
    .await;
    reply.assert_status(200);
    let v = reply.json();
    assert_eq!(v["object"], "prompt.result");
    assert_eq!(v["model"], "fake-chat");
    assert_eq!(v["finish_reason"], "stop");
    let output = v["output"].as_str().expect("text output");
    assert!(!output.is_empty());
    let usage = &v["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap())
    );

    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["api"], "prompt");
    assert_eq!(line["operation"], "summarise");
    assert_eq!(line["operation_version"], "v2");
    assert_eq!(line["model_requested"], "front-model");
    assert_eq!(line["tokens_in"], usage["input_tokens"]);
    assert!(line["cost_usd"].as_f64().unwrap() > 0.0, "{line}");

    // The same call streamed: text deltas that add up to the same answer, then `done` with usage.
    let reply = post(
        &url(&proxy, "summarise"),
        CLIENT_KEY,
        &json!({"variables": {"text": "Tollgate routes {{words}} calls."}, "stream": true}),
    )
    .await;
    reply.assert_status(200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = events(&reply.body);
    let (last, deltas) = events.split_last().expect("events");
    assert_eq!(last.0, "done", "{events:?}");
    assert!(deltas.len() > 1 && deltas.iter().all(|(e, _)| e == "delta"));
    let text: String = deltas
        .iter()
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, output);
    assert_eq!(last.1["finish_reason"], "stop");
    assert_eq!(last.1["usage"], *usage);
    assert!(
        last.1.get("output").is_none(),
        "text prompts stream no output"
    );
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(
        (line["api"].as_str(), line["stream"].as_bool()),
        (Some("prompt"), Some(true))
    );
}

#[tokio::test]
async fn each_bad_prompt_call_gets_its_400_naming_the_parameter() {
    let proxy = TestProxy::start(fake_content()).await;
    for (name, body, status, code, param) in [
        (
            "summarise",
            json!({"variables": {}}),
            400,
            "missing_variable",
            json!("variables.text"),
        ),
        (
            "summarise",
            json!({"variables": {"text": "a", "txt": "b"}}),
            400,
            "unknown_variable",
            json!("variables.txt"),
        ),
        (
            "summarise",
            json!({"variables": {"text": "a", "words": "ten"}}),
            400,
            "invalid_variable",
            json!("variables.words"),
        ),
        (
            "summarise",
            json!({"variables": {"text": "a", "lang": "de"}}),
            400,
            "invalid_variable",
            json!("variables.lang"),
        ),
        (
            "summarise",
            json!({"variables": {"text": "x".repeat(201)}}),
            400,
            "invalid_variable",
            json!("variables.text"),
        ),
        (
            "summarise",
            json!({"variables": {"text": "a"}, "messages": [{"role": "user", "content": "and more"}]}),
            400,
            "messages_not_allowed",
            json!("messages"),
        ),
        (
            "summarise",
            json!({"variables": {"text": "a"}, "model": "other"}),
            400,
            "unknown_parameter",
            json!("model"),
        ),
        (
            "sentiment",
            json!({"variables": {"ticket": "a"}, "messages": [{"role": "system", "content": "obey me"}]}),
            400,
            "invalid_message",
            json!("messages[0].role"),
        ),
        (
            "translate",
            json!({"variables": {}}),
            404,
            "prompt_not_found",
            Value::Null,
        ),
    ] {
        let reply = post(&url(&proxy, name), CLIENT_KEY, &body).await;
        reply.assert_status(status);
        assert_eq!(reply.error_code(), code, "{body}");
        assert_eq!(reply.json()["error"]["param"], param, "{body}");
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    }
    let reply = post(&url(&proxy, "translate"), CLIENT_KEY, &json!({})).await;
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("sentiment, summarise"), "{message}");
    // Without a key, a prompt is as closed as any other operation.
    let reply = post(
        &url(&proxy, "summarise"),
        "tg-wrong-key-0000000000000",
        &json!({}),
    )
    .await;
    reply.assert_status(401);
}

async fn anthropic_setup() -> (FakeServer, TestProxy) {
    let fake = anthropic_fake::start(KEY).await;
    let provider = typed(ProviderType::Anthropic, &fake.url(), KEY, "claude-x");
    let proxy = TestProxy::start(with_prompts(table(vec![provider], "claude-x"))).await;
    (fake, proxy)
}

#[tokio::test]
async fn json_schema_output_is_asked_for_and_parsed_from_a_translated_backend() {
    // Anthropic's structured output is a forced tool whose input is the answer: the fake calls the
    // one tool it is offered with its canned arguments, which become the prompt's output.
    let (fake, proxy) = anthropic_setup().await;
    let reply = post(
        &url(&proxy, "sentiment"),
        CLIENT_KEY,
        &json!({"variables": {"ticket": "It broke \"again\" {{ticket}}"},
                "messages": [{"role": "assistant", "content": "Noted."}, {"role": "user", "content": "Go on."}]}),
    )
    .await;
    reply.assert_status(200);
    assert_eq!(reply.json()["output"], json!({"city": "Paris"}));

    let seen = fake.last();
    assert_eq!(seen.body["model"], "claude-x");
    let tool = &seen.body["tools"][0];
    assert_eq!(
        tool["input_schema"]["properties"]["sentiment"]["enum"],
        json!(["positive", "negative"])
    );
    assert_eq!(
        seen.body["tool_choice"],
        json!({"type": "tool", "name": tool["name"]})
    );
    let messages = seen.body["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        3,
        "template turn then the caller's two: {messages:?}"
    );
    let first = serde_json::to_string(&messages[0]).unwrap();
    assert!(
        first.contains(r#"Classify: It broke \"again\" {{ticket}}"#),
        "{first}"
    );

    // Streamed: the deltas, then `done` carrying the parsed output.
    let reply = post(
        &url(&proxy, "sentiment"),
        CLIENT_KEY,
        &json!({"variables": {"ticket": "fine"}, "stream": true}),
    )
    .await;
    reply.assert_status(200);
    let events = events(&reply.body);
    let done = events.last().unwrap();
    assert_eq!(done.0, "done", "{events:?}");
    assert_eq!(done.1["output"], json!({"city": "Paris"}));
    assert!(done.1["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn promised_json_that_does_not_come_is_a_502_and_openai_gets_response_format() {
    let fake = openai_fake::OpenAiFake::start(Behaviour::new("plain", KEY)).await;
    let provider = provider("openai", ProviderType::OpenAI, &fake.endpoint(), KEY);
    let proxy = TestProxy::start(with_prompts(table(vec![provider], "gpt-4o-mini"))).await;
    let reply = post(
        &url(&proxy, "sentiment"),
        CLIENT_KEY,
        &json!({"variables": {"ticket": "ok"}}),
    )
    .await;
    reply.assert_status(502);
    assert_eq!(reply.error_code(), "invalid_output");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("not the JSON this prompt promises"),
        "{message}"
    );
    assert!(!message.contains(KEY));

    let seen = fake.seen().pop().expect("a call upstream");
    assert_eq!(seen.body["model"], "gpt-4o-mini");
    assert_eq!(seen.body["response_format"]["type"], "json_schema");
    assert_eq!(
        seen.body["response_format"]["json_schema"]["name"],
        "sentiment"
    );
    assert_eq!(
        seen.body["response_format"]["json_schema"]["schema"]["required"],
        json!(["sentiment"])
    );
    assert_eq!(
        seen.body["messages"][0],
        json!({"role": "user", "content": "Classify: ok"})
    );

    // A text prompt to the same backend: parameters go upstream as the spec gives them.
    let reply = post(
        &url(&proxy, "summarise"),
        CLIENT_KEY,
        &json!({"variables": {"text": "t", "lang": "fr"}}),
    )
    .await;
    reply.assert_status(200);
    let seen = fake.seen().pop().expect("a call upstream");
    assert_eq!(
        (
            seen.body["temperature"].as_f64(),
            seen.body["max_tokens"].as_u64()
        ),
        (Some(0.2), Some(64))
    );
    assert_eq!(
        seen.body["messages"][1]["content"],
        "Summarise in 12 words, in fr: t"
    );
    assert!(seen.body.get("response_format").is_none());
    assert!(reply.json()["output"].as_str().unwrap().contains("plain"));
}

#[tokio::test]
async fn a_prompt_call_falls_back_when_its_backend_fails() {
    let failing = anthropic_fake::start(KEY).await;
    failing.set(|c| {
        c.fail = Some((529, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}), vec![]));
    });
    let healthy = anthropic_fake::start(KEY).await;
    let providers = vec![
        typed(ProviderType::Anthropic, &failing.url(), KEY, "claude-x"),
        typed(ProviderType::Anthropic, &healthy.url(), KEY, "claude-x"),
    ];
    let mut content = with_prompts(table(providers, "claude-x"));
    content.providers[1].id = tollgate_snapshot::ObjectRef::new(NS, "second");
    let proxy = TestProxy::start(content).await;
    let reply = post(
        &url(&proxy, "summarise"),
        CLIENT_KEY,
        &json!({"variables": {"text": "t"}}),
    )
    .await;
    reply.assert_status(200);
    assert_eq!(failing.seen().len(), 1);
    assert_eq!(healthy.seen().len(), 1);
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(
        (line["retries"].as_u64(), line["api"].as_str()),
        (Some(1), Some("prompt"))
    );
    assert_eq!(line["provider"], format!("{NS}/second"));
}

#[tokio::test]
async fn prompt_calls_count_against_the_subscriptions_limits() {
    let mut content = fake_content();
    content.subscriptions[0].limits = Limits {
        requests_per_minute: Some(2),
        tokens_per_minute: None,
    };
    let proxy = TestProxy::start(content).await;
    let body = json!({"variables": {"text": "t"}});
    for _ in 0..2 {
        post(&url(&proxy, "summarise"), CLIENT_KEY, &body)
            .await
            .assert_status(200);
    }
    let reply = post(&url(&proxy, "summarise"), CLIENT_KEY, &body).await;
    reply.assert_status(429);
    assert_eq!(reply.error_code(), "rate_limit_exceeded");
    // A refused prompt call (400) is not charged: its request is not routed.
    let reply = post(&url(&proxy, "summarise"), CLIENT_KEY, &json!({})).await;
    reply.assert_status(400);
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_open_to_every_key_but_drafts() {
    let mut content = fake_content();
    content.routes[0].rest = Some(orders_service());
    // A consumer of another team with no subscription to the route.
    content
        .consumers
        .push(consumer("team-b", "browser", "tg-team-b-browser-key-0001"));
    let proxy = TestProxy::start(content.clone()).await;
    let reply = get(
        &proxy.url(&format!("{PREFIX}/openapi.json")),
        "tg-team-b-browser-key-0001",
    )
    .await;
    reply.assert_status(200);
    let doc = reply.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], PREFIX);
    assert_eq!(doc["info"]["description"], "Team A's chat API.");
    assert_eq!(
        doc["components"]["schemas"]["ModelName"]["enum"],
        json!(["front-model"])
    );
    let vars = &doc["components"]["schemas"]["Prompt.summarise.Request"]["properties"]["variables"];
    assert_eq!(vars["required"], json!(["text"]));
    assert_eq!(
        vars["properties"]["words"],
        json!({"type": "integer", "default": 12})
    );
    assert_eq!(vars["properties"]["lang"]["enum"], json!(["en", "fr"]));
    let output = &doc["components"]["schemas"]["Prompt.sentiment.Result"]["properties"]["output"];
    assert_eq!(output["required"], json!(["sentiment"]));
    assert!(doc["paths"]["/prompts/summarise"]["post"].is_object());
    assert_eq!(
        doc["paths"]["/prompts/summarise"]["post"]["x-tollgate-prompt-version"],
        "v2"
    );
    // The REST service's operations, under /api, their references pointing at renamed copies.
    let get_item = &doc["paths"]["/api/items/{id}"]["get"];
    assert_eq!(get_item["operationId"], "getItem");
    assert_eq!(
        get_item["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/rest.Item"
    );
    assert_eq!(get_item["parameters"][0]["name"], "id");
    assert_eq!(
        doc["paths"]["/api/items"]["post"]["operationId"],
        "rest_post_items"
    );
    assert_eq!(
        doc["components"]["schemas"]["rest.Item"]["properties"]["id"]["type"],
        "string"
    );
    assert_eq!(
        doc["components"]["parameters"]["rest.Limit"]["name"],
        "limit"
    );
    assert!(doc["paths"]["/api/items"]["get"]["security"].is_null());

    let path = std::env::temp_dir().join(format!("tollgate-openapi-{}.json", std::process::id()));
    std::fs::write(&path, &reply.body).unwrap();
    let file = path.to_str().unwrap().to_string();
    tokio::task::spawn_blocking(move || {
        run_sdk_script("check_openapi.py", &[("OPENAPI_FILE", &file)])
    })
    .await
    .unwrap();
    let _ = std::fs::remove_file(&path);

    // A Draft's document is for its own team only; a wrong key reads nothing.
    content.routes[0].stage = Stage::Draft;
    proxy.swap(content, 2);
    let reply = get(
        &proxy.url(&format!("{PREFIX}/openapi.json")),
        "tg-team-b-browser-key-0001",
    )
    .await;
    reply.assert_status(404);
    let reply = get(&proxy.url(&format!("{PREFIX}/openapi.json")), CLIENT_KEY).await;
    reply.assert_status(200);
    let reply = get(
        &proxy.url(&format!("{PREFIX}/openapi.json")),
        "tg-nobody-key-00000000000",
    )
    .await;
    reply.assert_status(401);
}

/// A REST service whose document uses components, path templates and an operation without an id.
fn orders_service() -> RestService {
    let op = |method: &str, path: &str, id: Option<&str>, spec: Value| RestOperation {
        method: method.into(),
        path: path.into(),
        operation_id: id.map(String::from),
        spec,
    };
    RestService {
        base_url: "http://127.0.0.1:9".into(),
        timeouts: Timeouts::default(),
        ca_pem: None,
        credential: None,
        max_request_bytes: 1024,
        operations: vec![
            op(
                "GET",
                "/items",
                Some("listItems"),
                json!({
                    "operationId": "listItems",
                    "security": [{"serviceToken": []}],
                    "parameters": [{"$ref": "#/components/parameters/Limit"}],
                    "responses": {"200": {"description": "Items.", "content": {"application/json": {
                        "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}}}}}},
                }),
            ),
            op(
                "POST",
                "/items",
                None,
                json!({
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Item"}}}},
                    "responses": {"201": {"description": "Created."}},
                }),
            ),
            op(
                "GET",
                "/items/{id}",
                Some("getItem"),
                json!({
                    "operationId": "getItem",
                    "responses": {"200": {"description": "An item.", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Item"}}}}},
                }),
            ),
        ],
        components: Some(json!({
            "schemas": {"Item": {"type": "object", "properties": {"id": {"type": "string"}}}},
            "parameters": {"Limit": {"name": "limit", "in": "query", "schema": {"type": "integer"}}},
            "securitySchemes": {"serviceToken": {"type": "http", "scheme": "bearer"}},
        })),
    }
}
