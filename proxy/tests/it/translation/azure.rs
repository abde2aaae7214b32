//! OpenAI-format callers served by Azure OpenAI (a fake of its deployment URLs): the deployment and
//! `api-version` in the URL, the `api-key` header, chat, streaming, tool calls and embeddings.

use serde_json::json;
use tollgate_snapshot::ProviderType;

use crate::support::azure_fake;
use crate::support::chat_route::*;
use crate::support::fake_server::FakeServer;
use crate::support::*;

const KEY: &str = "azure-upstream-key-0123456789abcdef";

async fn setup() -> (FakeServer, TestProxy) {
    let fake = azure_fake::start(KEY).await;
    let mut p = typed(ProviderType::AzureOpenAI, &fake.url(), KEY, "gpt-4o");
    p.models[0].deployment = Some("prod-gpt4o".into());
    p.azure_api_version = Some("2024-10-21".into());
    let proxy = TestProxy::start(table(vec![p], "gpt-4o")).await;
    (fake, proxy)
}

#[tokio::test]
async fn chat_goes_to_the_deployment_with_api_key_and_version() {
    let (fake, proxy) = setup().await;
    let ask = json!({"model": "front-model", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.1});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    reply.assert_status(200);
    let seen = fake.last();
    assert_eq!(seen.path, "/openai/deployments/prod-gpt4o/chat/completions");
    assert_eq!(seen.query, "api-version=2024-10-21");
    assert_eq!(seen.header("api-key"), Some(KEY));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(
        seen.body,
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.1})
    );
    let body = reply.json();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from azure");
    assert_eq!(body["model"], "prod-gpt4o@2024-10-21");
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(
        (line["tokens_in"].as_u64(), line["tokens_out"].as_u64()),
        (Some(13), Some(6))
    );
}

#[tokio::test]
async fn streaming_and_tool_calls() {
    let (fake, proxy) = setup().await;
    let ask = json!({"model": "front-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    assert_eq!(
        fake.last().body["stream_options"],
        json!({"include_usage": true})
    );
    let chunks = openai_chunks(&reply.body);
    assert_eq!(chunk_text(&chunks), "Hello from azure");
    assert!(
        chunks
            .iter()
            .all(|c| c.is_string() || !c["choices"].as_array().unwrap().is_empty()),
        "the usage chunk the client did not ask for is stripped"
    );
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["tokens_in"], 13);

    let ask = json!({"model": "front-model", "stream": true, "messages": [{"role": "user", "content": "weather?"}],
                     "tools": [{"type": "function", "function": {"name": "get_weather"}}]});
    let chunks = openai_chunks(&post(&proxy.url(CHAT), CLIENT_KEY, &ask).await.body);
    assert_eq!(
        assembled_tool_calls(&chunks),
        vec![(
            "call_az1".into(),
            "get_weather".into(),
            "{\"city\":\"Paris\"}".into()
        )]
    );
}

#[tokio::test]
async fn embeddings_and_errors() {
    let (fake, proxy) = setup().await;
    let reply = post(
        &proxy.url(EMBEDDINGS),
        CLIENT_KEY,
        &json!({"model": "front-model", "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        fake.last().path,
        "/openai/deployments/prod-gpt4o/embeddings"
    );
    assert_eq!(reply.json()["data"].as_array().unwrap().len(), 2);

    fake.set(|c| c.key = "rotated".into());
    let ask = json!({"model": "front-model", "messages": [{"role": "user", "content": "hi"}]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_code(), "upstream_auth_failed");

    fake.set(|c| {
        c.key = KEY.into();
        c.fail = Some((429, json!({"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation have exceeded the token rate limit."}}),
            vec![("retry-after".into(), "9".into())]));
    });
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("9"));
}
