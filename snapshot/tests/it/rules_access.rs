//! Rules about consumers, keys, subscriptions, prices and Secrets.

use crate::support::*;
use serde_json::json;
use tollgate_crds::condition_type::{ACCEPTED, READY, RESOLVED_REFS};
use tollgate_snapshot::{Detail, KeyDigest, Kind, Limits, Phase, Stage};

fn phase(compiled: &tollgate_snapshot::Compiled, ns: &str, name: &str) -> Phase {
    match &verdict(compiled, Kind::ApiSubscription, ns, name).detail {
        Detail::Subscription(d) => d.phase,
        other => panic!("{other:?}"),
    }
}

fn sub(
    ns: &str,
    name: &str,
    consumer: &str,
    route: serde_json::Value,
    extra: serde_json::Value,
) -> tollgate_crds::ApiSubscription {
    let mut spec = json!({ "consumer": consumer, "route": route });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    subscription(ns, name, spec)
}

#[test]
fn keys_resolve_to_digests_and_lookups_find_the_subscription() {
    let compiled = run(&team_a());
    let snap = &compiled.snapshot;
    let (c, consumer, key) = snap
        .consumer_by_key(&KeyDigest::of(b"sk-app-0123456789abcdef"))
        .expect("key known");
    assert_eq!(consumer.id.to_string(), "team-a/app");
    assert_eq!(&*key.name, "primary");
    let m = snap
        .route_for(Some("anything"), "/team-a/chat/v1/chat/completions")
        .unwrap();
    assert_eq!(m.rest, "/v1/chat/completions");
    let s = snap.subscription(c, m.idx).expect("subscribed");
    assert_eq!(s.phase, Phase::Approved);
    assert!(verdict(&compiled, Kind::ApiSubscription, "team-a", "app-chat").is_true(READY));
    // The key itself is nowhere in the wire form.
    let wire = String::from_utf8(snap.encode()).unwrap();
    assert!(!wire.contains("sk-app-0123456789abcdef"));
}

#[test]
fn subscription_to_a_missing_route_or_consumer_is_invalid() {
    let mut inputs = team_a();
    inputs.subscriptions = vec![
        sub(
            "team-a",
            "no-route",
            "app",
            json!({ "name": "nope" }),
            json!({}),
        ),
        sub(
            "team-a",
            "no-consumer",
            "ghost",
            json!({ "name": "chat" }),
            json!({}),
        ),
        sub(
            "team-a",
            "other-ns",
            "app",
            json!({ "name": "chat", "namespace": "team-z" }),
            json!({}),
        ),
    ];
    let compiled = run(&inputs);
    for (name, reason, needle) in [
        ("no-route", "RouteNotFound", "team-a/nope"),
        ("no-consumer", "ConsumerNotFound", "team-a/ghost"),
        ("other-ns", "RouteNotFound", "team-z/chat"),
    ] {
        let v = verdict(&compiled, Kind::ApiSubscription, "team-a", name);
        assert_eq!(phase(&compiled, "team-a", name), Phase::Invalid, "{name}");
        let (ok, r, message) = cond(v, ACCEPTED);
        assert!(!ok && r == reason, "{name}: {r}");
        assert!(message.contains(needle), "{message}");
        assert!(!v.is_true(RESOLVED_REFS) && !v.is_true(READY));
    }
    assert!(compiled.snapshot.content.subscriptions.is_empty());
}

#[test]
fn subscription_limits_are_clamped_to_the_route() {
    let mut inputs = team_a();
    inputs.routes[0].spec.limits = Some(tollgate_crds::Limits {
        requests_per_minute: Some(60),
        tokens_per_minute: Some(10_000),
    });
    inputs.subscriptions = vec![sub(
        "team-a",
        "greedy",
        "app",
        json!({ "name": "chat" }),
        json!({ "decision": "Approved", "limits": { "requestsPerMinute": 1000, "tokensPerMinute": 5000 } }),
    )];
    let compiled = run(&inputs);
    let want = Limits {
        requests_per_minute: Some(60),
        tokens_per_minute: Some(5000),
    };
    assert_eq!(compiled.snapshot.content.subscriptions[0].limits, want);
    let v = verdict(&compiled, Kind::ApiSubscription, "team-a", "greedy");
    match &v.detail {
        Detail::Subscription(d) => assert_eq!(d.effective_limits, Some(want)),
        other => panic!("{other:?}"),
    }
    assert!(cond(v, ACCEPTED).2.contains("lowered"));

    // A subscription without limits takes the route's; a route without limits leaves the subscription's.
    let none = Limits::default();
    let route = Limits {
        requests_per_minute: Some(60),
        tokens_per_minute: None,
    };
    assert_eq!(tollgate_snapshot::clamp_limits(none, route), route);
    let wanted = Limits {
        requests_per_minute: Some(5),
        tokens_per_minute: Some(7),
    };
    assert_eq!(tollgate_snapshot::clamp_limits(wanted, none), wanted);
}

#[test]
fn a_routes_total_is_its_own_and_does_not_clamp_subscriptions() {
    let mut inputs = team_a();
    inputs.routes[0].metadata.uid = Some("7007e000-0000-4000-8000-000000000004".into());
    inputs.routes[0].spec.total_limits = Some(tollgate_crds::Limits {
        requests_per_minute: Some(100),
        tokens_per_minute: None,
    });
    inputs.subscriptions[0].spec.limits = Some(tollgate_crds::Limits {
        requests_per_minute: Some(1000),
        tokens_per_minute: None,
    });
    let compiled = run(&inputs);
    let route = &compiled.snapshot.content.routes[0];
    assert_eq!(route.uid, "7007e000-0000-4000-8000-000000000004");
    assert_eq!(
        route.total_limits,
        Limits {
            requests_per_minute: Some(100),
            tokens_per_minute: None,
        }
    );
    // Each subscription keeps what it asked for: the total is counted on top, for all together.
    assert_eq!(
        compiled.snapshot.content.subscriptions[0]
            .limits
            .requests_per_minute,
        Some(1000)
    );
    // A route without a total has none, and its encoding leaves the field out.
    inputs.routes[0].spec.total_limits = None;
    let compiled = run(&inputs);
    assert!(
        compiled.snapshot.content.routes[0]
            .total_limits
            .is_unlimited()
    );
    let encoded = serde_json::to_string(&compiled.snapshot.content.routes[0]).unwrap();
    assert!(!encoded.contains("total_limits"), "{encoded}");
}

#[test]
fn automatic_approval_approves_subscriptions_without_a_decision() {
    let mut inputs = team_a();
    inputs.subscriptions[0].spec.decision = None;
    let compiled = run(&inputs);
    assert_eq!(phase(&compiled, "team-a", "app-chat"), Phase::Pending);
    let (ok, reason, message) = cond(
        verdict(&compiled, Kind::ApiSubscription, "team-a", "app-chat"),
        READY,
    );
    assert!(
        !ok && reason == "Pending" && message.contains("spec.decision"),
        "{message}"
    );

    inputs.routes[0].spec.approval = tollgate_crds::Approval::Automatic;
    let compiled = run(&inputs);
    assert_eq!(phase(&compiled, "team-a", "app-chat"), Phase::Approved);
    assert_eq!(
        compiled.snapshot.content.subscriptions[0].phase,
        Phase::Approved
    );
    match &verdict(&compiled, Kind::AIRoute, "team-a", "chat").detail {
        Detail::Route(d) => assert_eq!(d.approved_subscriptions, 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejected_and_revoked_subscriptions_never_serve() {
    for (decision, want) in [("Rejected", Phase::Rejected), ("Revoked", Phase::Revoked)] {
        let mut inputs = team_a();
        inputs.routes[0].spec.approval = tollgate_crds::Approval::Automatic;
        inputs.subscriptions[0] = sub(
            "team-a",
            "app-chat",
            "app",
            json!({ "name": "chat" }),
            json!({ "decision": decision, "decisionReason": "over budget" }),
        );
        let compiled = run(&inputs);
        assert_eq!(phase(&compiled, "team-a", "app-chat"), want);
        let s = &compiled.snapshot.content.subscriptions[0];
        assert_eq!(s.phase, want, "kept so the proxy can say why it refuses");
        let (ok, reason, message) = cond(
            verdict(&compiled, Kind::ApiSubscription, "team-a", "app-chat"),
            READY,
        );
        assert!(!ok && reason == decision);
        assert!(
            message.contains("over budget") && message.contains("403"),
            "{message}"
        );
        match &verdict(&compiled, Kind::AIRoute, "team-a", "chat").detail {
            Detail::Route(d) => assert_eq!(d.approved_subscriptions, 0),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn expired_consumer_keys_are_excluded() {
    let mut inputs = team_a();
    inputs.consumers = vec![consumer(
        "team-a",
        "app",
        json!({ "keys": [
        { "name": "old", "secretRef": { "name": "old-key" }, "expiresAt": "2026-10-01T00:00:00Z" },
        { "name": "new", "secretRef": { "name": "app-key" }, "expiresAt": "2027-01-01T00:00:00Z" }] }),
    )];
    inputs.secrets.push(secret(
        "team-a",
        "old-key",
        &[("apiKey", "sk-old-0123456789abcdef")],
    ));
    let compiled = run(&inputs);
    let snap = &compiled.snapshot;
    assert!(
        snap.consumer_by_key(&KeyDigest::of(b"sk-old-0123456789abcdef"))
            .is_none()
    );
    let (_, _, key) = snap
        .consumer_by_key(&KeyDigest::of(b"sk-app-0123456789abcdef"))
        .unwrap();
    assert_eq!(key.expires_unix, Some(1_798_761_600));
    let v = verdict(&compiled, Kind::Consumer, "team-a", "app");
    match &v.detail {
        Detail::Consumer(d) => assert_eq!(d.active_keys, 1),
        other => panic!("{other:?}"),
    }
    let (ok, _, message) = cond(v, READY);
    assert!(
        ok && message.contains("old") && message.contains("expiresAt"),
        "{message}"
    );

    inputs.now_unix = 1_798_761_600;
    let compiled = run(&inputs);
    let (ok, reason, _) = cond(verdict(&compiled, Kind::Consumer, "team-a", "app"), READY);
    assert!(!ok && reason == "NoActiveKeys");
}

#[test]
fn draft_route_subscribers_outside_the_owning_namespace_are_told_why() {
    let mut inputs = team_a();
    inputs.routes[0].spec.stage = Stage::Draft;
    inputs.consumers.push(simple_consumer("team-b", "outsider"));
    inputs.secrets.push(secret(
        "team-b",
        "outsider-key",
        &[("apiKey", "sk-b-0123456789abcdefgh")],
    ));
    inputs.subscriptions.push(sub(
        "team-b",
        "peek",
        "outsider",
        json!({ "name": "chat", "namespace": "team-a" }),
        json!({ "decision": "Approved" }),
    ));
    let compiled = run(&inputs);
    assert!(verdict(&compiled, Kind::ApiSubscription, "team-a", "app-chat").is_true(READY));
    let (ok, reason, message) = cond(
        verdict(&compiled, Kind::ApiSubscription, "team-b", "peek"),
        READY,
    );
    assert!(
        !ok && reason == "RouteDraft" && message.contains("Draft"),
        "{message}"
    );
    // The proxy decides at request time, so the subscription is in the table with its phase.
    assert_eq!(compiled.snapshot.content.subscriptions.len(), 2);
}

#[test]
fn generated_keys_are_read_from_the_controllers_secret() {
    let mut inputs = team_a();
    inputs.consumers = vec![consumer(
        "team-a",
        "app",
        json!({ "keys": [{ "name": "gen", "generate": true }] }),
    )];
    let compiled = run(&inputs);
    let (ok, reason, message) = cond(
        verdict(&compiled, Kind::Consumer, "team-a", "app"),
        RESOLVED_REFS,
    );
    assert!(
        !ok && reason == "KeyNotGenerated" && message.contains("team-a/app-gen-apikey"),
        "{message}"
    );
    inputs.secrets.push(secret(
        "team-a",
        "app-gen-apikey",
        &[("apiKey", "tg-generated-0123456789")],
    ));
    let compiled = run(&inputs);
    assert!(
        compiled
            .snapshot
            .consumer_by_key(&KeyDigest::of(b"tg-generated-0123456789"))
            .is_some()
    );
}

#[test]
fn key_value_shared_by_two_consumers_stays_with_the_older() {
    let mut inputs = team_a();
    inputs.consumers = vec![
        created(simple_consumer("team-a", "app"), "2026-03-01T00:00:00Z"),
        created(simple_consumer("team-a", "copycat"), "2026-02-01T00:00:00Z"),
    ];
    inputs.secrets.push(secret(
        "team-a",
        "copycat-key",
        &[("apiKey", "sk-app-0123456789abcdef\n")],
    ));
    let compiled = run(&inputs);
    let (_, owner, _) = compiled
        .snapshot
        .consumer_by_key(&KeyDigest::of(b"sk-app-0123456789abcdef"))
        .unwrap();
    assert_eq!(&*owner.id.name, "copycat");
    let (ok, reason, message) = cond(
        verdict(&compiled, Kind::Consumer, "team-a", "app"),
        RESOLVED_REFS,
    );
    assert!(
        !ok && reason == "DuplicateKey" && message.contains("team-a/copycat"),
        "{message}"
    );
}

#[test]
fn key_problems_are_reported_in_the_order_of_spec_keys() {
    let mut inputs = team_a();
    inputs.consumers[0] = created(inputs.consumers[0].clone(), "2026-01-01T00:00:00Z");
    let keys = json!({ "keys": [
        { "name": "first", "secretRef": { "name": "late-first" } },
        { "name": "second", "secretRef": { "name": "late-missing" } },
        { "name": "third", "secretRef": { "name": "late-third" } },
        { "name": "fourth", "secretRef": { "name": "late-fourth" } },
    ] });
    inputs.consumers.push(created(
        consumer("team-a", "late", keys),
        "2026-02-01T00:00:00Z",
    ));
    inputs.secrets.extend([
        secret(
            "team-a",
            "late-first",
            &[("apiKey", "sk-app-0123456789abcdef")],
        ),
        secret(
            "team-a",
            "late-third",
            &[("apiKey", "sk-late-0123456789abcdef")],
        ),
        secret(
            "team-a",
            "late-fourth",
            &[("apiKey", "sk-late-0123456789abcdef")],
        ),
    ]);
    let compiled = run(&inputs);
    let late = verdict(&compiled, Kind::Consumer, "team-a", "late");
    let (ok, reason, message) = cond(late, RESOLVED_REFS);
    assert!(!ok && reason == "DuplicateKey", "{reason}: {message}");
    let at = |clause: &str| {
        message
            .find(clause)
            .unwrap_or_else(|| panic!("{clause:?} not in {message}"))
    };
    assert!(
        at("Key first has the same value as a key of consumer team-a/app")
            < at("key second: Secret team-a/late-missing does not exist")
            && at("key second:") < at("key fourth repeats the value of another key"),
        "{message}"
    );
    match &late.detail {
        Detail::Consumer(d) => assert_eq!(d.active_keys, 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn second_subscription_of_a_consumer_to_one_route_is_invalid() {
    let mut inputs = team_a();
    inputs.subscriptions[0] = created(inputs.subscriptions[0].clone(), "2026-01-01T00:00:00Z");
    inputs.subscriptions.push(created(
        sub(
            "team-a",
            "again",
            "app",
            json!({ "name": "chat" }),
            json!({}),
        ),
        "2026-02-01T00:00:00Z",
    ));
    let compiled = run(&inputs);
    assert_eq!(phase(&compiled, "team-a", "again"), Phase::Invalid);
    let (_, reason, message) = cond(
        verdict(&compiled, Kind::ApiSubscription, "team-a", "again"),
        ACCEPTED,
    );
    assert!(
        reason == "DuplicateSubscription" && message.contains("team-a/app-chat"),
        "{message}"
    );
    assert_eq!(compiled.snapshot.content.subscriptions.len(), 1);
}

#[test]
fn of_several_subscriptions_to_one_route_the_oldest_stands_wherever_it_sorts() {
    let mut inputs = team_a();
    let to_chat = |name: &str, at: &str| {
        created(
            sub(
                "team-a",
                name,
                "app",
                json!({ "name": "chat" }),
                json!({ "decision": "Approved" }),
            ),
            at,
        )
    };
    inputs.subscriptions = vec![
        to_chat("a-first", "2026-03-01T00:00:00Z"),
        to_chat("c-last", "2026-02-01T00:00:00Z"),
        to_chat("b-oldest", "2026-01-01T00:00:00Z"),
    ];
    let compiled = run(&inputs);
    assert_eq!(phase(&compiled, "team-a", "b-oldest"), Phase::Approved);
    for name in ["a-first", "c-last"] {
        assert_eq!(phase(&compiled, "team-a", name), Phase::Invalid);
        let (_, reason, message) = cond(
            verdict(&compiled, Kind::ApiSubscription, "team-a", name),
            ACCEPTED,
        );
        assert!(
            reason == "DuplicateSubscription" && message.contains("team-a/b-oldest"),
            "{message}"
        );
    }
    assert_eq!(compiled.snapshot.content.subscriptions.len(), 1);
}

#[test]
fn provider_pricing_overrides_the_price_list_field_by_field() {
    let listed = tollgate_snapshot::price_list()
        .lookup(tollgate_snapshot::ProviderType::OpenAI, "gpt-4o-mini")
        .expect("gpt-4o-mini is on the price list")
        .price();
    let compiled = run(&team_a());
    assert_eq!(
        compiled.snapshot.content.providers[0].models[0].price,
        listed
    );
    assert!(listed.input_per_million > 0.0);

    let mut inputs = team_a();
    inputs.providers[0].spec.models[0].pricing = Some(tollgate_crds::Pricing {
        input_per_million: Some(0.5),
        output_per_million: None,
        cached_input_per_million: Some(0.0),
    });
    let compiled = run(&inputs);
    let price = compiled.snapshot.content.providers[0].models[0].price;
    assert_eq!(price.input_per_million, 0.5);
    assert_eq!(price.output_per_million, listed.output_per_million);
    assert_eq!(price.cached_input_per_million, Some(0.0));
    assert_eq!(
        compiled.snapshot.content.routes[0].models[0].backends[0].price,
        price
    );
}

#[test]
fn model_missing_from_the_price_list_costs_zero_until_priced_and_says_so() {
    let mut inputs = team_a();
    inputs.providers = vec![openai("team-a", "openai", &["gpt-4o-mini", "in-house-llm"])];
    let compiled = run(&inputs);
    let p = &compiled.snapshot.content.providers[0];
    let unknown = p.models.iter().find(|m| m.name == "in-house-llm").unwrap();
    assert_eq!(unknown.price, tollgate_snapshot::Price::default());
    let (ok, _, message) = cond(
        verdict(&compiled, Kind::ModelProvider, "team-a", "openai"),
        READY,
    );
    assert!(ok);
    assert!(
        message.contains("in-house-llm")
            && message.contains("read 0")
            && message.contains("pricing"),
        "{message}"
    );
    assert!(!message.contains("gpt-4o-mini"), "{message}");

    inputs.providers[0].spec.models[1].pricing = Some(tollgate_crds::Pricing {
        input_per_million: Some(1.0),
        output_per_million: Some(2.0),
        cached_input_per_million: None,
    });
    let compiled = run(&inputs);
    let (_, _, message) = cond(
        verdict(&compiled, Kind::ModelProvider, "team-a", "openai"),
        READY,
    );
    assert!(!message.contains("read 0"), "{message}");
}

#[test]
fn secrets_are_read_from_data_and_string_data() {
    let mut inputs = team_a();
    inputs.secrets = vec![
        secret_data("team-a", "openai-key", &[("apiKey", b"sk-from-data\n")]),
        secret_data(
            "team-a",
            "app-key",
            &[("apiKey", b"sk-overridden-0123456789")],
        ),
    ];
    // stringData wins over data, as the API server merges them.
    inputs.secrets[1].string_data =
        Some([("apiKey".to_string(), "sk-app-0123456789abcdef".to_string())].into());
    let compiled = run(&inputs);
    assert_eq!(
        compiled.snapshot.content.providers[0].credentials[0].0,
        "sk-from-data"
    );
    assert!(
        compiled
            .snapshot
            .consumer_by_key(&KeyDigest::of(b"sk-app-0123456789abcdef"))
            .is_some()
    );
    assert!(
        compiled
            .snapshot
            .consumer_by_key(&KeyDigest::of(b"sk-overridden-0123456789"))
            .is_none()
    );
}

#[test]
fn objects_without_a_namespace_live_in_default() {
    let inputs = tollgate_snapshot::Inputs {
        providers: vec![openai("", "openai", &["gpt-4o-mini"])],
        routes: vec![simple_route("", "chat", "/chat", "gpt-4o-mini", "openai")],
        consumers: vec![simple_consumer("", "app")],
        subscriptions: vec![sub(
            "",
            "s",
            "app",
            json!({ "name": "chat" }),
            json!({ "decision": "Approved" }),
        )],
        secrets: vec![
            secret("default", "openai-key", &[("apiKey", "sk-upstream")]),
            secret(
                "default",
                "app-key",
                &[("apiKey", "sk-app-0123456789abcdef")],
            ),
        ],
        now_unix: NOW,
        ..Default::default()
    };
    let compiled = run(&inputs);
    for v in &compiled.verdicts {
        assert_eq!(&*v.id.namespace, "default");
    }
    assert!(verdict(&compiled, Kind::ApiSubscription, "default", "s").is_true(READY));
    match &verdict(&compiled, Kind::ApiSubscription, "default", "s").detail {
        Detail::Subscription(d) => assert_eq!(&*d.route, "default/chat"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn consumer_keys_shorter_than_the_minimum_are_refused_and_named() {
    assert_eq!(tollgate_snapshot::MIN_CONSUMER_KEY_CHARS, 20);
    let short = "sk-nineteen-chars-x";
    let just_enough = "sk-twenty-characters";
    assert_eq!((short.len(), just_enough.len()), (19, 20));
    let mut inputs = team_a();
    inputs.consumers = vec![consumer(
        "team-a",
        "app",
        json!({ "keys": [
        { "name": "weak", "secretRef": { "name": "weak-key" } },
        { "name": "strong", "secretRef": { "name": "strong-key" } }] }),
    )];
    inputs.secrets.extend([
        // Surrounding whitespace is not counted.
        secret("team-a", "weak-key", &[("apiKey", &format!("  {short}\n"))]),
        secret("team-a", "strong-key", &[("apiKey", just_enough)]),
    ]);
    let compiled = run(&inputs);
    let snap = &compiled.snapshot;
    assert!(
        snap.consumer_by_key(&KeyDigest::of(short.as_bytes()))
            .is_none()
    );
    assert!(
        snap.consumer_by_key(&KeyDigest::of(just_enough.as_bytes()))
            .is_some()
    );
    let v = verdict(&compiled, Kind::Consumer, "team-a", "app");
    let (ok, reason, message) = cond(v, RESOLVED_REFS);
    assert!(
        !ok && reason == "KeyTooShort"
            && message.contains("Key weak")
            && message.contains("team-a/weak-key")
            && message.contains("19 characters, fewer than the 20"),
        "{reason}: {message}"
    );
    assert!(!message.contains(short), "the key itself is not reported");
    let (ok, _, message) = cond(v, READY);
    assert!(ok && message.contains("1 active key: strong"), "{message}");
}

#[test]
fn a_rotated_generated_keys_previous_value_stays_valid_until_its_grace_ends() {
    let old = b"tg_old-0123456789abcdefghij";
    let new = "tg_new-0123456789abcdefghij";
    let old_digest = hex::encode(KeyDigest::of(old).0);
    let mut inputs = team_a();
    // A day before the grace ends.
    let until = "2025-11-02T00:00:00Z";
    let until_unix = 1_762_041_600;
    inputs.now_unix = until_unix - 86_400;
    inputs.consumers = vec![consumer(
        "team-a",
        "app",
        json!({ "keys": [{ "name": "gen", "generate": true }] }),
    )];
    inputs.secrets.push(secret(
        "team-a",
        "app-gen-apikey",
        &[
            ("apiKey", new),
            ("previousApiKeySha256", &old_digest),
            ("previousApiKeyExpiresAt", until),
        ],
    ));
    let compiled = run(&inputs);
    let snap = &compiled.snapshot;
    let (_, _, current) = snap
        .consumer_by_key(&KeyDigest::of(new.as_bytes()))
        .unwrap();
    assert_eq!((&*current.name, current.expires_unix), ("gen", None));
    let (_, _, previous) = snap.consumer_by_key(&KeyDigest::of(old)).unwrap();
    assert_eq!(
        (&*previous.name, previous.expires_unix),
        ("gen", Some(until_unix))
    );
    let v = verdict(&compiled, Kind::Consumer, "team-a", "app");
    match &v.detail {
        Detail::Consumer(d) => assert_eq!(d.active_keys, 1, "the previous value is not counted"),
        other => panic!("{other:?}"),
    }
    let (ok, _, message) = cond(v, READY);
    assert!(
        ok && message.contains("previous value of key gen stays valid until 2025-11-02T00:00:00Z"),
        "{message}"
    );

    // A key's own expiry caps the grace.
    inputs.consumers[0].spec.keys[0].expires_at =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2025-11-01T12:00:00Z".parse().unwrap(),
        ));
    let compiled = run(&inputs);
    let (_, _, previous) = compiled
        .snapshot
        .consumer_by_key(&KeyDigest::of(old))
        .unwrap();
    assert_eq!(previous.expires_unix, Some(until_unix - 43_200));
    inputs.consumers[0].spec.keys[0].expires_at = None;

    // Compiled once the grace has ended, the old value is gone and the new one stays.
    inputs.now_unix = until_unix;
    let compiled = run(&inputs);
    assert!(
        compiled
            .snapshot
            .consumer_by_key(&KeyDigest::of(old))
            .is_none()
    );
    assert!(
        compiled
            .snapshot
            .consumer_by_key(&KeyDigest::of(new.as_bytes()))
            .is_some()
    );
    let (_, _, message) = cond(verdict(&compiled, Kind::Consumer, "team-a", "app"), READY);
    assert!(!message.contains("previous"), "{message}");
}

#[test]
fn a_previous_key_record_is_ignored_when_malformed_or_on_a_key_the_team_keeps() {
    let old = b"tg_old-0123456789abcdefghij";
    let old_digest = hex::encode(KeyDigest::of(old).0);
    let mut inputs = team_a();
    inputs.now_unix = 1_700_000_000;
    let records: [(&str, &str); 3] = [
        ("not hex", "2030-01-01T00:00:00Z"),
        (&old_digest[..62], "2030-01-01T00:00:00Z"),
        (&old_digest, "next tuesday"),
    ];
    for (digest, until) in records {
        inputs.consumers = vec![consumer(
            "team-a",
            "app",
            json!({ "keys": [{ "name": "gen", "generate": true }] }),
        )];
        inputs
            .secrets
            .retain(|s| s.metadata.name.as_deref() != Some("app-gen-apikey"));
        inputs.secrets.push(secret(
            "team-a",
            "app-gen-apikey",
            &[
                ("apiKey", "tg_new-0123456789abcdefghij"),
                ("previousApiKeySha256", digest),
                ("previousApiKeyExpiresAt", until),
            ],
        ));
        let compiled = run(&inputs);
        assert!(
            compiled
                .snapshot
                .consumer_by_key(&KeyDigest::of(old))
                .is_none(),
            "{digest} {until}"
        );
        assert!(verdict(&compiled, Kind::Consumer, "team-a", "app").is_true(READY));
    }
    // Only generated keys have a previous value: a Secret the team keeps is theirs to change.
    inputs.consumers = vec![consumer(
        "team-a",
        "app",
        json!({ "keys": [{ "name": "own", "secretRef": { "name": "own-key" } }] }),
    )];
    inputs.secrets.push(secret(
        "team-a",
        "own-key",
        &[
            ("apiKey", "sk-own-0123456789abcdefghij"),
            ("previousApiKeySha256", &old_digest),
            ("previousApiKeyExpiresAt", "2030-01-01T00:00:00Z"),
        ],
    ));
    let compiled = run(&inputs);
    assert!(
        compiled
            .snapshot
            .consumer_by_key(&KeyDigest::of(old))
            .is_none()
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// The previous-key record comes from a Secret anyone with `patch` on it may edit: any text in
    /// either field compiles without a panic, and the digest serves only when both fields are valid and
    /// the grace has not ended.
    #[test]
    fn any_previous_key_record_compiles(
        digest in proptest::prop_oneof![
            "[0-9a-fA-F]{64}",
            "[0-9a-f]{0,70}",
            proptest::prelude::any::<String>(),
        ],
        until in proptest::prop_oneof![
            proptest::strategy::Strategy::prop_map(1_000_000_000i64..2_000_000_000, |s| {
                k8s_openapi::jiff::Timestamp::from_second(s).unwrap().to_string()
            }),
            proptest::prelude::any::<String>(),
        ],
    ) {
        let mut inputs = team_a();
        inputs.now_unix = 1_500_000_000;
        inputs.consumers = vec![consumer(
            "team-a",
            "app",
            json!({ "keys": [{ "name": "gen", "generate": true }] }),
        )];
        inputs.secrets.push(secret(
            "team-a",
            "app-gen-apikey",
            &[
                ("apiKey", "tg_new-0123456789abcdefghij"),
                ("previousApiKeySha256", &digest),
                ("previousApiKeyExpiresAt", &until),
            ],
        ));
        let compiled = run(&inputs);
        let mut bytes = [0u8; 32];
        let valid_digest = hex::decode_to_slice(digest.trim_ascii(), &mut bytes).is_ok();
        let ends = until
            .trim_ascii()
            .parse::<k8s_openapi::jiff::Timestamp>()
            .ok()
            .map(|t| t.as_second());
        let serves = valid_digest && ends.is_some_and(|end| end > inputs.now_unix);
        let found = compiled.snapshot.consumer_by_key(&KeyDigest(bytes));
        proptest::prop_assert_eq!(found.is_some(), serves);
        if let Some((_, _, key)) = found {
            proptest::prop_assert_eq!(key.expires_unix, ends);
        }
        proptest::prop_assert!(verdict(&compiled, Kind::Consumer, "team-a", "app").is_true(READY));
    }
}
