//! A call on one of the route's models, from whichever endpoint asks it (chat, prompt APIs, MCP
//! tools): routed to the route's backends, charged to the limits, sent through the cache.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http::header::HeaderMap;

use super::admission::{self, Admitted, Notes};
use crate::call::{self, Call, Endpoint, ResponseBody, Shared};
use crate::error::ApiError;
use crate::limits::estimate_tokens;
use tollgate_snapshot::Snapshot;

/// What a model call asks: the endpoint, the body for it, and the request's headers (for the cache).
pub(super) struct Asked<'a> {
    pub(super) endpoint: Endpoint,
    pub(super) body: Bytes,
    pub(super) headers: &'a HeaderMap,
}

/// A call on one of the route's models: routed, charged to the limits, sent.
pub(super) async fn model_call(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    admitted: &Admitted<'_>,
    asked: Asked<'_>,
    call: &mut Call,
    notes: &mut Notes,
) -> Result<Response<ResponseBody>, ApiError> {
    let Asked {
        endpoint,
        body: bytes,
        headers,
    } = asked;
    let guarded = call::guard_request(snapshot, admitted.route, endpoint, bytes, call)?;
    let bytes = guarded.body;
    let split = guarded.split.as_ref();
    let routed = call::route_call(snapshot, admitted.route, endpoint, &bytes, split, call)?
        .with_caller_headers(headers);
    call::moderate_request(shared, snapshot, admitted.route, endpoint, &bytes, call).await?;
    let estimate = estimate_tokens(bytes.len() as u64, routed.max_output_tokens());
    let cost_ceiling = routed.cost_ceiling_usd(estimate);
    admission::limit(
        shared,
        snapshot,
        admitted,
        (estimate, cost_ceiling),
        call,
        notes,
    )
    .await?;
    let response = call::cached_call(shared, snapshot, routed, headers, call).await?;
    let response = call::guard_answer(snapshot, admitted.route, endpoint, response, call).await?;
    call::moderate_answer(shared, snapshot, admitted.route, endpoint, response, call).await
}
