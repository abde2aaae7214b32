//! Keys, route lifecycle, subscriptions, paths, models and request limits, each with its status and
//! OpenAI error code. Served by the in-process Fake provider, so no upstream is involved.

use http::Method;
use serde_json::{Value, json};
use tollgate_proxy::{Clock, ProxyConfig, RequestLimits};
use tollgate_snapshot::{ConsumerKey, Content, FakeBehaviour, KeyDigest, Phase, Stage};

use crate::support::*;

const PUB: u32 = 0;
const DRAFT: u32 = 1;
const RETIRED: u32 = 2;
const DEPRECATED: u32 = 3;
const SUNSET: i64 = 1_900_000_000;
const DEPRECATED_SINCE: i64 = 1_767_225_600;

fn table() -> Content {
    let models = || {
        vec![
            model("fake-chat", vec![backend(0, "fake-chat-upstream")], vec![]),
            model(
                "fake-embed",
                vec![backend(0, "fake-embed-upstream")],
                vec![],
            ),
        ]
    };
    let mut draft = route(NS, "draft", "/team-a/draft", models());
    draft.stage = Stage::Draft;
    let mut retired = route(NS, "old", "/team-a/old", vec![]);
    retired.stage = Stage::Retired;
    let mut deprecated = route(NS, "dep", "/team-a/dep", models());
    deprecated.stage = Stage::Deprecated;
    deprecated.sunset_unix = Some(SUNSET);
    deprecated.deprecation_unix = Some(DEPRECATED_SINCE);
    let mut expired = consumer(NS, "expired", "k-expired");
    expired.keys.push(ConsumerKey {
        name: "old".into(),
        digest: KeyDigest::of(b"k-expired-old"),
        expires_unix: Some(1_000),
    });
    Content {
        providers: vec![fake_provider(
            "fake",
            FakeBehaviour {
                completion_tokens: 5,
                stream_chunks: 5,
                ..FakeBehaviour::default()
            },
        )],
        routes: vec![
            route(NS, "pub", "/team-a/pub", models()),
            draft,
            retired,
            deprecated,
        ],
        consumers: vec![
            consumer(NS, "app", "k-app"),
            consumer("team-b", "other", "k-other"),
            expired,
            consumer("team-b", "pending", "k-pending"),
            consumer("team-b", "rejected", "k-rejected"),
            consumer("team-b", "revoked", "k-revoked"),
            consumer("team-b", "invalid", "k-invalid"),
            consumer("team-b", "nosub", "k-nosub"),
        ],
        subscriptions: vec![
            subscription("app-pub", 0, PUB, Phase::Approved),
            subscription("app-draft", 0, DRAFT, Phase::Approved),
            subscription("app-old", 0, RETIRED, Phase::Approved),
            subscription("app-dep", 0, DEPRECATED, Phase::Approved),
            subscription("other-pub", 1, PUB, Phase::Approved),
            subscription("other-draft", 1, DRAFT, Phase::Approved),
            subscription("pending", 3, PUB, Phase::Pending),
            subscription("rejected", 4, PUB, Phase::Rejected),
            subscription("revoked", 5, PUB, Phase::Revoked),
            subscription("invalid", 6, PUB, Phase::Invalid),
        ],
        proxy_replicas: 0,
    }
}

fn chat_body() -> Value {
    json!({"model": "fake-chat", "messages": [{"role": "user", "content": "hello"}]})
}

/// A rotated generated key: its previous value (same key name, expiring when the rotation's grace
/// ends, as the compiler writes it) is accepted up to the last second of the grace and refused from
/// its end on, while the new value goes on; the proxy's key clock decides.
#[tokio::test]
async fn a_rotated_keys_previous_value_is_cut_when_its_grace_ends() {
    const GRACE_ENDS: i64 = 1_900_000_000;
    let mut content = table();
    let app = &mut content.consumers[0];
    app.keys[0].name = "gen".into();
    app.keys.push(ConsumerKey {
        name: "gen".into(),
        digest: KeyDigest::of(b"k-app-before-rotation"),
        expires_unix: Some(GRACE_ENDS),
    });
    let clock = Clock::manual((GRACE_ENDS - 1) * 1_000);
    let config = ProxyConfig {
        key_clock: clock.clone(),
        ..test_config()
    };
    let proxy = TestProxy::start_with(config, Some(content)).await;
    let url = proxy.url("/team-a/pub/v1/chat/completions");
    let body = chat_body();
    for key in ["k-app", "k-app-before-rotation"] {
        assert_eq!(
            post(&url, key, &body).await.status,
            200,
            "{key} within the grace"
        );
    }
    // 999 ms later it is still the grace's last second.
    clock.advance(999);
    assert_eq!(post(&url, "k-app-before-rotation", &body).await.status, 200);
    clock.advance(1);
    let old = post(&url, "k-app-before-rotation", &body).await;
    assert_eq!(
        (old.status.as_u16(), old.error_code().as_str()),
        (401, "invalid_api_key")
    );
    assert_eq!(old.json()["error"]["message"], "This API key has expired.");
    assert_eq!(post(&url, "k-app", &body).await.status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn keys_are_required_known_and_unexpired() {
    let proxy = TestProxy::start(table()).await;
    let url = proxy.url("/team-a/pub/v1/chat/completions");
    let body = chat_body();

    let none = send(Method::POST, &url, &[], Some(&body)).await;
    assert_eq!(
        (none.status.as_u16(), none.error_code().as_str()),
        (401, "invalid_api_key")
    );
    for key in ["k-unknown", "k-expired-old"] {
        let r = post(&url, key, &body).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (401, "invalid_api_key"),
            "{key}"
        );
    }
    assert!(
        post(&url, "k-expired-old", &body).await.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    // Another key of the same consumer still works, in any header.
    assert_eq!(post(&url, "k-expired", &body).await.status, 403); // no subscription, but authenticated
    for (h, v) in [
        ("x-api-key", "k-app"),
        ("api-key", "k-app"),
        ("authorization", "Bearer k-app"),
    ] {
        let r = send(Method::POST, &url, &[(h, v)], Some(&body)).await;
        assert_eq!(r.status, 200, "{h}");
    }
    let line = proxy.log_line_of(&none.request_id()).await;
    assert_eq!(
        (line["status"].as_u64(), line["error_class"].as_str()),
        (Some(401), Some("invalid_api_key"))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn each_subscription_problem_has_its_403_code() {
    let proxy = TestProxy::start(table()).await;
    let url = proxy.url("/team-a/pub/v1/chat/completions");
    for (key, code) in [
        ("k-nosub", "not_subscribed"),
        ("k-pending", "pending_approval"),
        ("k-rejected", "subscription_rejected"),
        ("k-revoked", "subscription_revoked"),
        ("k-invalid", "not_subscribed"),
    ] {
        let r = post(&url, key, &chat_body()).await;
        assert_eq!(r.status, 403, "{key}");
        assert_eq!(r.error_code(), code, "{key}");
        // The models list is guarded the same way.
        let r = get(&proxy.url("/team-a/pub/v1/models"), key).await;
        assert_eq!((r.status.as_u16(), r.error_code()), (403, code.to_string()));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_models_are_404_in_openai_shape() {
    let proxy = TestProxy::start(table()).await;
    for path in [
        "/nowhere/v1/chat/completions",
        "/team-a/pub/v1/completions",
        "/team-a/pub/v2/models",
        "/",
    ] {
        let r = post(&proxy.url(path), "k-app", &chat_body()).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (404, "unknown_url"),
            "{path}"
        );
    }
    // Wrong method on a known endpoint.
    let r = get(&proxy.url("/team-a/pub/v1/chat/completions"), "k-app").await;
    assert_eq!(r.status, 404);

    let r = post(
        &proxy.url("/team-a/pub/v1/chat/completions"),
        "k-app",
        &json!({"model": "gpt-9", "messages": []}),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (404, "model_not_found")
    );
    let v = r.json();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("gpt-9") && message.contains("fake-chat, fake-embed"),
        "{message}"
    );
    assert_eq!(v["error"]["param"], "model");
    let line = proxy.log_line_of(&r.request_id()).await;
    assert_eq!(line["model_requested"], "gpt-9");
    proxy.stop().await;
}

#[tokio::test]
async fn lifecycle_draft_retired_deprecated() {
    let proxy = TestProxy::start(table()).await;
    let chat = |prefix: &str| proxy.url(&format!("{prefix}/v1/chat/completions"));

    // Draft: the owning team only; everyone else sees nothing there.
    assert_eq!(
        post(&chat("/team-a/draft"), "k-app", &chat_body())
            .await
            .status,
        200
    );
    let r = post(&chat("/team-a/draft"), "k-other", &chat_body()).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (404, "unknown_url")
    );
    assert_eq!(
        post(&chat("/team-a/pub"), "k-other", &chat_body())
            .await
            .status,
        200
    );

    // Retired: gone.
    let r = post(&chat("/team-a/old"), "k-app", &chat_body()).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (410, "route_retired")
    );

    // Deprecated: served, with Deprecation (RFC 9745: `@` and Unix seconds), Sunset and Link headers
    // (also on errors and model lists).
    let r = post(&chat("/team-a/dep"), "k-app", &chat_body()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("deprecation"), Some("@1767225600"));
    assert_eq!(r.header("sunset"), Some("Sun, 17 Mar 2030 17:46:40 GMT"));
    assert_eq!(
        r.header("link"),
        Some(
            r#"</team-a/dep/openapi.json>; rel="deprecation"; type="application/json", </team-a/dep/openapi.json>; rel="sunset"; type="application/json""#
        )
    );
    let r = get(&proxy.url("/team-a/dep/v1/models"), "k-app").await;
    assert_eq!(r.header("sunset"), Some("Sun, 17 Mar 2030 17:46:40 GMT"));
    assert_eq!(r.header("deprecation"), Some("@1767225600"));
    let r = post(&chat("/team-a/pub"), "k-app", &chat_body()).await;
    assert_eq!(r.header("deprecation"), None);
    assert_eq!(r.header("link"), None);
    proxy.stop().await;
}

#[tokio::test]
async fn models_list_and_retrieve_in_openai_shape() {
    let proxy = TestProxy::start(table()).await;
    let r = get(&proxy.url("/team-a/pub/v1/models"), "k-app").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fake-chat", "fake-embed"]);
    for m in v["data"].as_array().unwrap() {
        assert_eq!(m["object"], "model");
        assert!(m["created"].is_i64() && m["owned_by"].is_string());
    }
    let r = get(&proxy.url("/team-a/pub/v1/models/fake-embed"), "k-app").await;
    assert_eq!(r.json()["id"], "fake-embed");
    let r = get(&proxy.url("/team-a/pub/v1/models/nope"), "k-app").await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (404, "model_not_found")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn fake_provider_answers_chat_stream_and_embeddings() {
    let proxy = TestProxy::start(table()).await;
    let url = proxy.url("/team-a/pub/v1/chat/completions");
    let a = post(&url, "k-app", &chat_body()).await.json();
    let b = post(&url, "k-app", &chat_body()).await.json();
    assert_eq!(a["object"], "chat.completion");
    assert_eq!(a["model"], "fake-chat-upstream");
    let content = a["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        content, b["choices"][0]["message"]["content"],
        "deterministic"
    );
    assert_eq!(content.split(' ').count(), 5);
    assert_eq!(a["usage"]["completion_tokens"], 5);

    let mut body = chat_body();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&url, "k-app", &body).await;
    let payloads = sse_payloads(&r.body);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let text: String = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str::<Value>(p).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(text, content);
    let usage: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    let line = proxy.log_line_of(&r.request_id()).await;
    assert_eq!(line["tokens_out"], 5);
    assert_eq!(line["provider"], "team-a/fake");

    let r = post(
        &proxy.url("/team-a/pub/v1/embeddings"),
        "k-app",
        &json!({"model": "fake-embed", "input": ["a", "b", "c"]}),
    )
    .await;
    let v = r.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    assert_eq!(v["data"][2]["embedding"].as_array().unwrap().len(), 8);
    proxy.stop().await;
}

#[tokio::test]
async fn bad_bodies_are_400_and_big_ones_413() {
    let config = ProxyConfig {
        limits: RequestLimits {
            max_body_bytes: 2048,
            ..RequestLimits::default()
        },
        ..test_config()
    };
    let proxy = TestProxy::start_with(config, Some(table())).await;
    let url = proxy.url("/team-a/pub/v1/chat/completions");
    let big =
        json!({"model": "fake-chat", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let r = post(&url, "k-app", &big).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (413, "request_too_large")
    );

    // Without content-length (chunked), the limit holds while reading.
    let (status, body) =
        chunked_post(&proxy, "/team-a/pub/v1/chat/completions", &big.to_string()).await;
    assert_eq!(status, 413, "{body}");

    let r = send(
        Method::POST,
        &url,
        &[("authorization", "Bearer k-app")],
        None,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "invalid_json")
    );
    let r = post(&url, "k-app", &json!({"messages": []})).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "missing_required_parameter")
    );
    proxy.stop().await;
}

async fn chunked_post(proxy: &TestProxy, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer k-app\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    for part in body.as_bytes().chunks(500) {
        req.push_str(&format!(
            "{:x}\r\n{}\r\n",
            part.len(),
            std::str::from_utf8(part).unwrap()
        ));
    }
    req.push_str("0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn not_ready_until_a_snapshot_is_held() {
    let proxy = TestProxy::start_with(test_config(), None).await;
    let ready = send(Method::GET, &proxy.admin_url("/readyz"), &[], None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        send(Method::GET, &proxy.admin_url("/healthz"), &[], None)
            .await
            .status,
        200
    );
    let r = post(
        &proxy.url("/team-a/pub/v1/chat/completions"),
        "k-app",
        &chat_body(),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (503, "not_ready")
    );

    proxy.swap(table(), 7);
    assert_eq!(
        send(Method::GET, &proxy.admin_url("/readyz"), &[], None)
            .await
            .status,
        200
    );
    assert_eq!(
        post(
            &proxy.url("/team-a/pub/v1/chat/completions"),
            "k-app",
            &chat_body()
        )
        .await
        .status,
        200
    );
    let metrics = send(Method::GET, &proxy.admin_url("/metrics"), &[], None).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    for needle in [
        "tollgate_requests_total{route=\"team-a/pub\",model=\"fake-chat\",provider=\"team-a/fake\",status=\"200\"} 1",
        "tollgate_request_duration_seconds_bucket",
        "tollgate_tokens_total{direction=\"output\",route=\"team-a/pub\",consumer=\"team-a/app\"} 5",
        "tollgate_cost_usd_total{route=\"team-a/pub\",consumer=\"team-a/app\"}",
        "tollgate_in_flight_requests 0",
        "tollgate_snapshot_version 7",
        "tollgate_snapshot_age_seconds",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    proxy.stop().await;
}
