//! The committed CRD YAML must be exactly what the Rust types generate, and the schema must keep the
//! properties Kubernetes tooling relies on.

use std::path::Path;

use tollgate_crds::{all_crds, crd_file_name, render_crd};

#[test]
fn committed_crd_yaml_matches_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for crd in all_crds() {
        let name = crd_file_name(&crd);
        let want = render_crd(&crd).expect("CRD renders as YAML");
        let have = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        if have != want {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "generated CRD YAML is out of date: {stale:?}; run `cargo run -p tollgate-crds --bin crdgen` and commit the result"
    );
}

fn schema_of(kind: &str) -> serde_json::Value {
    let crd = all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .expect("kind exists");
    let version = &crd.spec.versions[0];
    serde_json::to_value(
        version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn every_kind_has_list_map_conditions_status_subresource_and_the_tollgate_category() {
    for crd in all_crds() {
        let kind = crd.spec.names.kind.clone();
        let conditions = &schema_of(&kind)["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{kind}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"]),
            "{kind}"
        );
        let observed =
            &schema_of(&kind)["properties"]["status"]["properties"]["observedGeneration"];
        assert_eq!(observed["type"], "integer", "{kind}");
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{kind}"
        );
        assert_eq!(
            crd.spec.names.categories,
            Some(vec!["tollgate".to_string()]),
            "{kind}"
        );
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()),
            "{kind}"
        );
        assert_eq!(crd.spec.scope, "Namespaced", "{kind}");
    }
}

#[test]
fn a_models_context_window_is_optional_and_at_least_one_token() {
    let spec = schema_of("AIRoute");
    let model = &spec["properties"]["spec"]["properties"]["models"]["items"];
    let window = &model["properties"]["contextWindow"];
    assert_eq!(window["type"], "integer", "{window}");
    assert_eq!(window["minimum"].as_f64(), Some(1.0), "{window}");
    assert!(
        !model["required"]
            .as_array()
            .is_some_and(|r| r.iter().any(|f| f == "contextWindow")),
        "{model}"
    );
}

#[test]
fn subscription_consumer_and_route_are_immutable() {
    let spec = &schema_of("ApiSubscription")["properties"]["spec"]["properties"];
    for field in ["consumer", "route"] {
        let rules = spec[field]["x-kubernetes-validations"]
            .as_array()
            .expect(field);
        assert!(
            rules.iter().any(|r| r["rule"] == "self == oldSelf"),
            "{field}"
        );
    }
}

#[test]
fn approval_policy_parses_and_binds_to_the_policy() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("approval-policy.yaml"))
            .unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["kind"], "ValidatingAdmissionPolicy");
    assert_eq!(docs[1]["kind"], "ValidatingAdmissionPolicyBinding");
    assert_eq!(docs[1]["spec"]["policyName"], docs[0]["metadata"]["name"]);
}
