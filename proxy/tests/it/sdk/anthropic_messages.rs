//! The official `anthropic` Python package as the client of `<prefix>/v1/messages`, served once by an
//! Anthropic backend (passthrough) and once by an OpenAI backend (translated): text, streaming and a
//! tool call each way. The venv (`tests/python/ensure_venv.sh`) is created on first use; a missing
//! python3 or a failed install fails this test rather than skipping it.

use tollgate_snapshot::ProviderType;

use crate::support::chat_route::{CLIENT_KEY, proxy_to, typed};
use crate::support::python::run_sdk_script;
use crate::support::{TestProxy, anthropic_fake, azure_fake};

const KEY: &str = "upstream-key-for-the-sdk-test";

/// Runs the SDK script off the runtime's threads: the proxy it calls is served by this runtime.
async fn run_sdk(proxy: &TestProxy, expect: &str) {
    let base_url = proxy.url("/team-a/chat");
    let expect = expect.to_string();
    tokio::task::spawn_blocking(move || {
        run_sdk_script(
            "test_anthropic_sdk.py",
            &[
                ("TOLLGATE_BASE_URL", &base_url),
                ("TOLLGATE_KEY", CLIENT_KEY),
                ("EXPECT_TEXT", &expect),
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
    run_sdk(&proxy, "Hello from anthropic").await;
    assert!(anthropic.seen().len() >= 5);

    let openai = azure_fake::start_openai(KEY).await;
    let proxy = proxy_to(typed(
        ProviderType::OpenAI,
        &format!("{}/v1", openai.url()),
        KEY,
        "gpt-4o",
    ))
    .await;
    run_sdk(&proxy, "Hello from openai").await;
    assert!(openai.seen().len() >= 5);
}
