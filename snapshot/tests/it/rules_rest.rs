//! Compiling `AIRoute.spec.rest`: every problem is reported in the route's conditions, the route's
//! models keep being served, and a good service carries its operations into the snapshot.

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{Value, json};
use tollgate_crds::condition_type::{READY, RESOLVED_REFS};
use tollgate_snapshot::{Compiled, Inputs, Kind, Route};

use crate::support::*;

const DOC: &str = r##"{
  "openapi": "3.0.3",
  "info": {"title": "orders", "version": "1"},
  "paths": {
    "/items": {
      "get": {"operationId": "listItems", "responses": {"200": {"description": "ok"}}},
      "post": {"operationId": "createItem", "responses": {"201": {"description": "made"}}}
    },
    "/items/{id}": {
      "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
      "get": {"operationId": "getItem", "responses": {"200": {"$ref": "#/components/responses/Item"}}},
      "delete": {"responses": {"204": {"description": "gone"}}}
    }
  },
  "components": {"responses": {"Item": {"description": "an item"}}}
}"##;

fn config_map(ns: &str, name: &str, pairs: &[(&str, &str)]) -> ConfigMap {
    let data: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "namespace": ns, "name": name },
        "data": data,
    }))
    .unwrap()
}

/// Team A with route `chat` given `rest` and the ConfigMap `orders-api` holding `doc`.
fn with_rest(rest: Value, doc: &str) -> Inputs {
    let mut inputs = team_a();
    let route = &mut inputs.routes[0];
    let mut spec = serde_json::to_value(&route.spec).unwrap();
    spec["rest"] = rest;
    route.spec = serde_json::from_value(spec).unwrap();
    inputs
        .config_maps
        .push(config_map("team-a", "orders-api", &[("openapi.json", doc)]));
    inputs.secrets.push(secret(
        "team-a",
        "orders-token",
        &[("token", "s3cr3t-token"), ("ca.crt", CA)],
    ));
    inputs
}

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn basic() -> Value {
    json!({
        "backend": {"url": "http://orders.team-a.svc:8080/v2/"},
        "openAPI": {"configMapRef": {"name": "orders-api"}},
    })
}

fn route_of(compiled: &Compiled) -> &Route {
    &compiled.snapshot.content.routes[0]
}

/// `(ResolvedRefs status, reason, message)` and the Ready message of route `chat`.
fn refs(compiled: &Compiled) -> (bool, String, String, String) {
    let v = verdict(compiled, Kind::AIRoute, "team-a", "chat");
    let (ok, reason, message) = cond(v, RESOLVED_REFS);
    let (ready, _, ready_message) = cond(v, READY);
    assert!(
        ready,
        "the route's models are still served: {ready_message}"
    );
    (ok, reason.into(), message.into(), ready_message.into())
}

/// The route compiles without its REST service, and ResolvedRefs says why with `reason`.
fn refused(inputs: &Inputs, reason: &str, says: &str) {
    let compiled = run(inputs);
    assert!(route_of(&compiled).rest.is_none());
    assert!(!route_of(&compiled).models.is_empty());
    let (ok, got_reason, message, ready) = refs(&compiled);
    assert!(!ok);
    assert_eq!(got_reason, reason, "{message}");
    assert!(message.contains(says), "{message:?} should say {says:?}");
    assert!(
        !message.contains("s3cr3t"),
        "never quote a credential: {message}"
    );
    assert!(ready.contains("/team-a/chat/api get 404"), "{ready}");
}

#[test]
fn a_good_service_carries_its_operations_into_the_snapshot() {
    let mut rest = basic();
    rest["backend"]["credentials"] = json!({
        "secretRef": {"name": "orders-token", "key": "token"},
        "header": "X-Api-Token", "prefix": "Token "
    });
    rest["backend"]["timeouts"] = json!({"connect": "2s", "total": "30s"});
    rest["backend"]["maxRequestBytes"] = json!(1024);
    rest["backend"]["tls"] = json!({"caSecretRef": {"name": "orders-token"}});
    let compiled = run(&with_rest(rest, DOC));
    let service = route_of(&compiled).rest.as_ref().expect("compiled");
    assert_eq!(service.base_url, "http://orders.team-a.svc:8080/v2");
    assert_eq!(service.timeouts.connect_ms, 2_000);
    assert_eq!(service.timeouts.total_ms, 30_000);
    assert_eq!(service.timeouts.first_byte_ms, 60_000, "default kept");
    assert_eq!(service.max_request_bytes, 1024);
    assert_eq!(service.ca_pem.as_deref(), Some(CA.trim()));
    let credential = service.credential.as_ref().unwrap();
    assert_eq!(credential.header, "x-api-token");
    assert_eq!(credential.value.0, "Token s3cr3t-token");
    assert!(!format!("{credential:?}").contains("s3cr3t"), "redacted");
    let ops: Vec<(&str, &str, Option<&str>)> = service
        .operations
        .iter()
        .map(|o| {
            (
                o.method.as_str(),
                o.path.as_str(),
                o.operation_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("GET", "/items", Some("listItems")),
            ("POST", "/items", Some("createItem")),
            ("GET", "/items/{id}", Some("getItem")),
            ("DELETE", "/items/{id}", None),
        ]
    );
    // The path item's shared parameters are copied into each of its operations.
    assert_eq!(service.operations[3].spec["parameters"][0]["name"], "id");
    assert_eq!(
        service.operations[2].spec["responses"]["200"]["$ref"],
        "#/components/responses/Item"
    );
    assert_eq!(
        service.components.as_ref().unwrap()["responses"]["Item"]["description"],
        "an item"
    );
    let (ok, _, _, ready) = refs(&compiled);
    assert!(ok);
    assert!(
        ready.contains("REST service publishes 4 operations under /team-a/chat/api"),
        "{ready}"
    );
    // And the snapshot still round-trips through the wire.
    let decoded = tollgate_snapshot::Snapshot::decode(&compiled.snapshot.encode()).unwrap();
    assert_eq!(decoded.content.routes[0].rest, route_of(&compiled).rest);
}

#[test]
fn yaml_documents_are_read_too() {
    let yaml = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /ping:\n    get:\n      operationId: ping\n      responses: {'200': {description: ok}}\n";
    let compiled = run(&with_rest(basic(), yaml));
    let service = route_of(&compiled).rest.as_ref().expect("compiled");
    assert_eq!(service.operations.len(), 1);
    assert_eq!(service.operations[0].operation_id.as_deref(), Some("ping"));
}

#[test]
fn a_missing_config_map_or_key_is_reported() {
    let mut inputs = with_rest(basic(), DOC);
    inputs.config_maps.clear();
    refused(
        &inputs,
        "ConfigMapNotFound",
        "ConfigMap team-a/orders-api does not exist",
    );

    let mut rest = basic();
    rest["openAPI"]["configMapRef"]["key"] = json!("spec.yaml");
    refused(
        &with_rest(rest, DOC),
        "ConfigMapKeyNotFound",
        "has no key \"spec.yaml\" (its keys are openapi.json)",
    );

    // A ConfigMap of another namespace is not read.
    let mut inputs = with_rest(basic(), DOC);
    inputs.config_maps[0].metadata.namespace = Some("team-b".into());
    refused(&inputs, "ConfigMapNotFound", "team-a/orders-api");
}

#[test]
fn unreadable_documents_are_reported() {
    let cases = [
        ("{\"openapi\": ", "not valid JSON"),
        ("- just\n- a list\n", "not an object"),
        (
            "{\"swagger\": \"2.0\", \"paths\": {}}",
            "no `openapi` version",
        ),
        ("{\"openapi\": \"2.0\", \"paths\": {}}", "only OpenAPI 3.x"),
        ("{\"openapi\": \"3.0.0\"}", "no `paths`"),
        (
            "{\"openapi\": \"3.0.0\", \"paths\": []}",
            "`paths` is not an object",
        ),
        (
            "{\"openapi\": \"3.0.0\", \"paths\": {}}",
            "declares no operations",
        ),
        (
            "{\"openapi\": \"3.0.0\", \"paths\": {\"items\": {\"get\": {}}}}",
            "must start with '/'",
        ),
        (
            "{\"openapi\": \"3.0.0\", \"paths\": {\"/items/{id\": {\"get\": {}}}}",
            "braces are not balanced",
        ),
        (
            "{\"openapi\": \"3.0.0\", \"paths\": {\"/items/{}\": {\"get\": {}}}}",
            "has no name",
        ),
        (
            "{\"openapi\": \"3.0.0\", \"paths\": {\"/a/../b\": {\"get\": {}}}}",
            "'..' segments",
        ),
        (
            "{\"openapi\": \"3.0.0\", \"paths\": {\"/a?x=1\": {\"get\": {}}}}",
            "without query",
        ),
        (
            "{\"openapi\": \"3.0.0\", \"paths\": {\"/a/{x}{y}\": {\"get\": {}}}}",
            "follow each other",
        ),
        (
            "{\"openapi\": \"3.0.0\", \"paths\": {\"/a\": {\"$ref\": \"#/x\"}}}",
            "is a $ref",
        ),
        (
            "{\"openapi\": \"3.0.0\", \"paths\": {\"/a\": 7}}",
            "not a Path Item",
        ),
        (
            "{\"openapi\": \"3.0.0\", \"paths\": {\"/a\": {\"get\": true}}}",
            "GET /a is not an Operation",
        ),
        (
            "{\"openapi\": \"3.0.0\", \"paths\": {\"/a\": {\"get\": {\"operationId\": 3}}}}",
            "operationId of GET /a is not a string",
        ),
        (
            "{\"openapi\": \"3.0.0\", \"paths\": {\"/a\": {\"get\": {\"operationId\": \"x\"}}, \"/b\": {\"put\": {\"operationId\": \"x\"}}}}",
            "operationId x is used more than once",
        ),
    ];
    for (doc, says) in cases {
        refused(&with_rest(basic(), doc), "InvalidOpenAPI", says);
    }
}

#[test]
fn bad_urls_timeouts_and_headers_are_reported() {
    for url in [
        "ftp://orders",
        "http://",
        "http://orders/a?b=1",
        "http://user@orders",
        "http://orders/a b",
    ] {
        let mut rest = basic();
        rest["backend"]["url"] = json!(url);
        refused(
            &with_rest(rest, DOC),
            "InvalidBackendURL",
            "spec.rest.backend.url",
        );
    }
    let mut rest = basic();
    rest["backend"]["timeouts"] = json!({"idle": "soon"});
    refused(
        &with_rest(rest, DOC),
        "InvalidTimeout",
        "spec.rest.backend.timeouts.idle",
    );
    for header in ["Host", "content-length", "X Bad", "x-request-id"] {
        let mut rest = basic();
        rest["backend"]["credentials"] =
            json!({"secretRef": {"name": "orders-token", "key": "token"}, "header": header});
        refused(
            &with_rest(rest, DOC),
            "InvalidCredentialHeader",
            "cannot carry a credential",
        );
    }
}

#[test]
fn missing_or_unusable_secrets_are_reported() {
    let mut rest = basic();
    rest["backend"]["credentials"] = json!({"secretRef": {"name": "nope", "key": "token"}});
    refused(
        &with_rest(rest, DOC),
        "SecretNotFound",
        "Secret team-a/nope does not exist",
    );

    let mut rest = basic();
    rest["backend"]["credentials"] = json!({"secretRef": {"name": "orders-token"}});
    refused(
        &with_rest(rest, DOC),
        "SecretKeyNotFound",
        "has no key \"apiKey\"",
    );

    let mut rest = basic();
    rest["backend"]["credentials"] = json!({"secretRef": {"name": "orders-token", "key": "token"}});
    let mut inputs = with_rest(rest, DOC);
    inputs
        .secrets
        .retain(|s| s.metadata.name.as_deref() != Some("orders-token"));
    inputs.secrets.push(secret(
        "team-a",
        "orders-token",
        &[("token", "bad\u{1}value s3cr3t")],
    ));
    refused(&inputs, "InvalidCredential", "not a valid header value");

    let mut rest = basic();
    rest["backend"]["tls"] = json!({"caSecretRef": {"name": "missing-ca"}});
    refused(&with_rest(rest, DOC), "SecretNotFound", "team-a/missing-ca");

    let mut rest = basic();
    rest["backend"]["tls"] = json!({"caSecretRef": {"name": "orders-token", "key": "token"}});
    refused(
        &with_rest(rest, DOC),
        "InvalidCACertificate",
        "holds no PEM certificate",
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let mut rest = basic();
    rest["backend"]["url"] = json!("ftp://x");
    rest["backend"]["credentials"] = json!({"secretRef": {"name": "nope"}});
    let mut inputs = with_rest(rest, DOC);
    inputs.config_maps.clear();
    let compiled = run(&inputs);
    let (_, reason, message, _) = refs(&compiled);
    assert_eq!(reason, "InvalidBackendURL");
    for says in [
        "spec.rest.backend.url",
        "Secret team-a/nope",
        "ConfigMap team-a/orders-api",
    ] {
        assert!(message.contains(says), "{message}");
    }
    assert!(
        !message.contains("remaining backends"),
        "no advice about model backends when only the REST service has problems: {message}"
    );
}

#[test]
fn a_retired_route_compiles_no_service() {
    let mut inputs = with_rest(basic(), "not even a document");
    let mut spec = serde_json::to_value(&inputs.routes[0].spec).unwrap();
    spec["stage"] = json!("Retired");
    inputs.routes[0].spec = serde_json::from_value(spec).unwrap();
    let compiled = run(&inputs);
    assert!(route_of(&compiled).rest.is_none());
    let v = verdict(&compiled, Kind::AIRoute, "team-a", "chat");
    assert!(cond(v, RESOLVED_REFS).0);
}

#[test]
fn a_route_without_rest_has_none() {
    let compiled = run(&team_a());
    assert!(route_of(&compiled).rest.is_none());
}
