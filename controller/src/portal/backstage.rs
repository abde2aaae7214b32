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
