//! Two real `tollgate-proxy` processes sharing one real Redis (Debian's `redis-server`, started here on
//! a free loopback port and stopped at the end): a combined load of three times a subscription's limit
//! admits no more than the limit plus what drains during the run; with Redis killed mid-run both keep
//! serving on their local shares; once Redis is back they count in it again.
//!
//! Tolerance: the limit is a leaky bucket of `LIMIT` requests per minute, so during a run of `t`
//! seconds `t * LIMIT / 60` more requests legitimately fit; the bound checked is
//! `LIMIT + ceil(t * LIMIT / 60) + 1` (the +1 covers the millisecond rounding of levels).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::redis::{Redis, redis_command, redis_reply_lines};
use crate::support::standalone_bin::{Proxy, free_port};

pub(super) const KEY: &str = "tg-redis-test-key-0123456789";
const LIMIT: usize = 60;
const REPLICAS: usize = 2;

pub(super) fn config() -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: fake, namespace: default}}
spec:
  type: Fake
  models: [{{name: fake-chat}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: demo, namespace: default}}
spec:
  prefix: /demo
  approval: Automatic
  models:
    - name: fake-chat
      backends: [{{provider: fake}}]
{}"#,
        caller("app", KEY, LIMIT)
    )
}

/// A consumer `name` with the key `key` and its subscription `<name>-demo` to the route `demo`,
/// limited to `rpm` requests a minute.
fn caller(name: &str, key: &str, rpm: usize) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Secret
metadata: {{name: {name}-key, namespace: default}}
stringData: {{apiKey: {key}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Consumer
metadata: {{name: {name}, namespace: default}}
spec:
  keys: [{{name: primary, secretRef: {{name: {name}-key}}}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata: {{name: {name}-demo, namespace: default}}
spec:
  consumer: {name}
  route: {{name: demo}}
  limits: {{requestsPerMinute: {rpm}}}
"#
    )
}

/// Replica `n` of the proxy, counting in the Redis on `redis_port`.
fn replica(dir: &Path, n: usize, redis_port: u16) -> Proxy {
    let redis_url = format!("redis://127.0.0.1:{redis_port}/0");
    let replicas = REPLICAS.to_string();
    Proxy::start_with(
        dir,
        &format!("replica-{n}.log"),
        &[
            "--redis-url",
            &redis_url,
            "--replicas",
            &replicas,
            "--access-log",
            "off",
        ],
    )
}

/// Waits up to 15 s for `proxy` to report Redis up (or down).
pub(super) fn wait_redis(proxy: &Proxy, up: bool) {
    let want = if up { 1.0 } else { 0.0 };
    let deadline = Instant::now() + Duration::from_secs(15);
    while proxy.metric("tollgate_limits_redis_up") != Some(want) {
        assert!(
            Instant::now() < deadline,
            "tollgate_limits_redis_up never became {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a burst of calls got.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) admitted: usize,
    pub(super) limited: usize,
    other: Vec<u16>,
    seconds: f64,
}

impl Tally {
    fn bound(&self) -> usize {
        LIMIT + (self.seconds * LIMIT as f64 / 60.0).ceil() as usize + 1
    }
}

/// Sends `calls` chat calls spread over `ports`, 8 at a time per port; `after(n)` runs once `n` are done.
pub(super) async fn burst(
    ports: &[u16],
    calls: usize,
    on_progress: Option<(usize, Box<dyn FnOnce() + Send>)>,
) -> Tally {
    use http_body_util::{BodyExt, Full};
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let body =
        bytes::Bytes::from(r#"{"model":"fake-chat","messages":[{"role":"user","content":"hi"}]}"#);
    let per_port = calls / ports.len();
    let mut tasks = Vec::new();
    for &port in ports {
        for w in 0..8 {
            let (client, body, done) = (client.clone(), body.clone(), done.clone());
            let share = per_port / 8 + usize::from(w < per_port % 8);
            tasks.push(tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..share {
                    let request = http::Request::post(format!(
                        "http://127.0.0.1:{port}/demo/v1/chat/completions"
                    ))
                    .header("authorization", format!("Bearer {KEY}"))
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                    let response = client.request(request).await.expect("the proxy answers");
                    statuses.push(response.status().as_u16());
                    let _ = response.into_body().collect().await;
                    done.fetch_add(1, Ordering::SeqCst);
                }
                statuses
            }));
        }
    }
    if let Some((at, action)) = on_progress {
        while done.load(Ordering::SeqCst) < at {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        action();
    }
    let mut tally = Tally::default();
    for t in tasks {
        for status in t.await.unwrap() {
            match status {
                200 => tally.admitted += 1,
                429 => tally.limited += 1,
                other => tally.other.push(other),
            }
        }
    }
    tally.seconds = started.elapsed().as_secs_f64();
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_share_a_limit_in_redis_fall_back_to_shares_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config()).unwrap();
    let redis_port = free_port();
    let redis = Redis::start(redis_port);
    let a = replica(dir.path(), 0, redis_port);
    let b = replica(dir.path(), 1, redis_port);
    wait_redis(&a, true);
    wait_redis(&b, true);

    // 1. Redis up. Half the load on A alone: A admits the whole limit, twice its local share, so it
    // counts in Redis; then the other half on B: B finds the limit spent.
    let on_a = burst(&[a.port], 3 * LIMIT / 2, None).await;
    let on_b = burst(&[b.port], 3 * LIMIT / 2, None).await;
    eprintln!("with Redis: A {on_a:?}, B {on_b:?}");
    assert!(on_a.other.is_empty() && on_b.other.is_empty());
    assert!(
        on_a.admitted >= LIMIT,
        "A alone admits the whole limit: {on_a:?}"
    );
    let combined = Tally {
        admitted: on_a.admitted + on_b.admitted,
        seconds: on_a.seconds + on_b.seconds,
        ..Tally::default()
    };
    assert!(
        combined.admitted <= combined.bound(),
        "3x the limit admitted {} > {}",
        combined.admitted,
        combined.bound()
    );
    assert!(
        on_b.admitted <= combined.bound() - LIMIT,
        "B shares A's count: {on_b:?}"
    );
    assert_eq!(
        redis_command(
            redis_port,
            "EXISTS tollgate:limits:{default/app}:s:default/app-demo"
        )
        .as_deref(),
        Some(":1"),
        "the subscription's counters live in Redis"
    );

    // 2. Redis killed in the middle of a run of 3x the limit over both proxies: nothing fails, and
    // each proxy admits at most its local share (plus its drain).
    let mut slot = Some(redis);
    let kill: Box<dyn FnOnce() + Send> = Box::new(move || slot.take().unwrap().kill());
    let during = burst(&[a.port, b.port], 3 * LIMIT, Some((LIMIT / 2, kill))).await;
    eprintln!("Redis killed mid-run: {during:?}");
    assert!(
        during.other.is_empty(),
        "only 200 and 429: {:?}",
        during.other
    );
    assert!(
        during.admitted >= LIMIT / 2,
        "local shares keep serving: {during:?}"
    );
    assert!(during.admitted <= during.bound(), "{during:?}");
    for p in [&a, &b] {
        wait_redis(p, false);
        assert!(
            p.metric("tollgate_limits_redis_fallbacks_total")
                .unwrap_or(0.0)
                >= 1.0
        );
    }

    // 3. Redis is back (empty): both reconnect, and A alone again admits more than its local share,
    // which it had spent in step 2.
    let redis = Redis::start(redis_port);
    wait_redis(&a, true);
    wait_redis(&b, true);
    let again = burst(&[a.port], 3 * LIMIT / 2, None).await;
    let after = burst(&[b.port], 3 * LIMIT / 2, None).await;
    eprintln!("Redis back: A {again:?}, B {after:?}");
    assert!(again.other.is_empty() && after.other.is_empty());
    assert!(
        again.admitted > LIMIT / REPLICAS + 5,
        "A counts in Redis again, beyond its local share: {again:?}"
    );
    assert!(
        again.admitted + after.admitted
            <= LIMIT + ((again.seconds + after.seconds) * LIMIT as f64 / 60.0).ceil() as usize + 1
    );
    assert_eq!(
        redis_command(
            redis.port,
            "EXISTS tollgate:limits:{default/app}:s:default/app-demo"
        )
        .as_deref(),
        Some(":1")
    );
    drop((a, b));
    redis.kill();
}

/// Two replicas reserve budget in one Redis: 20 calls sent at once through both, each in flight for
/// 300 ms, spend no more than the budget together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_through_two_proxies_cannot_overshoot_a_budget_in_redis() {
    use http_body_util::{BodyExt, Full};
    const BUDGET_MICRO_USD: f64 = 1_000.0;
    let config = config()
        .replace(
            "  models: [{name: fake-chat}]\n",
            "  models: [{name: fake-chat, pricing: {inputPerMillion: 2, outputPerMillion: 8}}]\n  fake: {latency: 300ms}\n",
        )
        .replace(
            &format!("  limits: {{requestsPerMinute: {LIMIT}}}\n"),
            "  budget: {dailyUsd: 0.001}\n",
        );
    assert!(config.contains("dailyUsd") && config.contains("latency"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let redis = Redis::start(free_port());
    let (a, b) = (
        replica(dir.path(), 0, redis.port),
        replica(dir.path(), 1, redis.port),
    );
    wait_redis(&a, true);
    wait_redis(&b, true);

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let body = bytes::Bytes::from(
        r#"{"model":"fake-chat","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let port = if i % 2 == 0 { a.port } else { b.port };
            let (client, body) = (client.clone(), body.clone());
            tokio::spawn(async move {
                let request = http::Request::post(format!(
                    "http://127.0.0.1:{port}/demo/v1/chat/completions"
                ))
                .header("authorization", format!("Bearer {KEY}"))
                .header("content-type", "application/json")
                .body(Full::new(body))
                .unwrap();
                let response = client.request(request).await.expect("the proxy answers");
                let status = response.status().as_u16();
                let bytes = response.into_body().collect().await.unwrap().to_bytes();
                (
                    status,
                    serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
                )
            })
        })
        .collect();
    let (mut admitted, mut spent) = (0, 0.0);
    for call in calls {
        let (status, answer) = call.await.unwrap();
        match status {
            200 => {
                admitted += 1;
                let usage = &answer["usage"];
                spent += usage["prompt_tokens"].as_f64().unwrap() * 2.0
                    + usage["completion_tokens"].as_f64().unwrap() * 8.0;
            }
            429 => assert_eq!(answer["error"]["code"], "budget_exceeded", "{answer}"),
            other => panic!("{other}: {answer}"),
        }
    }
    eprintln!(
        "Redis: admitted {admitted} of 20 concurrent calls, spent {spent} of {BUDGET_MICRO_USD} micro-USD"
    );
    assert!(admitted >= 1);
    assert!(
        spent <= BUDGET_MICRO_USD,
        "{admitted} calls spent {spent} micro-USD of {BUDGET_MICRO_USD}"
    );
    // Every reservation was given back once the calls settled.
    let deadline = Instant::now() + Duration::from_secs(5);
    let reserved = |field: &str| {
        // A bulk string: `$<length>` on the first line, the value on the second.
        redis_reply_lines(
            redis.port,
            &format!("HGET tollgate:limits:{{default/app}}:s:default/app-demo {field}"),
        )
        .and_then(|lines| lines.into_iter().nth(1))
    };
    loop {
        let (rv, rp) = (reserved("rv"), reserved("rp"));
        if rv.as_deref() == Some("0") && rp.as_deref() == Some("0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reservations left: rv {rv:?} rp {rp:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    redis.kill();
}

/// A subscription deleted and created again under the same name is a new object: its counters in
/// Redis are keyed by its uid (and the consumer's, as hash tag), so it starts from zero instead of
/// inheriting its predecessor's spent limit for the 40 days the old keys live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_subscription_does_not_inherit_its_predecessors_counters_in_redis() {
    const CONSUMER_UID: &str = "0c0c0c0c-1111-4000-8000-000000000001";
    const FIRST_UID: &str = "5b5b5b5b-2222-4000-8000-000000000002";
    const SECOND_UID: &str = "5b5b5b5b-3333-4000-8000-000000000003";
    // Two requests a minute: one slot drains back only every 30 s, longer than this test waits.
    let config = |subscription_uid: &str| {
        config()
            .replace(
                "metadata: {name: app, namespace: default}",
                &format!("metadata: {{name: app, namespace: default, uid: {CONSUMER_UID}}}"),
            )
            .replace(
                "metadata: {name: app-demo, namespace: default}",
                &format!(
                    "metadata: {{name: app-demo, namespace: default, uid: {subscription_uid}}}"
                ),
            )
            .replace(
                &format!("requestsPerMinute: {LIMIT}"),
                "requestsPerMinute: 2",
            )
    };
    assert!(config(FIRST_UID).contains(FIRST_UID) && config(FIRST_UID).contains(CONSUMER_UID));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, config(FIRST_UID)).unwrap();
    let redis = Redis::start(free_port());
    let proxy = replica(dir.path(), 0, redis.port);
    wait_redis(&proxy, true);
    let spent = burst(&[proxy.port], 8, None).await;
    assert_eq!((spent.admitted, spent.limited), (2, 6), "{spent:?}");
    let key = |uid: &str| format!("EXISTS tollgate:limits:{{{CONSUMER_UID}}}:s:{uid}");
    assert_eq!(
        redis_command(redis.port, &key(FIRST_UID)).as_deref(),
        Some(":1")
    );
    assert_eq!(
        redis_command(
            redis.port,
            "EXISTS tollgate:limits:{default/app}:s:default/app-demo"
        )
        .as_deref(),
        Some(":0"),
        "objects with a uid are not keyed by name"
    );

    // Deleted and created again: same names, a new uid. Once the proxy has read the file, the new
    // subscription has its whole limit.
    let version = proxy.metric("tollgate_snapshot_version").unwrap();
    std::fs::write(&file, config(SECOND_UID)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while proxy.metric("tollgate_snapshot_version") == Some(version) {
        assert!(
            Instant::now() < deadline,
            "the proxy never re-read its file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = burst(&[proxy.port], 3, None).await;
    assert_eq!((fresh.admitted, fresh.limited), (2, 1), "{fresh:?}");
    assert_eq!(
        redis_command(redis.port, &key(SECOND_UID)).as_deref(),
        Some(":1")
    );
    drop(proxy);
    redis.kill();
}

/// The raw level field `field` of the hash `key`, as the scripts last wrote it.
fn level_field(port: u16, key: &str, field: &str) -> Option<f64> {
    let lines = redis_reply_lines(port, &format!("HGET {key} {field}"))?;
    lines.get(1)?.parse().ok()
}

/// Polls up to 5 s until the level `field` of `key` is below `below` (settlements are sent in the
/// background); returns the last value read.
async fn level_below(port: u16, key: &str, field: &str, below: f64) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let level = level_field(port, key, field);
        if level.is_some_and(|l| l < below) || Instant::now() > deadline {
            return level;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A route's total (`spec.totalLimits`) counted in Redis by two proxies for two consumers: four
/// requests a minute for everyone together; a call refused by one scope charges none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_total_is_shared_by_all_callers_through_two_proxies_in_redis() {
    let redis = Redis::start(free_port());
    route_total_through_two_proxies(&redis).await;
}

/// The same in a Redis in cluster mode, where the route's total lies in another hash slot than the
/// caller's counters: it gets a script call of its own in the same pipeline, and a call one scope
/// refuses gives back what the other charged — the route's count when the caller's subscription
/// refuses, the subscription's count when the route refuses. (One script over both slots would fail
/// with CROSSSLOT, and the proxies would count on their shares instead.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_total_takes_a_script_call_of_its_own_in_a_redis_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start_cluster(free_port(), dir.path());
    route_total_through_two_proxies(&redis).await;
}

async fn route_total_through_two_proxies(redis: &Redis) {
    const BOT_KEY: &str = "tg-redis-test-key-of-the-bot-42";
    const ROUTE: &str = "tollgate:limits:{r:default/demo}:r";
    const BOT_SUB: &str = "tollgate:limits:{default/bot}:s:default/bot-demo";
    let config = config()
        .replace(
            "  approval: Automatic\n",
            "  approval: Automatic\n  totalLimits: {requestsPerMinute: 4}\n",
        )
        .replace(
            &format!("requestsPerMinute: {LIMIT}"),
            "requestsPerMinute: 1",
        )
        + &caller("bot", BOT_KEY, 5);
    assert!(config.contains("totalLimits"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let (a, b) = (
        replica(dir.path(), 0, redis.port),
        replica(dir.path(), 1, redis.port),
    );
    wait_redis(&a, true);
    wait_redis(&b, true);
    let ask =
        serde_json::json!({"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]});
    let call = |port: u16, key: &'static str| {
        let ask = ask.clone();
        async move {
            crate::support::post(
                &format!("http://127.0.0.1:{port}/demo/v1/chat/completions"),
                key,
                &ask,
            )
            .await
        }
    };

    // The app's own subscription allows one call a minute: its second is refused there, and the
    // route's count it took in the same round trip is given back.
    call(a.port, KEY).await.assert_status(200);
    let own = call(b.port, KEY).await;
    assert_eq!(own.status, 429);
    let message = own.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("subscription default/app-demo"),
        "{message}"
    );
    let route_level = level_below(redis.port, ROUTE, "ru", 1.5).await;
    assert!(
        route_level.is_some_and(|l| (0.5..1.5).contains(&l)),
        "the route counts the one admitted call only: {route_level:?}"
    );

    // The bot gets the three left, through either proxy; its fourth is refused by the route.
    for port in [a.port, b.port, a.port] {
        call(port, BOT_KEY).await.assert_status(200);
    }
    for port in [b.port, a.port] {
        // What a refused call charged is given back after it is answered: the next call is made
        // once it has been, so that the counts its headers show are settled.
        level_below(redis.port, BOT_SUB, "ru", 3.5).await;
        let refused = call(port, BOT_KEY).await;
        assert_eq!(refused.status, 429);
        let message = refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.starts_with("Rate limit reached for route default/demo, shared by all its callers, on requests per min (RPM): Limit 4."),
            "{message}"
        );
        // The bot's headers show its own subscription (5 a minute, 3 used), never the route's level.
        assert_eq!(refused.header("x-ratelimit-limit-requests"), Some("5"));
        assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("2"));
    }
    // Its subscription admitted those two and was given them back: it counts the three calls made.
    let bot_level = level_below(redis.port, BOT_SUB, "ru", 3.5).await;
    assert!(
        bot_level.is_some_and(|l| (2.5..3.5).contains(&l)),
        "the bot's subscription counts its three admitted calls only: {bot_level:?}"
    );
    let refusals = |p: &Proxy| {
        p.metric(r#"tollgate_limit_refusals_total{reason="requests",scope="route"}"#)
            .unwrap_or(0.0)
    };
    assert_eq!(refusals(&a) + refusals(&b), 2.0);
    for p in [&a, &b] {
        assert_eq!(
            p.metric("tollgate_limits_redis_fallbacks_total"),
            Some(0.0),
            "counted in Redis throughout"
        );
    }
}
