//! From a model name to an answer: the plan of backends (weights, fallbacks, retry budget, health)
//! and an attempt at each in turn until one answers.

use bytes::Bytes;
use http::{Response, StatusCode};
use tollgate_snapshot::{ContentCapture, RouteIdx, RouteModel, Snapshot};

use super::ask::{AnthropicHeaders, Ask, Endpoint};
use super::attempt::attempt;
use super::body::ResponseBody;
use super::record::{Call, Served};
use super::shared::Shared;
use crate::clock;
use crate::error::ApiError;
use crate::llm::openai::{Split, parse_request};
use crate::llm::{genai_content, json_scan};
use crate::telemetry::trace::{CallTrace, Content};
use crate::upstream::balance::Plan;
use crate::upstream::health::Outcome;

/// A call that names a model its route serves: read, found, not yet sent anywhere.
pub struct RoutedCall<'a> {
    pub(super) ask: Ask<'a>,
    pub(super) route: RouteIdx,
    pub(super) model: &'a RouteModel,
    /// [`RoutedCall::max_output_tokens`], read once (for the budget's estimate and the trace).
    max_output_tokens: Option<u64>,
}

impl RoutedCall<'_> {
    /// The most output tokens the caller allows: `max_completion_tokens`, else `max_tokens` (Anthropic
    /// callers: `max_tokens`), when given as a whole number.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_output_tokens
    }

    /// The most `tokens` could cost on any backend or fallback of the model, every token priced at
    /// the dearer of input and output: what budgets hold for the call while it runs.
    pub fn cost_ceiling_usd(&self, tokens: u64) -> f64 {
        let per_million = self
            .model
            .backends
            .iter()
            .chain(&self.model.fallbacks)
            .map(|b| b.price.input_per_million.max(b.price.output_per_million))
            .fold(0.0, f64::max);
        tokens as f64 * per_million / 1_000_000.0
    }

    /// Keeps the caller's `anthropic-version` and `anthropic-beta`, which go with its request when it
    /// passes through to an Anthropic backend.
    pub fn with_caller_headers(mut self, headers: &http::HeaderMap) -> Self {
        self.ask.anthropic_headers = AnthropicHeaders::of(headers);
        self
    }
}

/// Reads a chat, embeddings or messages body and finds the model it names on the route: 400 for a
/// body that is not a request, 404 `model_not_found` for a model the route does not serve. `split`:
/// the body's members, when the guardrails' validating scan already read them.
pub fn route_call<'a>(
    snapshot: &'a Snapshot,
    route: RouteIdx,
    endpoint: Endpoint,
    body: &'a Bytes,
    split: Option<&Split>,
    call: &mut Call,
) -> Result<RoutedCall<'a>, ApiError> {
    // A prompt's body was rendered by the gateway, valid JSON by construction.
    let own = matches!(endpoint, Endpoint::Prompt { .. });
    let (doc, model) = parse_request(body, own, split)?;
    let stream = !matches!(endpoint, Endpoint::Embeddings | Endpoint::CountTokens) && doc.stream();
    call.stream = stream;
    call.operation = Some(endpoint.operation_name());
    let found = snapshot.model_with_index(route, &model);
    call.model = found.map(|(idx, _)| idx);
    if let Some(trace) = call.trace.as_deref_mut() {
        let request = &mut trace.request;
        request.operation = Some(endpoint.operation_name());
        request.endpoint = Some(endpoint.path());
        request.model = Some(match found {
            Some((_, m)) => m.name.clone(),
            None => model.as_ref().into(),
        });
        request.stream = stream;
        request.temperature = doc
            .get("temperature")
            .and_then(|raw| json_scan::number_f64(raw.get()));
        request.choice_count = doc.get("n").and_then(|raw| raw.get().parse().ok());
    }
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
        anthropic_headers: AnthropicHeaders::default(),
    };
    let routed = RoutedCall {
        max_output_tokens: max_output_tokens(&ask),
        ask,
        route,
        model: route_model,
    };
    if let Some(trace) = call.trace.as_deref_mut() {
        trace.request.max_tokens = routed.max_output_tokens();
        if let Some(capture) = snapshot.content.routes[route as usize].capture_content {
            trace.content = input_content(capture, endpoint, body);
        }
    }
    Ok(routed)
}

/// What [`RoutedCall::max_output_tokens`] gives, read from the request.
fn max_output_tokens(ask: &Ask<'_>) -> Option<u64> {
    let names: &[&str] = match ask.endpoint {
        Endpoint::Chat | Endpoint::Prompt { .. } => &["max_completion_tokens", "max_tokens"],
        Endpoint::Messages => &["max_tokens"],
        Endpoint::Responses => &["max_output_tokens"],
        Endpoint::Embeddings | Endpoint::CountTokens => &[],
    };
    names
        .iter()
        .filter_map(|name| ask.doc.get(name))
        .find(|raw| raw.get() != "null")
        .and_then(|raw| raw.get().parse().ok())
}

/// The content of a request to a route that records it, read from `body` as it goes upstream:
/// masked where the guardrails masked (cold: only sampled calls of such routes come here).
#[cold]
#[inline(never)]
fn input_content(capture: ContentCapture, endpoint: Endpoint, body: &[u8]) -> Option<Box<Content>> {
    let format = endpoint.content_format()?;
    let input = genai_content::input(format, body, capture.max_bytes as usize);
    Some(Box::new(Content {
        max_bytes: capture.max_bytes,
        system_instructions: input.system_instructions,
        input_messages: input.input_messages,
        ..Content::default()
    }))
}

/// Serves a routed call: the plan over the model's backends, an attempt at each until one answers.
pub async fn model_call(
    shared: &Shared,
    snapshot: &Snapshot,
    routed: RoutedCall<'_>,
    call: &mut Call,
) -> Result<Response<ResponseBody>, ApiError> {
    let RoutedCall {
        ask,
        route,
        model: route_model,
        ..
    } = routed;
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
        if let Some(trace) = call.trace.as_deref_mut() {
            trace.start_attempt(
                provider.provider_type,
                provider.id.clone(),
                backend.upstream_model.clone(),
            );
        }
        let result = attempt(shared, provider, backend, &ask, call).await;
        if let Some(span) = call.trace.as_deref_mut().and_then(CallTrace::attempt) {
            match &result {
                // The upstream's own status when one answered (noted by `send`), else the answer's.
                Ok(response) => {
                    span.status.get_or_insert(response.status().as_u16());
                }
                Err(failed) => {
                    span.end = Some(std::time::SystemTime::now());
                    span.error = Some(failed.error.code);
                }
            }
        }
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(failed) => failed.health(),
        };
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
            Err(failed) if failed.is_final() => return Err(failed.error),
            Err(failed) => last = Some(failed.error),
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
