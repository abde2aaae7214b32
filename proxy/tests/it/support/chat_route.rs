//! One chat route in front of providers of any type: the providers with the auth scheme the snapshot
//! compiler gives each type, the one-route table and a proxy serving it, and readers for both
//! callers' stream formats.

use serde_json::Value;
use tollgate_snapshot::{
    AuthScheme, Content, Credential, Phase, Provider, ProviderModel, ProviderType,
};

use super::bedrock_fake::REGION;
use super::{NS, TestProxy, backend, consumer, model, price, provider, route, subscription};

pub const CLIENT_KEY: &str = "tg-client-key-translate";
/// The provider keys of [`failing_primary_and_fallback`]'s two fakes.
pub const PRIMARY_KEY: &str = "sk-primary-secret-1111";
pub const FALLBACK_KEY: &str = "sk-fallback-secret-2222";
pub const CHAT: &str = "/team-a/chat/v1/chat/completions";
pub const MESSAGES: &str = "/team-a/chat/v1/messages";
pub const EMBEDDINGS: &str = "/team-a/chat/v1/embeddings";

/// A provider of `provider_type` at `endpoint` with the auth header the snapshot compiler gives it.
pub fn typed(provider_type: ProviderType, endpoint: &str, key: &str, model_name: &str) -> Provider {
    let (header, prefix) = match provider_type {
        ProviderType::Anthropic => ("x-api-key", ""),
        ProviderType::Gemini => ("x-goog-api-key", ""),
        ProviderType::AzureOpenAI => ("api-key", ""),
        _ => ("authorization", "Bearer "),
    };
    // Built from the shared helper so fields added to `Provider` get their defaults there.
    let mut p = provider("upstream", provider_type, endpoint, key);
    p.auth = AuthScheme {
        header: header.into(),
        prefix: prefix.into(),
    };
    p.credentials = vec![Credential(key.to_string())];
    p.models = vec![ProviderModel {
        name: model_name.into(),
        deployment: None,
        price: price(),
    }];
    p
}

/// A Bedrock provider in the fakes' region.
pub fn bedrock(endpoint: &str, credential: &str, model_name: &str) -> Provider {
    let mut p = typed(ProviderType::Bedrock, endpoint, credential, model_name);
    p.bedrock_region = Some(REGION.into());
    p
}

/// Route `/team-a/chat` whose `front-model` goes to the providers' `upstream_model`: the first
/// weighted, the rest as fallbacks.
pub fn table(providers: Vec<Provider>, upstream_model: &str) -> Content {
    let fallbacks = (1..providers.len() as u32)
        .map(|i| backend(i, upstream_model))
        .collect();
    Content {
        routes: vec![route(
            NS,
            "chat",
            "/team-a/chat",
            vec![model(
                "front-model",
                vec![backend(0, upstream_model)],
                fallbacks,
            )],
        )],
        providers,
        consumers: vec![consumer(NS, "app", CLIENT_KEY)],
        subscriptions: vec![subscription("app-chat", 0, 0, Phase::Approved)],
        ..Content::default()
    }
}

/// A proxy serving `table` of one provider, whose first model is the upstream model.
pub async fn proxy_to(provider: Provider) -> TestProxy {
    let upstream_model = provider.models[0].name.clone();
    TestProxy::start(table(vec![provider], &upstream_model)).await
}

/// OpenAI chunks of an SSE body (`[DONE]` as a string), with `id` and `created` removed.
pub fn openai_chunks(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let data = e
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event without data: {e:?}"));
            let mut v: Value =
                serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.into()));
            normalize(&mut v);
            v
        })
        .collect()
}

/// Anthropic events of an SSE body as (event name, data).
pub fn anthropic_events(body: &[u8]) -> Vec<(String, Value)> {
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
                    data = serde_json::from_str(d).expect("event data is JSON");
                }
            }
            assert_eq!(
                data["type"],
                name.as_str(),
                "event name matches data type in {e:?}"
            );
            (name, data)
        })
        .collect()
}

/// Removes the fields that change on every call.
pub fn normalize(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
        o.remove("created");
    }
}

/// Tool calls assembled from OpenAI chunks: (id, name, arguments).
pub fn assembled_tool_calls(chunks: &[Value]) -> Vec<(String, String, String)> {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for c in chunks {
        for tc in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().unwrap() as usize;
            if calls.len() <= i {
                calls.resize(i + 1, Default::default());
            }
            if let Some(id) = tc["id"].as_str() {
                calls[i].0 = id.into();
            }
            if let Some(n) = tc["function"]["name"].as_str() {
                calls[i].1.push_str(n);
            }
            if let Some(a) = tc["function"]["arguments"].as_str() {
                calls[i].2.push_str(a);
            }
        }
    }
    calls
}

/// The text of OpenAI chunks.
pub fn chunk_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// An OpenAI fake that answers 503 (the primary) and one that answers (the fallback), and the chat
/// route's table over the two, the primary first: a call that falls back once.
pub async fn failing_primary_and_fallback() -> (
    super::openai_fake::OpenAiFake,
    super::openai_fake::OpenAiFake,
    Content,
) {
    use super::openai_fake::{Behaviour, OpenAiFake};
    let mut failing = Behaviour::new("primary", PRIMARY_KEY);
    failing.fail_with = Some(503);
    let primary = OpenAiFake::start(failing).await;
    let fallback = OpenAiFake::start(Behaviour::new("fallback", FALLBACK_KEY)).await;
    let content = table(
        vec![
            typed(
                ProviderType::OpenAI,
                &primary.endpoint(),
                PRIMARY_KEY,
                "gpt-up",
            ),
            typed(
                ProviderType::OpenAI,
                &fallback.endpoint(),
                FALLBACK_KEY,
                "gpt-up",
            ),
        ],
        "gpt-up",
    );
    (primary, fallback, content)
}
