//! A routed call through the cache: looked up unless the caller said `no-cache` or `no-store`,
//! answered from the entry on a hit, sent to the plan on a miss with a copy of the answer taken on its
//! way to the caller. In Semantic mode an exact miss is looked up again by the meaning of its last
//! user turn (see `semantic`). Every answer on a cached route says what happened in
//! `x-tollgate-cache`.

use bytes::Bytes;
use http::header::{AGE, CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use tollgate_snapshot::{CacheEndpoint, CacheScope, ObjectRef, RouteIdx, SemanticPolicy, Snapshot};

use super::control::Directives;
use super::entry::Entry;
use super::key::{Form, KeyParts, Sharing, lookup_key};
use super::semantic::{Question, question, unit};
use super::tee::Tee;
use crate::call::answer::{event_stream, json};
use crate::call::ask::Endpoint;
use crate::call::body::ResponseBody;
use crate::call::model_call::{RoutedCall, model_call, route_call};
use crate::call::record::Call;
use crate::call::shared::Shared;
use crate::error::ApiError;
use crate::llm::replay::{
    message_stream_of_whole, message_whole_of_stream, stream_of_whole, whole_of_stream,
};
use crate::telemetry::Saved;

/// `hit`, `miss`, `bypass` or `semantic-hit`.
pub const CACHE_HEADER: HeaderName = HeaderName::from_static("x-tollgate-cache");
/// A semantic hit's cosine similarity to the stored question, with four decimals.
pub const SIMILARITY_HEADER: HeaderName = HeaderName::from_static("x-tollgate-cache-similarity");

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
        Endpoint::Prompt { .. } => CacheEndpoint::Prompts,
        Endpoint::Responses => CacheEndpoint::Responses,
        // Token counts cost nothing to ask again: straight to the plan.
        Endpoint::CountTokens => {
            return model_call(shared, snapshot, routed, call).await;
        }
    };
    // A model's own settings, when it has them, replace the route's.
    let Some(policy) = routed
        .model
        .cache_policy(route)
        .filter(|p| p.covers(endpoint))
    else {
        return model_call(shared, snapshot, routed, call).await;
    };
    let metrics = &shared.recorder.metrics;
    let directives = Directives::of(headers);
    let consumer = match (policy.scope, call.consumer) {
        (CacheScope::Route, _) => Some(None),
        (CacheScope::Consumer, Some(c)) => {
            Some(Some(id_text(&snapshot.content.consumers[c as usize].id)))
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
    let route_id = id_text(&route.id);
    let semantic = policy
        .semantic
        .as_ref()
        .filter(|_| matches!(endpoint, CacheEndpoint::Chat | CacheEndpoint::Messages));
    let mut asked: Option<Question> = None;
    // A prompt API's answer is in its own format: its name is part of the key.
    let prompt_name = call
        .prompt
        .and_then(|at| route.prompts.get(at as usize))
        .map(|p| format!("prompts/{}", p.name));
    let consumer = consumer.filter(|_| !directives.no_store && cacheable(endpoint, &routed));
    let parts = consumer.as_ref().and_then(|consumer| {
        Some(KeyParts {
            endpoint: match endpoint {
                CacheEndpoint::Chat => "chat",
                CacheEndpoint::Embeddings => "embeddings",
                CacheEndpoint::Messages => "messages",
                CacheEndpoint::Prompts => prompt_name.as_deref()?,
                CacheEndpoint::Responses => "responses",
            },
            route: &route_id,
            consumer: consumer.as_deref(),
            model: &routed.model.name,
            form,
        })
    });
    // Semantic mode names entries by their SHA-256; Redis, when this replica's store misses.
    let sharing = if semantic.is_some() {
        Sharing::Now
    } else if shared.cache.shares() {
        Sharing::OnMiss
    } else {
        Sharing::Local
    };
    let key = parts.as_ref().and_then(|parts| {
        let key = lookup_key(parts, routed.ask.body, sharing)?;
        asked = semantic.and_then(|s| question(parts, routed.ask.body, s.max_turns));
        Some(key)
    });
    // Answers stored in another form that can answer this call (see `reform`); their keys are
    // made only when this form's lookup misses, since a key costs most of a hit.
    let other_forms: &[Form] = match (endpoint, form) {
        (CacheEndpoint::Chat, Form::Whole) => &[Form::StreamWithUsage],
        (CacheEndpoint::Chat, Form::Stream) => &[Form::Whole, Form::StreamWithUsage],
        (CacheEndpoint::Chat, Form::StreamWithUsage) => &[Form::Whole],
        // Anthropic's streams always say their usage.
        (CacheEndpoint::Messages, Form::Whole) => &[Form::Stream],
        (CacheEndpoint::Messages, _) => &[Form::Whole],
        _ => &[],
    };
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
            return Ok(hit(call, shared, &entry, age_ms, None));
        }
    }
    if !directives.no_cache
        && let Some(parts) = &parts
    {
        for &other in other_forms {
            let parts = KeyParts {
                form: other,
                ..*parts
            };
            let Some(other) = lookup_key(&parts, routed.ask.body, sharing) else {
                continue;
            };
            let Some(entry) = shared.cache.get(&other).await else {
                continue;
            };
            let age_ms = shared.cache.clock.now_unix_ms() - entry.stored_ms;
            if let Some(entry) =
                reform(&entry, endpoint, form).filter(|_| directives.accepts_age(age_ms))
            {
                return Ok(hit(call, shared, &entry, age_ms, None));
            }
        }
    }
    // Semantic mode: the question's embedding, to look up now and to index the answer by later.
    let mut embedded = None;
    if let (Some(semantic), Some(asked)) = (semantic, asked) {
        // Boxed: a whole model call of its own, which would otherwise widen every call's future.
        embedded = Box::pin(embed(
            shared,
            snapshot,
            routed.route,
            semantic,
            &asked.text,
            call,
        ))
        .await
        .map(|vector| (asked.bucket, vector));
    }
    if let (false, Some(semantic), Some((bucket, vector))) =
        (directives.no_cache, semantic, &embedded)
    {
        let found = Box::pin(shared.cache.nearest(bucket, vector)).await;
        if let Some((found, similarity)) = found
            && f64::from(similarity) >= semantic.threshold
            && let Some(entry) = shared.cache.get_shared(&found).await
        {
            let age_ms = shared.cache.clock.now_unix_ms() - entry.stored_ms;
            if directives.accepts_age(age_ms) {
                return Ok(hit(call, shared, &entry, age_ms, Some(similarity)));
            }
        }
    }
    call.cache = Some("miss");
    metrics.cache_lookup("miss");
    let mut response = model_call(shared, snapshot, routed, call).await?;
    if response.status().is_success() {
        let mut tee = Tee::new(
            shared.cache.clone(),
            key.for_store(),
            policy.ttl_ms,
            policy.max_entry_bytes as usize,
            response.status().as_u16(),
            stream,
        );
        if let Some((bucket, vector)) = embedded {
            tee = tee.answering(bucket, vector);
        }
        response.body_mut().copy_into(tee);
    }
    mark(&mut response, "miss");
    Ok(response)
}

/// `namespace/name`, as `Display` writes it, without the formatting machinery (two of these are
/// made on every cached call).
fn id_text(id: &ObjectRef) -> String {
    let mut text = String::with_capacity(id.namespace.len() + 1 + id.name.len());
    text.push_str(&id.namespace);
    text.push('/');
    text.push_str(&id.name);
    text
}

/// Whether a call of `endpoint` can be answered from the cache at all: prompt API and Responses calls
/// only whole (their streams end in events the cache's copy does not look for), and Responses calls
/// only when they do not continue a response or conversation the provider keeps.
fn cacheable(endpoint: CacheEndpoint, routed: &RoutedCall<'_>) -> bool {
    match endpoint {
        CacheEndpoint::Chat | CacheEndpoint::Embeddings | CacheEndpoint::Messages => true,
        CacheEndpoint::Prompts => !routed.ask.stream,
        CacheEndpoint::Responses => {
            !routed.ask.stream
                && ["previous_response_id", "conversation", "background"]
                    .iter()
                    .all(|name| {
                        routed
                            .ask
                            .doc
                            .get(name)
                            .is_none_or(|raw| raw.get() == "null" || raw.get() == "false")
                    })
        }
    }
}

fn mark(response: &mut Response<ResponseBody>, what: &'static str) {
    response
        .headers_mut()
        .insert(CACHE_HEADER, HeaderValue::from_static(what));
}

/// The embedding of a question, by the route's embeddings model named in the cache settings, as a
/// call of its own (its own access-log line, request id `<id>-cache-embed`, and usage); `None` when
/// that call fails or its answer has no usable vector, and the lookup is then a plain miss.
async fn embed(
    shared: &Shared,
    snapshot: &Snapshot,
    route: RouteIdx,
    semantic: &SemanticPolicy,
    text: &str,
    call: &Call,
) -> Option<Box<[f32]>> {
    let body = serde_json::json!({"model": semantic.embedding_model, "input": text});
    let body = Bytes::from(body.to_string());
    let id = format!("{}-cache-embed", call.request_id.to_str().unwrap_or("call"));
    let mut inner = Call::start(
        shared.recorder.clone(),
        HeaderValue::from_str(&id).unwrap_or_else(|_| call.request_id.clone()),
        &Method::POST,
        &call.path,
    );
    inner.snapshot = call.snapshot.clone();
    inner.route = call.route;
    inner.consumer = call.consumer;
    let failed = |inner: &mut Call, class| {
        inner.fail(class);
        shared.recorder.metrics.cache_store_error("embed");
        None
    };
    let routed = match route_call(
        snapshot,
        route,
        Endpoint::Embeddings,
        &body,
        None,
        &mut inner,
    ) {
        Ok(routed) => routed,
        Err(error) => {
            inner.status = error.status.as_u16();
            return failed(&mut inner, "cache_embedding_model");
        }
    };
    let mut response = match model_call(shared, snapshot, routed, &mut inner).await {
        Ok(response) => response,
        Err(error) => {
            inner.status = error.status.as_u16();
            return failed(&mut inner, "cache_embedding_failed");
        }
    };
    inner.status = response.status().as_u16();
    if !response.status().is_success() {
        return failed(&mut inner, "cache_embedding_failed");
    }
    let Ok(answer) = response.body_mut().read_answer(&mut inner).await else {
        return failed(&mut inner, "cache_embedding_failed");
    };
    #[derive(serde::Deserialize)]
    struct Answer {
        data: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        embedding: Vec<f32>,
    }
    let vector = serde_json::from_slice::<Answer>(&answer)
        .ok()
        .and_then(|a| a.data.into_iter().next())
        .and_then(|item| unit(item.embedding));
    match vector {
        Some(vector) => Some(vector),
        None => failed(&mut inner, "cache_embedding_unreadable"),
    }
}

/// A stored chat or messages answer in the form `want`: a whole answer as a stream, a stream (for
/// chat, with its usage chunk) as a whole answer or a chat stream without that chunk; the text, tool
/// calls, finish reason and usage are the same (`llm::replay`). `None` when the entry cannot be read
/// so.
fn reform(entry: &Entry, endpoint: CacheEndpoint, want: Form) -> Option<Entry> {
    let body = match (endpoint, entry.stream, want) {
        (CacheEndpoint::Chat, false, Form::Stream) => stream_of_whole(&entry.body, false)?,
        (CacheEndpoint::Chat, false, Form::StreamWithUsage) => stream_of_whole(&entry.body, true)?,
        (CacheEndpoint::Chat, true, Form::Whole) => whole_of_stream(&entry.body)?,
        (CacheEndpoint::Chat, true, Form::Stream) => {
            stream_of_whole(&whole_of_stream(&entry.body)?, false)?
        }
        (CacheEndpoint::Messages, false, Form::Stream | Form::StreamWithUsage) => {
            message_stream_of_whole(&entry.body)?
        }
        (CacheEndpoint::Messages, true, Form::Whole) => message_whole_of_stream(&entry.body)?,
        _ => return None,
    };
    Some(Entry {
        stream: want != Form::Whole,
        body: Bytes::from(body),
        ..entry.clone()
    })
}

/// A hit (a semantic one when `similarity` is given): noted on the call and in the metrics, and
/// the stored answer replayed.
fn hit(
    call: &mut Call,
    shared: &Shared,
    entry: &Entry,
    age_ms: i64,
    similarity: Option<f32>,
) -> Response<ResponseBody> {
    let kind = if similarity.is_some() {
        "semantic-hit"
    } else {
        "hit"
    };
    call.cache = Some(kind);
    call.saved = Some(Saved {
        tokens_in: entry.tokens_in,
        tokens_out: entry.tokens_out,
        cost_usd: entry.cost_usd,
    });
    let metrics = &shared.recorder.metrics;
    metrics.cache_lookup(kind);
    metrics.cache_saved(entry.tokens_in + entry.tokens_out, entry.cost_usd);
    replay(entry, age_ms, similarity)
}

/// The stored answer again, with its age (and, for a semantic hit, the similarity).
fn replay(entry: &Entry, age_ms: i64, similarity: Option<f32>) -> Response<ResponseBody> {
    let mut response = if entry.stream {
        event_stream(ResponseBody::full(entry.body.clone()))
    } else {
        json(entry.body.clone())
    };
    *response.status_mut() = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    match similarity {
        None => headers.insert(CACHE_HEADER, HeaderValue::from_static("hit")),
        Some(similarity) => {
            headers.insert(
                SIMILARITY_HEADER,
                HeaderValue::from_str(&format!("{similarity:.4}")).expect("a number is a value"),
            );
            headers.insert(CACHE_HEADER, HeaderValue::from_static("semantic-hit"))
        }
    };
    headers.insert(AGE, HeaderValue::from(age_ms.max(0) / 1000));
    debug_assert!(headers.contains_key(CONTENT_TYPE));
    response
}
