//! Compiling guardrails' moderation hooks: a provider's `/moderations` URL and first key resolved, a
//! webhook's URL and Secret read, the timeout bounded, and every problem (an unknown or unshared
//! provider, a provider without OpenAI's moderation API, a bad URL, a missing Secret, a timeout out
//! of bounds) in the guardrail's `Accepted` and the route's `GuardrailsValid`, never quoting a key.

use serde_json::{Value, json};
use tollgate_crds::AIGuardrail;
use tollgate_crds::condition_type::{ACCEPTED, GUARDRAILS_VALID};
use tollgate_snapshot::{FailureMode, GuardrailAction, Inputs, Kind, ModerationApi, ObjectRef};

use crate::support::*;

fn guardrail(ns: &str, name: &str, rules: Value) -> AIGuardrail {
    serde_json::from_value(json!({
        "apiVersion": "tollgate.dev/v1alpha1", "kind": "AIGuardrail",
        "metadata": { "namespace": ns, "name": name, "generation": 1 },
        "spec": { "rules": rules },
    }))
    .unwrap()
}

/// Team A with its route attaching `team-a/moderated`, whose rules are `rules`.
fn inputs(rules: Value) -> Inputs {
    let mut inputs = team_a();
    let mut spec = serde_json::to_value(&inputs.routes[0].spec).unwrap();
    spec["guardrails"] = json!([{ "name": "moderated" }]);
    inputs.routes[0].spec = serde_json::from_value(spec).unwrap();
    inputs.guardrails = vec![guardrail("team-a", "moderated", rules)];
    inputs
}

/// The guardrail's `Accepted` and the route's `GuardrailsValid` messages, both False.
fn refused(inputs: &Inputs) -> (String, String) {
    let compiled = run(inputs);
    let (ok, reason, own) = cond(
        verdict(&compiled, Kind::AIGuardrail, "team-a", "moderated"),
        ACCEPTED,
    );
    assert!(!ok, "{own}");
    assert_eq!(reason, "InvalidRule");
    let (ok, _, route) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "chat"),
        GUARDRAILS_VALID,
    );
    assert!(!ok, "{route}");
    assert!(compiled.snapshot.content.routes[0].guardrails[0].broken);
    (own.to_string(), route.to_string())
}

#[test]
fn a_provider_hook_gets_the_providers_moderations_url_and_first_key() {
    let inputs = inputs(json!([
        { "name": "mod", "action": "Reject",
          "moderation": { "provider": { "name": "openai" }, "categories": ["hate", "violence"],
                          "threshold": 0.8, "timeout": "500ms", "failureMode": "Open" } },
    ]));
    let compiled = run(&inputs);
    let (ok, _, message) = cond(
        verdict(&compiled, Kind::AIGuardrail, "team-a", "moderated"),
        ACCEPTED,
    );
    assert!(ok, "{message}");
    assert!(message.starts_with("Compiled 1 rule;"), "{message}");
    let g = &compiled.snapshot.content.routes[0].guardrails[0];
    assert!(g.rules.is_empty());
    let m = &g.moderations[0];
    assert_eq!(&*m.name, "mod");
    assert_eq!(m.action, GuardrailAction::Reject);
    assert_eq!(
        m.api,
        ModerationApi::OpenAi {
            provider: ObjectRef::new("team-a", "openai"),
            model: "omni-moderation-latest".into()
        }
    );
    assert_eq!(m.url, "https://api.openai.com/v1/moderations");
    let credential = m.credential.as_ref().unwrap();
    assert_eq!(credential.header, "authorization");
    assert_eq!(credential.value.0, "Bearer sk-upstream");
    assert_eq!(m.categories, ["hate", "violence"]);
    assert_eq!(m.threshold_millis, Some(800));
    assert_eq!(m.timeout_ms, 500);
    assert_eq!(m.failure_mode, FailureMode::Open);
    // The key is in the snapshot (the proxy sends it) but never in a verdict.
    assert!(!format!("{:?}", compiled.verdicts).contains("sk-upstream"));
}

#[test]
fn a_webhook_hook_reads_its_secret_and_defaults_to_two_seconds_and_closed() {
    let mut inputs = inputs(json!([
        { "name": "hook", "action": "Monitor",
          "moderation": { "webhook": { "url": "https://moderate.example.com/v1/check",
                          "credentials": { "secretRef": { "name": "hook", "key": "token" },
                                           "header": "X-Token", "prefix": "T " } } } },
    ]));
    inputs
        .secrets
        .push(secret("team-a", "hook", &[("token", "s3cr3t")]));
    let compiled = run(&inputs);
    let m = &compiled.snapshot.content.routes[0].guardrails[0].moderations[0];
    assert_eq!(m.api, ModerationApi::Webhook);
    assert_eq!(m.url, "https://moderate.example.com/v1/check");
    let credential = m.credential.as_ref().unwrap();
    assert_eq!(
        (credential.header.as_str(), credential.value.0.as_str()),
        ("x-token", "T s3cr3t")
    );
    assert_eq!(m.timeout_ms, 2_000);
    assert_eq!(m.failure_mode, FailureMode::Closed);
}

#[test]
fn an_unknown_unshared_or_unfit_provider_is_reported_in_the_guardrail_and_on_the_route() {
    let (own, route) = refused(&inputs(json!([
        { "name": "mod", "action": "Reject", "moderation": { "provider": { "name": "nope" } } },
    ])));
    assert!(
        own.contains("Rule mod: ModelProvider team-a/nope does not exist"),
        "{own}"
    );
    assert!(
        route.contains("Guardrail team-a/moderated is invalid") && route.contains("team-a/nope"),
        "{route}"
    );

    let mut other = inputs(json!([
        { "name": "mod", "action": "Reject",
          "moderation": { "provider": { "name": "openai", "namespace": "team-b" } } },
    ]));
    other
        .providers
        .push(openai("team-b", "openai", &["gpt-4o"]));
    other
        .secrets
        .push(secret("team-b", "openai-key", &[("apiKey", "sk-b")]));
    let (own, _) = refused(&other);
    assert!(
        own.contains("ModelProvider team-b/openai is not shared with namespace team-a"),
        "{own}"
    );

    let mut anthropic = inputs(json!([
        { "name": "mod", "action": "Reject", "moderation": { "provider": { "name": "claude" } } },
    ]));
    anthropic.providers.push(provider(
        "team-a",
        "claude",
        json!({ "type": "Anthropic", "credentials": { "secretRefs": [{ "name": "openai-key" }] },
                "models": [{ "name": "claude-sonnet-4-5" }] }),
    ));
    let (own, _) = refused(&anthropic);
    assert!(
        own.contains("is of type Anthropic, which has no OpenAI moderation API"),
        "{own}"
    );
}

#[test]
fn a_bad_webhook_url_a_missing_secret_a_timeout_out_of_bounds_and_a_masking_hook_are_reported() {
    for (hook, action, want) in [
        (
            json!({ "webhook": { "url": "ftp://moderate.example.com" } }),
            "Reject",
            "is not an http:// or https:// URL",
        ),
        (
            json!({ "webhook": { "url": "https://user:pw@moderate.example.com/" } }),
            "Reject",
            "is not an http:// or https:// URL",
        ),
        (
            json!({ "webhook": { "url": "https://m.example.com/{hook}" } }),
            "Reject",
            "is not an http:// or https:// URL",
        ),
        (
            json!({ "webhook": { "url": "https://m.example.com",
                                 "credentials": { "secretRef": { "name": "absent" } } } }),
            "Reject",
            "absent",
        ),
        (
            json!({ "provider": { "name": "openai" }, "timeout": "11s" }),
            "Reject",
            "must be above 0 and at most 10s",
        ),
        (
            json!({ "provider": { "name": "openai" }, "timeout": "0s" }),
            "Reject",
            "must be above 0 and at most 10s",
        ),
        (
            json!({ "provider": { "name": "openai" } }),
            "Mask",
            "it has nothing to mask",
        ),
        (
            json!({ "webhook": { "url": "https://m.example.com" }, "threshold": 0.5 }),
            "Reject",
            "threshold compares a provider's category scores",
        ),
    ] {
        let (own, _) = refused(&inputs(json!([
            { "name": "mod", "action": action, "moderation": hook },
        ])));
        assert!(own.contains(want), "{hook}: {own}");
        assert!(!own.contains("sk-upstream"), "{own}");
    }
}
