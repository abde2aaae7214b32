//! A routed call through the cache: looked up unless the caller said `no-cache` or `no-store`,
//! answered from the entry on a hit, sent to the plan on a miss with a copy of the answer taken on its
//! way to the caller. Every answer on a cached route says what happened in `x-tollgate-cache`.

use http::header::{AGE, CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use tollgate_snapshot::{CacheEndpoint, CacheScope, Snapshot};

use super::control::Directives;
use super::entry::Entry;
use super::key::{Form, KeyParts, cache_key};
use super::tee::Tee;
use crate::call::answer::{event_stream, json};
use crate::call::ask::Endpoint;
use crate::call::body::ResponseBody;
use crate::call::model_call::{RoutedCall, model_call};
use crate::call::record::Call;
use crate::call::shared::Shared;
use crate::error::ApiError;

/// `hit`, `miss` or `bypass`.
pub const CACHE_HEADER: HeaderName = HeaderName::from_static("x-tollgate-cache");

/// Serves a routed call, through the route's cache when it has one for this endpoint.
pub async fn cached_call(
    shared: &Shared,
    snapshot: &Snapshot,
    routed: RoutedCall<'_>,
    headers: &HeaderMap,
    call: &mut Call,
) -> Result<Response<ResponseBody>, ApiError> {
    let route = &snapshot.content.routes[routed.route as usize];
    let endpoint = match routed.ask.endpoint {
        Endpoint::Chat => CacheEndpoint::Chat,
        Endpoint::Embeddings => CacheEndpoint::Embeddings,
        Endpoint::Messages => CacheEndpoint::Messages,
        // Prompt APIs, the Responses API and token counts are not cached (yet): straight to the plan.
        Endpoint::Prompt { .. } | Endpoint::Responses | Endpoint::CountTokens => {
            return model_call(shared, snapshot, routed, call).await;
        }
    };
    let Some(policy) = route.cache.as_ref().filter(|p| p.covers(endpoint)) else {
        return model_call(shared, snapshot, routed, call).await;
    };
    let metrics = &shared.recorder.metrics;
    let directives = Directives::of(headers);
    let consumer = match (policy.scope, call.consumer) {
        (CacheScope::Route, _) => Some(None),
        (CacheScope::Consumer, Some(c)) => {
            Some(Some(snapshot.content.consumers[c as usize].id.to_string()))
        }
        // Consumer scope without a known consumer: nothing to keep the entry apart by.
        (CacheScope::Consumer, None) => None,
    };
    let stream = routed.ask.stream;
    let form = match (stream, routed.ask.include_usage) {
        (false, _) => Form::Whole,
        (true, false) => Form::Stream,
        (true, true) => Form::StreamWithUsage,
    };
    let route_id = route.id.to_string();
    let key = consumer
        .filter(|_| !directives.no_store)
        .and_then(|consumer| {
            let parts = KeyParts {
                endpoint: match endpoint {
                    CacheEndpoint::Chat => "chat",
                    CacheEndpoint::Embeddings => "embeddings",
                    CacheEndpoint::Messages => "messages",
                },
                route: &route_id,
                consumer: consumer.as_deref(),
                model: &routed.model.name,
                form,
            };
            cache_key(&parts, routed.ask.body)
        });
    let Some(key) = key else {
        call.cache = Some("bypass");
        metrics.cache_lookup("bypass");
        let mut response = model_call(shared, snapshot, routed, call).await?;
        mark(&mut response, "bypass");
        return Ok(response);
    };
    if !directives.no_cache
        && let Some(entry) = shared.cache.get(&key).await
    {
        let age_ms = shared.cache.clock.now_unix_ms() - entry.stored_ms;
        if directives.accepts_age(age_ms) {
            call.cache = Some("hit");
            metrics.cache_lookup("hit");
            metrics.cache_saved(entry.tokens);
            return Ok(replay(&entry, age_ms));
        }
    }
    call.cache = Some("miss");
    metrics.cache_lookup("miss");
    let mut response = model_call(shared, snapshot, routed, call).await?;
    if response.status().is_success() {
        let tee = Tee::new(
            shared.cache.clone(),
            key,
            policy.ttl_ms,
            policy.max_entry_bytes as usize,
            response.status().as_u16(),
            stream,
        );
        response.body_mut().copy_into(tee);
    }
    mark(&mut response, "miss");
    Ok(response)
}

fn mark(response: &mut Response<ResponseBody>, what: &'static str) {
    response
        .headers_mut()
        .insert(CACHE_HEADER, HeaderValue::from_static(what));
}

/// The stored answer again, with its age.
fn replay(entry: &Entry, age_ms: i64) -> Response<ResponseBody> {
    let mut response = if entry.stream {
        event_stream(ResponseBody::full(entry.body.clone()))
    } else {
        json(entry.body.clone())
    };
    *response.status_mut() = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(CACHE_HEADER, HeaderValue::from_static("hit"));
    headers.insert(AGE, HeaderValue::from(age_ms.max(0) / 1000));
    debug_assert!(headers.contains_key(CONTENT_TYPE));
    response
}
