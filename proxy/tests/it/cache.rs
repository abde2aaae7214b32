//! The response cache against a real proxy on 127.0.0.1 and a counting OpenAI fake: a repeated call
//! is answered without reaching the upstream; consumers share entries only in Route scope; the
//! caller's `Cache-Control` is obeyed; streams are replayed; entries expire by a test clock; errors and
//! cut streams are not stored; hits cost no tokens; and (`redis`) two proxies share entries through a
//! real Redis and keep answering while it is killed.

mod redis;
mod semantic;

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_proxy::{CacheConfig, Clock, ProxyConfig};
use tollgate_snapshot::{
    Budget, CacheEndpoint, CachePolicy, CacheScope, Content, Limits, ModelCache, Phase,
    ProviderType,
};

use crate::support::openai_fake::{Behaviour, OpenAiFake};
use crate::support::*;

pub const UPSTREAM_KEY: &str = "sk-upstream-cache";
pub const KEY_A: &str = "tg-cache-consumer-a-key";
pub const KEY_B: &str = "tg-cache-consumer-b-key";
pub const CHAT: &str = "/team-a/chat/v1/chat/completions";
pub const EMBEDDINGS: &str = "/team-a/chat/v1/embeddings";

pub fn policy(scope: CacheScope) -> CachePolicy {
    CachePolicy {
        ttl_ms: 60_000,
        scope,
        max_entry_bytes: 1 << 20,
        endpoints: vec![
            CacheEndpoint::Chat,
            CacheEndpoint::Embeddings,
            CacheEndpoint::Messages,
        ],
        semantic: None,
    }
}

/// Route `/team-a/chat` serving `front-model` from the fake, cached by `cache`, with two consumers.
pub fn table(endpoint: &str, cache: Option<CachePolicy>) -> Content {
    let mut p = provider("openai", ProviderType::OpenAI, endpoint, UPSTREAM_KEY);
    p.models[0].name = "gpt-4o-mini".into();
    let mut r = route(
        NS,
        "chat",
        "/team-a/chat",
        vec![model(
            "front-model",
            vec![backend(0, "gpt-4o-mini")],
            vec![],
        )],
    );
    r.cache = cache;
    Content {
        routes: vec![r],
        providers: vec![p],
        consumers: vec![consumer(NS, "app-a", KEY_A), consumer(NS, "app-b", KEY_B)],
        subscriptions: vec![
            subscription("a-chat", 0, 0, Phase::Approved),
            subscription("b-chat", 1, 0, Phase::Approved),
        ],
        ..Content::default()
    }
}

pub fn question(text: &str) -> Value {
    json!({"model": "front-model", "messages": [{"role": "user", "content": text}]})
}

/// A proxy with the manual clock `clock` in front of a fresh fake.
async fn setup(cache: Option<CachePolicy>, clock: Clock) -> (OpenAiFake, TestProxy) {
    let fake = OpenAiFake::start(Behaviour::new("a", UPSTREAM_KEY)).await;
    let config = ProxyConfig {
        cache: CacheConfig {
            local_bytes: 8 << 20,
            clock,
        },
        ..test_config()
    };
    let proxy = TestProxy::start_with(config, Some(table(&fake.endpoint(), cache))).await;
    (fake, proxy)
}

pub async fn post_with(url: &str, key: &str, body: &Value, extra: &[(&str, &str)]) -> Reply {
    let auth = format!("Bearer {key}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    send(Method::POST, url, &headers, Some(body)).await
}

/// Calls that reached the fake.
pub fn upstream_calls(fake: &OpenAiFake) -> usize {
    fake.seen().len()
}

pub async fn metric(proxy: &TestProxy, line_start: &str) -> f64 {
    let text = send(Method::GET, &proxy.admin_url("/metrics"), &[], None).await;
    String::from_utf8_lossy(&text.body)
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_repeated_call_is_answered_from_the_cache_without_reaching_the_upstream() {
    let clock = Clock::manual(1_800_000_000_000);
    let (fake, proxy) = setup(Some(policy(CacheScope::Consumer)), clock.clone()).await;
    let url = proxy.url(CHAT);
    let first = post_with(&url, KEY_A, &question("hi"), &[]).await;
    first.assert_status(200);
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(first.header("age"), None);
    assert_eq!(upstream_calls(&fake), 1);

    clock.advance(7_500);
    // The same request with its members in another order and a different `user`.
    let same = json!({"messages": [{"content": "hi", "role": "user"}], "user": "u-2", "model": "front-model"});
    let second = post_with(&url, KEY_A, &same, &[]).await;
    second.assert_status(200);
    assert_eq!(second.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(second.header("age"), Some("7"));
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert_eq!(second.body, first.body, "the stored answer, byte for byte");
    assert_eq!(
        upstream_calls(&fake),
        1,
        "the upstream was not called again"
    );

    // A different question is a miss.
    let other = post_with(&url, KEY_A, &question("hello"), &[]).await;
    assert_eq!(other.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(upstream_calls(&fake), 2);

    let hit = proxy.log_line_of(&second.request_id()).await;
    assert_eq!(hit["cache"], "hit");
    assert_eq!(hit["tokens_in"], 0);
    assert_eq!(hit["tokens_out"], 0);
    assert_eq!(hit["cost_usd"], 0.0);
    assert_eq!(hit["provider"], Value::Null);
    assert_eq!(hit["model_requested"], "front-model");
    let miss = proxy.log_line_of(&first.request_id()).await;
    assert_eq!(miss["cache"], "miss");
    assert_eq!(miss["tokens_in"], 11);
    assert!(miss.get("saved_cost_usd").is_none(), "{miss}");
    // The hit says what it did not spend: the usage and cost of the call that made the answer.
    assert_eq!(hit["saved_tokens_in"], miss["tokens_in"]);
    assert_eq!(hit["saved_tokens_out"], miss["tokens_out"]);
    let cost = miss["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0, "{miss}");
    assert_eq!(hit["saved_cost_usd"].as_f64(), Some(cost));

    assert_eq!(
        metric(&proxy, "tollgate_cache_lookups_total{result=\"hit\"}").await,
        1.0
    );
    assert_eq!(
        metric(&proxy, "tollgate_cache_lookups_total{result=\"miss\"}").await,
        2.0
    );
    assert_eq!(
        metric(&proxy, "tollgate_cache_saved_tokens_total").await,
        18.0
    );
    assert_eq!(
        metric(&proxy, "tollgate_cache_saved_cost_usd_total").await,
        cost
    );
    assert_eq!(metric(&proxy, "tollgate_cache_entries").await, 2.0);
    proxy.stop().await;
}

#[tokio::test]
async fn routes_without_a_cache_and_endpoints_left_out_are_not_cached() {
    let (fake, proxy) = setup(None, Clock::system()).await;
    for _ in 0..2 {
        let reply = post_with(&proxy.url(CHAT), KEY_A, &question("hi"), &[]).await;
        reply.assert_status(200);
        assert_eq!(reply.header("x-tollgate-cache"), None);
    }
    assert_eq!(upstream_calls(&fake), 2);
    let line = proxy.log_lines().pop().unwrap();
    assert!(line.get("cache").is_none(), "{line}");
    proxy.stop().await;

    let mut embeddings_only = policy(CacheScope::Consumer);
    embeddings_only.endpoints = vec![CacheEndpoint::Embeddings];
    let (fake, proxy) = setup(Some(embeddings_only), Clock::system()).await;
    for _ in 0..2 {
        let reply = post_with(&proxy.url(CHAT), KEY_A, &question("hi"), &[]).await;
        assert_eq!(reply.header("x-tollgate-cache"), None);
    }
    assert_eq!(upstream_calls(&fake), 2);
    let embed = json!({"model": "front-model", "input": ["one", "two"]});
    for want in ["miss", "hit"] {
        let reply = post_with(&proxy.url(EMBEDDINGS), KEY_A, &embed, &[]).await;
        reply.assert_status(200);
        assert_eq!(reply.header("x-tollgate-cache"), Some(want));
    }
    assert_eq!(upstream_calls(&fake), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn a_models_own_cache_settings_replace_the_routes() {
    let fake = OpenAiFake::start(Behaviour::new("a", UPSTREAM_KEY)).await;
    // The route caches per consumer; `uncached-model` turns caching off, `shared-model` shares its
    // entries between consumers (Route scope) and caches only embeddings.
    let mut content = table(&fake.endpoint(), Some(policy(CacheScope::Consumer)));
    let models = &mut content.routes[0].models;
    let mut off = models[0].clone();
    off.name = "uncached-model".into();
    off.cache = ModelCache::Off;
    let mut own = models[0].clone();
    own.name = "shared-model".into();
    own.cache = ModelCache::Own(CachePolicy {
        endpoints: vec![CacheEndpoint::Embeddings],
        ..policy(CacheScope::Route)
    });
    models.extend([off, own]);
    // A snapshot's models are sorted by name (looked up by binary search).
    models.sort_by(|a, b| a.name.cmp(&b.name));
    let proxy = TestProxy::start_with(test_config(), Some(content)).await;
    let url = proxy.url(CHAT);
    let ask =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});

    for _ in 0..2 {
        let reply = post_with(&url, KEY_A, &ask("uncached-model"), &[]).await;
        reply.assert_status(200);
        assert_eq!(reply.header("x-tollgate-cache"), None, "not cached at all");
    }
    assert_eq!(upstream_calls(&fake), 2);

    // The route's own model still follows the route: per consumer.
    for (key, want) in [(KEY_A, "miss"), (KEY_A, "hit"), (KEY_B, "miss")] {
        let reply = post_with(&url, key, &ask("front-model"), &[]).await;
        assert_eq!(reply.header("x-tollgate-cache"), Some(want));
        wait_for_entries(&proxy, 1.0).await;
    }
    assert_eq!(upstream_calls(&fake), 4);

    // `shared-model`'s chat is not cached; its embeddings are, shared by both consumers.
    let reply = post_with(&url, KEY_A, &ask("shared-model"), &[]).await;
    assert_eq!(reply.header("x-tollgate-cache"), None);
    let embed = json!({"model": "shared-model", "input": "one"});
    for (key, want) in [(KEY_A, "miss"), (KEY_B, "hit")] {
        let reply = post_with(&proxy.url(EMBEDDINGS), key, &embed, &[]).await;
        reply.assert_status(200);
        assert_eq!(reply.header("x-tollgate-cache"), Some(want));
        wait_for_entries(&proxy, 3.0).await;
    }
    assert_eq!(upstream_calls(&fake), 6);
    proxy.stop().await;
}

#[tokio::test]
async fn two_consumers_never_share_entries_unless_the_scope_is_route() {
    let (fake, proxy) = setup(Some(policy(CacheScope::Consumer)), Clock::system()).await;
    let url = proxy.url(CHAT);
    for (key, want) in [
        (KEY_A, "miss"),
        (KEY_B, "miss"),
        (KEY_A, "hit"),
        (KEY_B, "hit"),
    ] {
        let reply = post_with(&url, key, &question("hi"), &[]).await;
        reply.assert_status(200);
        assert_eq!(reply.header("x-tollgate-cache"), Some(want), "{key}");
    }
    assert_eq!(upstream_calls(&fake), 2, "one upstream call per consumer");
    proxy.stop().await;

    let (fake, proxy) = setup(Some(policy(CacheScope::Route)), Clock::system()).await;
    let url = proxy.url(CHAT);
    for (key, want) in [(KEY_A, "miss"), (KEY_B, "hit"), (KEY_A, "hit")] {
        let reply = post_with(&url, key, &question("hi"), &[]).await;
        assert_eq!(reply.header("x-tollgate-cache"), Some(want), "{key}");
    }
    assert_eq!(
        upstream_calls(&fake),
        1,
        "Route scope: shared by every subscriber"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn cache_control_no_store_no_cache_and_max_age_are_obeyed() {
    let clock = Clock::manual(1_800_000_000_000);
    let (fake, proxy) = setup(Some(policy(CacheScope::Consumer)), clock.clone()).await;
    let url = proxy.url(CHAT);
    let q = question("hi");

    // no-store: not looked up, not stored.
    let reply = post_with(&url, KEY_A, &q, &[("cache-control", "no-store")]).await;
    assert_eq!(reply.header("x-tollgate-cache"), Some("bypass"));
    let reply = post_with(&url, KEY_A, &q, &[]).await;
    assert_eq!(
        reply.header("x-tollgate-cache"),
        Some("miss"),
        "no-store kept nothing"
    );
    assert_eq!(upstream_calls(&fake), 2);

    // Stored now: a hit, unless the caller says no-cache (which refreshes the entry).
    clock.advance(30_000);
    let reply = post_with(&url, KEY_A, &q, &[("cache-control", "no-store")]).await;
    assert_eq!(
        reply.header("x-tollgate-cache"),
        Some("bypass"),
        "no-store skips the lookup too"
    );
    assert_eq!(upstream_calls(&fake), 3);
    let reply = post_with(&url, KEY_A, &q, &[]).await;
    assert_eq!(reply.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(reply.header("age"), Some("30"));
    let reply = post_with(&url, KEY_A, &q, &[("cache-control", "No-Cache")]).await;
    assert_eq!(reply.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(upstream_calls(&fake), 4);
    clock.advance(10_000);
    let reply = post_with(&url, KEY_A, &q, &[]).await;
    assert_eq!(reply.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(
        reply.header("age"),
        Some("10"),
        "no-cache stored the fresh answer"
    );

    // max-age: only younger entries answer.
    let reply = post_with(&url, KEY_A, &q, &[("cache-control", "max-age=10")]).await;
    assert_eq!(reply.header("x-tollgate-cache"), Some("hit"));
    let reply = post_with(&url, KEY_A, &q, &[("cache-control", "max-age=9")]).await;
    assert_eq!(reply.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(upstream_calls(&fake), 5);
    let reply = post_with(&url, KEY_A, &q, &[("cache-control", "max-age=0")]).await;
    assert_eq!(
        reply.header("x-tollgate-cache"),
        Some("hit"),
        "the miss stored a fresh entry"
    );
    assert_eq!(reply.header("age"), Some("0"));
    assert_eq!(
        metric(&proxy, "tollgate_cache_lookups_total{result=\"bypass\"}").await,
        2.0
    );
    proxy.stop().await;
}

#[tokio::test]
async fn entries_expire_after_their_ttl_by_the_proxys_clock() {
    let clock = Clock::manual(1_800_000_000_000);
    let (fake, proxy) = setup(Some(policy(CacheScope::Consumer)), clock.clone()).await;
    let url = proxy.url(CHAT);
    let q = question("hi");
    post_with(&url, KEY_A, &q, &[]).await.assert_status(200);
    clock.advance(59_999);
    let reply = post_with(&url, KEY_A, &q, &[]).await;
    assert_eq!(
        reply.header("x-tollgate-cache"),
        Some("hit"),
        "just inside the 60 s ttl"
    );
    clock.advance(1);
    let reply = post_with(&url, KEY_A, &q, &[]).await;
    assert_eq!(
        reply.header("x-tollgate-cache"),
        Some("miss"),
        "expired at 60 s"
    );
    assert_eq!(upstream_calls(&fake), 2);
    let reply = post_with(&url, KEY_A, &q, &[]).await;
    assert_eq!(
        reply.header("x-tollgate-cache"),
        Some("hit"),
        "stored again"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_streamed_answer_is_recorded_and_replayed_as_server_sent_events() {
    let (fake, proxy) = setup(Some(policy(CacheScope::Consumer)), Clock::system()).await;
    let url = proxy.url(CHAT);
    let streamed = json!({"model": "front-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let first = post_with(&url, KEY_A, &streamed, &[]).await;
    first.assert_status(200);
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));
    let second = post_with(&url, KEY_A, &streamed, &[]).await;
    second.assert_status(200);
    assert_eq!(second.header("x-tollgate-cache"), Some("hit"));
    assert!(
        second
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream"),
        "{:?}",
        second.headers
    );
    assert_eq!(sse_payloads(&second.body), sse_payloads(&first.body));
    assert_eq!(sse_payloads(&second.body).last().unwrap(), "[DONE]");
    assert_eq!(upstream_calls(&fake), 1);
    let line = proxy.log_line_of(&second.request_id()).await;
    assert_eq!(
        (line["cache"].as_str(), line["stream"].as_bool()),
        (Some("hit"), Some(true))
    );

    // A stream without the usage chunk cannot answer a whole call: it has no usage to give.
    let whole = post_with(&url, KEY_A, &question("hi"), &[]).await;
    assert_eq!(whole.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(whole.json()["object"], "chat.completion");
    assert_eq!(upstream_calls(&fake), 2);
    // The whole answer now answers the stream with the usage chunk, replayed as events.
    wait_for_entries(&proxy, 2.0).await;
    let mut with_usage = streamed.clone();
    with_usage["stream_options"] = json!({"include_usage": true});
    for want in ["hit", "hit"] {
        let reply = post_with(&url, KEY_A, &with_usage, &[]).await;
        assert_eq!(reply.header("x-tollgate-cache"), Some(want));
        assert_eq!(said_by_stream(&reply.body), said_by_whole(&whole.json()));
    }
    assert_eq!(upstream_calls(&fake), 2);
    // Time to first token is a provider's: a replayed stream records none, in the access log or in
    // the histogram, which holds the one streamed miss.
    assert!(proxy.log_line_of(&first.request_id()).await["ttft_ms"].is_number());
    assert_eq!(line["ttft_ms"], Value::Null);
    assert_eq!(
        metric(
            &proxy,
            "tollgate_time_to_first_token_seconds_count{route=\"team-a/chat\"}"
        )
        .await,
        1.0
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_stored_stream_answers_a_whole_call_and_the_reverse() {
    let (fake, proxy) = setup(Some(policy(CacheScope::Consumer)), Clock::system()).await;
    let url = proxy.url(CHAT);
    let streamed = json!({"model": "front-model", "stream": true,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "stream first"}]});
    let first = post_with(&url, KEY_A, &streamed, &[]).await;
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));
    wait_for_entries(&proxy, 1.0).await;
    let whole = post_with(&url, KEY_A, &question("stream first"), &[]).await;
    whole.assert_status(200);
    assert_eq!(whole.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(whole.header("content-type"), Some("application/json"));
    assert_eq!(whole.json()["object"], "chat.completion");
    assert_eq!(said_by_whole(&whole.json()), said_by_stream(&first.body));
    // …and a stream without the usage chunk.
    let mut bare = streamed.clone();
    bare.as_object_mut().unwrap().remove("stream_options");
    let reply = post_with(&url, KEY_A, &bare, &[]).await;
    assert_eq!(reply.header("x-tollgate-cache"), Some("hit"));
    let (text, finish, _) = said_by_stream(&reply.body);
    assert_eq!((text, finish), {
        let (t, f, _) = said_by_stream(&first.body);
        (t, f)
    });
    assert!(!String::from_utf8_lossy(&reply.body).contains("\"usage\":{"));
    assert_eq!(upstream_calls(&fake), 1);

    // The reverse: asked whole first, then streamed.
    let whole = post_with(&url, KEY_A, &question("whole first"), &[]).await;
    assert_eq!(whole.header("x-tollgate-cache"), Some("miss"));
    wait_for_entries(&proxy, 2.0).await;
    let mut streamed = streamed.clone();
    streamed["messages"][0]["content"] = json!("whole first");
    let reply = post_with(&url, KEY_A, &streamed, &[]).await;
    assert_eq!(reply.header("x-tollgate-cache"), Some("hit"));
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(said_by_stream(&reply.body), said_by_whole(&whole.json()));
    assert_eq!(upstream_calls(&fake), 2);
    proxy.stop().await;
}

/// Text, finish reason and usage of a whole chat answer.
fn said_by_whole(answer: &Value) -> (String, String, Value) {
    (
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string(),
        answer["choices"][0]["finish_reason"]
            .as_str()
            .unwrap()
            .to_string(),
        json!({"prompt_tokens": answer["usage"]["prompt_tokens"],
               "completion_tokens": answer["usage"]["completion_tokens"]}),
    )
}

/// Text, finish reason and usage (`null` without the usage chunk) of a streamed chat answer.
fn said_by_stream(body: &[u8]) -> (String, String, Value) {
    let (mut text, mut finish, mut usage) = (String::new(), String::new(), Value::Null);
    for payload in sse_payloads(body) {
        if payload == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(&payload).unwrap();
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        if let Some(f) = chunk["choices"][0]["finish_reason"].as_str() {
            finish = f.to_string();
        }
        if chunk["usage"].is_object() {
            usage = json!({"prompt_tokens": chunk["usage"]["prompt_tokens"],
                           "completion_tokens": chunk["usage"]["completion_tokens"]});
        }
    }
    (text, finish, usage)
}

pub async fn wait_for_entries(proxy: &TestProxy, want: f64) {
    for _ in 0..200 {
        if metric(proxy, "tollgate_cache_entries").await >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the cache never held {want} entries");
}

#[tokio::test]
async fn errors_and_streams_cut_by_the_client_are_not_stored() {
    let (fake, proxy) = setup(Some(policy(CacheScope::Consumer)), Clock::system()).await;
    let url = proxy.url(CHAT);
    fake.behaviour.lock().unwrap().fail_with = Some(400);
    let reply = post_with(&url, KEY_A, &question("hi"), &[]).await;
    reply.assert_status(400);
    fake.behaviour.lock().unwrap().fail_with = None;
    let reply = post_with(&url, KEY_A, &question("hi"), &[]).await;
    reply.assert_status(200);
    assert_eq!(
        reply.header("x-tollgate-cache"),
        Some("miss"),
        "the error was not stored"
    );
    assert_eq!(upstream_calls(&fake), 2);

    // A stream the client stops reading half way.
    {
        let mut b = fake.behaviour.lock().unwrap();
        b.stream_chunks = 200;
        b.chunk_interval = Duration::from_millis(5);
    }
    let body = json!({"model": "front-model", "stream": true, "messages": [{"role": "user", "content": "cut"}]})
        .to_string();
    let mut socket = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {KEY_A}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(6).filter(|w| w == b"data: ").count() < 4 {
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
            .await
            .expect("chunks arrive")
            .unwrap();
        assert!(n > 0, "proxy closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let cut = fake.cut_notify.notified();
    drop(socket);
    tokio::time::timeout(Duration::from_secs(5), cut)
        .await
        .expect("the upstream stream is cut");
    {
        let mut b = fake.behaviour.lock().unwrap();
        b.stream_chunks = 3;
        b.chunk_interval = Duration::ZERO;
    }
    let again = json!({"model": "front-model", "stream": true, "messages": [{"role": "user", "content": "cut"}]});
    let reply = post_with(&url, KEY_A, &again, &[]).await;
    reply.assert_status(200);
    assert_eq!(
        reply.header("x-tollgate-cache"),
        Some("miss"),
        "the cut stream was not stored"
    );
    assert_eq!(upstream_calls(&fake), 4);
    proxy.stop().await;
}

#[tokio::test]
async fn answers_over_the_entry_size_are_passed_on_and_not_kept() {
    let mut small = policy(CacheScope::Consumer);
    small.max_entry_bytes = 64;
    let (fake, proxy) = setup(Some(small), Clock::system()).await;
    for _ in 0..2 {
        let reply = post_with(&proxy.url(CHAT), KEY_A, &question("hi"), &[]).await;
        reply.assert_status(200);
        assert!(reply.body.len() > 64);
        assert_eq!(reply.header("x-tollgate-cache"), Some("miss"));
    }
    assert_eq!(upstream_calls(&fake), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn hits_are_counted_as_requests_but_cost_no_tokens() {
    let fake = OpenAiFake::start(Behaviour::new("a", UPSTREAM_KEY)).await;
    let mut content = table(&fake.endpoint(), Some(policy(CacheScope::Consumer)));
    // About 14 tokens are estimated per call and 18 used by a miss: 60 a minute would refuse the
    // fifth call if hits were charged what the miss cost.
    content.subscriptions[0].limits = Limits {
        requests_per_minute: Some(600),
        tokens_per_minute: Some(60),
    };
    let proxy = TestProxy::start(content).await;
    let url = proxy.url(CHAT);
    let started = std::time::Instant::now();
    let first = post_with(&url, KEY_A, &question("hi"), &[]).await;
    first.assert_status(200);
    for i in 0..20 {
        let reply = post_with(&url, KEY_A, &question("hi"), &[]).await;
        reply.assert_status(200);
        assert_eq!(reply.header("x-tollgate-cache"), Some("hit"), "call {i}");
        // Wait for the call's record (which settles its tokens at 0) before the next.
        proxy.log_line_of(&reply.request_id()).await;
    }
    let reply = post_with(&url, KEY_A, &question("hi"), &[]).await;
    let requests_left: u64 = reply
        .header("x-ratelimit-remaining-requests")
        .unwrap()
        .parse()
        .unwrap();
    // The bucket leaks 10 requests a second: what leaked during the run is allowed for.
    let leaked = (started.elapsed().as_secs_f64() * 10.0).ceil() as u64 + 1;
    assert!(
        requests_left <= 600 - 22 + leaked,
        "every hit counted as a request: {requests_left} left, {leaked} leaked"
    );
    assert_eq!(upstream_calls(&fake), 1);
    proxy.stop().await;
}

/// A daily budget that one miss nearly spends: if hits were charged what the miss cost, the third
/// call would find the budget spent and be refused.
#[tokio::test]
async fn hits_spend_nothing_of_a_budget() {
    let fake = OpenAiFake::start(Behaviour::new("a", UPSTREAM_KEY)).await;
    let mut content = table(&fake.endpoint(), Some(policy(CacheScope::Consumer)));
    let proxy = TestProxy::start(content.clone()).await;
    // What one miss of this question costs, read from a proxy without a budget.
    let probe = post_with(&proxy.url(CHAT), KEY_A, &question("hi"), &[]).await;
    probe.assert_status(200);
    let cost = proxy.log_line_of(&probe.request_id()).await["cost_usd"]
        .as_f64()
        .unwrap();
    proxy.stop().await;
    assert!(cost > 0.0);
    let cost_micro = (cost * 1e6).ceil() as u64;
    // One miss leaves less than a second miss's cost of the budget.
    content.subscriptions[0].budget = Budget {
        monthly_micro_usd: None,
        daily_micro_usd: Some(cost_micro + cost_micro / 2),
    };
    let proxy = TestProxy::start(content).await;
    let url = proxy.url(CHAT);
    let first = post_with(&url, KEY_A, &question("hi"), &[]).await;
    first.assert_status(200);
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));
    proxy.log_line_of(&first.request_id()).await;
    for i in 0..10 {
        let reply = post_with(&url, KEY_A, &question("hi"), &[]).await;
        reply.assert_status(200);
        assert_eq!(reply.header("x-tollgate-cache"), Some("hit"), "call {i}");
        let line = proxy.log_line_of(&reply.request_id()).await;
        assert_eq!(line["cost_usd"], 0.0, "call {i}");
    }
    // The two misses (the probe's proxy had no budget) reached the upstream, no hit did.
    assert_eq!(upstream_calls(&fake), 2);
    // The budget still holds what the miss left, which a second miss's cost overshoots: spent
    // once that call settles, so the next one is refused.
    let second = post_with(&url, KEY_A, &question("a new question"), &[]).await;
    second.assert_status(200);
    proxy.log_line_of(&second.request_id()).await;
    let refused = post_with(&url, KEY_A, &question("hi"), &[]).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error_code(), "budget_exceeded");
    proxy.stop().await;
}

#[tokio::test]
async fn anthropic_format_callers_get_hits_in_their_own_format() {
    let (fake, proxy) = setup(Some(policy(CacheScope::Consumer)), Clock::system()).await;
    let url = proxy.url("/team-a/chat/v1/messages");
    let ask = json!({"model": "front-model", "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}]});
    let first = post_with(&url, KEY_A, &ask, &[]).await;
    first.assert_status(200);
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(first.json()["type"], "message");
    let second = post_with(&url, KEY_A, &ask, &[]).await;
    assert_eq!(second.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(second.body, first.body);
    // The same question on the chat endpoint is another endpoint: another entry.
    let chat = post_with(&proxy.url(CHAT), KEY_A, &ask, &[]).await;
    assert_eq!(chat.header("x-tollgate-cache"), Some("miss"));

    // Streamed, the same question is answered by the stored message, replayed as events.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let replayed = post_with(&url, KEY_A, &streamed, &[]).await;
    assert_eq!(replayed.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(
        said_by_message_stream(&replayed.body),
        Some(said_by_message(&first.json()))
    );
    // A streamed answer of its own is stored apart, and answers the next stream byte for byte.
    streamed["messages"][0]["content"] = json!("hello");
    let first = post_with(&url, KEY_A, &streamed, &[]).await;
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));
    wait_for_entries(&proxy, 3.0).await;
    let second = post_with(&url, KEY_A, &streamed, &[]).await;
    assert_eq!(second.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(second.body, first.body);
    assert!(String::from_utf8_lossy(&second.body).contains("event: message_stop"));
    assert_eq!(upstream_calls(&fake), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn prompt_api_and_responses_calls_are_cached_when_listed() {
    let fake = OpenAiFake::start(Behaviour::new("a", UPSTREAM_KEY)).await;
    let mut cache = policy(CacheScope::Consumer);
    cache
        .endpoints
        .extend([CacheEndpoint::Prompts, CacheEndpoint::Responses]);
    let mut content = table(&fake.endpoint(), Some(cache));
    // Responses callers are translated to chat for OpenAI-compatible backends.
    content.providers[0].provider_type = ProviderType::OpenAICompatible;
    let spec: tollgate_crds::PromptApi = serde_json::from_value(json!({
        "name": "summarise",
        "model": "front-model",
        "messages": [{"role": "user", "content": "Summarise: {{text}}"}],
        "variables": [{"name": "text"}]
    }))
    .unwrap();
    content.routes[0].prompts =
        vec![tollgate_snapshot::compile_prompt_spec(&spec, &["front-model"]).unwrap()];
    let proxy = TestProxy::start_with(test_config(), Some(content)).await;

    let prompt = proxy.url("/team-a/chat/prompts/summarise");
    let ask = json!({"variables": {"text": "a long text"}});
    let first = post_with(&prompt, KEY_A, &ask, &[]).await;
    first.assert_status(200);
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));
    wait_for_entries(&proxy, 1.0).await;
    let second = post_with(&prompt, KEY_A, &ask, &[]).await;
    assert_eq!(second.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(
        second.body, first.body,
        "the prompt API's own answer, replayed"
    );
    let other = post_with(
        &prompt,
        KEY_A,
        &json!({"variables": {"text": "another"}}),
        &[],
    )
    .await;
    assert_eq!(other.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(upstream_calls(&fake), 2);
    // Streamed prompt calls are passed on.
    let streamed = json!({"variables": {"text": "a long text"}, "stream": true});
    let reply = post_with(&prompt, KEY_A, &streamed, &[]).await;
    assert_eq!(reply.header("x-tollgate-cache"), Some("bypass"));
    assert_eq!(upstream_calls(&fake), 3);

    let responses = proxy.url("/team-a/chat/v1/responses");
    let ask = json!({"model": "front-model", "input": "hi there"});
    let first = post_with(&responses, KEY_A, &ask, &[]).await;
    first.assert_status(200);
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(first.json()["object"], "response");
    wait_for_entries(&proxy, 3.0).await;
    let second = post_with(&responses, KEY_A, &ask, &[]).await;
    assert_eq!(second.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(second.body, first.body);
    // Not the chat endpoint's entry: the answer's format is another.
    let chat = post_with(&proxy.url(CHAT), KEY_A, &question("hi there"), &[]).await;
    assert_eq!(chat.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(upstream_calls(&fake), 5);
    // A call continuing a stored response depends on what the provider keeps: never answered from
    // the cache (here the translated backend cannot continue it, and says so).
    let follow =
        json!({"model": "front-model", "input": "hi there", "previous_response_id": "resp_1"});
    let reply = post_with(&responses, KEY_A, &follow, &[]).await;
    assert_ne!(reply.header("x-tollgate-cache"), Some("hit"));
    proxy.stop().await;
}

/// Text, stop reason and usage of an Anthropic `message`.
fn said_by_message(message: &Value) -> (String, String, Value) {
    let text = message["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect();
    (
        text,
        message["stop_reason"].as_str().unwrap().to_string(),
        json!({"input_tokens": message["usage"]["input_tokens"],
               "output_tokens": message["usage"]["output_tokens"]}),
    )
}

/// The same of an Anthropic Messages stream (`None` unless it reached `message_stop`).
fn said_by_message_stream(body: &[u8]) -> Option<(String, String, Value)> {
    let (mut text, mut stop, mut usage, mut ended) = (String::new(), None, json!({}), false);
    for event in String::from_utf8_lossy(body).split("\n\n") {
        let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        let v: Value = serde_json::from_str(data).unwrap();
        match v["type"].as_str().unwrap() {
            "message_start" => {
                usage["input_tokens"] = v["message"]["usage"]["input_tokens"].clone()
            }
            "content_block_delta" => text.push_str(v["delta"]["text"].as_str().unwrap_or("")),
            "message_delta" => {
                stop = v["delta"]["stop_reason"].as_str().map(str::to_string);
                usage["output_tokens"] = v["usage"]["output_tokens"].clone();
                // Cumulative: a translated stream says its input tokens only here.
                if v["usage"]["input_tokens"].is_u64() {
                    usage["input_tokens"] = v["usage"]["input_tokens"].clone();
                }
            }
            "message_stop" => ended = true,
            _ => {}
        }
    }
    ended.then_some((text, stop?, usage))
}

#[tokio::test]
async fn a_stored_messages_stream_answers_a_whole_messages_call_and_the_reverse() {
    let (fake, proxy) = setup(Some(policy(CacheScope::Consumer)), Clock::system()).await;
    let url = proxy.url("/team-a/chat/v1/messages");
    let ask = |text: &str, stream: bool| {
        json!({"model": "front-model", "max_tokens": 64, "stream": stream,
               "messages": [{"role": "user", "content": text}]})
    };
    let streamed = post_with(&url, KEY_A, &ask("stream first", true), &[]).await;
    streamed.assert_status(200);
    assert_eq!(streamed.header("x-tollgate-cache"), Some("miss"));
    let said = said_by_message_stream(&streamed.body).expect("a whole stream");
    wait_for_entries(&proxy, 1.0).await;
    let whole = post_with(&url, KEY_A, &ask("stream first", false), &[]).await;
    whole.assert_status(200);
    assert_eq!(whole.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(whole.header("content-type"), Some("application/json"));
    assert_eq!(whole.json()["type"], "message");
    assert_eq!(said_by_message(&whole.json()), said);
    assert_eq!(upstream_calls(&fake), 1);

    // The reverse: asked whole first, then streamed.
    let whole = post_with(&url, KEY_A, &ask("whole first", false), &[]).await;
    assert_eq!(whole.header("x-tollgate-cache"), Some("miss"));
    wait_for_entries(&proxy, 2.0).await;
    let streamed = post_with(&url, KEY_A, &ask("whole first", true), &[]).await;
    assert_eq!(streamed.header("x-tollgate-cache"), Some("hit"));
    assert!(
        streamed
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(
        said_by_message_stream(&streamed.body),
        Some(said_by_message(&whole.json()))
    );
    assert_eq!(upstream_calls(&fake), 2);
    // A hit in the other form still says what it saved.
    let line = proxy.log_line_of(&streamed.request_id()).await;
    assert_eq!(
        line["saved_tokens_out"],
        whole.json()["usage"]["output_tokens"]
    );
    proxy.stop().await;
}
