//! The official `anthropic` Python package as the client of `<prefix>/v1/messages`, served once by an
//! Anthropic backend (passthrough) and once by an OpenAI backend (translated): text, streaming, a
//! tool call, `messages.count_tokens` (counted by Anthropic, estimated for OpenAI) and the caller's
//! `anthropic-beta` and `anthropic-version` headers, which pass through to Anthropic, and a
//! thinking-enabled stream (thinking blocks kept from Anthropic, made from `reasoning_content`). The venv (`tests/python/ensure_venv.sh`) is created on first use; a missing
//! python3 or a failed install fails this test rather than skipping it.

use tollgate_snapshot::ProviderType;

use crate::support::chat_route::{CLIENT_KEY, proxy_to, typed};
use crate::support::python::run_sdk_script;
use crate::support::{TestProxy, anthropic_fake, azure_fake};

const KEY: &str = "upstream-key-for-the-sdk-test";

/// Runs the SDK script off the runtime's threads: the proxy it calls is served by this runtime.
async fn run_sdk(proxy: &TestProxy, expect: &str, counted: &str) {
    let base_url = proxy.url("/team-a/chat");
    let expect = expect.to_string();
    let counted = counted.to_string();
    tokio::task::spawn_blocking(move || {
        run_sdk_script(
            "test_anthropic_sdk.py",
            &[
                ("TOLLGATE_BASE_URL", &base_url),
                ("TOLLGATE_KEY", CLIENT_KEY),
                ("EXPECT_TEXT", &expect),
                ("COUNTED_TOKENS", &counted),
            ],
        )
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_python_sdk_against_anthropic_and_openai_backends() {
    let anthropic = anthropic_fake::start(KEY).await;
    let proxy = proxy_to(typed(
        ProviderType::Anthropic,
        &anthropic.url(),
        KEY,
        "claude-x",
    ))
    .await;
    // One message and one tool, as the fake counts them.
    run_sdk(&proxy, "Hello from anthropic", "110").await;
    let seen = anthropic.seen();
    assert!(seen.len() >= 7);
    let count = seen
        .iter()
        .find(|s| s.path == "/v1/messages/count_tokens")
        .expect("count_tokens reached Anthropic");
    assert_eq!(count.body["model"], "claude-x");
    assert_eq!(count.body["system"], "Be brief.");
    // The caller's Anthropic headers go with its requests, as they came.
    assert!(seen.iter().all(|s| s.header("anthropic-version").is_some()));
    let beta = seen
        .iter()
        .find(|s| s.header("anthropic-beta") == Some("token-efficient-tools-2025-02-19"))
        .expect("anthropic-beta reached Anthropic");
    assert_eq!(beta.header("anthropic-version"), Some("2023-01-01"));

    let openai = azure_fake::start_openai(KEY).await;
    let proxy = proxy_to(typed(
        ProviderType::OpenAI,
        &format!("{}/v1", openai.url()),
        KEY,
        "gpt-4o",
    ))
    .await;
    run_sdk(&proxy, "Hello from openai", "estimated").await;
    // Thinking with a budget of 2,048 tokens asks the reasoning backend for low effort.
    assert!(
        openai
            .seen()
            .iter()
            .any(|s| s.body["reasoning_effort"] == "low")
    );
    assert!(openai.seen().len() >= 5);
}
