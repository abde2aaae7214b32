//! REST passthrough: `<prefix>/api/<path>` answered by the route's REST service, for the operations
//! its OpenAPI document declares and nothing else. Admission is a model call's (key, lifecycle,
//! subscription); each call counts against the request limits, never the token limits.

use std::sync::Arc;

use http::request::Parts;
use http::{Response, StatusCode};
use hyper::body::Incoming;
use tollgate_snapshot::Snapshot;

use super::admission::{self, Admitted, Notes};
use super::body::read_body;
use crate::call::{self, Call, ResponseBody, RestRequest, Shared};
use crate::error::ApiError;

/// Where REST operations live below a route's prefix.
pub(super) const API: &str = "/api";

/// Whether `rest` (the path after a route's prefix) is for the REST service.
pub(super) fn is_rest_path(rest: &str) -> bool {
    rest.strip_prefix(API)
        .is_some_and(|p| p.is_empty() || p.starts_with('/'))
}

/// Serves one call to a REST operation.
pub(super) async fn serve(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    parts: Parts,
    body: Incoming,
    admitted: &Admitted<'_>,
    call: &mut Call,
    notes: &mut Notes,
) -> Result<Response<ResponseBody>, ApiError> {
    let route = &snapshot.content.routes[admitted.route as usize];
    let full = parts.uri.path();
    let path = &full[admitted.rest_at + API.len()..];
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_operation",
            format!(
                "The API {} declares no operation {} {}.",
                route.id, parts.method, path
            ),
        )
    };
    let service = route.rest.as_ref().ok_or_else(unknown)?;
    let index = service
        .operation_index(parts.method.as_str(), path)
        .ok_or_else(unknown)?;
    call.rest_operation = Some(index as u32);
    let limit = usize::try_from(service.max_request_bytes).unwrap_or(usize::MAX);
    let bytes = read_body(body, &parts.headers, limit, shared.limits.body_pause).await?;
    admission::limit(shared, snapshot, admitted, (0, 0.0), call, notes).await?;
    let path_and_query = match parts.uri.query() {
        Some(query) => [path, "?", query].concat(),
        None => path.to_string(),
    };
    let request = RestRequest {
        route: admitted.route,
        method: parts.method,
        path_and_query,
        headers: parts.headers,
        body: bytes,
    };
    call::rest_call(shared, snapshot, request, call).await
}
