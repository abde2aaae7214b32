//! What every verdict must be, whatever the resources: one per object, sorted, in the CRD status shape,
//! and with messages a person can act on.

use crate::support::world::world;
use crate::support::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tollgate_crds::{
    AIGuardrailStatus, AIRouteStatus, ApiSubscriptionStatus, ConsumerStatus, ModelProviderStatus,
};
use tollgate_snapshot::{Kind, compile};

/// Words that tell the reader what to do (or that nothing needs doing yet).
const ACTIONS: &[&str] = &[
    "set ", "fix", "create", "add ", "choose", "remove", "delete", "correct", "talk", "move",
    "rotate", "give", "list ", "waiting", "ask", "publish", "route to", "see ", "change",
];

#[test]
fn every_condition_message_is_an_actionable_sentence() {
    let mut checked = 0;
    for seed in 0..400 {
        for v in compile(&world(seed), 1).verdicts {
            for c in &v.conditions {
                let m = &c.message;
                let what = format!("{:?} {} {} {}: {m:?}", v.kind, v.id, c.type_, c.reason);
                assert!(m.len() > 10, "{what}");
                assert!(
                    m.starts_with(|ch: char| ch.is_ascii_uppercase()),
                    "not capitalised: {what}"
                );
                assert!(m.ends_with('.'), "no full stop: {what}");
                assert!(
                    !m.contains("..") && !m.contains("  ") && !m.contains(". ."),
                    "{what}"
                );
                for leak in ["Some(", "None", "{", "\"\"", "Ok(", "Err("] {
                    assert!(!m.contains(leak), "debug text {leak:?} in {what}");
                }
                assert!(
                    c.reason.chars().all(|ch| ch.is_ascii_alphabetic()),
                    "{what}"
                );
                if !c.status {
                    let lower = m.to_lowercase();
                    assert!(
                        ACTIONS.iter().any(|a| lower.contains(a)),
                        "says no remedy: {what}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 5_000, "only {checked} conditions checked");
}

#[test]
fn verdicts_cover_every_object_once_and_are_sorted() {
    for seed in 0..200 {
        let inputs = world(seed);
        let compiled = compile(&inputs, 1);
        let objects = inputs.providers.len()
            + inputs.routes.len()
            + inputs.consumers.len()
            + inputs.subscriptions.len();
        assert_eq!(compiled.verdicts.len(), objects, "seed {seed}");
        let keys: Vec<_> = compiled
            .verdicts
            .iter()
            .map(|v| (v.kind, v.id.clone()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "seed {seed}");
        for v in &compiled.verdicts {
            let types: Vec<&str> = v.conditions.iter().map(|c| c.type_).collect();
            assert_eq!(types.first(), Some(&"Accepted"), "{:?} {}", v.kind, v.id);
            assert_eq!(types.last(), Some(&"Ready"), "{:?} {}", v.kind, v.id);
        }
    }
}

#[test]
fn status_json_has_the_shape_of_each_crd_status() {
    let now = Time("2026-11-01T00:00:00Z".parse().unwrap());
    for seed in 0..100 {
        for v in compile(&world(seed), 1).verdicts {
            let json = v.status_json(&now);
            assert_eq!(json["observedGeneration"], 1);
            assert_eq!(json["conditions"][0]["type"], "Accepted");
            assert_eq!(
                json["conditions"][0]["lastTransitionTime"],
                "2026-11-01T00:00:00Z"
            );
            let parsed = match v.kind {
                Kind::ModelProvider => {
                    serde_json::from_value::<ModelProviderStatus>(json).map(|_| ())
                }
                Kind::AIRoute => serde_json::from_value::<AIRouteStatus>(json).map(|_| ()),
                Kind::Consumer => serde_json::from_value::<ConsumerStatus>(json).map(|_| ()),
                Kind::ApiSubscription => {
                    serde_json::from_value::<ApiSubscriptionStatus>(json).map(|_| ())
                }
                Kind::MCPServer => {
                    serde_json::from_value::<tollgate_crds::MCPServerStatus>(json).map(|_| ())
                }
                Kind::AIGuardrail => serde_json::from_value::<AIGuardrailStatus>(json).map(|_| ()),
            };
            parsed.unwrap_or_else(|e| panic!("{:?} {}: {e}", v.kind, v.id));
        }
    }
    // The MODELS printer column reads a comma-separated summary.
    let compiled = run(&team_a());
    let route = verdict(&compiled, Kind::AIRoute, "team-a", "chat").status_json(&now);
    assert_eq!(route["models"], "gpt-4o-mini");
    assert_eq!(route["endpoint"], "/team-a/chat/v1");
    assert_eq!(route["approvedSubscriptions"], 1);
    let sub = verdict(&compiled, Kind::ApiSubscription, "team-a", "app-chat").status_json(&now);
    assert_eq!(sub["phase"], "Approved");
    assert_eq!(sub["route"], "team-a/chat");
}

#[test]
fn second_object_with_the_same_name_is_reported_as_a_duplicate() {
    let mut inputs = team_a();
    let mut twin = openai("team-a", "openai", &["gpt-4.1"]);
    twin.metadata.uid = Some("zzz".into());
    inputs.providers[0].metadata.uid = Some("aaa".into());
    inputs.providers.push(twin);
    let compiled = run(&inputs);
    let provider_verdicts: Vec<_> = compiled
        .verdicts
        .iter()
        .filter(|v| v.kind == Kind::ModelProvider)
        .collect();
    assert_eq!(provider_verdicts.len(), 2);
    assert!(provider_verdicts[0].is_true("Accepted"));
    assert_eq!(
        provider_verdicts[1].condition("Accepted").unwrap().reason,
        "Duplicate"
    );
    // The one kept is decided by uid, not by input order.
    assert_eq!(
        compiled.snapshot.content.providers[0].models[0].name,
        "gpt-4o-mini"
    );
    inputs.providers.reverse();
    assert_eq!(
        run(&inputs).snapshot.content.providers[0].models[0].name,
        "gpt-4o-mini"
    );
}
