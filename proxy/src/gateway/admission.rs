//! Who may call what: the route for the path, the key for a consumer, the route's lifecycle stage,
//! the consumer's subscription and its decision ([`admit`]); then, for model calls only, the limits and
//! budgets of both ([`limit`]).

use http::StatusCode;
use http::header::{self, HeaderMap};
use http::request::Parts;
use tollgate_snapshot::{
    Consumer, ConsumerIdx, KeyDigest, Phase, RouteIdx, Snapshot, Stage, Subscription,
};

use crate::call::Call;
use crate::call::Shared;
use crate::clock;
use crate::error::ApiError;
use crate::limits::RateNotes;

/// Where a route serves its OpenAPI document, after its prefix.
pub(super) const OPENAPI_PATH: &str = "/openapi.json";

/// What admission learned that shapes every answer on the route, errors included.
#[derive(Default)]
pub(super) struct Notes {
    /// When the route is Deprecated, or announces its deprecation.
    pub(super) deprecated: Option<Deprecation>,
    /// `x-ratelimit-*` and retry hints when the subscription or consumer is limited.
    pub(super) rate: Option<RateNotes>,
}

/// What a deprecated route's answers say about it (RFC 9745, RFC 8594).
pub(super) struct Deprecation {
    /// Since when (or from when) the route is deprecated, Unix seconds.
    pub(super) since_unix: i64,
    /// When it will be retired.
    pub(super) sunset_unix: Option<i64>,
    /// Its prefix, for the link to its OpenAPI document.
    pub(super) prefix: String,
}

/// A request let in: its route, where the rest of the path after the route's prefix starts, and who
/// pays for it if it turns out to be a model call ([`limit`]).
pub(super) struct Admitted<'a> {
    pub(super) route: RouteIdx,
    pub(super) rest_at: usize,
    subscription: Option<&'a Subscription>,
    consumer: &'a Consumer,
}

/// Lets the request in, or says why not; `call` and `notes` learn what was found on the way. Nothing is
/// charged here: [`limit`] does that once the request is known to be a model call. Keys expire by
/// `now_unix` (the key clock's time).
pub(super) fn admit<'a>(
    snapshot: &'a Snapshot,
    parts: &Parts,
    now_unix: i64,
    call: &mut Call,
    notes: &mut Notes,
) -> Result<Admitted<'a>, ApiError> {
    let path = parts.uri.path();
    let host = parts
        .uri
        .host()
        .or_else(|| parts.headers.get(header::HOST)?.to_str().ok());
    let matched = snapshot
        .route_for(host, path)
        .ok_or_else(|| ApiError::unknown_url(&parts.method, path))?;
    admit_matched(
        snapshot,
        parts,
        matched.idx,
        matched.rest,
        now_unix,
        call,
        notes,
    )
}

/// [`admit`] for a request already matched to `route_idx`, `rest` being its path after the
/// route's prefix.
pub(super) fn admit_matched<'a>(
    snapshot: &'a Snapshot,
    parts: &Parts,
    route_idx: RouteIdx,
    rest: &str,
    now_unix: i64,
    call: &mut Call,
    notes: &mut Notes,
) -> Result<Admitted<'a>, ApiError> {
    let path = parts.uri.path();
    let (consumer_idx, _) = identify(snapshot, &parts.headers, now_unix, call)?;
    // A route's OpenAPI document is for finding out how to call it: any valid key reads it (of
    // the owning team only while a Draft, below), subscribed or not.
    let reads_document = parts.method == http::Method::GET && rest == OPENAPI_PATH;
    let mut admitted = admit_to(
        snapshot,
        route_idx,
        consumer_idx,
        !reads_document,
        (&parts.method, path),
        call,
        notes,
    )?;
    admitted.rest_at = path.len() - rest.len();
    Ok(admitted)
}

/// The consumer whose key the request presents, or why there is none. A key whose expiry (its own,
/// or the end of a rotation's grace) is at or before `now_unix` is refused.
pub(super) fn identify<'a>(
    snapshot: &'a Snapshot,
    headers: &HeaderMap,
    now_unix: i64,
    call: &mut Call,
) -> Result<(ConsumerIdx, &'a Consumer), ApiError> {
    let key = presented_key(headers).ok_or_else(|| {
        ApiError::invalid_api_key(
            "You didn't provide an API key. Send it as `Authorization: Bearer <key>`, `x-api-key` or `api-key`.",
        )
    })?;
    let (consumer_idx, consumer, consumer_key) = snapshot
        .consumer_by_key(&KeyDigest::of(key.as_bytes()))
        .ok_or_else(|| ApiError::invalid_api_key("Incorrect API key provided."))?;
    if consumer_key.expires_unix.is_some_and(|at| at <= now_unix) {
        return Err(ApiError::invalid_api_key("This API key has expired."));
    }
    call.consumer = Some(consumer_idx);
    Ok((consumer_idx, consumer))
}

/// Lets a known consumer call `route_idx`: the route's lifecycle stage, then its subscription
/// (unless `subscribed_only` is false). A Draft of another team answers as `requested` (method and
/// path) would if nothing were there.
pub(super) fn admit_to<'a>(
    snapshot: &'a Snapshot,
    route_idx: RouteIdx,
    consumer_idx: ConsumerIdx,
    subscribed_only: bool,
    requested: (&http::Method, &str),
    call: &mut Call,
    notes: &mut Notes,
) -> Result<Admitted<'a>, ApiError> {
    let route = &snapshot.content.routes[route_idx as usize];
    let consumer = &snapshot.content.consumers[consumer_idx as usize];
    match route.stage {
        // A draft is invisible outside its team: answer as if nothing were there.
        Stage::Draft if consumer.id.namespace != route.id.namespace => {
            return Err(ApiError::unknown_url(requested.0, requested.1));
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
        Stage::Draft => {}
        Stage::Deprecated | Stage::Published => {
            notes.deprecated = route.deprecation_unix.map(|since_unix| Deprecation {
                since_unix,
                sunset_unix: route.sunset_unix,
                prefix: route.prefix.clone(),
            });
        }
    }
    call.route = Some(route_idx);
    if subscribed_only {
        check_subscription(snapshot, consumer_idx, route_idx)?;
    }
    Ok(Admitted {
        route: route_idx,
        rest_at: 0,
        subscription: snapshot.subscription(consumer_idx, route_idx),
        consumer,
    })
}

/// Charges an admitted model call of about `estimate` tokens, costing at most `estimate.1` USD, to the
/// limits and budgets of its subscription and consumer and to its route's total, or refuses it with 429. Only calls routed to a model the route serves
/// get here: unknown paths, unknown models and the models list are not charged.
pub(super) async fn limit(
    shared: &Shared,
    snapshot: &Snapshot,
    admitted: &Admitted<'_>,
    estimate: (u64, f64),
    call: &mut Call,
    notes: &mut Notes,
) -> Result<(), ApiError> {
    let Some(sub) = admitted.subscription else {
        return Ok(());
    };
    let route = &snapshot.content.routes[admitted.route as usize];
    match shared
        .limiter
        .admit(
            snapshot,
            route,
            sub,
            admitted.consumer,
            estimate.0,
            estimate.1,
        )
        .await
    {
        Ok(None) => Ok(()),
        Ok(Some(let_in)) => {
            notes.rate = Some(let_in.notes);
            call.grant = Some(let_in.grant);
            Ok(())
        }
        Err(refused) => {
            notes.rate = Some(refused.notes);
            Err(refused.error)
        }
    }
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

/// `Deprecation: @<seconds>` (RFC 9745), `Sunset` (RFC 8594) and a `Link` to the route's OpenAPI
/// document, which marks its operations deprecated and gives the sunset, as both relations' target.
pub(super) fn deprecation_headers(headers: &mut HeaderMap, d: &Deprecation) {
    use http::HeaderValue;
    if let Ok(v) = HeaderValue::from_str(&format!("@{}", d.since_unix)) {
        headers.insert("deprecation", v);
    }
    let docs = format!("<{}{OPENAPI_PATH}>", d.prefix);
    let link = match d.sunset_unix {
        Some(at) => {
            if let Ok(v) = HeaderValue::from_str(&clock::http_date(at)) {
                headers.insert("sunset", v);
            }
            format!(
                r#"{docs}; rel="deprecation"; type="application/json", {docs}; rel="sunset"; type="application/json""#
            )
        }
        None => format!(r#"{docs}; rel="deprecation"; type="application/json""#),
    };
    // A prefix is checked to be plain path characters, so this only fails on a bug.
    if let Ok(v) = HeaderValue::from_str(&link) {
        headers.append(header::LINK, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn deprecation_is_a_date_with_a_link_to_the_document() {
        let mut h = HeaderMap::new();
        deprecation_headers(
            &mut h,
            &Deprecation {
                since_unix: 1_767_225_600,
                sunset_unix: Some(1_798_761_599),
                prefix: "/team-a/chat".into(),
            },
        );
        assert_eq!(h["deprecation"], "@1767225600");
        assert_eq!(h["sunset"], "Thu, 31 Dec 2026 23:59:59 GMT");
        assert_eq!(
            h[header::LINK],
            r#"</team-a/chat/openapi.json>; rel="deprecation"; type="application/json", </team-a/chat/openapi.json>; rel="sunset"; type="application/json""#
        );
        // Announced on a Published route: no sunset yet; the root prefix is "".
        let mut h = HeaderMap::new();
        deprecation_headers(
            &mut h,
            &Deprecation {
                since_unix: 1_800_000_000,
                sunset_unix: None,
                prefix: String::new(),
            },
        );
        assert_eq!(h["deprecation"], "@1800000000");
        assert!(h.get("sunset").is_none());
        assert_eq!(
            h[header::LINK],
            r#"</openapi.json>; rel="deprecation"; type="application/json""#
        );
    }

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
