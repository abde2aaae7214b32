//! Rules about providers and routes: sharing, path conflicts, references, lifecycle, defaults.

use crate::support::*;
use serde_json::json;
use tollgate_crds::condition_type::{ACCEPTED, READY, RESOLVED_REFS};
use tollgate_snapshot::{Kind, ProviderType, Stage};

fn served(compiled: &tollgate_snapshot::Compiled, ns: &str, name: &str) -> Vec<String> {
    match &verdict(compiled, Kind::AIRoute, ns, name).detail {
        tollgate_snapshot::Detail::Route(d) => {
            d.served_models.iter().map(|m| m.to_string()).collect()
        }
        other => panic!("not a route detail: {other:?}"),
    }
}

#[test]
fn provider_in_another_namespace_serves_only_namespaces_it_is_shared_with() {
    let mut inputs = team_a();
    inputs.providers = vec![openai("platform", "openai", &["gpt-4o-mini"])];
    inputs.secrets.push(secret(
        "platform",
        "openai-key",
        &[("apiKey", "sk-platform")],
    ));
    let cross = |ns: &str| {
        route(
            ns,
            "chat",
            json!({ "prefix": format!("/{ns}/chat"),
            "models": [{ "name": "gpt-4o-mini", "backends": [{ "provider": "openai", "namespace": "platform" }] }] }),
        )
    };
    inputs.routes = vec![cross("team-a"), cross("team-b"), cross("team-c")];

    // Not shared: the route's model is not served, and the message says who can fix it.
    let compiled = run(&inputs);
    let v = verdict(&compiled, Kind::AIRoute, "team-a", "chat");
    let (ok, reason, message) = cond(v, RESOLVED_REFS);
    assert!(!ok);
    assert_eq!(reason, "RefNotPermitted");
    assert!(
        message.contains("platform/openai") && message.contains("allowedNamespaces"),
        "{message}"
    );
    assert!(served(&compiled, "team-a", "chat").is_empty());

    // Shared by name with team-a only, then with everyone.
    inputs.providers = vec![provider(
        "platform",
        "openai",
        json!({ "type": "OpenAI",
        "credentials": { "secretRefs": [{ "name": "openai-key" }] },
        "models": [{ "name": "gpt-4o-mini" }], "allowedNamespaces": ["team-a"] }),
    )];
    let compiled = run(&inputs);
    assert_eq!(served(&compiled, "team-a", "chat"), ["gpt-4o-mini"]);
    assert!(served(&compiled, "team-b", "chat").is_empty());

    inputs.providers[0].spec.allowed_namespaces = vec![tollgate_crds::NamespaceName("*".into())];
    let compiled = run(&inputs);
    for ns in ["team-a", "team-b", "team-c"] {
        assert_eq!(served(&compiled, ns, "chat"), ["gpt-4o-mini"], "{ns}");
    }
}

#[test]
fn path_conflict_older_route_wins_and_the_loser_names_it() {
    let mut inputs = team_a();
    inputs
        .providers
        .push(openai("team-b", "openai", &["gpt-4o-mini"]));
    inputs
        .secrets
        .push(secret("team-b", "openai-key", &[("apiKey", "sk-b")]));
    // team-b's route is older, though team-a sorts first by name.
    inputs.routes[0] = created(inputs.routes[0].clone(), "2026-05-01T00:00:00Z");
    inputs.routes.push(created(
        simple_route("team-b", "grab", "/team-a/chat", "gpt-4o-mini", "openai"),
        "2026-01-01T00:00:00Z",
    ));
    let compiled = run(&inputs);
    let loser = verdict(&compiled, Kind::AIRoute, "team-a", "chat");
    let (ok, reason, message) = cond(loser, ACCEPTED);
    assert!(!ok);
    assert_eq!(reason, "PathConflict");
    assert!(message.contains("team-b/grab"), "{message}");
    assert!(!loser.is_true(READY));
    assert!(verdict(&compiled, Kind::AIRoute, "team-b", "grab").is_true(ACCEPTED));
    let routes: Vec<String> = compiled
        .snapshot
        .content
        .routes
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(routes, ["team-b/grab"]);
    let m = compiled
        .snapshot
        .route_for(None, "/team-a/chat/v1/chat/completions")
        .unwrap();
    assert_eq!(m.route.id.to_string(), "team-b/grab");
}

fn namespace(name: &str, annotations: &[(&str, &str)]) -> k8s_openapi::api::core::v1::Namespace {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "annotations": annotations.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        },
    }))
    .unwrap()
}

#[test]
fn with_tenancy_a_namespace_cannot_take_a_prefix_it_was_not_granted() {
    let mut inputs = team_a();
    inputs
        .providers
        .push(openai("team-b", "openai", &["gpt-4o-mini"]));
    inputs
        .secrets
        .push(secret("team-b", "openai-key", &[("apiKey", "sk-b")]));
    // team-b tries first: its route is older than team-a's.
    inputs.routes[0] = created(inputs.routes[0].clone(), "2026-05-01T00:00:00Z");
    inputs.routes.push(created(
        simple_route("team-b", "grab", "/team-a/chat", "gpt-4o-mini", "openai"),
        "2026-01-01T00:00:00Z",
    ));
    // team-a carries no annotation: it owns /team-a by default. team-b is not even listed.
    inputs.tenancy = Some(tollgate_snapshot::Tenancy {
        namespaces: vec![namespace("team-a", &[])],
    });
    let compiled = run(&inputs);
    assert!(verdict(&compiled, Kind::AIRoute, "team-a", "chat").is_true(ACCEPTED));
    let grab = verdict(&compiled, Kind::AIRoute, "team-b", "grab");
    let (ok, reason, message) = cond(grab, ACCEPTED);
    assert!(!ok);
    assert_eq!(reason, "PrefixNotAllowed");
    assert!(
        message.contains("Namespace team-b may claim /team-b and beneath")
            && message.contains("not /team-a/chat")
            && message.contains("tollgate.dev/path-prefixes"),
        "{message}"
    );
    assert!(!grab.is_true(READY));
    let m = compiled
        .snapshot
        .route_for(None, "/team-a/chat/v1/chat/completions")
        .unwrap();
    assert_eq!(m.route.id.to_string(), "team-a/chat");

    // An administrator grants team-b the same path: then the older route wins, as without tenancy.
    // team-a's annotation now names another path only, so team-a loses its default.
    inputs.tenancy = Some(tollgate_snapshot::Tenancy {
        namespaces: vec![
            namespace("team-a", &[("tollgate.dev/path-prefixes", "/other")]),
            namespace(
                "team-b",
                &[("tollgate.dev/path-prefixes", "/team-a/chat, /b")],
            ),
        ],
    });
    let compiled = run(&inputs);
    assert!(verdict(&compiled, Kind::AIRoute, "team-b", "grab").is_true(ACCEPTED));
    let (_, reason, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "chat"),
        ACCEPTED,
    );
    assert_eq!(reason, "PrefixNotAllowed");
    assert!(message.contains("as its annotation"), "{message}");

    // Without tenancy (standalone), anything goes, first come first served.
    inputs.tenancy = None;
    let compiled = run(&inputs);
    assert!(verdict(&compiled, Kind::AIRoute, "team-b", "grab").is_true(ACCEPTED));
}

#[test]
fn with_tenancy_hostnames_need_a_grant() {
    let mut inputs = team_a();
    inputs.routes = vec![route(
        "team-a",
        "chat",
        json!({ "prefix": "/team-a/chat", "hostnames": ["api.example.com", "*.eu.example.com"],
            "models": [{ "name": "gpt-4o-mini", "backends": [{ "provider": "openai" }] }] }),
    )];
    inputs.tenancy = Some(tollgate_snapshot::Tenancy {
        namespaces: vec![namespace("team-a", &[])],
    });
    let compiled = run(&inputs);
    let (ok, reason, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "chat"),
        ACCEPTED,
    );
    assert!(!ok);
    assert_eq!(reason, "HostnameNotAllowed");
    assert!(
        message.contains("may claim no hostname") && message.contains("api.example.com"),
        "{message}"
    );
    assert!(compiled.snapshot.content.routes.is_empty());

    inputs.tenancy = Some(tollgate_snapshot::Tenancy {
        namespaces: vec![namespace(
            "team-a",
            &[("tollgate.dev/hostnames", "*.example.com")],
        )],
    });
    let compiled = run(&inputs);
    assert!(verdict(&compiled, Kind::AIRoute, "team-a", "chat").is_true(ACCEPTED));
}

#[test]
fn path_conflict_without_creation_times_falls_back_to_namespace_and_name() {
    let mut inputs = team_a();
    inputs.routes.push(simple_route(
        "team-a",
        "another",
        "/team-a/chat",
        "gpt-4o-mini",
        "openai",
    ));
    let compiled = run(&inputs);
    // Neither has a creation time: both count as oldest, and team-a/another sorts before team-a/chat.
    assert!(verdict(&compiled, Kind::AIRoute, "team-a", "another").is_true(ACCEPTED));
    let (_, reason, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "chat"),
        ACCEPTED,
    );
    assert_eq!(reason, "PathConflict");
    assert!(message.contains("team-a/another"), "{message}");

    // A route with a creation time is younger than one without.
    inputs.routes[1] = created(inputs.routes[1].clone(), "2020-01-01T00:00:00Z");
    let compiled = run(&inputs);
    assert!(verdict(&compiled, Kind::AIRoute, "team-a", "chat").is_true(ACCEPTED));
    assert!(!verdict(&compiled, Kind::AIRoute, "team-a", "another").is_true(ACCEPTED));
}

#[test]
fn path_conflict_needs_the_same_prefix_and_overlapping_hostnames() {
    let with_hosts = |name: &str, hosts: &[&str]| {
        route(
            "team-a",
            name,
            json!({ "prefix": "/api", "hostnames": hosts,
            "models": [{ "name": "gpt-4o-mini", "backends": [{ "provider": "openai" }] }] }),
        )
    };
    let mut inputs = team_a();
    inputs.routes = vec![
        created(with_hosts("a", &["a.example.com"]), "2026-01-01T00:00:00Z"),
        created(with_hosts("b", &["b.example.com"]), "2026-01-02T00:00:00Z"),
        created(with_hosts("c", &[]), "2026-01-03T00:00:00Z"),
        created(
            with_hosts("star", &["*.example.com"]),
            "2026-01-04T00:00:00Z",
        ),
        created(
            with_hosts("again", &["B.Example.com"]),
            "2026-01-05T00:00:00Z",
        ),
        simple_route("team-a", "other-prefix", "/other", "gpt-4o-mini", "openai"),
    ];
    let compiled = run(&inputs);
    for ok in ["a", "b", "c", "other-prefix"] {
        assert!(
            verdict(&compiled, Kind::AIRoute, "team-a", ok).is_true(ACCEPTED),
            "{ok}"
        );
    }
    let (_, reason, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "star"),
        ACCEPTED,
    );
    assert_eq!(reason, "PathConflict");
    assert!(message.contains("team-a/a"), "{message}");
    let (_, _, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "again"),
        ACCEPTED,
    );
    assert!(message.contains("team-a/b"), "{message}");

    let snap = &compiled.snapshot;
    let at = |host: Option<&str>| {
        snap.route_for(host, "/api/v1/models")
            .unwrap()
            .route
            .id
            .name
            .to_string()
    };
    assert_eq!(at(Some("a.example.com")), "a");
    assert_eq!(at(Some("B.EXAMPLE.COM:8443")), "b");
    assert_eq!(at(Some("c.example.com")), "c");
    assert_eq!(at(None), "c");
}

#[test]
fn path_conflict_when_a_prefix_lies_inside_another_routes_api() {
    let mut inputs = team_a();
    inputs.routes = vec![
        created(
            simple_route("team-a", "outer", "/svc", "gpt-4o-mini", "openai"),
            "2026-01-01T00:00:00Z",
        ),
        created(
            simple_route("team-a", "inner", "/svc/v1/extra", "gpt-4o-mini", "openai"),
            "2026-01-02T00:00:00Z",
        ),
        created(
            simple_route("team-a", "deep", "/x/v1", "gpt-4o-mini", "openai"),
            "2026-01-03T00:00:00Z",
        ),
        created(
            simple_route("team-a", "shallow", "/x", "gpt-4o-mini", "openai"),
            "2026-01-04T00:00:00Z",
        ),
        simple_route("team-a", "v10", "/svc/v10", "gpt-4o-mini", "openai"),
    ];
    let compiled = run(&inputs);
    let (_, reason, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "inner"),
        ACCEPTED,
    );
    assert_eq!(reason, "PathConflict");
    assert!(message.contains("team-a/outer"), "{message}");
    let (_, reason, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "shallow"),
        ACCEPTED,
    );
    assert_eq!(reason, "PathConflict");
    assert!(message.contains("team-a/deep"), "{message}");
    assert!(verdict(&compiled, Kind::AIRoute, "team-a", "v10").is_true(ACCEPTED));
}

#[test]
fn unknown_provider_is_unresolved_while_other_backends_keep_serving() {
    let mut inputs = team_a();
    inputs.routes = vec![route(
        "team-a",
        "chat",
        json!({ "prefix": "/team-a/chat", "models": [{
        "name": "gpt-4o-mini",
        "backends": [{ "provider": "openai", "weight": 3 }, { "provider": "ghost", "weight": 1 }],
        "fallbacks": [{ "provider": "ghost-too" }] }] }),
    )];
    let compiled = run(&inputs);
    let v = verdict(&compiled, Kind::AIRoute, "team-a", "chat");
    let (ok, reason, message) = cond(v, RESOLVED_REFS);
    assert!(!ok);
    assert_eq!(reason, "ProviderNotFound");
    assert!(
        message.contains("team-a/ghost does not exist") && message.contains("team-a/ghost-too"),
        "{message}"
    );
    assert!(v.is_true(READY));
    let model = compiled
        .snapshot
        .model(0, "gpt-4o-mini")
        .expect("still served");
    assert_eq!(model.backends.len(), 1);
    assert_eq!(model.backends[0].weight, 3);
    assert!(model.fallbacks.is_empty());
}

#[test]
fn missing_secret_or_key_is_unresolved_and_the_rest_of_the_pool_serves() {
    let mut inputs = team_a();
    inputs.providers = vec![provider(
        "team-a",
        "openai",
        json!({ "type": "OpenAI",
        "credentials": { "secretRefs": [
            { "name": "openai-key" }, { "name": "gone" }, { "name": "openai-key", "key": "spare" }] },
        "models": [{ "name": "gpt-4o-mini" }] }),
    )];
    let compiled = run(&inputs);
    let v = verdict(&compiled, Kind::ModelProvider, "team-a", "openai");
    let (ok, reason, message) = cond(v, RESOLVED_REFS);
    assert!(!ok);
    assert_eq!(reason, "SecretNotFound");
    assert!(message.contains("team-a/gone does not exist"), "{message}");
    assert!(
        message.contains("no key \"spare\"") && message.contains("apiKey"),
        "{message}"
    );
    assert!(message.contains("1 of 3"), "{message}");
    assert!(v.is_true(READY));
    let p = &compiled.snapshot.content.providers[0];
    assert_eq!(p.credentials.len(), 1);
    assert_eq!(p.credentials[0].0, "sk-upstream");
    assert_eq!(served(&compiled, "team-a", "chat"), ["gpt-4o-mini"]);
}

#[test]
fn provider_whose_keys_all_fail_is_left_out_and_routes_say_so() {
    let mut inputs = team_a();
    inputs
        .secrets
        .retain(|s| s.metadata.name.as_deref() != Some("openai-key"));
    let compiled = run(&inputs);
    let p = verdict(&compiled, Kind::ModelProvider, "team-a", "openai");
    assert_eq!(cond(p, READY).1, "NoUsableCredentials");
    assert!(compiled.snapshot.content.providers.is_empty());
    let r = verdict(&compiled, Kind::AIRoute, "team-a", "chat");
    assert_eq!(cond(r, RESOLVED_REFS).1, "ProviderNotReady");
    assert_eq!(cond(r, READY).1, "NoServedModels");
}

#[test]
fn model_with_no_usable_backend_is_not_served_and_says_so() {
    let mut inputs = team_a();
    inputs.routes = vec![route(
        "team-a",
        "chat",
        json!({ "prefix": "/team-a/chat", "models": [
        { "name": "gpt-4o-mini", "backends": [{ "provider": "openai" }] },
        { "name": "broken", "backends": [{ "provider": "ghost" }] }] }),
    )];
    let compiled = run(&inputs);
    let v = verdict(&compiled, Kind::AIRoute, "team-a", "chat");
    assert_eq!(served(&compiled, "team-a", "chat"), ["gpt-4o-mini"]);
    let (ok, _, message) = cond(v, READY);
    assert!(ok);
    assert!(message.contains("Model broken is not served"), "{message}");
    assert!(compiled.snapshot.model(0, "broken").is_none());
}

#[test]
fn first_usable_fallback_takes_the_traffic_when_no_weighted_backend_resolves() {
    let mut inputs = team_a();
    inputs.routes = vec![route(
        "team-a",
        "chat",
        json!({ "prefix": "/team-a/chat", "models": [{
        "name": "smart", "backends": [{ "provider": "ghost" }],
        "fallbacks": [{ "provider": "nobody" }, { "provider": "openai", "model": "gpt-4o-mini" }] }] }),
    )];
    let compiled = run(&inputs);
    let model = compiled
        .snapshot
        .model(0, "smart")
        .expect("served by its fallback");
    assert_eq!(model.backends.len(), 1);
    assert_eq!(&*model.backends[0].upstream_model, "gpt-4o-mini");
    let (_, _, message) = cond(verdict(&compiled, Kind::AIRoute, "team-a", "chat"), READY);
    assert!(message.contains("fallback"), "{message}");
}

#[test]
fn backend_naming_a_model_the_provider_does_not_offer_is_unresolved() {
    let mut inputs = team_a();
    inputs.routes = vec![simple_route(
        "team-a",
        "chat",
        "/team-a/chat",
        "gpt-9",
        "openai",
    )];
    let compiled = run(&inputs);
    let (ok, reason, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "chat"),
        RESOLVED_REFS,
    );
    assert!(!ok);
    assert_eq!(reason, "ModelNotOffered");
    assert!(
        message.contains("gpt-9") && message.contains("spec.models"),
        "{message}"
    );
}

#[test]
fn draft_routes_are_compiled_with_their_stage_for_the_proxy_to_enforce() {
    let mut inputs = team_a();
    inputs.routes[0].spec.stage = Stage::Draft;
    let compiled = run(&inputs);
    let route = &compiled.snapshot.content.routes[0];
    assert_eq!(route.stage, Stage::Draft);
    assert_eq!(&*route.id.namespace, "team-a");
    assert_eq!(route.models.len(), 1);
    let (ok, _, message) = cond(verdict(&compiled, Kind::AIRoute, "team-a", "chat"), READY);
    assert!(ok);
    assert!(
        message.contains("only consumers in namespace team-a"),
        "{message}"
    );
}

#[test]
fn retired_routes_are_kept_with_no_models_routed() {
    let mut inputs = team_a();
    inputs.routes[0].spec.stage = Stage::Retired;
    let compiled = run(&inputs);
    let m = compiled
        .snapshot
        .route_for(None, "/team-a/chat/v1/chat/completions")
        .expect("kept for 410");
    assert_eq!(m.route.stage, Stage::Retired);
    assert!(m.route.models.is_empty());
    let v = verdict(&compiled, Kind::AIRoute, "team-a", "chat");
    assert!(v.is_true(ACCEPTED));
    let (ok, reason, message) = cond(v, READY);
    assert!(!ok);
    assert_eq!(reason, "Retired");
    assert!(message.contains("410"), "{message}");
    assert!(served(&compiled, "team-a", "chat").is_empty());
}

#[test]
fn deprecated_routes_carry_their_sunset_and_need_one() {
    let mut inputs = team_a();
    inputs.routes[0].spec.stage = Stage::Deprecated;
    let compiled = run(&inputs);
    assert_eq!(
        cond(
            verdict(&compiled, Kind::AIRoute, "team-a", "chat"),
            ACCEPTED
        )
        .1,
        "InvalidSpec"
    );
    inputs.routes[0].spec.sunset = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2027-01-01T00:00:00Z".parse().unwrap(),
    ));
    let compiled = run(&inputs);
    assert_eq!(
        compiled.snapshot.content.routes[0].sunset_unix,
        Some(1_798_761_600)
    );
    let (_, _, message) = cond(verdict(&compiled, Kind::AIRoute, "team-a", "chat"), READY);
    assert!(message.contains("Sunset"), "{message}");
}

/// RFC 9745: the date a route was (or will be) deprecated, compiled for the `Deprecation` header;
/// a Deprecated route without one has been deprecated since it exists; a Published route announces
/// one only when it is given; a deprecation after the sunset is refused.
#[test]
fn deprecation_dates_are_compiled_for_the_deprecation_header() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let time = |t: &str| Some(Time(t.parse().unwrap()));
    let mut inputs = team_a();
    let compiled = run(&inputs);
    assert_eq!(compiled.snapshot.content.routes[0].deprecation_unix, None);
    inputs.routes[0].spec.deprecation = time("2026-07-01T00:00:00Z");
    let compiled = run(&inputs);
    assert_eq!(
        compiled.snapshot.content.routes[0].deprecation_unix,
        Some(1_782_864_000)
    );
    let (_, _, message) = cond(verdict(&compiled, Kind::AIRoute, "team-a", "chat"), READY);
    assert!(message.contains("Deprecation header"), "{message}");

    inputs.routes[0].spec.stage = Stage::Deprecated;
    inputs.routes[0].spec.sunset = time("2027-01-01T00:00:00Z");
    let compiled = run(&inputs);
    assert_eq!(
        compiled.snapshot.content.routes[0].deprecation_unix,
        Some(1_782_864_000)
    );
    let doc = tollgate_snapshot::openapi::document(&compiled.snapshot.content.routes[0]);
    assert_eq!(
        doc["info"]["x-tollgate-deprecation"],
        "2026-07-01T00:00:00.000Z"
    );
    inputs.routes[0].spec.deprecation = None;
    inputs.routes[0].metadata.creation_timestamp = time("2026-01-01T00:00:00Z");
    let compiled = run(&inputs);
    assert_eq!(
        compiled.snapshot.content.routes[0].deprecation_unix,
        Some(1_767_225_600)
    );
    inputs.routes[0].metadata.creation_timestamp = None;
    let compiled = run(&inputs);
    assert_eq!(
        compiled.snapshot.content.routes[0].deprecation_unix,
        Some(0)
    );

    inputs.routes[0].spec.deprecation = time("2027-06-01T00:00:00Z");
    let compiled = run(&inputs);
    let (ok, reason, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "chat"),
        ACCEPTED,
    );
    assert!(!ok);
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("spec.deprecation"), "{message}");
}

#[test]
fn invalid_route_specs_from_files_are_refused_not_crashed_on() {
    let mut inputs = team_a();
    inputs.routes[0].spec.prefix = "no-slash/".into();
    let compiled = run(&inputs);
    let (ok, reason, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "chat"),
        ACCEPTED,
    );
    assert!(!ok);
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("spec.prefix"), "{message}");
    assert!(compiled.snapshot.content.routes.is_empty());
    assert_eq!(
        cond(
            verdict(&compiled, Kind::ApiSubscription, "team-a", "app-chat"),
            ACCEPTED
        )
        .1,
        "RouteNotAccepted"
    );
}

#[test]
fn route_endpoint_is_the_prefix_followed_by_v1() {
    let mut inputs = team_a();
    inputs
        .routes
        .push(simple_route("team-a", "root", "/", "gpt-4o-mini", "openai"));
    let compiled = run(&inputs);
    for (name, endpoint) in [("chat", "/team-a/chat/v1"), ("root", "/v1")] {
        match &verdict(&compiled, Kind::AIRoute, "team-a", name).detail {
            tollgate_snapshot::Detail::Route(d) => assert_eq!(d.endpoint, endpoint),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        &*compiled
            .snapshot
            .route_for(None, "/v1/models")
            .unwrap()
            .route
            .id
            .name,
        "root"
    );
}

#[test]
fn anthropic_gemini_azure_and_bedrock_providers_compile_and_serve() {
    // These four had no translation when this rule was written (Ready=False, TranslationNotImplemented,
    // still in the table); the proxy translates them now, so they are Ready like any other. The message
    // for a type without translation is tested in compile::provider.
    assert!(tollgate_snapshot::UNTRANSLATED.is_empty());
    for (ty, extra) in [
        ("Anthropic", json!({})),
        ("Gemini", json!({})),
        (
            "AzureOpenAI",
            json!({ "endpoint": "https://x.openai.azure.com/openai", "azure": { "apiVersion": "2024-10-21" } }),
        ),
        ("Bedrock", json!({ "bedrock": { "region": "eu-west-1" } })),
    ] {
        let mut spec = json!({ "type": ty, "credentials": { "secretRefs": [{ "name": "openai-key" }] },
            "models": [{ "name": "gpt-4o-mini" }] });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let mut inputs = team_a();
        inputs.providers = vec![provider("team-a", "openai", spec)];
        let compiled = run(&inputs);
        let v = verdict(&compiled, Kind::ModelProvider, "team-a", "openai");
        assert!(
            v.is_true(ACCEPTED) && v.is_true(READY),
            "{ty}: {:?}",
            v.conditions
        );
        assert_eq!(
            compiled.snapshot.content.providers.len(),
            1,
            "{ty} in the table"
        );
        assert_eq!(served(&compiled, "team-a", "chat"), ["gpt-4o-mini"], "{ty}");
    }
}

#[test]
fn provider_endpoints_default_per_type() {
    let expect = [
        (ProviderType::OpenAI, "https://api.openai.com/v1"),
        (ProviderType::Mistral, "https://api.mistral.ai/v1"),
        (ProviderType::Groq, "https://api.groq.com/openai/v1"),
        (ProviderType::DeepSeek, "https://api.deepseek.com/v1"),
        (ProviderType::Together, "https://api.together.xyz/v1"),
        (
            ProviderType::Fireworks,
            "https://api.fireworks.ai/inference/v1",
        ),
        (ProviderType::OpenRouter, "https://openrouter.ai/api/v1"),
        (ProviderType::XAi, "https://api.x.ai/v1"),
        (
            ProviderType::Cohere,
            "https://api.cohere.ai/compatibility/v1",
        ),
        (ProviderType::Ollama, "http://127.0.0.1:11434/v1"),
        (ProviderType::Anthropic, "https://api.anthropic.com"),
        (
            ProviderType::Gemini,
            "https://generativelanguage.googleapis.com",
        ),
    ];
    for (ty, url) in expect {
        let mut inputs = team_a();
        inputs.providers[0].spec.provider_type = ty;
        let compiled = run(&inputs);
        assert_eq!(
            compiled.snapshot.content.providers[0].endpoint, url,
            "{ty:?}"
        );
        match &verdict(&compiled, Kind::ModelProvider, "team-a", "openai").detail {
            tollgate_snapshot::Detail::Provider(d) => assert_eq!(d.endpoint.as_deref(), Some(url)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        tollgate_snapshot::default_endpoint(ProviderType::Bedrock, Some("us-east-1")).as_deref(),
        Some("https://bedrock-runtime.us-east-1.amazonaws.com")
    );
    for ty in [
        ProviderType::AzureOpenAI,
        ProviderType::Vllm,
        ProviderType::OpenAICompatible,
    ] {
        assert_eq!(tollgate_snapshot::default_endpoint(ty, None), None);
        let mut inputs = team_a();
        inputs.providers[0].spec.provider_type = ty;
        let compiled = run(&inputs);
        let (ok, reason, message) = cond(
            verdict(&compiled, Kind::ModelProvider, "team-a", "openai"),
            ACCEPTED,
        );
        assert!(
            !ok && reason == "InvalidSpec" && message.contains("set spec.endpoint"),
            "{message}"
        );
    }
    // A given endpoint wins, without its trailing slash.
    let mut inputs = team_a();
    inputs.providers[0].spec.endpoint = Some("https://proxy.internal/openai/v1/".into());
    assert_eq!(
        run(&inputs).snapshot.content.providers[0].endpoint,
        "https://proxy.internal/openai/v1"
    );
}

#[test]
fn auth_scheme_follows_the_provider_type() {
    use tollgate_snapshot::auth_scheme;
    let pairs = [
        (ProviderType::OpenAI, "authorization", "Bearer "),
        (ProviderType::Groq, "authorization", "Bearer "),
        (ProviderType::OpenAICompatible, "authorization", "Bearer "),
        (ProviderType::AzureOpenAI, "api-key", ""),
        (ProviderType::Anthropic, "x-api-key", ""),
        (ProviderType::Gemini, "x-goog-api-key", ""),
    ];
    for (ty, header, prefix) in pairs {
        let auth = auth_scheme(ty);
        assert_eq!(
            (auth.header.as_str(), auth.prefix.as_str()),
            (header, prefix),
            "{ty:?}"
        );
    }
    let compiled = run(&team_a());
    assert_eq!(
        compiled.snapshot.content.providers[0].auth.header,
        "authorization"
    );
}

#[test]
fn provider_timeouts_parse_durations_and_refuse_bad_ones() {
    let mut inputs = team_a();
    inputs.providers[0].spec.timeouts = Some(tollgate_crds::Timeouts {
        connect: Some("500ms".into()),
        first_byte: Some("1m30s".into()),
        idle: None,
        total: Some("1h30m".into()),
    });
    let t = run(&inputs).snapshot.content.providers[0].timeouts;
    assert_eq!(
        (t.connect_ms, t.first_byte_ms, t.idle_ms, t.total_ms),
        (500, 90_000, 60_000, 5_400_000)
    );

    inputs.providers[0].spec.timeouts.as_mut().unwrap().idle = Some("soon".into());
    let compiled = run(&inputs);
    let (ok, reason, message) = cond(
        verdict(&compiled, Kind::ModelProvider, "team-a", "openai"),
        ACCEPTED,
    );
    assert!(!ok && reason == "InvalidSpec");
    assert!(
        message.contains("spec.timeouts.idle") && message.contains("1h30m"),
        "{message}"
    );
}

#[test]
fn fake_provider_needs_no_key_and_takes_its_behaviour() {
    let mut inputs = team_a();
    inputs.providers = vec![provider(
        "team-a",
        "openai",
        json!({ "type": "Fake",
        "models": [{ "name": "gpt-4o-mini" }],
        "fake": { "latency": "250ms", "completionTokens": 4 } }),
    )];
    let compiled = run(&inputs);
    let p = &compiled.snapshot.content.providers[0];
    let fake = p.fake.expect("fake behaviour");
    assert_eq!(
        (fake.latency_ms, fake.completion_tokens, fake.stream_chunks),
        (250, 4, 4)
    );
    assert!(p.credentials.is_empty());
    assert!(verdict(&compiled, Kind::ModelProvider, "team-a", "openai").is_true(READY));
}

#[test]
fn a_models_context_window_is_the_routes_figure_else_the_price_lists() {
    let mut inputs = team_a();
    inputs.providers = vec![openai("team-a", "openai", &["gpt-4o-mini", "house-1"])];
    inputs.routes = vec![route(
        "team-a",
        "chat",
        json!({ "prefix": "/team-a/chat", "models": [
            { "name": "listed", "backends": [{ "provider": "openai", "model": "gpt-4o-mini" }] },
            { "name": "given", "contextWindow": 32000,
              "backends": [{ "provider": "openai", "model": "gpt-4o-mini" }] },
            { "name": "unlisted", "backends": [{ "provider": "openai", "model": "house-1" }] },
        ] }),
    )];
    let compiled = run(&inputs);
    let windows: Vec<(String, Option<u64>)> = compiled.snapshot.content.routes[0]
        .models
        .iter()
        .map(|m| (m.name.to_string(), m.context_window))
        .collect();
    // Models come sorted by name.
    assert_eq!(
        windows,
        [
            ("given".to_string(), Some(32_000)),
            ("listed".to_string(), Some(128_000)),
            ("unlisted".to_string(), None),
        ]
    );
    // The route's OpenAPI document says them where it names the models.
    let doc = tollgate_snapshot::openapi::document(&compiled.snapshot.content.routes[0]);
    assert_eq!(
        doc["components"]["schemas"]["ModelName"]["description"],
        "Context windows, in tokens (prompt and completion together): given 32000, listed 128000."
    );
}

#[test]
fn a_semantic_cache_needs_an_embeddings_model_the_route_serves() {
    let mut inputs = team_a();
    inputs.routes[0].spec.cache = Some(tollgate_crds::CacheSettings {
        mode: tollgate_crds::CacheMode::Semantic,
        semantic: Some(tollgate_crds::SemanticCache {
            embedding_model: "text-embedding-3-small".into(),
            threshold: Some(0.9),
            max_turns: None,
        }),
        ..Default::default()
    });
    let compiled = run(&inputs);
    let (ok, reason, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "chat"),
        ACCEPTED,
    );
    assert!(!ok);
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains(
            "spec.cache.semantic.embeddingModel names text-embedding-3-small, which this route \
             does not serve; name one of spec.models (gpt-4o-mini)"
        ),
        "{message}"
    );
    assert!(compiled.snapshot.content.routes.is_empty());

    inputs.routes[0].spec.cache.as_mut().unwrap().semantic = Some(tollgate_crds::SemanticCache {
        embedding_model: "gpt-4o-mini".into(),
        threshold: Some(0.9),
        max_turns: Some(3),
    });
    let compiled = run(&inputs);
    assert!(verdict(&compiled, Kind::AIRoute, "team-a", "chat").is_true(ACCEPTED));
    let semantic = compiled.snapshot.content.routes[0]
        .cache
        .as_ref()
        .and_then(|c| c.semantic.clone())
        .unwrap();
    assert_eq!(semantic.embedding_model, "gpt-4o-mini");
    assert_eq!(semantic.threshold, 0.9);
    assert_eq!(semantic.max_turns, 3);
}

#[test]
fn a_models_own_cache_settings_compile_beside_the_routes() {
    let mut inputs = team_a();
    inputs.routes[0].spec.cache = Some(tollgate_crds::CacheSettings::default());
    inputs.routes[0].spec.models[0].cache = Some(tollgate_crds::CacheSettings {
        enabled: Some(false),
        ..Default::default()
    });
    let compiled = run(&inputs);
    assert!(verdict(&compiled, Kind::AIRoute, "team-a", "chat").is_true(ACCEPTED));
    let route = &compiled.snapshot.content.routes[0];
    assert_eq!(route.models[0].cache, tollgate_snapshot::ModelCache::Off);
    assert_eq!(route.models[0].cache_policy(route), None);
    assert!(route.cache.is_some());

    inputs.routes[0].spec.models[0].cache = Some(tollgate_crds::CacheSettings {
        ttl: Some("5m".into()),
        ..Default::default()
    });
    let compiled = run(&inputs);
    let route = &compiled.snapshot.content.routes[0];
    assert_eq!(
        route.models[0].cache_policy(route).map(|p| p.ttl_ms),
        Some(300_000)
    );
    assert_eq!(route.cache.as_ref().map(|p| p.ttl_ms), Some(3_600_000));

    // A mistake in a model's settings keeps the route out of service, named by the model.
    inputs.routes[0].spec.models[0].cache = Some(tollgate_crds::CacheSettings {
        mode: tollgate_crds::CacheMode::Semantic,
        ..Default::default()
    });
    let compiled = run(&inputs);
    let (ok, reason, message) = cond(
        verdict(&compiled, Kind::AIRoute, "team-a", "chat"),
        ACCEPTED,
    );
    assert!(!ok);
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("set spec.models[gpt-4o-mini].cache.semantic.embeddingModel"),
        "{message}"
    );
}
