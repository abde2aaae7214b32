//! From a model name to an answer: backend choice, fallbacks, and the call to the provider.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tollgate_snapshot::{Backend, Provider, ProviderType, RouteIdx, Snapshot};

use crate::balance::Plan;
use crate::body::ResponseBody;
use crate::clock;
use crate::error::ApiError;
use crate::fake::{self, FakeAnswer};
use crate::health::Outcome;
use crate::openai::RequestDoc;
use crate::pipeline::parse_request;
use crate::record::{Call, Served};
use crate::relay::{Relay, RelayMode};
use crate::state::Shared;
use crate::upstream::{Prepared, ProviderParts, UpstreamError};

/// Which model endpoint was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/messages`: Anthropic's format (see `inbound_anthropic`).
    Messages,
}

impl Endpoint {
    /// Index of its path in [`crate::upstream::OPENAI_PATHS`].
    fn upstream_path(self) -> usize {
        match self {
            Self::Chat => 0,
            Self::Embeddings => 1,
            Self::Messages => 2,
        }
    }
}

/// How one backend attempt ended without an answer for the client.
pub(crate) enum Failed {
    /// Nothing reached the client: the next backend may be tried.
    Retry(ApiError),
    /// The answer is final (e.g. the request itself is wrong).
    Final(ApiError),
}

/// What the client asked for, parsed once and shared by every attempt.
pub(crate) struct Ask<'a> {
    pub(crate) endpoint: Endpoint,
    pub(crate) doc: RequestDoc<'a>,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    /// The whole request body, for translation into other providers' formats.
    pub(crate) body: &'a Bytes,
}

impl Ask<'_> {
    /// The body for an OpenAI-compatible upstream serving `upstream_model`: the client's own bytes
    /// when nothing needs to change (no copy), else re-encoded with the model replaced and, for
    /// streams, usage requested.
    fn openai_body(&self, upstream_model: &str) -> Bytes {
        if !self.stream && self.doc.only_model_is(upstream_model) {
            return self.body.clone();
        }
        Bytes::from(self.doc.encode_for_upstream(upstream_model, self.stream))
    }
}

/// Serves a chat or embeddings call on a route.
pub async fn model_call(
    shared: &Shared,
    snapshot: &Snapshot,
    route: RouteIdx,
    endpoint: Endpoint,
    body: &Bytes,
    call: &mut Call,
) -> Result<Response<ResponseBody>, ApiError> {
    let (doc, model) = parse_request(body)?;
    let stream = endpoint != Endpoint::Embeddings && doc.stream();
    call.stream = stream;
    let found = snapshot.model_with_index(route, &model);
    call.model = found.map(|(idx, _)| idx);
    let Some((_, route_model)) = found else {
        let names = snapshot.content.routes[route as usize]
            .models
            .iter()
            .map(|m| &*m.name);
        let error = ApiError::model_not_found(&model, names);
        call.model_requested = Some(model.into_owned());
        return Err(error);
    };
    let ask = Ask {
        endpoint,
        include_usage: doc.include_usage_requested(),
        doc,
        stream,
        body,
    };
    let route_def = &snapshot.content.routes[route as usize];
    let retries = shared.retries.call(&route_def.id, route_def.retry_budget);
    let mut plan = Plan::new(&route_model.backends, &route_model.fallbacks);
    let mut last = None;
    let mut tried = 0u32;
    loop {
        // A retry is paid for before the plan may claim an ejected backend's probe for it.
        if tried > 0 && !retries.try_retry() {
            shared.recorder.metrics.retry_denied();
            call.fail("retry_budget_exhausted");
            break;
        }
        let Some(next) = plan.next(snapshot, &shared.health, clock::now_unix_ms()) else {
            if tried > 0 {
                retries.refund();
            }
            break;
        };
        if tried > 0 {
            call.retries += 1;
        }
        tried += 1;
        let backend = next.backend;
        let provider = snapshot.provider(backend.provider);
        call.served = Some(Served {
            provider: backend.provider,
            model: backend.upstream_model.clone(),
            price: backend.price,
        });
        call.key = None;
        let result = attempt(shared, provider, backend, &ask, call).await;
        let outcome = outcome_of(&result);
        if next
            .health
            .record(outcome, &provider.health, call.key, clock::now_unix_ms())
        {
            tracing::warn!(provider = %provider.id, "provider ejected after consecutive failures");
            shared
                .recorder
                .metrics
                .backend_ejected(provider.id.to_string());
        }
        if outcome == Outcome::KeyRejected && call.key.is_some() {
            shared.recorder.metrics.key_cooled(provider.id.to_string());
            // Another key of the pool may well be accepted: try it before moving on.
            let pool = provider.credentials.len();
            if !next.health.keys_exhausted(pool, clock::now_unix_ms()) {
                plan.again(next);
            }
        }
        match result {
            Ok(response) => return Ok(response),
            Err(Failed::Final(e)) => return Err(e),
            Err(Failed::Retry(e)) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        ApiError::upstream(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_backend",
            "This model has no usable backend right now.",
        )
    }))
}

/// What an attempt says about its provider's health: provider faults count towards ejection, a
/// refused or rate-limited key rests that key, and anything the provider answered is a success.
fn outcome_of(result: &Result<Response<ResponseBody>, Failed>) -> Outcome {
    match result {
        Ok(_) | Err(Failed::Final(_)) => Outcome::Success,
        Err(Failed::Retry(e)) => match e.code {
            "upstream_rate_limited" | "upstream_auth_failed" => Outcome::KeyRejected,
            "provider_not_supported" | "upstream_misconfigured" => Outcome::Neutral,
            _ => Outcome::Failure,
        },
    }
}

async fn attempt(
    shared: &Shared,
    provider: &Provider,
    backend: &Backend,
    ask: &Ask<'_>,
    call: &mut Call,
) -> Result<Response<ResponseBody>, Failed> {
    if crate::providers::translates(provider.provider_type, ask.endpoint) {
        // Boxed: translating attempts hold far more state than the OpenAI-shaped one, and every
        // call's future would otherwise be sized for them.
        return Box::pin(crate::providers::attempt(
            shared, provider, backend, ask, call,
        ))
        .await;
    }
    match provider.provider_type {
        ProviderType::Fake => fake_attempt(provider, backend, ask, call).await,
        _ => openai_attempt(shared, provider, backend, ask, call).await,
    }
}

async fn fake_attempt(
    provider: &Provider,
    backend: &Backend,
    ask: &Ask<'_>,
    call: &mut Call,
) -> Result<Response<ResponseBody>, Failed> {
    let behaviour = provider.fake.unwrap_or_default();
    if behaviour.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)).await;
    }
    let model: &str = &backend.upstream_model;
    let answer = match ask.endpoint {
        // Anthropic-format callers are served through `providers`, never here.
        Endpoint::Chat | Endpoint::Messages => {
            fake::chat(&behaviour, &ask.doc, model, ask.stream, ask.include_usage)
        }
        Endpoint::Embeddings => fake::embeddings(&behaviour, &ask.doc, model),
    }
    .map_err(Failed::Final)?;
    Ok(match answer {
        FakeAnswer::Whole { body, usage } => {
            call.usage = Some(usage);
            with_content_type(ResponseBody::full(body), "application/json")
        }
        FakeAnswer::Stream(stream) => event_stream(ResponseBody::fake(stream)),
    })
}

fn with_content_type(body: ResponseBody, content_type: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn event_stream(body: ResponseBody) -> Response<ResponseBody> {
    let mut response = with_content_type(body, "text/event-stream; charset=utf-8");
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn openai_attempt(
    shared: &Shared,
    provider: &Provider,
    backend: &Backend,
    ask: &Ask<'_>,
    call: &mut Call,
) -> Result<Response<ResponseBody>, Failed> {
    let who = &provider.id;
    let prepared = prepared(shared, call);
    let parts = prepared.provider(backend.provider);
    let body = ask.openai_body(&backend.upstream_model);
    let accept = if ask.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let uri = parts.uri(ask.endpoint.upstream_path()).ok_or_else(|| {
        Failed::Retry(ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_misconfigured",
            format!("The endpoint of provider {who} is not a valid URL."),
        ))
    })?;
    // Sized once: growing a header map on every call costs more than the headers themselves.
    let mut headers = http::HeaderMap::with_capacity(8);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("tollgate-proxy/", env!("CARGO_PKG_VERSION"))),
    );
    headers.insert(crate::pipeline::REQUEST_ID, call.request_id.clone());
    if let Some(host) = parts.host() {
        headers.insert(header::HOST, host);
    }
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    // The pool's next key that is not resting after a 401/403/429; remembered to rest it if refused.
    call.key = shared
        .health
        .of(provider)
        .pick_key(provider.credentials.len(), clock::now_unix_ms());
    if let Some((name, value)) = parts.credential(call.key) {
        request.headers_mut().insert(name, value);
    }

    let (upstream, deadline) = send_upstream(provider, parts, request, call).await?;

    let status = upstream.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Failed::Retry(
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "upstream_rate_limited",
                format!("Provider {who} is rate limiting this gateway; retry later."),
            )
            .with_retry_after(upstream.headers().get(header::RETRY_AFTER).cloned()),
        ));
    }
    if status.is_server_error() {
        return Err(Failed::Retry(ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("Provider {who} answered with status {}.", status.as_u16()),
        )));
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        // The provider refused our credential: the client's request is not at fault, and the
        // provider's error text may quote part of the key, so it is not relayed.
        return Err(Failed::Retry(ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_auth_failed",
            format!("Provider {who} refused the gateway's credential."),
        )));
    }

    let content_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
    let is_sse = content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mode = if !status.is_success() {
        call.fail("upstream_rejected");
        RelayMode::Opaque
    } else if is_sse {
        RelayMode::Sse {
            strip_usage_chunk: !ask.include_usage,
        }
    } else {
        RelayMode::Json
    };
    let relay = Relay::new(
        upstream.into_body(),
        mode,
        Duration::from_millis(provider.timeouts.idle_ms),
        deadline,
    );
    let mut response = Response::new(ResponseBody::relay(relay));
    *response.status_mut() = status;
    // Room for the headers the pipeline adds (request id, rate limits, deprecation).
    *response.headers_mut() = http::HeaderMap::with_capacity(16);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("application/json")),
    );
    if is_sse {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    Ok(response)
}

/// Sends `request` to `provider`, waiting for the response headers no longer than its connect and first-byte
/// timeouts allow within the call's total deadline; transport failures become retryable errors.
/// Returns the response and that total deadline.
/// The request parts of the providers of the snapshot `call` is served from.
pub(crate) fn prepared(shared: &Shared, call: &Call) -> Arc<Prepared> {
    let snapshot = call
        .snapshot
        .as_ref()
        .expect("a model call has its snapshot");
    shared.upstreams.prepared(snapshot)
}

pub(crate) async fn send_upstream(
    provider: &Provider,
    parts: &ProviderParts,
    request: Request<Full<Bytes>>,
    call: &mut Call,
) -> Result<(Response<hyper::body::Incoming>, tokio::time::Instant), Failed> {
    let t = provider.timeouts;
    let deadline =
        tokio::time::Instant::from_std(call.started()) + Duration::from_millis(t.total_ms);
    let headers_due = Duration::from_millis(t.connect_ms + t.first_byte_ms)
        .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
    let who = &provider.id;
    // A previous attempt's connection is free once its answer was read, which it has been by now.
    call.upstream = None;
    match parts.send(request, headers_due).await {
        Ok((response, checkin)) => {
            call.upstream = checkin;
            Ok((response, deadline))
        }
        Err(error) => {
            let (status, code, message) = match error {
                UpstreamError::Connect => (
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    format!("Provider {who} could not be reached."),
                ),
                UpstreamError::Timeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!("Provider {who} did not answer in time."),
                ),
                UpstreamError::Broken => (
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    format!("The connection to provider {who} failed before it answered."),
                ),
            };
            Err(Failed::Retry(ApiError::upstream(status, code, message)))
        }
    }
}
