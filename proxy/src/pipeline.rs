//! The request pipeline up to the choice of backend: route, key, lifecycle, subscription, endpoint.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use tollgate_snapshot::{KeyDigest, Phase, RouteIdx, Snapshot, Stage};

use crate::body::ResponseBody;
use crate::clock;
use crate::dispatch::{self, Endpoint};
use crate::error::ApiError;
use crate::openai::{RequestDoc, RequestError};
use crate::record::Call;
use crate::state::Shared;

/// The request id header, sent upstream and back to the client (a `HeaderName` constant: inserting
/// with a `&str` name checks and converts it on every call).
pub(crate) const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// What the pipeline learned that shapes every answer on the route, errors included.
#[derive(Default)]
struct Notes {
    /// `Some(sunset)` when the route is Deprecated.
    deprecated: Option<Option<i64>>,
    /// `x-ratelimit-*` and retry hints when the subscription or consumer is limited.
    rate: Option<crate::limits::RateNotes>,
}

/// Serves one request. Never fails: every problem becomes an OpenAI-shaped error response.
pub async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let request_id = request_id(request.headers());
    let mut call = Box::new(Call::start(
        shared.recorder.clone(),
        request_id,
        request.method(),
        request.uri().path(),
    ));
    let mut notes = Notes::default();
    // Anthropic-format callers get errors in Anthropic's envelope, from the first check on.
    let anthropic_caller = crate::inbound_anthropic::is_messages_path(request.uri().path());
    let mut response = match serve(&shared, request, &mut call, &mut notes).await {
        Ok(response) => response,
        Err(error) => {
            call.fail(error.code);
            if anthropic_caller {
                crate::inbound_anthropic::error_response(&error)
            } else {
                error.into_response()
            }
        }
    };
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID, call.request_id.clone());
    if let Some(sunset) = notes.deprecated {
        headers.insert("deprecation", HeaderValue::from_static("true"));
        if let Some(at) = sunset
            && let Ok(v) = HeaderValue::from_str(&clock::http_date(at))
        {
            headers.insert("sunset", v);
        }
    }
    if let Some(rate) = &notes.rate {
        rate.write(headers);
    }
    call.status = response.status().as_u16();
    response.body_mut().attach(call);
    Ok(response)
}

/// The client's request id if it sent a sane one, else a fresh random one (a header value either way,
/// so that it goes upstream and back to the client without being copied again).
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 128
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random = fastrand::u128(..);
    let mut fresh = [0u8; 32];
    for (i, digit) in fresh.iter_mut().enumerate() {
        *digit = HEX[(random >> (124 - 4 * i) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&fresh).expect("hex digits are a valid header value")
}

/// The API key from `Authorization: Bearer`, `x-api-key` or `api-key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer ") {
            let key = v[7..].trim();
            if !key.is_empty() {
                return Some(key);
            }
        }
    }
    ["x-api-key", "api-key"]
        .into_iter()
        .filter_map(|name| headers.get(name)?.to_str().ok())
        .map(str::trim)
        .find(|k| !k.is_empty())
}

async fn serve(
    shared: &Shared,
    request: Request<Incoming>,
    call: &mut Call,
    notes: &mut Notes,
) -> Result<Response<ResponseBody>, ApiError> {
    let snapshot = shared.store.load().ok_or_else(|| {
        ApiError::upstream(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "The gateway has not received its configuration yet; retry shortly.",
        )
    })?;
    call.snapshot = Some(snapshot.clone());
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let host = parts
        .uri
        .host()
        .or_else(|| parts.headers.get(header::HOST)?.to_str().ok());
    let matched = snapshot
        .route_for(host, path)
        .ok_or_else(|| ApiError::unknown_url(&parts.method, path))?;
    let (route_idx, route) = (matched.idx, matched.route);

    let key = presented_key(&parts.headers).ok_or_else(|| {
        ApiError::invalid_api_key(
            "You didn't provide an API key. Send it as `Authorization: Bearer <key>`, `x-api-key` or `api-key`.",
        )
    })?;
    let (consumer_idx, consumer, consumer_key) = snapshot
        .consumer_by_key(&KeyDigest::of(key.as_bytes()))
        .ok_or_else(|| ApiError::invalid_api_key("Incorrect API key provided."))?;
    if consumer_key
        .expires_unix
        .is_some_and(|at| at <= clock::now_unix())
    {
        return Err(ApiError::invalid_api_key("This API key has expired."));
    }
    call.consumer = Some(consumer_idx);

    match route.stage {
        // A draft is invisible outside its team: answer as if nothing were there.
        Stage::Draft if consumer.id.namespace != route.id.namespace => {
            return Err(ApiError::unknown_url(&parts.method, path));
        }
        Stage::Retired => {
            call.route = Some(route_idx);
            return Err(ApiError::new(
                StatusCode::GONE,
                "invalid_request_error",
                "route_retired",
                format!("The API {} has been retired.", route.id),
            ));
        }
        Stage::Deprecated => notes.deprecated = Some(route.sunset_unix),
        Stage::Draft | Stage::Published => {}
    }
    call.route = Some(route_idx);
    check_subscription(&snapshot, consumer_idx, route_idx)?;
    if let Some(sub) = snapshot.subscription(consumer_idx, route_idx) {
        // Admitted on an estimate from the body's declared size; settled with the real usage.
        let estimate = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map_or(0, crate::limits::estimate_tokens);
        match shared
            .limiter
            .admit(&snapshot, sub, consumer, estimate)
            .await
        {
            Ok(None) => {}
            Ok(Some(admitted)) => {
                notes.rate = Some(admitted.notes);
                call.grant = Some(admitted.grant);
            }
            Err(refused) => {
                notes.rate = Some(refused.notes);
                return Err(refused.error);
            }
        }
    }

    let rest = matched.rest;
    match (&parts.method, rest) {
        (&Method::POST, "/v1/chat/completions") => {
            let bytes = read_body(body, &parts.headers, shared.limits.max_body_bytes).await?;
            dispatch::model_call(shared, &snapshot, route_idx, Endpoint::Chat, &bytes, call).await
        }
        (&Method::POST, "/v1/embeddings") => {
            let bytes = read_body(body, &parts.headers, shared.limits.max_body_bytes).await?;
            dispatch::model_call(
                shared,
                &snapshot,
                route_idx,
                Endpoint::Embeddings,
                &bytes,
                call,
            )
            .await
        }
        (&Method::POST, "/v1/messages") => {
            let bytes = read_body(body, &parts.headers, shared.limits.max_body_bytes).await?;
            dispatch::model_call(
                shared,
                &snapshot,
                route_idx,
                Endpoint::Messages,
                &bytes,
                call,
            )
            .await
        }
        (&Method::GET, "/v1/models") => Ok(json_response(&ModelList {
            object: "list",
            data: listed_models(&snapshot, route_idx).collect(),
        })),
        (&Method::GET, _) if rest.starts_with("/v1/models/") => {
            let id = &rest["/v1/models/".len()..];
            listed_models(&snapshot, route_idx)
                .find(|m| m.id == id)
                .map(|m| json_response(&m))
                .ok_or_else(|| {
                    ApiError::model_not_found(id, listed_models(&snapshot, route_idx).map(|m| m.id))
                })
        }
        _ => Err(ApiError::unknown_url(&parts.method, path)),
    }
}

fn check_subscription(
    snapshot: &Snapshot,
    consumer: tollgate_snapshot::ConsumerIdx,
    route: RouteIdx,
) -> Result<(), ApiError> {
    let route_id = &snapshot.content.routes[route as usize].id;
    let Some(sub) = snapshot.subscription(consumer, route) else {
        return Err(ApiError::forbidden(
            "not_subscribed",
            format!(
                "This key is not subscribed to the API {route_id}. Create an ApiSubscription for it."
            ),
        ));
    };
    match sub.phase {
        Phase::Approved => Ok(()),
        Phase::Pending => Err(ApiError::forbidden(
            "pending_approval",
            format!(
                "The subscription {} to {route_id} is waiting for approval.",
                sub.id
            ),
        )),
        Phase::Rejected => Err(ApiError::forbidden(
            "subscription_rejected",
            format!("The subscription {} to {route_id} was rejected.", sub.id),
        )),
        Phase::Revoked => Err(ApiError::forbidden(
            "subscription_revoked",
            format!("The subscription {} to {route_id} was revoked.", sub.id),
        )),
        Phase::Invalid => Err(ApiError::forbidden(
            "not_subscribed",
            format!(
                "The subscription {} to {route_id} is invalid; see its status conditions.",
                sub.id
            ),
        )),
    }
}

/// Reads the request body, refusing more than `limit` bytes with 413.
async fn read_body(body: Incoming, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::body_too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::body_too_large(limit))
        }
        Err(_) => Err(ApiError::bad_request(
            "invalid_body",
            "The request body could not be read.",
        )),
    }
}

/// Parses a JSON request body's top level, with OpenAI's wording for the usual mistakes.
pub fn parse_request(bytes: &[u8]) -> Result<(RequestDoc<'_>, Cow<'_, str>), ApiError> {
    let doc = RequestDoc::parse(bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
    let model = doc.model().map_err(|e| match e {
        RequestError::MissingModel => {
            ApiError::bad_request("missing_required_parameter", e.to_string()).with_param("model")
        }
        RequestError::Malformed(_) => ApiError::bad_request("invalid_json", e.to_string()),
    })?;
    Ok((doc, model))
}

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

/// A 200 JSON response.
pub fn json_response<T: Serialize>(value: &T) -> Response<ResponseBody> {
    let body = serde_json::to_vec(value).expect("response serialises");
    let mut response = Response::new(ResponseBody::full(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_in_any_of_the_three_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("api-key", HeaderValue::from_static("k3"));
        assert_eq!(presented_key(&h), Some("k3"));
        h.insert("x-api-key", HeaderValue::from_static("k2"));
        assert_eq!(presented_key(&h), Some("k2"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer k1"));
        assert_eq!(presented_key(&h), Some("k1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(presented_key(&h), Some("k2"));
    }

    #[test]
    fn a_calls_future_stays_small() {
        // hyper keeps room for one call's future per connection for as long as the connection lives,
        // so its size is paid by every open connection and stream. Rare, large states (connecting,
        // translating for another provider's API) are boxed to keep it small; it was 10.7 KB before.
        fn size_of_future<A, B, F: std::future::Future>(_: fn(A, B) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = size_of_future(handle);
        assert!(size <= 6 * 1024, "a call's future takes {size} bytes");
    }

    #[test]
    fn keeps_sane_request_ids_only() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        let fresh = request_id(&h);
        assert_eq!(fresh.len(), 32);
        assert!(
            fresh.as_bytes().iter().all(u8::is_ascii_hexdigit),
            "{fresh:?}"
        );
        assert_ne!(fresh, request_id(&h), "each fresh id is random");
    }
}
