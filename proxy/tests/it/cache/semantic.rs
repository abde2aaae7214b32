//! Semantic mode against a real proxy and the OpenAI fake, whose embeddings the test sets: a question
//! asked in other words is answered from the stored answer when the two embeddings are at least
//! `threshold` alike, and misses below it, in another consumer's scope, with other sampling options
//! and with more turns than allowed (then nothing is embedded at all).

use serde_json::{Value, json};
use tollgate_proxy::{CacheConfig, Clock, ProxyConfig};
use tollgate_snapshot::{CacheScope, Content, SemanticPolicy};

use super::{CHAT, KEY_A, KEY_B, metric, policy, post_with, question, table, wait_for_entries};
use crate::support::openai_fake::{Behaviour, OpenAiFake};
use crate::support::*;

const FRANCE: &str = "What is the capital of France?";
/// Similarity 0.98 to `FRANCE`.
const PARAPHRASE: &str = "Which city is France's capital?";
/// Similarity 0.90 to `FRANCE`.
const SPAIN: &str = "What is the capital of Spain?";

/// The cache table with an `embed-model` beside `front-model`, cached in Semantic mode.
fn semantic_table(endpoint: &str, scope: CacheScope) -> Content {
    let mut cache = policy(scope);
    cache.semantic = Some(SemanticPolicy {
        embedding_model: "embed-model".into(),
        threshold: 0.95,
        max_turns: 1,
    });
    let mut content = table(endpoint, Some(cache));
    // Models are kept sorted by name.
    content.routes[0].models.insert(
        0,
        model(
            "embed-model",
            vec![backend(0, "text-embedding-3-small")],
            vec![],
        ),
    );
    content
}

async fn setup(scope: CacheScope) -> (OpenAiFake, TestProxy) {
    let mut behaviour = Behaviour::new("a", super::UPSTREAM_KEY);
    behaviour.vectors = vec![
        (FRANCE.into(), vec![1.0, 0.0, 0.0]),
        (PARAPHRASE.into(), vec![0.98, 0.198_997_5, 0.0]),
        (SPAIN.into(), vec![1.8, 0.871_779_8, 0.0]),
    ];
    let fake = OpenAiFake::start(behaviour).await;
    let config = ProxyConfig {
        cache: CacheConfig {
            local_bytes: 8 << 20,
            clock: Clock::system(),
        },
        ..test_config()
    };
    let proxy = TestProxy::start_with(config, Some(semantic_table(&fake.endpoint(), scope))).await;
    (fake, proxy)
}

/// (chat calls, embeddings calls) that reached the fake.
fn calls(fake: &OpenAiFake) -> (usize, usize) {
    let seen = fake.seen();
    let chat = seen
        .iter()
        .filter(|s| s.path.ends_with("/chat/completions"))
        .count();
    (chat, seen.len() - chat)
}

#[tokio::test]
async fn a_paraphrase_above_the_threshold_is_answered_from_the_cache() {
    let (fake, proxy) = setup(CacheScope::Consumer).await;
    let url = proxy.url(CHAT);
    let first = post_with(&url, KEY_A, &question(FRANCE), &[]).await;
    first.assert_status(200);
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(calls(&fake), (1, 1), "the question was embedded once");
    let embedded = fake
        .seen()
        .into_iter()
        .find(|s| s.path.ends_with("/embeddings"))
        .unwrap();
    assert_eq!(
        embedded.body,
        json!({"model": "text-embedding-3-small", "input": FRANCE})
    );

    // The stored answer must be complete before the next call can find it.
    wait_for_entries(&proxy, 1.0).await;
    let again = post_with(&url, KEY_A, &question(PARAPHRASE), &[]).await;
    again.assert_status(200);
    assert_eq!(again.header("x-tollgate-cache"), Some("semantic-hit"));
    assert_eq!(again.header("x-tollgate-cache-similarity"), Some("0.9800"));
    assert_eq!(again.header("age"), Some("0"));
    assert_eq!(again.body, first.body, "the stored answer, byte for byte");
    assert_eq!(calls(&fake), (1, 2), "embedded, not asked");

    let line = proxy.log_line_of(&again.request_id()).await;
    assert_eq!(line["cache"], "semantic-hit");
    assert_eq!(line["tokens_in"], 0);
    assert_eq!(line["cost_usd"], 0.0);
    assert_eq!(line["provider"], Value::Null);
    let embedding = proxy
        .log_line_of(&format!("{}-cache-embed", again.request_id()))
        .await;
    assert_eq!(embedding["status"], 200);
    assert_eq!(embedding["tokens_in"], 4, "the embedding call's own usage");
    assert_eq!(
        metric(
            &proxy,
            "tollgate_cache_lookups_total{result=\"semantic-hit\"}"
        )
        .await,
        1.0
    );

    // The exact question again is an exact hit: nothing is embedded.
    let exact = post_with(&url, KEY_A, &question(FRANCE), &[]).await;
    assert_eq!(exact.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(calls(&fake), (1, 2));

    // Below the threshold: a miss, sent upstream.
    let spain = post_with(&url, KEY_A, &question(SPAIN), &[]).await;
    assert_eq!(spain.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(calls(&fake), (2, 3));

    // Other sampling options: the same words do not match the stored question.
    let mut warmer = question(PARAPHRASE);
    warmer["temperature"] = json!(1.5);
    let reply = post_with(&url, KEY_A, &warmer, &[]).await;
    assert_eq!(reply.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(calls(&fake), (3, 4));

    // `no-cache`: not answered from the cache, even by meaning.
    let reply = post_with(
        &url,
        KEY_A,
        &question(PARAPHRASE),
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(reply.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(calls(&fake).0, 4);
    proxy.stop().await;
}

#[tokio::test]
async fn another_consumer_and_multi_turn_calls_miss() {
    let (fake, proxy) = setup(CacheScope::Consumer).await;
    let url = proxy.url(CHAT);
    post_with(&url, KEY_A, &question(FRANCE), &[])
        .await
        .assert_status(200);
    wait_for_entries(&proxy, 1.0).await;
    let other = post_with(&url, KEY_B, &question(PARAPHRASE), &[]).await;
    assert_eq!(
        other.header("x-tollgate-cache"),
        Some("miss"),
        "Consumer scope"
    );
    assert_eq!(calls(&fake), (2, 2));

    // Three turns, more than the one allowed: not embedded, not looked up by meaning.
    let turns = json!({"model": "front-model", "messages": [
        {"role": "user", "content": FRANCE},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": PARAPHRASE}]});
    for want in ["miss", "hit"] {
        let reply = post_with(&url, KEY_A, &turns, &[]).await;
        assert_eq!(reply.header("x-tollgate-cache"), Some(want));
        wait_for_entries(&proxy, 3.0).await;
    }
    assert_eq!(
        calls(&fake),
        (3, 2),
        "nothing embedded for a multi-turn call"
    );
    proxy.stop().await;

    // Route scope: the other consumer's paraphrase is a hit.
    let (fake, proxy) = setup(CacheScope::Route).await;
    let url = proxy.url(CHAT);
    post_with(&url, KEY_A, &question(FRANCE), &[])
        .await
        .assert_status(200);
    wait_for_entries(&proxy, 1.0).await;
    let other = post_with(&url, KEY_B, &question(PARAPHRASE), &[]).await;
    assert_eq!(other.header("x-tollgate-cache"), Some("semantic-hit"));
    assert_eq!(calls(&fake), (1, 2));
    proxy.stop().await;
}

#[tokio::test]
async fn an_unusable_embedding_makes_a_plain_miss() {
    let (fake, proxy) = setup(CacheScope::Consumer).await;
    // A zero vector has no direction: nothing to compare.
    fake.behaviour.lock().unwrap().vectors = vec![(FRANCE.into(), vec![0.0, 0.0, 0.0])];
    let url = proxy.url(CHAT);
    let first = post_with(&url, KEY_A, &question(FRANCE), &[]).await;
    first.assert_status(200);
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));
    let embedding = proxy
        .log_line_of(&format!("{}-cache-embed", first.request_id()))
        .await;
    assert_eq!(embedding["error_class"], "cache_embedding_unreadable");
    assert_eq!(
        metric(&proxy, "tollgate_cache_store_errors_total{op=\"embed\"}").await,
        1.0
    );
    // The answer was still stored for exact lookups.
    wait_for_entries(&proxy, 1.0).await;
    let again = post_with(&url, KEY_A, &question(FRANCE), &[]).await;
    assert_eq!(again.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(calls(&fake), (1, 1));
    proxy.stop().await;
}

/// Two proxies sharing one real Redis: a question stored through one answers a paraphrase on the
/// other; with Redis gone, calls still succeed.
#[tokio::test]
async fn replicas_share_their_questions_through_redis() {
    use crate::support::redis::{Redis, redis_command};
    use crate::support::standalone_bin::free_port;
    use std::time::Duration;

    let port = free_port();
    let redis = Redis::start(port);
    let (fake, one) = setup(CacheScope::Consumer).await;
    let replica = || {
        let mut config = ProxyConfig {
            cache: CacheConfig {
                local_bytes: 8 << 20,
                clock: Clock::system(),
            },
            ..test_config()
        };
        config.traffic.redis_url = Some(format!("redis://127.0.0.1:{port}/0"));
        config.traffic.redis_timeout = Duration::from_millis(200);
        TestProxy::start_with(
            config,
            Some(semantic_table(&fake.endpoint(), CacheScope::Consumer)),
        )
    };
    // `setup`'s proxy has no Redis: replace it with two that do.
    one.stop().await;
    let (one, two) = (replica().await, replica().await);
    for proxy in [&one, &two] {
        let mut up = false;
        for _ in 0..100 {
            if metric(proxy, "tollgate_limits_redis_up ").await == 1.0 {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "the proxy reached Redis");
    }

    let first = post_with(&one.url(CHAT), KEY_A, &question(FRANCE), &[]).await;
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));
    // The answer and the question both reach Redis, off the request path.
    let mut stored = false;
    for _ in 0..100 {
        if redis_command(port, "DBSIZE").as_deref() == Some(":2") {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stored, "the entry and its question reached Redis");
    let shared = post_with(&two.url(CHAT), KEY_A, &question(PARAPHRASE), &[]).await;
    assert_eq!(shared.header("x-tollgate-cache"), Some("semantic-hit"));
    assert_eq!(shared.header("x-tollgate-cache-similarity"), Some("0.9800"));
    assert_eq!(shared.body, first.body);
    assert_eq!(calls(&fake), (1, 2));

    // Redis gone: a new question on two is a plain miss, answered.
    drop(redis);
    let reply = post_with(&two.url(CHAT), KEY_A, &question(SPAIN), &[]).await;
    reply.assert_status(200);
    assert_eq!(reply.header("x-tollgate-cache"), Some("miss"));
    one.stop().await;
    two.stop().await;
}
