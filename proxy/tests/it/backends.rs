//! Backend choice against flaky upstreams on 127.0.0.1: ordered fallback on connect errors, timeouts,
//! 429 and 5xx; weights over 10,000 calls; ejection after consecutive failures and recovery through a
//! probe; the retry budget; no retry once the first byte has reached the client; key-pool failover.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tollgate_snapshot::{
    Backend, Content, Credential, HealthPolicy, Phase, Provider, ProviderType, RetryBudget,
};

use crate::support::flaky::{Flaky, Mode, Sequence};
use crate::support::*;
use crate::support::{anthropic_fake, chat_route};

const KEY: &str = "tg-backends-key";
const CHAT: &str = "/team-a/chat/v1/chat/completions";

fn flaky_provider(name: &str, endpoint: &str) -> Provider {
    provider(name, ProviderType::OpenAI, endpoint, "sk-one")
}

/// A flaky provider ejected after `failures_to_eject` failures in a row, for `ejection_ms`.
/// How long the ejection test keeps its sick backend out.
const EJECTION_MS: u64 = 2_000;

fn ejectable(name: &str, endpoint: &str, failures_to_eject: u32, ejection_ms: u64) -> Provider {
    let mut p = flaky_provider(name, endpoint);
    p.health = HealthPolicy {
        failures_to_eject,
        ejection_ms,
        key_cooldown_ms: 60_000,
    };
    p
}

fn weighted(provider: u32, weight: u32) -> Backend {
    Backend {
        weight,
        ..backend(provider, "gpt-4o-mini")
    }
}

/// One route whose model `m` has the given weighted backends and fallbacks.
fn table(providers: Vec<Provider>, weighted: Vec<Backend>, fallbacks: Vec<Backend>) -> Content {
    Content {
        providers,
        routes: vec![route(
            NS,
            "chat",
            "/team-a/chat",
            vec![model("m", weighted, fallbacks)],
        )],
        consumers: vec![consumer(NS, "app", KEY)],
        subscriptions: vec![subscription("app-chat", 0, 0, Phase::Approved)],
        proxy_replicas: 0,
    }
}

fn ask() -> serde_json::Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

fn answered_by(reply: &Reply) -> String {
    reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// An address nothing listens on.
async fn closed_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn fallbacks_are_tried_in_order_after_connect_errors_500_429_and_timeouts() {
    let seq = Sequence::default();
    let a = Flaky::start("a", &seq).await;
    a.set(Mode::Status(500));
    let b = Flaky::start("b", &seq).await;
    b.set(Mode::Status(429));
    let c = Flaky::start("c", &seq).await;
    c.set(Mode::Hang);
    let d = Flaky::start("d", &seq).await;
    let mut slow = flaky_provider("c", &c.endpoint());
    slow.timeouts.first_byte_ms = 300;
    let providers = vec![
        flaky_provider("a", &a.endpoint()),
        flaky_provider("closed", &closed_endpoint().await),
        flaky_provider("b", &b.endpoint()),
        slow,
        flaky_provider("d", &d.endpoint()),
    ];
    let fallbacks = (1..5).map(|p| weighted(p, 1)).collect();
    let proxy = TestProxy::start(table(providers, vec![weighted(0, 1)], fallbacks)).await;

    let reply = post(&proxy.url(CHAT), KEY, &ask()).await;
    reply.assert_status(200);
    assert_eq!(answered_by(&reply), "from-d");
    // a (500), the closed port (no request), b (429), c (timeout), then d, in that order.
    assert_eq!(a.sequence_numbers(), vec![0]);
    assert_eq!(b.sequence_numbers(), vec![1]);
    assert_eq!(c.sequence_numbers(), vec![2]);
    assert_eq!(d.sequence_numbers(), vec![3]);
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["retries"], 4);
    assert_eq!(line["provider"], "team-a/d");

    // Every backend failing: the last failure is the answer, in OpenAI's shape.
    d.set(Mode::Status(503));
    let reply = post(&proxy.url(CHAT), KEY, &ask()).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_code(), "upstream_error");
    proxy.stop().await;
}

#[tokio::test]
async fn weights_hold_within_tolerance_over_ten_thousand_calls() {
    let seq = Sequence::default();
    let fakes = [
        Flaky::start("w1", &seq).await,
        Flaky::start("w2", &seq).await,
        Flaky::start("w7", &seq).await,
    ];
    let providers = fakes
        .iter()
        .map(|f| flaky_provider(&f.tag, &f.endpoint()))
        .collect();
    let proxy = TestProxy::start(table(
        providers,
        vec![weighted(0, 1), weighted(1, 2), weighted(2, 7)],
        vec![],
    ))
    .await;
    const CALLS: usize = 10_000;
    const WORKERS: usize = 16;
    let url = Arc::new(proxy.url(CHAT));
    let body = Bytes::from(ask().to_string());
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let (url, body) = (url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut failed = 0;
            for _ in 0..CALLS / WORKERS {
                let request = Request::post(url.as_str())
                    .header("authorization", format!("Bearer {KEY}"))
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let response = client.request(request).await.unwrap();
                failed += usize::from(response.status() != 200);
                response.into_body().collect().await.unwrap();
            }
            failed
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 0, "every call is answered");
    }
    let hits: Vec<usize> = fakes.iter().map(Flaky::hits).collect();
    assert_eq!(
        hits.iter().sum::<usize>(),
        CALLS,
        "one upstream call per client call"
    );
    // With n = 10,000 the standard deviation of a share is at most 0.5%: 2 points is over 4 sigma.
    for (hit, weight) in hits.iter().zip([1.0, 2.0, 7.0]) {
        let share = *hit as f64 / CALLS as f64;
        let expected = weight / 10.0;
        assert!(
            (share - expected).abs() < 0.02,
            "weight {weight}: share {share:.4}, expected {expected} (hits {hits:?})"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_failing_backend_is_ejected_then_probed_back() {
    let seq = Sequence::default();
    let sick = Flaky::start("sick", &seq).await;
    sick.set(Mode::Status(500));
    let well = Flaky::start("well", &seq).await;
    // Ejected for 2 s: long enough that the calls below all fall inside it on a loaded machine.
    let sick_provider = ejectable("sick", &sick.endpoint(), 3, EJECTION_MS);
    let proxy = TestProxy::start(table(
        vec![sick_provider, flaky_provider("well", &well.endpoint())],
        vec![weighted(0, 1), weighted(1, 1)],
        vec![],
    ))
    .await;

    // Until it has failed three times in a row, the sick backend gets about half the calls; each of
    // its failures is retried on the other weighted backend, so clients never see them.
    let mut calls = 0;
    while sick.hits() < 3 {
        let reply = post(&proxy.url(CHAT), KEY, &ask()).await;
        assert_eq!(reply.status, 200);
        assert_eq!(answered_by(&reply), "from-well");
        calls += 1;
        assert!(calls < 200, "the sick backend is never chosen");
    }
    // Ejected: it gets nothing for the next 20 calls, made within its ejection.
    let ejected_at = std::time::Instant::now();
    for _ in 0..20 {
        let reply = post(&proxy.url(CHAT), KEY, &ask()).await;
        assert_eq!(reply.status, 200);
    }
    if ejected_at.elapsed() < Duration::from_millis(EJECTION_MS) {
        assert_eq!(sick.hits(), 3, "an ejected backend is not called");
    }
    let metrics = send(http::Method::GET, &proxy.admin_url("/metrics"), &[], None).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.contains(r#"tollgate_backend_ejections_total{provider="team-a/sick"} 1"#),
        "{text}"
    );

    // It recovers; after the ejection time one probe goes through and it is back in rotation.
    sick.set(Mode::Ok);
    tokio::time::sleep(Duration::from_millis(EJECTION_MS + 100)).await;
    let mut from_sick = 0;
    for _ in 0..40 {
        let reply = post(&proxy.url(CHAT), KEY, &ask()).await;
        assert_eq!(reply.status, 200);
        from_sick += usize::from(answered_by(&reply) == "from-sick");
    }
    assert!(from_sick >= 8, "back in rotation: {from_sick} of 40 calls");
    proxy.stop().await;
}

#[tokio::test]
async fn a_failed_probe_ejects_again_at_once() {
    let seq = Sequence::default();
    let sick = Flaky::start("sick", &seq).await;
    sick.set(Mode::Status(502));
    let fallback = Flaky::start("fallback", &seq).await;
    let sick_provider = ejectable("sick", &sick.endpoint(), 2, 300);
    let proxy = TestProxy::start(table(
        vec![
            sick_provider,
            flaky_provider("fallback", &fallback.endpoint()),
        ],
        vec![weighted(0, 1)],
        vec![weighted(1, 1)],
    ))
    .await;
    for _ in 0..2 {
        assert_eq!(post(&proxy.url(CHAT), KEY, &ask()).await.status, 200);
    }
    assert_eq!(sick.hits(), 2);
    for _ in 0..5 {
        assert_eq!(post(&proxy.url(CHAT), KEY, &ask()).await.status, 200);
    }
    assert_eq!(sick.hits(), 2, "ejected");
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..5 {
        assert_eq!(post(&proxy.url(CHAT), KEY, &ask()).await.status, 200);
    }
    assert_eq!(
        sick.hits(),
        3,
        "one probe, which failed and ejected it again"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn the_retry_budget_stops_retries_multiplying_load() {
    let seq = Sequence::default();
    let sick = Flaky::start("sick", &seq).await;
    sick.set(Mode::Status(500));
    let fallback = Flaky::start("fallback", &seq).await;
    let mut sick_provider = flaky_provider("sick", &sick.endpoint());
    sick_provider.health.failures_to_eject = 1_000;
    let mut content = table(
        vec![
            sick_provider,
            flaky_provider("fallback", &fallback.endpoint()),
        ],
        vec![weighted(0, 1)],
        vec![weighted(1, 1)],
    );
    // A retry for every five calls, and no floor: one retry in the bank at the start.
    content.routes[0].retry_budget = RetryBudget {
        percent: 20,
        min_per_second: 0,
    };
    let proxy = TestProxy::start(content).await;
    let mut ok = 0;
    for _ in 0..20 {
        let reply = post(&proxy.url(CHAT), KEY, &ask()).await;
        if reply.status == 200 {
            ok += 1;
        } else {
            assert_eq!(reply.status, 502);
            let line = proxy.log_line_of(&reply.request_id()).await;
            assert_eq!(line["error_class"], "retry_budget_exhausted");
        }
    }
    assert_eq!(sick.hits(), 20, "every call tried its first backend");
    // 1 banked + 20% of 20 calls: at most 5 retries reached the fallback.
    assert!(
        (4..=5).contains(&fallback.hits()),
        "{} retries",
        fallback.hits()
    );
    assert_eq!(ok, fallback.hits());
    proxy.stop().await;
}

#[tokio::test]
async fn nothing_is_retried_once_the_first_byte_reached_the_client() {
    let seq = Sequence::default();
    let broken = Flaky::start("broken", &seq).await;
    broken.set(Mode::BreakAfterFirstByte);
    let fallback = Flaky::start("fallback", &seq).await;
    let proxy = TestProxy::start(table(
        vec![
            flaky_provider("broken", &broken.endpoint()),
            flaky_provider("fallback", &fallback.endpoint()),
        ],
        vec![weighted(0, 1)],
        vec![weighted(1, 1)],
    ))
    .await;

    // A stream: the client gets the first chunk, then an error event; no second backend is called.
    let mut stream = ask();
    stream["stream"] = json!(true);
    let reply = post(&proxy.url(CHAT), KEY, &stream).await;
    assert_eq!(reply.status, 200);
    let events = sse_payloads(&reply.body);
    assert!(events[0].contains("\"first\""), "{events:?}");
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_error");
    assert_eq!(fallback.hits(), 0);

    // A whole JSON answer cut in the middle: the connection is reset, still no retry.
    let request = Request::post(proxy.url(CHAT))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(ask().to_string())))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.into_body().collect().await.is_err(),
        "the body breaks"
    );
    assert_eq!(broken.hits(), 2);
    assert_eq!(fallback.hits(), 0, "no retry after the first byte");
    proxy.stop().await;
}

#[tokio::test]
async fn a_refused_key_rests_and_the_pool_carries_on() {
    let seq = Sequence::default();
    let upstream = Flaky::start("pool", &seq).await;
    upstream.refuse_key("sk-revoked", 401);
    upstream.refuse_key("sk-throttled", 429);
    let mut pooled = flaky_provider("pool", &upstream.endpoint());
    pooled.credentials = ["sk-revoked", "sk-good", "sk-throttled"]
        .into_iter()
        .map(|k| Credential(k.into()))
        .collect();
    let proxy = TestProxy::start(table(vec![pooled], vec![weighted(0, 1)], vec![])).await;
    for _ in 0..12 {
        let reply = post(&proxy.url(CHAT), KEY, &ask()).await;
        reply.assert_status(200);
    }
    let keys = upstream.keys();
    let count = |k: &str| keys.iter().filter(|s| s.as_str() == k).count();
    assert_eq!(count("sk-revoked"), 1, "{keys:?}");
    assert_eq!(count("sk-throttled"), 1, "{keys:?}");
    assert_eq!(count("sk-good"), 12);
    let metrics = send(http::Method::GET, &proxy.admin_url("/metrics"), &[], None).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.contains(r#"tollgate_provider_key_cooldowns_total{provider="team-a/pool"} 2"#),
        "{text}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_translated_providers_key_pool_fails_over_too() {
    const GOOD: &str = "sk-ant-good";
    let fake = anthropic_fake::start(GOOD).await;
    let mut anthropic = chat_route::typed(
        ProviderType::Anthropic,
        &fake.url(),
        GOOD,
        "claude-sonnet-4-5",
    );
    anthropic.credentials = vec![Credential("sk-ant-revoked".into()), Credential(GOOD.into())];
    let proxy = chat_route::proxy_to(anthropic).await;
    let body = json!({"model": "front-model", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..6 {
        let reply = post(&proxy.url(CHAT), chat_route::CLIENT_KEY, &body).await;
        reply.assert_status(200);
    }
    let keys: Vec<String> = fake
        .seen()
        .iter()
        .filter_map(|s| s.header("x-api-key").map(str::to_owned))
        .collect();
    assert_eq!(
        keys.iter()
            .filter(|k| k.as_str() == "sk-ant-revoked")
            .count(),
        1,
        "the refused key rests after its 401: {keys:?}"
    );
    assert_eq!(keys.iter().filter(|k| k.as_str() == GOOD).count(), 6);
    proxy.stop().await;
}
