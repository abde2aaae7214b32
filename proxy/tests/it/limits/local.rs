//! Request and token limits and budgets, counted on this replica (no Redis): the 429s in OpenAI's shape,
//! the `x-ratelimit-*` headers on every answer of a limited model call, only model calls charged,
//! consumer-wide limits across subscriptions, the token estimate (chunked bodies, the output ceiling),
//! settlement with the real usage, budgets, and replica shares.

use serde_json::{Value, json};
use tollgate_snapshot::{Budget, Content, FakeBehaviour, Limits, Phase};

use crate::support::*;

const KEY: &str = "tg-limits-key";
const CHAT: &str = "/team-a/chat/v1/chat/completions";
const OTHER: &str = "/team-a/other/v1/chat/completions";

fn table() -> Content {
    Content {
        providers: vec![fake_provider("fake", FakeBehaviour::default())],
        routes: vec![
            route(
                NS,
                "chat",
                "/team-a/chat",
                vec![model("m", vec![backend(0, "m")], vec![])],
            ),
            route(
                NS,
                "other",
                "/team-a/other",
                vec![model("m", vec![backend(0, "m")], vec![])],
            ),
        ],
        consumers: vec![consumer(NS, "app", KEY)],
        subscriptions: vec![
            subscription("app-chat", 0, 0, Phase::Approved),
            subscription("app-other", 0, 1, Phase::Approved),
        ],
        proxy_replicas: 0,
    }
}

fn ask() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]})
}

fn rpm(n: u32) -> Limits {
    Limits {
        requests_per_minute: Some(n),
        tokens_per_minute: None,
    }
}

#[tokio::test]
async fn a_request_limit_answers_429_in_openais_shape_with_the_headers_on_every_answer() {
    let mut content = table();
    content.subscriptions[0].limits = Limits {
        requests_per_minute: Some(3),
        tokens_per_minute: Some(100_000),
    };
    let proxy = TestProxy::start(content).await;
    for left in (0..3).rev() {
        let reply = post(&proxy.url(CHAT), KEY, &ask()).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(
            reply.header("x-ratelimit-remaining-requests"),
            Some(left.to_string().as_str())
        );
        assert_eq!(reply.header("x-ratelimit-limit-tokens"), Some("100000"));
        assert!(reply.header("x-ratelimit-remaining-tokens").is_some());
        assert!(
            reply
                .header("x-ratelimit-reset-requests")
                .unwrap()
                .ends_with('s')
        );
        assert!(reply.header("x-ratelimit-reset-tokens").is_some());
        assert!(reply.header("retry-after").is_none());
    }
    let refused = post(&proxy.url(CHAT), KEY, &ask()).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error_code(), "rate_limit_exceeded");
    let body = refused.json();
    assert_eq!(body["error"]["type"], "requests");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Rate limit reached for subscription team-a/app-chat on requests per min (RPM): Limit 3, Used 3, Requested 1."),
        "{message}"
    );
    // Three calls a minute: one slot comes back 20 s after the first call.
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((19..=20).contains(&retry), "retry-after {retry}");
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
    assert!(refused.header("x-ratelimit-limit-tokens").is_some());
    assert!(refused.header("x-should-retry").is_none());
    let line = proxy.log_line_of(&refused.request_id()).await;
    assert_eq!(line["status"], 429);
    assert_eq!(line["error_class"], "rate_limit_exceeded");

    // The models list is not a model call: it is neither charged nor refused.
    let models = get(&proxy.url("/team-a/chat/v1/models"), KEY).await;
    models.assert_status(200);

    // The other subscription of the same consumer is not limited, and says nothing about limits.
    let other = post(&proxy.url(OTHER), KEY, &ask()).await;
    assert_eq!(other.status, 200);
    assert!(other.header("x-ratelimit-limit-requests").is_none());

    let metrics = send(http::Method::GET, &proxy.admin_url("/metrics"), &[], None).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.contains(r#"tollgate_limit_refusals_total{reason="requests",scope="subscription"} 1"#),
        "{text}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn only_calls_routed_to_a_model_use_up_a_request_limit() {
    let mut content = table();
    content.subscriptions[0].limits = rpm(3);
    let proxy = TestProxy::start(content).await;
    for _ in 0..2 {
        let unknown_path = post(&proxy.url("/team-a/chat/v1/nope"), KEY, &ask()).await;
        assert_eq!(
            (
                unknown_path.status.as_u16(),
                unknown_path.error_code().as_str()
            ),
            (404, "unknown_url")
        );
        let unknown_model = post(
            &proxy.url(CHAT),
            KEY,
            &json!({"model": "nope", "messages": [{"role": "user", "content": "hello"}]}),
        )
        .await;
        assert_eq!(
            (
                unknown_model.status.as_u16(),
                unknown_model.error_code().as_str()
            ),
            (404, "model_not_found")
        );
        get(&proxy.url("/team-a/chat/v1/models"), KEY)
            .await
            .assert_status(200);
    }
    for left in (0..3).rev() {
        let reply = post(&proxy.url(CHAT), KEY, &ask()).await;
        reply.assert_status(200);
        assert_eq!(
            reply.header("x-ratelimit-remaining-requests"),
            Some(left.to_string().as_str())
        );
    }
    let refused = post(&proxy.url(CHAT), KEY, &ask()).await;
    assert_eq!(
        (refused.status.as_u16(), refused.error_code().as_str()),
        (429, "rate_limit_exceeded")
    );
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
    proxy.stop().await;
}

/// The number after `Requested ` in a limit refusal's message.
fn requested(refused: &Reply) -> u64 {
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    message
        .split("Requested ")
        .nth(1)
        .and_then(|r| r.split(['.', ' ']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{message}"))
}

#[tokio::test]
async fn the_token_estimate_counts_chunked_bodies_and_the_output_ceiling() {
    let mut content = table();
    content.subscriptions[0].limits = Limits {
        requests_per_minute: None,
        tokens_per_minute: Some(1_000),
    };
    let proxy = TestProxy::start(content).await;
    // A call larger than the whole ceiling is let through only when nothing else is counted; this one
    // makes sure something is.
    post(&proxy.url(CHAT), KEY, &ask()).await.assert_status(200);

    // A small prompt that allows itself a long answer is refused before anything is sent.
    for ceiling in ["max_tokens", "max_completion_tokens"] {
        let mut long_answer = ask();
        long_answer[ceiling] = json!(5_000);
        let refused = post(&proxy.url(CHAT), KEY, &long_answer).await;
        assert_eq!(refused.status, 429, "{ceiling}");
        assert_eq!(refused.json()["error"]["type"], "tokens");
        assert!(requested(&refused) >= 5_000, "{ceiling}");
    }

    // A chunked body has no declared size: it is counted as read.
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(5_000)}]});
    let refused = post_chunked(&proxy.url(CHAT), KEY, &big).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"]["type"], "tokens");
    assert!(requested(&refused) >= 1_250, "{}", requested(&refused));

    let medium =
        json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(2_000)}]});
    let admitted = post_chunked(&proxy.url(CHAT), KEY, &medium).await;
    admitted.assert_status(200);
    let remaining: u64 = admitted
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(remaining <= 1_000 - 500, "{remaining} left after 2 kB");
    proxy.stop().await;
}

#[tokio::test]
async fn a_consumer_limit_spans_its_subscriptions() {
    let mut content = table();
    content.consumers[0].limits = rpm(4);
    let proxy = TestProxy::start(content).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let url = if i % 2 == 0 { CHAT } else { OTHER };
        statuses.push(post(&proxy.url(url), KEY, &ask()).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    let refused = post(&proxy.url(OTHER), KEY, &ask()).await;
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("consumer team-a/app"),
        "{}",
        refused.json()
    );
    proxy.stop().await;
}

/// A subscription and a consumer deleted and created again under the same names are new objects (new
/// uids): they start from zero, while a mere snapshot swap keeps the counters of the same objects.
#[tokio::test]
async fn a_recreated_subscription_or_consumer_does_not_inherit_its_predecessors_counters() {
    let with_uids = |subscription: &str, consumer: &str| {
        let mut content = table();
        content.subscriptions[0].limits = rpm(2);
        content.subscriptions[0].uid = subscription.into();
        content.consumers[0].limits = rpm(3);
        content.consumers[0].uid = consumer.into();
        content
    };
    let proxy = TestProxy::start(with_uids("sub-1", "con-1")).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(post(&proxy.url(CHAT), KEY, &ask()).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    // The same objects in a new snapshot: still spent.
    proxy.swap(with_uids("sub-1", "con-1"), 2);
    assert_eq!(post(&proxy.url(CHAT), KEY, &ask()).await.status, 429);
    // The subscription re-created: its own limit starts again, the consumer's (2 of 3 used) holds.
    proxy.swap(with_uids("sub-2", "con-1"), 3);
    let refused = post(&proxy.url(CHAT), KEY, &ask()).await;
    assert_eq!(refused.status, 200);
    let refused = post(&proxy.url(CHAT), KEY, &ask()).await;
    assert_eq!(refused.status, 429);
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("consumer team-a/app"),
        "{}",
        refused.json()
    );
    // The consumer re-created too: both start again.
    proxy.swap(with_uids("sub-2", "con-2"), 4);
    assert_eq!(post(&proxy.url(CHAT), KEY, &ask()).await.status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn tokens_are_admitted_on_an_estimate_and_settled_with_the_real_usage() {
    let mut content = table();
    // The Fake provider answers 16 completion tokens; the prompt is a dozen more.
    content.subscriptions[0].limits = Limits {
        requests_per_minute: None,
        tokens_per_minute: Some(60),
    };
    let proxy = TestProxy::start(content).await;
    let first = post(&proxy.url(CHAT), KEY, &ask()).await;
    assert_eq!(first.status, 200);
    let used = first.json()["usage"]["total_tokens"].as_u64().unwrap();
    let remaining: u64 = first
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(remaining < 60, "the estimate was counted at admission");
    let mut admitted = 1;
    let refused = loop {
        let reply = post(&proxy.url(CHAT), KEY, &ask()).await;
        if reply.status != 200 {
            break reply;
        }
        admitted += 1;
        assert!(admitted < 10);
    };
    // Settled with real usage, 60 tokens a minute admit what fits of `used`-token calls.
    assert!(
        admitted as u64 <= 60 / used + 1,
        "{admitted} calls of {used} tokens"
    );
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"]["type"], "tokens");
    assert_eq!(refused.error_code(), "rate_limit_exceeded");
    // What is left is less than the call asked for.
    let left: u64 = refused
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    let requested: u64 = message
        .split("Requested ")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    assert!(left < requested, "{left} left, {requested} requested");
    proxy.stop().await;
}

#[tokio::test]
async fn a_spent_budget_answers_budget_exceeded_until_the_window_turns() {
    let mut content = table();
    // Fake prices are $2 / $8 per million tokens: each call costs a little over $0.0001.
    content.subscriptions[0].budget = Budget {
        monthly_micro_usd: None,
        daily_micro_usd: Some(250),
    };
    let proxy = TestProxy::start(content).await;
    let mut admitted = 0;
    let refused = loop {
        let reply = post(&proxy.url(CHAT), KEY, &ask()).await;
        if reply.status != 200 {
            break reply;
        }
        assert!(
            reply.header("x-ratelimit-limit-requests").is_none(),
            "no rate limit, no rate headers"
        );
        admitted += 1;
        assert!(admitted < 10);
    };
    assert_eq!(admitted, 2, "two calls spend the quarter-cent");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error_code(), "budget_exceeded");
    assert_eq!(refused.json()["error"]["type"], "insufficient_quota");
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("daily budget of subscription team-a/app-chat"),
    );
    // Until midnight UTC, and SDKs are told not to retry.
    let retry: i64 = refused.header("retry-after").unwrap().parse().unwrap();
    let now = tollgate_proxy::clock::now_unix();
    let midnight = (now / 86_400 + 1) * 86_400;
    assert!((retry - (midnight - now)).abs() <= 2, "retry-after {retry}");
    assert_eq!(refused.header("x-should-retry"), Some("false"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_cannot_overshoot_a_budget_together() {
    let mut content = table();
    // Calls take 300 ms, so all of them are in flight before any is settled.
    content.providers[0] = fake_provider(
        "fake",
        FakeBehaviour {
            latency_ms: 300,
            ..FakeBehaviour::default()
        },
    );
    const BUDGET: u64 = 1_000; // micro-dollars
    content.subscriptions[0].budget = Budget {
        monthly_micro_usd: None,
        daily_micro_usd: Some(BUDGET),
    };
    let proxy = TestProxy::start(content).await;
    // With an output ceiling each call reserves at least what it costs: about 40 tokens at the
    // dearer $8 per million, ~330 micro-dollars; a call really costs about 140.
    let body =
        json!({"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]});
    let url = proxy.url(CHAT);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move { post(&url, KEY, &body).await })
        })
        .collect();
    let (mut admitted, mut spent_micro_usd) = (0, 0.0);
    for call in calls {
        let reply = call.await.unwrap();
        match reply.status.as_u16() {
            200 => {
                let usage = &reply.json()["usage"];
                let (input, output) = (
                    usage["prompt_tokens"].as_f64().unwrap(),
                    usage["completion_tokens"].as_f64().unwrap(),
                );
                admitted += 1;
                spent_micro_usd += input * 2.0 + output * 8.0;
            }
            429 => {
                assert_eq!(reply.error_code(), "budget_exceeded");
                // Refused on reservations, not spend: worth trying again in a second.
                assert_eq!(reply.header("retry-after"), Some("1"));
            }
            other => panic!("{other}: {:?}", reply.body),
        }
    }
    println!(
        "admitted {admitted} of 20 concurrent calls, spent {spent_micro_usd} of {BUDGET} micro-USD"
    );
    assert!(admitted >= 1);
    assert!(
        spent_micro_usd <= BUDGET as f64,
        "{admitted} calls spent {spent_micro_usd} micro-USD of a {BUDGET} budget"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn without_redis_each_replica_enforces_its_share() {
    let mut content = table();
    content.subscriptions[0].limits = rpm(10);
    content.proxy_replicas = 4;
    let proxy = TestProxy::start(content).await;
    let mut admitted = 0;
    for _ in 0..10 {
        admitted += usize::from(post(&proxy.url(CHAT), KEY, &ask()).await.status == 200);
    }
    assert_eq!(
        admitted, 3,
        "10 a minute over 4 replicas: 3 each (rounded up)"
    );
    let refused = post(&proxy.url(CHAT), KEY, &ask()).await;
    assert_eq!(refused.header("x-ratelimit-limit-requests"), Some("3"));
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1/4")
    );

    // A new snapshot (one replica now) keeps the counters and raises the share.
    let mut content = table();
    content.subscriptions[0].limits = rpm(10);
    content.proxy_replicas = 1;
    proxy.swap(content, 2);
    let mut admitted = 0;
    for _ in 0..10 {
        admitted += usize::from(post(&proxy.url(CHAT), KEY, &ask()).await.status == 200);
    }
    assert_eq!(admitted, 7, "the three already counted stay counted");
    proxy.stop().await;
}

/// A route's total holds for all its callers together: two consumers, each with its own subscription,
/// share three requests a minute; the refusal names the route and tells neither how much the other
/// used; a call refused by its own subscription uses none of the total.
#[tokio::test]
async fn a_routes_total_holds_for_all_its_callers_together() {
    const OTHER_KEY: &str = "tg-limits-key-of-another-team";
    let mut content = table();
    content.routes[0].total_limits = rpm(3);
    content.consumers.push(consumer("team-b", "bot", OTHER_KEY));
    let mut theirs = subscription("bot-chat", 1, 0, Phase::Approved);
    theirs.id = tollgate_snapshot::ObjectRef::new("team-b", "bot-chat");
    content.subscriptions.push(theirs);
    // The first consumer's own subscription allows one call a minute, the other's ten.
    content.subscriptions[0].limits = rpm(1);
    content.subscriptions[2].limits = rpm(10);
    let proxy = TestProxy::start(content).await;

    post(&proxy.url(CHAT), KEY, &ask()).await.assert_status(200);
    let own = post(&proxy.url(CHAT), KEY, &ask()).await;
    assert_eq!(own.status, 429);
    let message = own.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("subscription team-a/app-chat"),
        "{message}"
    );

    // The refused call took nothing from the total: the other team still gets two.
    for _ in 0..2 {
        let reply = post(&proxy.url(CHAT), OTHER_KEY, &ask()).await;
        reply.assert_status(200);
        // Its headers show its own subscription's level; the route's is not its business.
        assert_eq!(reply.header("x-ratelimit-limit-requests"), Some("10"));
    }
    let refused = post(&proxy.url(CHAT), OTHER_KEY, &ask()).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error_code(), "rate_limit_exceeded");
    let body = refused.json();
    assert_eq!(body["error"]["type"], "requests");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Rate limit reached for route team-a/chat, shared by all its callers, on requests per min (RPM): Limit 3."
        ),
        "{message}"
    );
    assert!(!message.contains("Used"), "{message}");
    assert!(refused.header("retry-after").is_some());
    // The refusal shows the caller's own level (two of its ten used), not the route's.
    assert_eq!(refused.header("x-ratelimit-limit-requests"), Some("10"));
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("8"));

    // The other route has no total.
    post(&proxy.url(OTHER), KEY, &ask())
        .await
        .assert_status(200);

    let metrics = send(http::Method::GET, &proxy.admin_url("/metrics"), &[], None).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.contains(r#"tollgate_limit_refusals_total{reason="requests",scope="route"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tollgate_limit_refusals_total{reason="requests",scope="subscription"} 1"#),
        "{text}"
    );
    proxy.stop().await;
}
