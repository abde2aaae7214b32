//! Who may call what: the route for the path, the key for a consumer, the route's lifecycle stage,
//! the consumer's subscription and its decision, then the limits and budgets of both.

use http::StatusCode;
use http::header::{self, HeaderMap};
use http::request::Parts;
use tollgate_snapshot::{ConsumerIdx, KeyDigest, Phase, RouteIdx, Snapshot, Stage};

use crate::call::Call;
use crate::call::Shared;
use crate::clock;
use crate::error::ApiError;
use crate::limits::{RateNotes, estimate_tokens};

/// What admission learned that shapes every answer on the route, errors included.
#[derive(Default)]
pub(super) struct Notes {
    /// `Some(sunset)` when the route is Deprecated.
    pub(super) deprecated: Option<Option<i64>>,
    /// `x-ratelimit-*` and retry hints when the subscription or consumer is limited.
    pub(super) rate: Option<RateNotes>,
}

/// A request let in: its route, and where the rest of the path after the route's prefix starts.
pub(super) struct Admitted {
    pub(super) route: RouteIdx,
    pub(super) rest_at: usize,
}

/// Lets the request in, or says why not; `call` and `notes` learn what was found on the way.
pub(super) async fn admit(
    shared: &Shared,
    snapshot: &Snapshot,
    parts: &Parts,
    call: &mut Call,
    notes: &mut Notes,
) -> Result<Admitted, ApiError> {
    let path = parts.uri.path();
    let host = parts
        .uri
        .host()
        .or_else(|| parts.headers.get(header::HOST)?.to_str().ok());
    let matched = snapshot
        .route_for(host, path)
        .ok_or_else(|| ApiError::unknown_url(&parts.method, path))?;
    let (route_idx, route) = (matched.idx, matched.route);
    let rest_at = path.len() - matched.rest.len();

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
    check_subscription(snapshot, consumer_idx, route_idx)?;
    if let Some(sub) = snapshot.subscription(consumer_idx, route_idx) {
        // Admitted on an estimate from the body's declared size; settled with the real usage.
        let estimate = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map_or(0, estimate_tokens);
        match shared
            .limiter
            .admit(snapshot, sub, consumer, estimate)
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
    Ok(Admitted {
        route: route_idx,
        rest_at,
    })
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

fn check_subscription(
    snapshot: &Snapshot,
    consumer: ConsumerIdx,
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
}
