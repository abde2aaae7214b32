//! Traffic policy as compiled: budgets clamped to the route's (and shown in status), consumer-wide
//! limits and budgets, retry budgets, provider health and key cooldown, and the proxy count input.

use crate::support::*;
use serde_json::json;
use tollgate_crds::condition_type::ACCEPTED;
use tollgate_snapshot::{Budget, Detail, HealthPolicy, Kind, Limits, RetryBudget, Snapshot};

#[test]
fn subscription_budgets_are_clamped_to_the_routes_and_shown_in_status() {
    let mut inputs = team_a();
    inputs.routes[0].spec.budget = Some(tollgate_crds::Budget {
        monthly_usd: Some(100.0),
        daily_usd: Some(10.0),
    });
    inputs.subscriptions[0].spec.budget = Some(tollgate_crds::Budget {
        monthly_usd: Some(500.0),
        daily_usd: None,
    });
    let compiled = run(&inputs);
    let want = Budget {
        monthly_micro_usd: Some(100_000_000),
        daily_micro_usd: Some(10_000_000),
    };
    assert_eq!(compiled.snapshot.content.routes[0].budget, want);
    assert_eq!(compiled.snapshot.content.subscriptions[0].budget, want);
    let v = verdict(&compiled, Kind::ApiSubscription, "team-a", "app-chat");
    match &v.detail {
        Detail::Subscription(d) => assert_eq!(d.effective_budget, Some(want)),
        other => panic!("{other:?}"),
    }
    let accepted = v.condition(ACCEPTED).unwrap();
    assert!(
        accepted.message.contains("limits or budget were lowered")
            && accepted.message.contains("status.effectiveBudget"),
        "{}",
        accepted.message
    );
    let status = v.status_json(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-01T00:00:00Z".parse().unwrap(),
    ));
    assert_eq!(
        status["effectiveBudget"],
        json!({"monthlyUsd": 100.0, "dailyUsd": 10.0})
    );

    // Without any budget, status says nothing about one and the message does not claim a clamp.
    let compiled = run(&team_a());
    let v = verdict(&compiled, Kind::ApiSubscription, "team-a", "app-chat");
    assert_eq!(
        v.condition(ACCEPTED).unwrap().message,
        "The subscription is valid."
    );
    let status = v.status_json(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-01T00:00:00Z".parse().unwrap(),
    ));
    assert!(status.get("effectiveBudget").is_none(), "{status}");
}

#[test]
fn consumers_carry_their_own_limits_and_budget() {
    let mut inputs = team_a();
    inputs.consumers[0].spec.limits = Some(tollgate_crds::Limits {
        requests_per_minute: Some(30),
        tokens_per_minute: None,
    });
    inputs.consumers[0].spec.budget = Some(tollgate_crds::Budget {
        monthly_usd: Some(0.5),
        daily_usd: None,
    });
    let compiled = run(&inputs);
    let consumer = &compiled.snapshot.content.consumers[0];
    assert_eq!(
        consumer.limits,
        Limits {
            requests_per_minute: Some(30),
            tokens_per_minute: None,
        }
    );
    assert_eq!(consumer.budget.monthly_micro_usd, Some(500_000));
    // A consumer's limits are its own: they do not lower its subscriptions' ones.
    assert_eq!(
        compiled.snapshot.content.subscriptions[0].limits,
        Limits::default()
    );
}

#[test]
fn retry_budgets_and_provider_health_take_defaults_and_overrides() {
    let compiled = run(&team_a());
    assert_eq!(
        compiled.snapshot.content.routes[0].retry_budget,
        RetryBudget::default()
    );
    assert_eq!(
        compiled.snapshot.content.providers[0].health,
        HealthPolicy::default()
    );

    let mut inputs = team_a();
    inputs.routes[0].spec.retry_budget = Some(tollgate_crds::RetryBudget {
        percent: Some(5),
        min_per_second: None,
    });
    inputs.providers[0].spec.health = Some(tollgate_crds::HealthSettings {
        consecutive_failures: Some(2),
        ejection_time: Some("10s".into()),
    });
    inputs.providers[0]
        .spec
        .credentials
        .as_mut()
        .unwrap()
        .cooldown = Some("2m".into());
    let compiled = run(&inputs);
    assert_eq!(
        compiled.snapshot.content.routes[0].retry_budget,
        RetryBudget {
            percent: 5,
            min_per_second: 10,
        }
    );
    assert_eq!(
        compiled.snapshot.content.providers[0].health,
        HealthPolicy {
            failures_to_eject: 2,
            ejection_ms: 10_000,
            key_cooldown_ms: 120_000,
        }
    );
}

#[test]
fn an_unreadable_ejection_time_is_reported_in_the_providers_status() {
    let mut inputs = team_a();
    inputs.providers[0].spec.health = Some(tollgate_crds::HealthSettings {
        consecutive_failures: None,
        ejection_time: Some("soon".into()),
    });
    let compiled = run(&inputs);
    let v = verdict(&compiled, Kind::ModelProvider, "team-a", "openai");
    let accepted = v.condition(ACCEPTED).unwrap();
    assert!(!accepted.status);
    assert!(
        accepted.message.contains("spec.health.ejectionTime"),
        "{}",
        accepted.message
    );
}

#[test]
fn the_proxy_count_is_an_input_copied_into_the_snapshot() {
    let mut inputs = team_a();
    let one = run(&inputs).snapshot;
    inputs.proxy_replicas = 3;
    let three = run(&inputs).snapshot;
    assert_eq!(three.content.proxy_replicas, 3);
    assert_ne!(
        one.hash, three.hash,
        "a new count is a new table for the proxies"
    );
    let back = Snapshot::decode(&three.encode()).unwrap();
    assert_eq!(back.content.proxy_replicas, 3);
    assert_eq!(run(&inputs).snapshot.hash, three.hash, "deterministic");
}
