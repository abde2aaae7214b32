//! `GET /backstage/entities`: each Published and Deprecated route as a Backstage `kind: API` entity
//! (`backstage.io/v1alpha1`, type `openapi`, the route's OpenAPI document as its definition), so an
//! organisation's developer portal can import Tollgate's catalog. For a signed-in person, or for a
//! catalog processor sending `Authorization: Bearer <Kubernetes token>`.

use hyper::{Request, StatusCode, body::Incoming, header};
use serde_json::{Value, json};
use tollgate_snapshot::{Route, Stage};

use super::{
    Portal, catalog,
    http::{Reply, json_reply},
    people,
};

/// Where the export is served.
pub const PATH: &str = "/backstage/entities";

/// Backstage's lifecycle for a stage (`production` and `deprecated` are Backstage's own words).
fn lifecycle(stage: Stage) -> &'static str {
    match stage {
        Stage::Deprecated => "deprecated",
        Stage::Draft => "experimental",
        Stage::Published | Stage::Retired => "production",
    }
}

/// The entity of `route`.
pub fn entity(route: &Route, proxy_base_url: &str) -> Value {
    let document = tollgate_snapshot::openapi::document(route);
    let mut metadata = json!({
        "name": route.id.name.to_string(),
        "namespace": route.id.namespace.to_string(),
        "title": format!("{} ({})", route.id.name, route.id.namespace),
        "annotations": {
            "tollgate.dev/route": format!("{}/{}", route.id.namespace, route.id.name),
            "tollgate.dev/base-url": format!("{proxy_base_url}{}", route.prefix),
        },
        "tags": ["tollgate"],
    });
    if let Some(d) = &route.description {
        metadata["description"] = json!(d);
    }
    json!({
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "API",
        "metadata": metadata,
        "spec": {
            "type": "openapi",
            "lifecycle": lifecycle(route.stage),
            "owner": format!("group:default/{}", route.id.namespace),
            "definition": serde_json::to_string_pretty(&document).expect("a JSON document"),
        },
    })
}

/// The export for the current snapshot.
pub fn serve(portal: &Portal) -> Reply {
    let items: Vec<Value> = catalog::snapshot(portal)
        .map(|p| {
            p.snapshot
                .content
                .routes
                .iter()
                .filter(|r| matches!(r.stage, Stage::Published | Stage::Deprecated))
                .map(|r| entity(r, &portal.proxy_base_url))
                .collect()
        })
        .unwrap_or_default();
    json_reply(StatusCode::OK, &json!({ "items": items }))
}

/// The export for a request without a session: a bearer token the API server accepts, else 401.
pub async fn serve_with_bearer(portal: &Portal, req: &Request<Incoming>) -> Reply {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let accepted = match token {
        Some(t) => matches!(people::review(&portal.client, t).await, Ok(Some(_))),
        None => false,
    };
    if accepted {
        return serve(portal);
    }
    let mut reply = json_reply(
        StatusCode::UNAUTHORIZED,
        &json!({"error": {"message": "sign in, or send Authorization: Bearer <a Kubernetes token the API server accepts>"}}),
    );
    reply.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    reply
}

#[cfg(test)]
mod tests {
    //! The export checked against Backstage's published entity schema (backstage/backstage,
    //! `packages/catalog-model/src/schema/`: `Entity.schema.json`, `EntityMeta.schema.json` and
    //! `kinds/API.v1alpha1.schema.json`) and the catalog's name rules, restated here as checks.

    use super::*;

    /// Backstage's `metadata.name` rule: 1–63 of `[A-Za-z0-9-_.]`, starting and ending alphanumeric.
    fn backstage_name(name: &str) -> bool {
        let b = name.as_bytes();
        (1..=63).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
    }

    /// Backstage's `metadata.namespace` rule: a DNS label, 1–63 of `[a-z0-9-]`.
    fn backstage_namespace(ns: &str) -> bool {
        let b = ns.as_bytes();
        (1..=63).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    }

    fn non_empty_string(v: &Value) -> bool {
        v.as_str().is_some_and(|s| !s.is_empty())
    }

    /// Every rule of the three schemas an API entity must satisfy; the first broken one.
    fn check(entity: &Value) -> Result<(), String> {
        let object = entity.as_object().ok_or("an entity is an object")?;
        // Entity: required apiVersion, kind, metadata; no other properties than these and
        // spec, relations, status.
        for key in ["apiVersion", "kind", "metadata"] {
            if !object.contains_key(key) {
                return Err(format!("Entity requires {key}"));
            }
        }
        for key in object.keys() {
            if ![
                "apiVersion",
                "kind",
                "metadata",
                "spec",
                "relations",
                "status",
            ]
            .contains(&key.as_str())
            {
                return Err(format!("Entity allows no property {key}"));
            }
        }
        // API.v1alpha1: apiVersion and kind enums.
        if !["backstage.io/v1alpha1", "backstage.io/v1beta1"]
            .contains(&entity["apiVersion"].as_str().unwrap_or(""))
        {
            return Err("apiVersion".into());
        }
        if entity["kind"] != "API" {
            return Err("kind".into());
        }
        // EntityMeta.
        let meta = &entity["metadata"];
        let name = meta["name"].as_str().ok_or("metadata.name is required")?;
        if !backstage_name(name) {
            return Err(format!("metadata.name {name:?}"));
        }
        if let Some(ns) = meta.get("namespace")
            && !ns.as_str().is_some_and(backstage_namespace)
        {
            return Err(format!("metadata.namespace {ns}"));
        }
        if let Some(d) = meta.get("description")
            && !d.is_string()
        {
            return Err("metadata.description is a string".into());
        }
        for map in ["labels", "annotations"] {
            if let Some(m) = meta.get(map) {
                let m = m
                    .as_object()
                    .ok_or(format!("metadata.{map} is an object"))?;
                if !m.values().all(Value::is_string) {
                    return Err(format!("metadata.{map} values are strings"));
                }
            }
        }
        if let Some(tags) = meta.get("tags") {
            let tags = tags.as_array().ok_or("metadata.tags is an array")?;
            if !tags.iter().all(non_empty_string) {
                return Err("metadata.tags are non-empty strings".into());
            }
        }
        // API.v1alpha1 spec: type, lifecycle, owner and definition, each a non-empty string.
        let spec = entity["spec"].as_object().ok_or("spec is required")?;
        for key in ["type", "lifecycle", "owner", "definition"] {
            if !spec.get(key).is_some_and(non_empty_string) {
                return Err(format!("spec.{key} is a required non-empty string"));
            }
        }
        if let Some(system) = spec.get("system")
            && !non_empty_string(system)
        {
            return Err("spec.system".into());
        }
        Ok(())
    }

    fn route(stage: Stage, description: Option<&str>) -> Route {
        serde_json::from_value(json!({
            "id": {"namespace": "team-a", "name": "chat.v2"},
            "prefix": "/team-a/chat",
            "hostnames": [],
            "stage": stage,
            "sunset_unix": if stage == Stage::Deprecated { Some(1_798_761_599) } else { None },
            "models": [{"name": "fake-chat", "backends": [], "fallbacks": []}],
            "limits": {"requests_per_minute": null, "tokens_per_minute": null},
            "approval": "Manual",
            "description": description,
        }))
        .expect("a route row")
    }

    #[test]
    fn entities_satisfy_backstages_schema() {
        for (stage, lifecycle) in [
            (Stage::Published, "production"),
            (Stage::Deprecated, "deprecated"),
        ] {
            for description in [None, Some("Chat <b>models</b>")] {
                let e = entity(&route(stage, description), "https://ai.example.com");
                check(&e).unwrap_or_else(|broken| panic!("{broken}: {e:#}"));
                assert_eq!(e["spec"]["lifecycle"], lifecycle);
                assert_eq!(e["spec"]["type"], "openapi");
                assert_eq!(e["spec"]["owner"], "group:default/team-a");
                let doc: Value =
                    serde_json::from_str(e["spec"]["definition"].as_str().unwrap()).unwrap();
                assert_eq!(doc["openapi"], "3.1.0");
                assert!(doc["paths"]["/v1/chat/completions"]["post"].is_object());
                assert_eq!(
                    e["metadata"]["annotations"]["tollgate.dev/base-url"],
                    "https://ai.example.com/team-a/chat"
                );
            }
        }
    }

    #[test]
    fn the_check_itself_refuses_what_backstage_refuses() {
        let good = entity(&route(Stage::Published, None), "http://x");
        assert!(check(&good).is_ok());
        let broken = |edit: &dyn Fn(&mut Value)| {
            let mut e = good.clone();
            edit(&mut e);
            check(&e).is_err()
        };
        assert!(broken(&|e| e["spec"]["definition"] = json!("")));
        assert!(broken(
            &|e| e["spec"]["definition"] = json!({"openapi": "3.1.0"})
        ));
        assert!(broken(&|e| {
            e["spec"].as_object_mut().unwrap().remove("owner");
        }));
        assert!(broken(&|e| e["kind"] = json!("Component")));
        assert!(broken(&|e| e["metadata"]["name"] = json!("-bad")));
        assert!(broken(&|e| e["metadata"]["namespace"] = json!("Team_A")));
        assert!(broken(&|e| e["extra"] = json!(1)));
        assert!(broken(&|e| e["metadata"]["annotations"]["n"] = json!(1)));
    }
}
