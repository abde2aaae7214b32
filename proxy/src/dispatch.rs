//! From a model name to an answer: backend choice, fallbacks, and the call to the provider.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tollgate_snapshot::{Backend, Provider, ProviderType, RouteIdx, Snapshot};

use crate::body::ResponseBody;
use crate::error::ApiError;
use crate::fake::{self, FakeAnswer};
use crate::openai::RequestDoc;
use crate::pipeline::parse_request;
use crate::record::{Call, Served};
use crate::relay::{Relay, RelayMode};
use crate::state::Shared;
use crate::upstream::UpstreamError;

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
    fn upstream_path(self) -> &'static str {
        match self {
            Self::Chat => "/chat/completions",
            Self::Embeddings => "/embeddings",
            Self::Messages => "/messages",
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
    pub(crate) body: &'a [u8],
}

/// Serves a chat or embeddings call on a route.
pub async fn model_call(
    shared: &Shared,
    snapshot: &Snapshot,
    route: RouteIdx,
    endpoint: Endpoint,
    body: &[u8],
    call: &mut Call,
) -> Result<Response<ResponseBody>, ApiError> {
    let (doc, model) = parse_request(body)?;
    let stream = endpoint != Endpoint::Embeddings && doc.stream();
    call.stream = stream;
    let found = snapshot.model(route, &model);
    call.model_known = found.is_some();
    call.model_requested = Some(model);
    let Some(route_model) = found else {
        let names = snapshot.content.routes[route as usize]
            .models
            .iter()
            .map(|m| m.name.as_str());
        return Err(ApiError::model_not_found(
            call.model_requested.as_deref().unwrap_or(""),
            names,
        ));
    };
    let ask = Ask {
        endpoint,
        include_usage: doc.include_usage_requested(),
        doc,
        stream,
        body,
    };
    let attempts = pick_weighted(&route_model.backends)
        .into_iter()
        .chain(&route_model.fallbacks);
    let mut last = None;
    for (i, backend) in attempts.enumerate() {
        if i > 0 {
            call.retries += 1;
        }
        let provider = snapshot.provider(backend.provider);
        call.served = Some(Served {
            provider: backend.provider,
            model: backend.upstream_model.clone(),
            price: backend.price,
        });
        match attempt(shared, provider, backend, &ask, call).await {
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

/// One backend among the weighted ones, chosen with probability proportional to its weight.
fn pick_weighted(backends: &[Backend]) -> Option<&Backend> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return backends.first();
    }
    let mut ticket = fastrand::u64(..total);
    for b in backends {
        let w = u64::from(b.weight);
        if ticket < w {
            return Some(b);
        }
        ticket -= w;
    }
    backends.last()
}

async fn attempt(
    shared: &Shared,
    provider: &Provider,
    backend: &Backend,
    ask: &Ask<'_>,
    call: &mut Call,
) -> Result<Response<ResponseBody>, Failed> {
    if crate::providers::translates(provider.provider_type, ask.endpoint) {
        return crate::providers::attempt(shared, provider, backend, ask, call).await;
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
    let model = backend.upstream_model.as_str();
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
    let url = format!("{}{}", provider.endpoint, ask.endpoint.upstream_path());
    let body = ask
        .doc
        .encode_for_upstream(&backend.upstream_model, ask.stream);
    let accept = if ask.stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut request = Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, accept)
        .header(
            header::USER_AGENT,
            concat!("tollgate-proxy/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| {
            Failed::Retry(ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                "upstream_misconfigured",
                format!("The endpoint of provider {who} is not a valid URL."),
            ))
        })?;
    if let Ok(id) = HeaderValue::from_str(&call.request_id) {
        request.headers_mut().insert("x-request-id", id);
    }
    if let Some((name, value)) = shared.upstreams.credential(provider) {
        request.headers_mut().insert(name, value);
    }

    let t = provider.timeouts;
    let deadline =
        tokio::time::Instant::from_std(call.started()) + Duration::from_millis(t.total_ms);
    let headers_due = Duration::from_millis(t.connect_ms + t.first_byte_ms)
        .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
    let upstream = match shared.upstreams.send(provider, request, headers_due).await {
        Ok(response) => response,
        Err(UpstreamError::Connect) => {
            return Err(Failed::Retry(ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!("Provider {who} could not be reached."),
            )));
        }
        Err(UpstreamError::Timeout) => {
            return Err(Failed::Retry(ApiError::upstream(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!("Provider {who} did not answer in time."),
            )));
        }
        Err(UpstreamError::Broken) => {
            return Err(Failed::Retry(ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                format!("The connection to provider {who} failed before it answered."),
            )));
        }
    };

    let status = upstream.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Failed::Retry(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "upstream_rate_limited",
            format!("Provider {who} is rate limiting this gateway; retry later."),
        )
        .with_retry_after(upstream.headers().get(header::RETRY_AFTER).cloned())));
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
        Duration::from_millis(t.idle_ms),
        deadline,
    );
    let mut response = Response::new(ResponseBody::relay(relay));
    *response.status_mut() = status;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_snapshot::Price;

    fn backend(provider: u32, weight: u32) -> Backend {
        Backend {
            provider,
            upstream_model: "m".into(),
            weight,
            price: Price::default(),
        }
    }

    #[test]
    fn weighted_choice_follows_weights() {
        let backends = [backend(0, 1), backend(1, 3)];
        let mut counts = [0u32; 2];
        for _ in 0..40_000 {
            counts[pick_weighted(&backends).unwrap().provider as usize] += 1;
        }
        let share = f64::from(counts[1]) / 40_000.0;
        assert!(
            (0.72..0.78).contains(&share),
            "share of the weight-3 backend: {share}"
        );
        assert!(pick_weighted(&[]).is_none());
    }
}
