//! The official `anthropic` Python package as the client of `<prefix>/v1/messages`, served once by an
//! Anthropic backend (passthrough) and once by an OpenAI backend (translated): text, streaming and a
//! tool call each way. The venv (`tests/python/ensure_venv.sh`) is created on first use; a missing
//! python3 or a failed install fails this test rather than skipping it.

use std::path::Path;
use std::time::Duration;

use tollgate_snapshot::ProviderType;

use crate::support::chat_route::*;
use crate::support::{TestProxy, anthropic_fake, azure_fake};

const KEY: &str = "upstream-key-for-the-sdk-test";

async fn python() -> String {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new("bash")
        .arg(manifest.join("tests/python/ensure_venv.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .expect("bash runs");
    assert!(
        out.status.success(),
        "could not prepare a Python venv with the anthropic package (python3 and PyPI are required)"
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn run_sdk(python: &str, proxy: &TestProxy, expect: &str) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = tokio::process::Command::new(python)
        .arg(manifest.join("tests/python/test_anthropic_sdk.py"))
        .env("TOLLGATE_BASE_URL", proxy.url("/team-a/chat"))
        .env("TOLLGATE_KEY", CLIENT_KEY)
        .env("EXPECT_TEXT", expect)
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .kill_on_drop(true)
        .spawn()
        .expect("run python");
    let status = tokio::time::timeout(Duration::from_secs(180), child.wait())
        .await
        .expect("the SDK checks finish within 180s")
        .unwrap();
    assert!(
        status.success(),
        "the Anthropic SDK checks failed (see output above)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_python_sdk_against_anthropic_and_openai_backends() {
    let python = python().await;

    let anthropic = anthropic_fake::start(KEY).await;
    let proxy = proxy_to(typed(
        ProviderType::Anthropic,
        &anthropic.url(),
        KEY,
        "claude-x",
    ))
    .await;
    run_sdk(&python, &proxy, "Hello from anthropic").await;
    assert!(anthropic.seen().len() >= 5);

    let openai = azure_fake::start_openai(KEY).await;
    let proxy = proxy_to(typed(
        ProviderType::OpenAI,
        &format!("{}/v1", openai.url()),
        KEY,
        "gpt-4o",
    ))
    .await;
    run_sdk(&python, &proxy, "Hello from openai").await;
    assert!(openai.seen().len() >= 5);
}
