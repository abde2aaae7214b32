//! Two in-process proxies sharing one real Redis (Debian's `redis-server`, started on a free loopback
//! port and stopped at the end, as the limits tests do): an entry written through one proxy is a hit
//! on the other; with Redis killed every call still succeeds, as a miss or a local hit, and the store
//! errors are counted; once Redis is back, sharing resumes.

use std::time::Duration;

use tollgate_proxy::{CacheConfig, Clock, ProxyConfig};
use tollgate_snapshot::CacheScope;

use super::{CHAT, KEY_A, KEY_B, metric, policy, post_with, question, table, upstream_calls};
use crate::support::openai_fake::{Behaviour, OpenAiFake};
use crate::support::redis::{Redis, redis_command};
use crate::support::standalone_bin::free_port;
use crate::support::{TestProxy, test_config};

async fn replica(fake: &OpenAiFake, redis_port: u16) -> TestProxy {
    let mut config = ProxyConfig {
        cache: CacheConfig {
            local_bytes: 8 << 20,
            clock: Clock::system(),
        },
        ..test_config()
    };
    config.traffic.redis_url = Some(format!("redis://127.0.0.1:{redis_port}/0"));
    config.traffic.redis_timeout = Duration::from_millis(200);
    let proxy = TestProxy::start_with(
        config,
        Some(table(&fake.endpoint(), Some(policy(CacheScope::Consumer)))),
    )
    .await;
    wait_for_redis(&proxy, true).await;
    proxy
}

/// Waits until the proxy's Redis link is `up` (its keeper looks every 500 ms).
async fn wait_for_redis(proxy: &TestProxy, up: bool) {
    let want = if up { 1.0 } else { 0.0 };
    for _ in 0..100 {
        if metric(proxy, "tollgate_limits_redis_up ").await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the proxy's Redis link did not become {}",
        if up { "up" } else { "down" }
    );
}

#[tokio::test]
async fn two_proxies_share_entries_through_redis_and_survive_it_going_away() {
    let port = free_port();
    let redis = Redis::start(port);
    let fake = OpenAiFake::start(Behaviour::new("a", super::UPSTREAM_KEY)).await;
    let one = replica(&fake, port).await;
    let two = replica(&fake, port).await;

    let first = post_with(&one.url(CHAT), KEY_A, &question("shared"), &[]).await;
    first.assert_status(200);
    assert_eq!(first.header("x-tollgate-cache"), Some("miss"));
    // The write to Redis is off the request path: wait for it to land.
    let mut stored = false;
    for _ in 0..100 {
        if redis_command(port, "DBSIZE").is_some_and(|n| n != ":0") {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stored, "the entry reached Redis");
    let second = post_with(&two.url(CHAT), KEY_A, &question("shared"), &[]).await;
    second.assert_status(200);
    assert_eq!(
        second.header("x-tollgate-cache"),
        Some("hit"),
        "written through one, hit on two"
    );
    assert_eq!(second.body, first.body);
    // Consumer scope holds across replicas too.
    let other = post_with(&two.url(CHAT), KEY_B, &question("shared"), &[]).await;
    assert_eq!(other.header("x-tollgate-cache"), Some("miss"));
    assert_eq!(upstream_calls(&fake), 2);

    // Redis killed mid-run: every call is answered.
    drop(redis);
    let mut statuses = Vec::new();
    for i in 0..10 {
        let proxy = if i % 2 == 0 { &one } else { &two };
        let reply = post_with(
            &proxy.url(CHAT),
            KEY_A,
            &question(&format!("down {i}")),
            &[],
        )
        .await;
        statuses.push((
            reply.status.as_u16(),
            reply.header("x-tollgate-cache").map(str::to_owned),
        ));
    }
    assert!(
        statuses
            .iter()
            .all(|(s, c)| *s == 200 && c.as_deref() == Some("miss")),
        "{statuses:?}"
    );
    // The entry one already had locally still answers there.
    let local = post_with(&one.url(CHAT), KEY_A, &question("shared"), &[]).await;
    assert_eq!(local.header("x-tollgate-cache"), Some("hit"));
    let errors = metric(&one, "tollgate_cache_store_errors_total{op=\"get\"}").await
        + metric(&one, "tollgate_cache_store_errors_total{op=\"set\"}").await
        + metric(&two, "tollgate_cache_store_errors_total{op=\"get\"}").await
        + metric(&two, "tollgate_cache_store_errors_total{op=\"set\"}").await;
    assert!(errors >= 10.0, "store errors counted: {errors}");

    // Redis back (empty): sharing resumes once the proxies have reconnected.
    wait_for_redis(&one, false).await;
    wait_for_redis(&two, false).await;
    let _redis = Redis::start(port);
    wait_for_redis(&one, true).await;
    wait_for_redis(&two, true).await;
    let again = post_with(&two.url(CHAT), KEY_A, &question("after"), &[]).await;
    assert_eq!(again.header("x-tollgate-cache"), Some("miss"));
    let mut shared = None;
    for _ in 0..100 {
        if redis_command(port, "DBSIZE").is_some_and(|n| n != ":0") {
            let reply = post_with(&one.url(CHAT), KEY_A, &question("after"), &[]).await;
            shared = reply.header("x-tollgate-cache").map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        shared.as_deref(),
        Some("hit"),
        "written through two, hit on one"
    );
    one.stop().await;
    two.stop().await;
}
