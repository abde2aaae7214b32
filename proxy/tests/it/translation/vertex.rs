//! Vertex AI providers against fakes of Vertex and of Google's token endpoint: golden requests and
//! answers for both model families (Gemini through `generateContent`, Claude through `rawPredict`),
//! streamed and whole; the service account's signed JWT exchanged for an access token that is kept,
//! and replaced five minutes before it expires (shown with a manual clock); and a credential the token
//! endpoint refuses answered 502 without quoting the key, the JWT or the endpoint's words.

use serde_json::{Value, json};
use tollgate_proxy::{Clock, ProxyConfig};
use tollgate_snapshot::{AuthScheme, ProviderType, VertexTarget};

use crate::support::chat_route::*;
use crate::support::vertex_fake::{self, EMAIL, PROJECT, REGION, VertexFakes};
use crate::support::*;

const GEMINI: &str = "gemini-2.5-flash";
const CLAUDE: &str = "claude-sonnet-4-5@20250929";
const T0_MS: i64 = 1_800_000_000_000;

async fn setup(model: &str) -> (VertexFakes, TestProxy, Clock) {
    let fakes = vertex_fake::start().await;
    let clock = Clock::manual(T0_MS);
    let mut p = typed(
        ProviderType::VertexAi,
        &fakes.vertex.url(),
        &vertex_fake::key_json(),
        model,
    );
    // As the snapshot compiler gives it: the key itself goes in no header.
    p.auth = AuthScheme {
        header: String::new(),
        prefix: String::new(),
    };
    p.vertex = Some(VertexTarget {
        project: PROJECT.into(),
        region: REGION.into(),
        token_endpoint: fakes.token_url.clone(),
    });
    let config = ProxyConfig {
        token_clock: clock.clone(),
        ..test_config()
    };
    let proxy = TestProxy::start_with(config, Some(table(vec![p], model))).await;
    (fakes, proxy, clock)
}

fn path(publisher: &str, model: &str, method: &str) -> String {
    format!(
        "/v1/projects/{PROJECT}/locations/{REGION}/publishers/{publisher}/models/{model}:{method}"
    )
}

fn ask(stream: bool) -> Value {
    json!({
        "model": "front-model",
        "stream": stream,
        "max_tokens": 200,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."}
        ]
    })
}

#[tokio::test]
async fn gemini_models_are_called_through_generate_content_with_an_access_token() {
    let (fakes, proxy, _clock) = setup(GEMINI).await;
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask(false)).await;
    reply.assert_status(200);
    let seen = fakes.vertex.last();
    assert_eq!(seen.path, path("google", GEMINI, "generateContent"));
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer ya29.test-token-1")
    );
    assert_eq!(
        seen.body,
        json!({
            "contents": [{"role": "user", "parts": [{"text": "Say hello."}]}],
            "systemInstruction": {"parts": [{"text": "You are terse."}]},
            "generationConfig": {"maxOutputTokens": 200}
        })
    );
    let mut body = reply.json();
    normalize(&mut body);
    assert_eq!(
        body,
        json!({
            "object": "chat.completion",
            "model": GEMINI,
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello from vertex", "refusal": null}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27,
                      "prompt_tokens_details": {"cached_tokens": 4}}
        })
    );

    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask(true)).await;
    reply.assert_status(200);
    let seen = fakes.vertex.last();
    assert_eq!(seen.path, path("google", GEMINI, "streamGenerateContent"));
    assert_eq!(seen.query, "alt=sse");
    assert_eq!(streamed_text(&reply.body), "Hello from vertex");
    // Both calls went out with the one token.
    assert_eq!(fakes.grants().len(), 1);
}

#[tokio::test]
async fn claude_models_are_called_through_raw_predict_with_the_vertex_version_in_the_body() {
    let (fakes, proxy, _clock) = setup(CLAUDE).await;
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask(false)).await;
    reply.assert_status(200);
    let seen = fakes.vertex.last();
    assert_eq!(seen.path, path("anthropic", CLAUDE, "rawPredict"));
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer ya29.test-token-1")
    );
    assert_eq!(seen.header("anthropic-version"), None);
    assert_eq!(
        seen.body,
        json!({
            "anthropic_version": "vertex-2023-10-16",
            "max_tokens": 200,
            "system": "You are terse.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}]
        })
    );
    let mut body = reply.json();
    normalize(&mut body);
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from vertex"
    );
    assert_eq!(body["model"], CLAUDE);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 100);

    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask(true)).await;
    reply.assert_status(200);
    let seen = fakes.vertex.last();
    assert_eq!(seen.path, path("anthropic", CLAUDE, "streamRawPredict"));
    assert_eq!(seen.body["stream"], true);
    assert_eq!(streamed_text(&reply.body), "Hello from vertex");

    // An Anthropic caller's own request goes as it came, thinking and all, in Vertex's form.
    let messages = json!({
        "model": "front-model",
        "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Say hello.", "cache_control": {"type": "ephemeral"}}]}]
    });
    let reply = post(&proxy.url(MESSAGES), CLIENT_KEY, &messages).await;
    reply.assert_status(200);
    let seen = fakes.vertex.last();
    assert_eq!(seen.path, path("anthropic", CLAUDE, "rawPredict"));
    let mut want = messages.clone();
    want.as_object_mut().unwrap().remove("model");
    want["anthropic_version"] = "vertex-2023-10-16".into();
    assert_eq!(seen.body, want);
    assert_eq!(reply.json()["type"], "message");
    assert_eq!(fakes.grants().len(), 1);
}

#[tokio::test]
async fn the_access_token_is_kept_and_replaced_five_minutes_before_it_expires() {
    let (fakes, proxy, clock) = setup(GEMINI).await;
    fakes.tokens.lock().unwrap().expires_in = 3600;
    post(&proxy.url(CHAT), CLIENT_KEY, &ask(false))
        .await
        .assert_status(200);
    let grants = fakes.grants();
    assert_eq!(grants.len(), 1);
    // The JWT was issued by the proxy's clock, for an hour.
    assert_eq!(grants[0].claims["iat"], T0_MS / 1000);
    assert_eq!(grants[0].claims["exp"], T0_MS / 1000 + 3600);
    assert_eq!(grants[0].claims["iss"], EMAIL);

    // 54 minutes 59 seconds on, the token has just over five minutes left: still used.
    clock.advance((3600 - 300 - 1) * 1000);
    post(&proxy.url(CHAT), CLIENT_KEY, &ask(false))
        .await
        .assert_status(200);
    assert_eq!(fakes.grants().len(), 1);
    assert_eq!(
        fakes.vertex.last().header("authorization"),
        Some("Bearer ya29.test-token-1")
    );

    // A second later it is replaced, and the new token is the one sent (Vertex takes no other now).
    clock.advance(1000);
    post(&proxy.url(CHAT), CLIENT_KEY, &ask(false))
        .await
        .assert_status(200);
    let grants = fakes.grants();
    assert_eq!(grants.len(), 2);
    assert_eq!(grants[1].claims["iat"], (T0_MS + 3_300_000) / 1000);
    assert_eq!(grants[1].token, "ya29.test-token-2");
    assert_eq!(
        fakes.vertex.last().header("authorization"),
        Some("Bearer ya29.test-token-2")
    );
    post(&proxy.url(CHAT), CLIENT_KEY, &ask(true))
        .await
        .assert_status(200);
    assert_eq!(fakes.grants().len(), 2);
}

#[tokio::test]
async fn a_refused_credential_is_a_502_that_quotes_neither_the_key_nor_the_jwt() {
    let (fakes, proxy, _clock) = setup(CLAUDE).await;
    fakes.tokens.lock().unwrap().refuse = true;
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask(false)).await;
    reply.assert_status(502);
    assert_eq!(reply.error_code(), "upstream_auth_failed");
    let body = String::from_utf8_lossy(&reply.body).to_string();
    assert!(
        body.contains("refused its service-account key (invalid_grant)"),
        "{body}"
    );
    // Vertex itself was never called.
    assert!(fakes.vertex.seen().is_empty());
    let assertions = fakes.assertions.lock().unwrap().clone();
    assert_eq!(assertions.len(), 1);
    let key_lines: Vec<&str> = vertex_fake::PEM
        .lines()
        .filter(|l| l.len() > 40 && !l.contains(' '))
        .collect();
    assert!(key_lines.len() > 10);
    let log = serde_json::to_string(&proxy.log_line_of(&reply.request_id()).await).unwrap();
    let metrics = get(&proxy.admin_url("/metrics"), "").await;
    let metrics = String::from_utf8_lossy(&metrics.body).to_string();
    for (what, text) in [
        ("answer", &body),
        ("access log", &log),
        ("metrics", &metrics),
    ] {
        for line in &key_lines {
            assert!(!text.contains(line), "the {what} quotes the private key");
        }
        let signature = assertions[0].rsplit('.').next().unwrap();
        assert!(!text.contains(signature), "the {what} quotes the JWT");
        assert!(
            !text.contains("Invalid JWT"),
            "the {what} quotes the endpoint"
        );
    }

    // Accepted again, the pool's only key (resting, but the one that rests least) gets a token.
    fakes.tokens.lock().unwrap().refuse = false;
    post(&proxy.url(CHAT), CLIENT_KEY, &ask(false))
        .await
        .assert_status(200);
    assert_eq!(fakes.grants().len(), 1);
}

#[tokio::test]
async fn an_access_token_vertex_refuses_is_a_502_and_the_next_call_gets_a_new_one() {
    let (fakes, proxy, _clock) = setup(GEMINI).await;
    post(&proxy.url(CHAT), CLIENT_KEY, &ask(false))
        .await
        .assert_status(200);
    // Vertex stops taking the token (revoked): the caller gets the gateway's own words.
    fakes.vertex.set(|c| c.key = "revoked".into());
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &ask(false)).await;
    reply.assert_status(502);
    assert_eq!(reply.error_code(), "upstream_auth_failed");
    let body = String::from_utf8_lossy(&reply.body).to_string();
    assert!(!body.contains("ya29"), "{body}");
    assert_eq!(fakes.grants().len(), 1);
    // The refused token is not sent again: the next call fetches a new one, which Vertex takes.
    post(&proxy.url(CHAT), CLIENT_KEY, &ask(false))
        .await
        .assert_status(200);
    assert_eq!(fakes.grants().len(), 2);
    assert_eq!(
        fakes.vertex.last().header("authorization"),
        Some("Bearer ya29.test-token-2")
    );
}

/// The text of a streamed OpenAI answer.
fn streamed_text(body: &[u8]) -> String {
    openai_chunks(body)
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}
