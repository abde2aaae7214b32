//! Compiling `AIGuardrail`s: copied into the routes and consumers that attach them, shared across
//! namespaces only when allowed, and every problem (a pattern that does not compile, a missing or
//! unshared guardrail) reported in the referrer's `GuardrailsValid` condition.

use serde_json::{Value, json};
use tollgate_crds::AIGuardrail;
use tollgate_crds::condition_type::{ACCEPTED, GUARDRAILS_VALID, READY};
use tollgate_snapshot::{Detector, GuardrailAction, Inputs, Kind, Matcher};

use crate::support::*;

fn guardrail(ns: &str, name: &str, spec: Value) -> AIGuardrail {
    serde_json::from_value(json!({
        "apiVersion": "tollgate.dev/v1alpha1", "kind": "AIGuardrail",
        "metadata": { "namespace": ns, "name": name, "generation": 1 },
        "spec": spec,
    }))
    .unwrap()
}

fn pii(ns: &str, name: &str) -> AIGuardrail {
    guardrail(
        ns,
        name,
        json!({
            "appliesTo": "Both",
            "rules": [
                { "name": "emails", "detector": "Email", "action": "Mask" },
                { "name": "cards", "detector": "CreditCard", "action": "Reject" },
                { "name": "employee-ids", "pattern": "EMP-[0-9]{6}", "action": "Mask", "maskAs": "[EMPLOYEE]" },
            ],
            "maxInputChars": 10000,
        }),
    )
}

/// Team A whose route attaches `route_refs` and whose consumer attaches `consumer_refs`.
fn attach(route_refs: Value, consumer_refs: Value, guardrails: Vec<AIGuardrail>) -> Inputs {
    let mut inputs = team_a();
    let mut spec = serde_json::to_value(&inputs.routes[0].spec).unwrap();
    spec["guardrails"] = route_refs;
    inputs.routes[0].spec = serde_json::from_value(spec).unwrap();
    let mut spec = serde_json::to_value(&inputs.consumers[0].spec).unwrap();
    spec["guardrails"] = consumer_refs;
    inputs.consumers[0].spec = serde_json::from_value(spec).unwrap();
    inputs.guardrails = guardrails;
    inputs
}

#[test]
fn a_guardrail_is_copied_into_the_route_and_consumer_that_attach_it_with_its_rules_in_order() {
    let inputs = attach(
        json!([{ "name": "pii" }]),
        json!([{ "name": "pii" }]),
        vec![pii("team-a", "pii")],
    );
    let compiled = run(&inputs);
    let route = &compiled.snapshot.content.routes[0];
    assert_eq!(route.guardrails.len(), 1);
    let g = &route.guardrails[0];
    assert!(!g.broken);
    assert_eq!(g.max_input_chars, Some(10000));
    let names: Vec<&str> = g.rules.iter().map(|r| &*r.name).collect();
    assert_eq!(names, ["emails", "cards", "employee-ids"]);
    assert_eq!(g.rules[0].matcher, Matcher::Detector(Detector::Email));
    assert_eq!(&*g.rules[0].mask_as, "[EMAIL]");
    assert_eq!(g.rules[1].action, GuardrailAction::Reject);
    match &g.rules[2].matcher {
        Matcher::Pattern(p) => assert!(p.regex().is_match("id EMP-123456")),
        other => panic!("{other:?}"),
    }
    assert_eq!(&*g.rules[2].mask_as, "[EMPLOYEE]");
    assert_eq!(
        compiled.snapshot.content.consumers[0].guardrails,
        route.guardrails
    );
    for kind in [Kind::AIRoute, Kind::Consumer] {
        let name = if kind == Kind::AIRoute { "chat" } else { "app" };
        let (ok, reason, message) =
            cond(verdict(&compiled, kind, "team-a", name), GUARDRAILS_VALID);
        assert!(ok, "{kind:?}: {message}");
        assert_eq!(reason, "Valid");
        assert_eq!(message, "Checking calls with guardrails team-a/pii.");
    }
}

#[test]
fn a_pattern_that_does_not_compile_is_reported_on_the_route_and_its_calls_are_refused_not_unchecked()
 {
    let bad = guardrail(
        "team-a",
        "bad",
        json!({ "rules": [{ "name": "ids", "pattern": "EMP-(\\d+", "action": "Reject" }] }),
    );
    let compiled = run(&attach(json!([{ "name": "bad" }]), json!([]), vec![bad]));
    let v = verdict(&compiled, Kind::AIRoute, "team-a", "chat");
    let (ok, reason, message) = cond(v, GUARDRAILS_VALID);
    assert!(!ok);
    assert_eq!(reason, "InvalidGuardrail");
    assert!(
        message.starts_with(
            "Guardrail team-a/bad is invalid: rule ids: the pattern does not compile: "
        ),
        "{message}"
    );
    assert!(message.contains("unclosed group"), "{message}");
    assert!(message.contains("503 guardrail_unavailable"), "{message}");
    // The route itself is still served; the guardrail's stand-in refuses what it would have checked.
    assert!(cond(v, READY).0);
    let g = &compiled.snapshot.content.routes[0].guardrails;
    assert_eq!(g.len(), 1);
    assert!(g[0].broken);
    assert_eq!(g[0].id.to_string(), "team-a/bad");
}

#[test]
fn every_guardrail_gets_its_own_verdict_accepted_or_not_with_each_problem_and_its_generation() {
    let bad = guardrail(
        "team-a",
        "bad",
        json!({ "rules": [
            { "name": "ids", "pattern": "EMP-(\\d+", "action": "Reject" },
            { "name": "emails", "detector": "Email", "action": "Mask" },
            { "name": "emails", "detector": "Phone", "action": "Mask" },
        ] }),
    );
    // Not attached by anything: its own status is the only place its problems show.
    let compiled = run(&attach(
        json!([]),
        json!([]),
        vec![pii("team-a", "pii"), bad],
    ));
    let good = verdict(&compiled, Kind::AIGuardrail, "team-a", "pii");
    assert_eq!(good.generation, Some(1));
    assert_eq!(
        cond(good, ACCEPTED),
        (
            true,
            "Accepted",
            "Compiled 3 rules; routes and consumers attach it by name in spec.guardrails."
        )
    );
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-01T00:00:00Z".parse().unwrap(),
    );
    let status = good.status_json(&now);
    assert_eq!(status["rules"], 3);
    assert_eq!(status["observedGeneration"], 1);
    let bad = verdict(&compiled, Kind::AIGuardrail, "team-a", "bad");
    let (ok, reason, message) = cond(bad, ACCEPTED);
    assert!(!ok);
    assert_eq!(reason, "InvalidRule");
    assert!(
        message.starts_with("Rule ids: the pattern does not compile: "),
        "{message}"
    );
    assert!(message.contains("unclosed group"), "{message}");
    assert!(
        message.contains("; rule emails is named twice."),
        "{message}"
    );
    assert!(message.contains("503 guardrail_unavailable"), "{message}");
    // Verdicts stay sorted by kind, then namespace and name: guardrails last.
    let kinds: Vec<Kind> = compiled.verdicts.iter().map(|v| v.kind).collect();
    assert!(kinds.is_sorted(), "{kinds:?}");
    assert_eq!(
        compiled.verdicts.last().unwrap().id.to_string(),
        "team-a/pii"
    );
}

#[test]
fn a_missing_guardrail_and_one_not_shared_with_the_namespace_are_reported_and_stand_in_broken() {
    let shared = guardrail(
        "security",
        "shared",
        json!({ "allowedNamespaces": ["team-a"], "maxInputTokens": 100 }),
    );
    let private = guardrail("security", "private", json!({ "maxInputChars": 5 }));
    let compiled = run(&attach(
        json!([
            { "name": "shared", "namespace": "security" },
            { "name": "private", "namespace": "security" },
            { "name": "nowhere" },
        ]),
        json!([]),
        vec![shared, private],
    ));
    let (ok, _, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "chat"),
        GUARDRAILS_VALID,
    );
    assert!(!ok);
    assert!(message.starts_with(
        "Guardrail security/private does not list namespace team-a in spec.allowedNamespaces; guardrail team-a/nowhere does not exist."
    ), "{message}");
    let g = &compiled.snapshot.content.routes[0].guardrails;
    let shape: Vec<(String, bool)> = g.iter().map(|g| (g.id.to_string(), g.broken)).collect();
    assert_eq!(
        shape,
        [
            ("security/shared".to_string(), false),
            ("security/private".to_string(), true),
            ("team-a/nowhere".to_string(), true),
        ]
    );
    assert_eq!(g[0].max_input_tokens, Some(100));
}

#[test]
fn a_star_shares_a_guardrail_with_every_namespace() {
    let everyone = guardrail(
        "security",
        "everyone",
        json!({ "allowedNamespaces": ["*"], "rules": [{ "name": "keys", "detector": "Secret", "action": "Reject" }] }),
    );
    let compiled = run(&attach(
        json!([]),
        json!([{ "name": "everyone", "namespace": "security" }]),
        vec![everyone],
    ));
    assert!(
        cond(
            verdict(&compiled, Kind::Consumer, "team-a", "app"),
            GUARDRAILS_VALID
        )
        .0
    );
    assert!(!compiled.snapshot.content.consumers[0].guardrails[0].broken);
    // A route that attaches nothing reports nothing and carries nothing.
    let route = verdict(&compiled, Kind::AIRoute, "team-a", "chat");
    assert!(route.condition(GUARDRAILS_VALID).is_none());
    assert!(compiled.snapshot.content.routes[0].guardrails.is_empty());
}

#[test]
fn a_snapshot_with_guardrails_survives_encoding_with_its_patterns_built_again() {
    let compiled = run(&attach(
        json!([{ "name": "pii" }]),
        json!([]),
        vec![pii("team-a", "pii")],
    ));
    let bytes = compiled.snapshot.encode();
    let back = tollgate_snapshot::Snapshot::decode(&bytes).unwrap();
    assert_eq!(
        back.content.routes[0].guardrails,
        compiled.snapshot.content.routes[0].guardrails
    );
}

#[test]
fn routes_without_guardrails_hash_as_before_guardrails_existed() {
    // Guardrails are left out of the encoding when none is attached: adding the kind changed no hash.
    let plain = run(&team_a());
    let with_unused = run(&Inputs {
        guardrails: vec![pii("team-a", "pii")],
        ..team_a()
    });
    assert_eq!(plain.snapshot.hash, with_unused.snapshot.hash);
}
