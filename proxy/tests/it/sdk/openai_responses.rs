//! The official `openai` Python package's Responses API (`client.responses.create`, streamed, the
//! stream helper, a function tool round trip, JSON-schema output, stored state) against
//! `<prefix>/v1/responses`, served once by an OpenAI backend (passed through) and once by an Anthropic
//! backend (translated). The venv (`tests/python/ensure_venv.sh`) is created on first use; a missing
//! python3 or a failed install fails this test rather than skipping it.

use tollgate_snapshot::ProviderType;

use crate::support::chat_route::{CLIENT_KEY, proxy_to, typed};
use crate::support::python::run_sdk_script;
use crate::support::{TestProxy, anthropic_fake, responses_fake};

const KEY: &str = "upstream-key-for-the-responses-sdk-test";

/// Runs the SDK script off the runtime's threads: the proxy it calls is served by this runtime.
async fn run_sdk(proxy: &TestProxy, expect: &str, stored: bool) {
    let base_url = proxy.url("/team-a/chat/v1");
    let expect = expect.to_string();
    tokio::task::spawn_blocking(move || {
        run_sdk_script(
            "test_responses_sdk.py",
            &[
                ("TOLLGATE_BASE_URL", &base_url),
                ("TOLLGATE_KEY", CLIENT_KEY),
                ("EXPECT_TEXT", &expect),
                ("STORED", if stored { "yes" } else { "no" }),
            ],
        )
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_responses_sdk_against_openai_and_anthropic_backends() {
    let openai = responses_fake::start(KEY).await;
    let proxy = proxy_to(typed(
        ProviderType::OpenAI,
        &format!("{}/v1", openai.url()),
        KEY,
        "gpt-4.1",
    ))
    .await;
    run_sdk(&proxy, "Hello from openai", true).await;
    let seen = openai.seen();
    assert!(seen.len() >= 8, "{} requests reached OpenAI", seen.len());
    assert!(seen.iter().all(|s| s.path == "/v1/responses"));
    assert!(seen.iter().all(|s| s.body["model"] == "gpt-4.1"));
    // Passed through: the caller's own fields arrive, `store` included.
    assert!(seen.iter().any(|s| s.body["store"] == true));
    let lines = proxy.log_lines();
    let ok: Vec<_> = lines.iter().filter(|l| l["status"] == 200).collect();
    assert!(ok.len() >= 8, "{lines:?}");
    for l in &ok {
        assert_eq!(l["tokens_in"], responses_fake::USAGE.0, "{l}");
        assert_eq!(l["tokens_out"], responses_fake::USAGE.1, "{l}");
        assert!(l["cost_usd"].as_f64().unwrap() > 0.0, "{l}");
    }

    let anthropic = anthropic_fake::start(KEY).await;
    let proxy = proxy_to(typed(
        ProviderType::Anthropic,
        &anthropic.url(),
        KEY,
        "claude-x",
    ))
    .await;
    run_sdk(&proxy, "Hello from anthropic", false).await;
    let seen = anthropic.seen();
    assert!(seen.len() >= 7, "{} requests reached Anthropic", seen.len());
    assert!(seen.iter().all(|s| s.path == "/v1/messages"));
    let lines = proxy.log_lines();
    let ok: Vec<_> = lines.iter().filter(|l| l["status"] == 200).collect();
    assert!(ok.len() >= 7, "{lines:?}");
    let (input, output, read, write) = anthropic_fake::USAGE;
    for l in &ok {
        assert_eq!(l["tokens_in"], input + read + write, "{l}");
        assert_eq!(l["tokens_out"], output, "{l}");
    }
    // Refused before reaching any backend: stored state cannot be translated.
    assert!(
        lines
            .iter()
            .any(|l| l["status"] == 400 && l["error_class"] == "unsupported_parameter"),
        "{lines:?}"
    );
}
