//! Vertex AI providers: project, region and token endpoint compiled, the endpoint defaulted from the
//! region, and service-account keys checked for the members a signed JWT needs without quoting them.

use crate::support::*;
use serde_json::json;
use tollgate_crds::condition_type::{ACCEPTED, READY, RESOLVED_REFS};
use tollgate_snapshot::{GOOGLE_TOKEN_ENDPOINT, Inputs, Kind, ProviderType, VertexTarget};

const KEY_JSON: &str = r#"{"type":"service_account","project_id":"acme-ai","private_key_id":"k1",
"private_key":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC-SECRET-MATERIAL\n-----END PRIVATE KEY-----\n",
"client_email":"gateway@acme-ai.iam.gserviceaccount.com","token_uri":"https://oauth2.googleapis.com/token"}"#;

fn vertex_inputs(vertex: serde_json::Value, key: &str) -> Inputs {
    let mut inputs = team_a();
    inputs.providers = vec![provider(
        "team-a",
        "openai",
        json!({
            "type": "VertexAI",
            "vertex": vertex,
            "credentials": {"secretRefs": [{"name": "vertex-sa", "key": "key.json"}]},
            "models": [{"name": "gemini-2.5-flash"}, {"name": "claude-sonnet-4-5@20250929"}]
        }),
    )];
    inputs.routes = vec![simple_route(
        "team-a",
        "chat",
        "/team-a/chat",
        "gemini-2.5-flash",
        "openai",
    )];
    inputs
        .secrets
        .push(secret("team-a", "vertex-sa", &[("key.json", key)]));
    inputs
}

#[test]
fn a_vertex_provider_gets_its_regional_endpoint_token_endpoint_and_key() {
    let compiled = run(&vertex_inputs(
        json!({"project": "acme-ai", "region": "europe-west4"}),
        KEY_JSON,
    ));
    let v = verdict(&compiled, Kind::ModelProvider, "team-a", "openai");
    assert!(cond(v, READY).0, "{:?}", cond(v, READY));
    let p = &compiled.snapshot.content.providers[0];
    assert_eq!(p.provider_type, ProviderType::VertexAi);
    assert_eq!(p.endpoint, "https://europe-west4-aiplatform.googleapis.com");
    assert_eq!(
        p.vertex,
        Some(VertexTarget {
            project: "acme-ai".into(),
            region: "europe-west4".into(),
            token_endpoint: GOOGLE_TOKEN_ENDPOINT.into(),
        })
    );
    assert_eq!(p.credentials.len(), 1);
    // The key goes in no header of its own: the proxy sends access tokens.
    assert_eq!(p.auth.header, "");
    // Both model families are priced from the shipped list.
    assert!(p.models.iter().all(|m| m.price.input_per_million > 0.0));

    let global = run(&vertex_inputs(
        json!({"project": "acme-ai", "region": "global",
               "tokenEndpoint": "http://127.0.0.1:9/token/"}),
        KEY_JSON,
    ));
    let p = &global.snapshot.content.providers[0];
    assert_eq!(p.endpoint, "https://aiplatform.googleapis.com");
    assert_eq!(
        p.vertex.as_ref().unwrap().token_endpoint,
        "http://127.0.0.1:9/token"
    );
}

#[test]
fn a_vertex_provider_without_its_project_is_invalid() {
    let mut inputs = vertex_inputs(
        json!({"project": "acme-ai", "region": "us-east5"}),
        KEY_JSON,
    );
    inputs.providers[0].spec.vertex = None;
    let compiled = run(&inputs);
    let (ok, reason, message) = cond(
        verdict(&compiled, Kind::ModelProvider, "team-a", "openai"),
        ACCEPTED,
    );
    assert!(!ok && reason == "InvalidSpec", "{reason}");
    assert!(message.contains("spec.vertex.project"), "{message}");
}

#[test]
fn a_secret_that_is_no_service_account_key_is_reported_without_quoting_it() {
    for (value, why) in [
        ("sk-not-json-SECRET-MATERIAL", "not a JSON object"),
        (
            r#"{"type":"authorized_user","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----SECRET-MATERIAL"}"#,
            "\"type\"",
        ),
        (
            r#"{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----SECRET-MATERIAL"}"#,
            "client_email",
        ),
        (
            r#"{"type":"service_account","client_email":"a@b","private_key":"SECRET-MATERIAL"}"#,
            "PKCS#8",
        ),
    ] {
        let compiled = run(&vertex_inputs(
            json!({"project": "acme-ai", "region": "us-east5"}),
            value,
        ));
        let v = verdict(&compiled, Kind::ModelProvider, "team-a", "openai");
        let (ok, reason, message) = cond(v, RESOLVED_REFS);
        assert!(!ok && reason == "InvalidCredential", "{reason}: {message}");
        assert!(message.contains(why), "{message}");
        assert!(!cond(v, READY).0);
        let all = format!("{v:?}");
        assert!(!all.contains("SECRET-MATERIAL"), "{all}");
    }
}
