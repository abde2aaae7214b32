//! `GET <prefix>/v1/models` and `GET <prefix>/v1/models/{id}`: the models of a route.

use http::Response;
use serde::Serialize;
use tollgate_snapshot::{RouteIdx, Snapshot};

use super::answer::json_value;
use crate::call::ResponseBody;
use crate::error::ApiError;

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelEntry<'a>>,
}

#[derive(Serialize)]
struct ModelEntry<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    owned_by: &'a str,
}

/// The models of a route that have somewhere to go.
fn listed_models(snapshot: &Snapshot, route: RouteIdx) -> impl Iterator<Item = ModelEntry<'_>> {
    let route = &snapshot.content.routes[route as usize];
    route
        .models
        .iter()
        .filter(|m| !m.backends.is_empty() || !m.fallbacks.is_empty())
        .map(|m| ModelEntry {
            id: &m.name,
            object: "model",
            created: 0,
            owned_by: &route.id.namespace,
        })
}

/// The list of the route's models.
pub(super) fn list(snapshot: &Snapshot, route: RouteIdx) -> Response<ResponseBody> {
    json_value(&ModelList {
        object: "list",
        data: listed_models(snapshot, route).collect(),
    })
}

/// One of the route's models, or 404 naming the ones it has.
pub(super) fn one(
    snapshot: &Snapshot,
    route: RouteIdx,
    id: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    listed_models(snapshot, route)
        .find(|m| m.id == id)
        .map(|m| json_value(&m))
        .ok_or_else(|| ApiError::model_not_found(id, listed_models(snapshot, route).map(|m| m.id)))
}
