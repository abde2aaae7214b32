//! One attempt at one backend, the same way for every wire: the request written in the provider's
//! format (`outgoing`), sent with the user agent, request id and a key of the pool, and the answer
//! relayed (the identity translation, with usage read on the way) or translated back into the
//! caller's format, stream or whole. The Fake provider answers here too, in either caller format.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;
use tollgate_snapshot::{Backend, Provider, ProviderType};

use super::answer::{event_stream, json};
use super::ask::{ANTHROPIC_BETA, ANTHROPIC_VERSION, Ask, Endpoint, REQUEST_ID};
use super::body::ResponseBody;
use super::failure::{self, Failed};
use super::fake::{self, FakeAnswer};
use super::outgoing::{Outgoing, Wire, as_openai, authenticate, outgoing, request_value};
use super::record::{Call, insert_trace};
use super::relay::{Relay, RelayMode, StreamSecrets};
use super::shared::Shared;
use crate::error::ApiError;
use crate::llm::anthropic::{self, AnthropicDecoder};
use crate::llm::bedrock::BedrockDecoder;
use crate::llm::chat::Answer;
use crate::llm::gemini::GeminiDecoder;
use crate::llm::json_answer::{self, ToolAsText};
use crate::llm::messages::{self, AnthropicEncoder, AnthropicPassthrough};
use crate::llm::openai::RequestDoc;
use crate::llm::prompt::{self, PromptEncoder};
use crate::llm::responses;
use crate::llm::responses_stream::{ResponsesEncoder, ResponsesPassthrough};
use crate::llm::scrub::secrets_of;
use crate::llm::stream::{Decode, Encode, OpenAiDecoder, OpenAiEncoder, Translate};
use crate::telemetry::trace::CallTrace;
use crate::upstream::ProviderParts;
use crate::upstream::google::TokenError;

/// Largest non-streamed answer read for translation.
const ANSWER_CAP: usize = 32 * 1024 * 1024;
/// Largest error body read for its message.
const ERROR_CAP: usize = 64 * 1024;

/// What an attempt ends with: the client's answer, or why there is none.
pub(super) type Attempted = Result<Response<ResponseBody>, Failed>;

/// One attempt at `backend` of `provider`.
pub(super) async fn attempt(
    shared: &Shared,
    provider: &Provider,
    backend: &Backend,
    ask: &Ask<'_>,
    call: &mut Call,
) -> Attempted {
    if ask.endpoint == Endpoint::CountTokens && provider.provider_type != ProviderType::Anthropic {
        return estimated_count(ask);
    }
    if provider.provider_type == ProviderType::Fake {
        return fake_attempt(provider, backend, ask, call).await;
    }
    let snapshot = call
        .snapshot
        .as_ref()
        .expect("a model call has its snapshot");
    let prepared = shared.store.prepared(snapshot);
    let parts = prepared.provider(backend.provider);
    let mut out = outgoing(parts, provider, backend, ask)?;
    let (upstream, deadline) = send(shared, provider, parts, &mut out, ask, call).await?;
    if out.as_is {
        if !upstream.status().is_success() {
            // Boxed: only failures read the body here.
            return Box::pin(reject_as_is(provider, call, upstream, deadline)).await;
        }
        return Ok(relay_as_is(
            provider, backend, ask, call, upstream, deadline,
        ));
    }
    // Boxed: reading and translating answers holds far more state than relaying them.
    let answered = Box::pin(translate_answer(
        provider, backend, ask, call, out, upstream, deadline,
    ))
    .await;
    if let Err(failed) = &answered
        && failed.cause == failure::Cause::KeyRefused
        && provider.provider_type == ProviderType::VertexAi
        && let (Some(target), Ok(account)) = (&provider.vertex, parts.service_account(call.key))
    {
        // Vertex refused the access token (revoked, or the account lost its role): the next call
        // asks for a new one rather than sending this one again until it expires.
        shared.google_tokens.forget(account, &target.token_endpoint);
    }
    answered
}

/// Sends `out` to `provider` (taking its URL, `Host` and body: they are not needed again), waiting for the response headers no longer than its connect and
/// first-byte timeouts allow within the call's total deadline. Returns the response and that deadline.
async fn send(
    shared: &Shared,
    provider: &Provider,
    parts: &ProviderParts,
    out: &mut Outgoing,
    ask: &Ask<'_>,
    call: &mut Call,
) -> Result<(Response<hyper::body::Incoming>, tokio::time::Instant), Failed> {
    let accept = match (&out.wire, ask.stream) {
        (Wire::Bedrock, true) => "application/vnd.amazon.eventstream",
        (_, true) => "text/event-stream",
        _ => "application/json",
    };
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
    headers.insert(REQUEST_ID, call.request_id.clone());
    if out.anthropic_version {
        let caller = &ask.anthropic_headers;
        let version = caller
            .version
            .clone()
            .filter(|_| out.caller_anthropic_headers)
            .unwrap_or(HeaderValue::from_static(anthropic::API_VERSION));
        headers.insert(ANTHROPIC_VERSION, version);
        if out.caller_anthropic_headers
            && let Some(beta) = &caller.beta
        {
            headers.insert(ANTHROPIC_BETA, beta.clone());
        }
    }
    if let Some(host) = out.host.take() {
        headers.insert(header::HOST, host);
    }
    trace_context(call, parts, &out.uri, &mut headers);
    // The body goes in after signing, which reads it: moved, not cloned, since a clone of bytes made
    // from a vector allocates.
    let body = std::mem::take(&mut out.body);
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = std::mem::take(&mut out.uri);
    *request.headers_mut() = headers;
    // The pool's next key that is not resting after a 401/403/429; remembered to rest it if refused.
    call.key = shared
        .health
        .of(provider)
        .pick_key(provider.credentials.len(), crate::clock::now_unix_ms());
    authenticate(parts, provider, call.key, &mut request, &body)?;
    *request.body_mut() = Full::new(body);

    let t = provider.timeouts;
    let deadline =
        tokio::time::Instant::from_std(call.started()) + Duration::from_millis(t.total_ms);
    let due = || {
        Duration::from_millis(t.connect_ms + t.first_byte_ms)
            .min(deadline.saturating_duration_since(tokio::time::Instant::now()))
    };
    if provider.provider_type == ProviderType::VertexAi {
        // Boxed: only Vertex AI calls wait for an access token.
        let bearer = Box::pin(vertex_token(shared, provider, parts, call.key, due())).await?;
        request.headers_mut().insert(header::AUTHORIZATION, bearer);
    }
    let headers_due = due();
    // A previous attempt's connection is free once its answer was read, which it has been by now.
    call.upstream = None;
    match parts.send(request, headers_due).await {
        Ok((response, checkin)) => {
            call.upstream = checkin;
            if let Some(span) = call.trace.as_deref_mut().and_then(|t| t.attempt()) {
                span.status = Some(response.status().as_u16());
            }
            Ok((response, deadline))
        }
        Err(error) => Err(failure::transport(provider, error)),
    }
}

/// An `Authorization` header for key `key` of a Vertex AI provider: an access token for its service
/// account, cached, or fetched from the token endpoint within `due`.
async fn vertex_token(
    shared: &Shared,
    provider: &Provider,
    parts: &ProviderParts,
    key: Option<usize>,
    due: Duration,
) -> Result<HeaderValue, Failed> {
    let Some(target) = &provider.vertex else {
        return Err(Failed::misconfigured(
            provider,
            "it has no Vertex AI project and region",
        ));
    };
    let account = parts
        .service_account(key)
        .map_err(|e| failure::no_access_token(provider, &TokenError::Unusable(e)))?;
    shared
        .google_tokens
        .bearer(account, &target.token_endpoint, due)
        .await
        .map_err(|e| failure::no_access_token(provider, &e))
}

/// W3C trace context for the upstream: the attempt's span as parent when the call is recorded (and
/// the attempt's server noted), else the caller's headers as they came.
fn trace_context(
    call: &mut Call,
    parts: &ProviderParts,
    uri: &http::Uri,
    headers: &mut http::HeaderMap,
) {
    if let Some(span) = call.trace.as_deref_mut().and_then(CallTrace::attempt) {
        span.server = parts.server(uri);
    }
    if let Some(trace) = call.outgoing_trace() {
        insert_trace(headers, trace);
    }
}

/// The identity translation: the provider's successful answer relayed as it comes, usage read on the
/// way (and error events in a stream scrubbed of anything resembling the provider's credentials).
fn relay_as_is(
    provider: &Provider,
    backend: &Backend,
    ask: &Ask<'_>,
    call: &Call,
    upstream: Response<hyper::body::Incoming>,
    deadline: tokio::time::Instant,
) -> Response<ResponseBody> {
    let status = upstream.status();
    let content_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
    let is_sse = content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mode = if is_sse && ask.responses_caller() {
        RelayMode::Translate(Box::new(ResponsesPassthrough::new(Box::new(
            stream_secrets(call, backend),
        ))))
    } else if is_sse {
        sse_mode(ask, call, backend)
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
    // Room for the headers the gateway adds (request id, rate limits, deprecation).
    *response.headers_mut() = http::HeaderMap::with_capacity(16);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("application/json")),
    );
    if is_sse {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

/// An OpenAI stream relayed to an OpenAI caller, its provider's credentials at hand for error events.
fn sse_mode(ask: &Ask<'_>, call: &Call, backend: &Backend) -> RelayMode {
    RelayMode::Sse {
        strip_usage_chunk: !ask.include_usage,
        secrets: stream_secrets(call, backend),
    }
}

/// The backend's provider's credentials, listed only if its stream sends an error event.
fn stream_secrets(call: &Call, backend: &Backend) -> StreamSecrets {
    let snapshot = call
        .snapshot
        .as_ref()
        .expect("a model call has its snapshot");
    StreamSecrets::of(snapshot.clone(), backend.provider)
}

/// An unsuccessful answer of the identity translation: statuses that say nothing about the request
/// fail the attempt; the others (a 4xx about the request) are final, their errors read and scrubbed.
async fn reject_as_is(
    provider: &Provider,
    call: &mut Call,
    upstream: Response<hyper::body::Incoming>,
    deadline: tokio::time::Instant,
) -> Attempted {
    let status = upstream.status();
    if let Some(failed) = failure::same_format(provider, status, upstream.headers()) {
        return Err(failed);
    }
    let text = error_text(upstream.into_body(), deadline).await;
    call.fail("upstream_rejected");
    let (status, body) = failure::same_format_rejection(provider, status, &text);
    let mut response = json(body);
    *response.status_mut() = status;
    Ok(response)
}

/// An error body, read up to `ERROR_CAP` and the deadline (empty when it is longer, late or broken).
async fn error_text(incoming: hyper::body::Incoming, deadline: tokio::time::Instant) -> Bytes {
    tokio::time::timeout_at(deadline, Limited::new(incoming, ERROR_CAP).collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

/// A translated provider's answer in the caller's format: errors read from their bodies, streams
/// translated event by event, whole answers read and rewritten.
async fn translate_answer(
    provider: &Provider,
    backend: &Backend,
    ask: &Ask<'_>,
    call: &mut Call,
    out: Outgoing,
    upstream: Response<hyper::body::Incoming>,
    deadline: tokio::time::Instant,
) -> Attempted {
    let status = upstream.status();
    let (parts, incoming) = upstream.into_parts();
    if !status.is_success() {
        let text = error_text(incoming, deadline).await;
        let v: Value = serde_json::from_slice(&text).unwrap_or(Value::Null);
        let (message, bad_key) = out.wire.error_message(&v);
        let body = failure::ErrorBody {
            json: &v,
            message,
            bad_key,
        };
        return Err(failure::translated(provider, status, &parts.headers, body));
    }
    let idle = Duration::from_millis(provider.timeouts.idle_ms);

    if ask.stream {
        let mode = match (&out.wire, ask.endpoint) {
            (Wire::Anthropic, Endpoint::Messages) => RelayMode::Translate(Box::new(
                AnthropicPassthrough::new(Box::new(stream_secrets(call, backend))),
            )),
            (Wire::OpenAiResponses, _) => RelayMode::Translate(Box::new(
                ResponsesPassthrough::new(Box::new(stream_secrets(call, backend))),
            )),
            (Wire::OpenAiChat, Endpoint::Chat) => sse_mode(ask, call, backend),
            (wire, _) => {
                let mut decoder: Box<dyn Decode> = match wire {
                    Wire::Anthropic => Box::new(AnthropicDecoder::new()),
                    Wire::Gemini => Box::new(GeminiDecoder::new()),
                    Wire::Bedrock => Box::new(BedrockDecoder::new()),
                    _ => Box::new(OpenAiDecoder::new()),
                };
                if let Some(name) = out.json_tool.clone() {
                    decoder = Box::new(ToolAsText::new(decoder, name));
                }
                RelayMode::Translate(Box::new(Translate::new(
                    decoder,
                    caller_encoder(ask, &backend.upstream_model),
                    secrets_of(provider),
                )))
            }
        };
        let relay = Relay::new(incoming, mode, idle, deadline);
        return Ok(event_stream(ResponseBody::relay(relay)));
    }

    if let (Wire::OpenAiChat | Wire::OpenAiEmbeddings, false) = (&out.wire, ask.foreign_caller())
        && !ask.prompt_caller()
    {
        // Same format both ways: relayed as it comes, usage read at the end.
        let relay = Relay::new(incoming, RelayMode::Json, idle, deadline);
        let mut response = Response::new(ResponseBody::relay(relay));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            parts
                .headers
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static("application/json")),
        );
        return Ok(response);
    }

    let whole =
        match tokio::time::timeout_at(deadline, Limited::new(incoming, ANSWER_CAP).collect()).await
        {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(_)) => return Err(failure::cut_short(provider, false)),
            Err(_) => return Err(failure::cut_short(provider, true)),
        };
    if let (Wire::OpenAiChat, Endpoint::Prompt { json_output }, None) =
        (&out.wire, ask.endpoint, &out.json_tool)
        && let Some(read) = prompt::openai_answer_to_prompt(&whole, json_output)
    {
        let (body, counts) = read.map_err(invalid_output)?;
        call.usage = Some(counts.usage());
        return Ok(json(Bytes::from(body)));
    }
    let v: Value = serde_json::from_slice(&whole).map_err(|_| failure::unreadable(provider))?;
    if let (Wire::Anthropic, true) = (&out.wire, ask.anthropic_caller()) {
        call.usage = Some(anthropic::counts(v.get("usage").unwrap_or(&Value::Null)).usage());
        return Ok(json(whole));
    }
    let model: &str = &backend.upstream_model;
    let mut answer = match &out.wire {
        Wire::GeminiEmbed(embed) => {
            let (list, usage) = embed
                .read(&v, model)
                .ok_or_else(|| failure::unreadable(provider))?;
            call.usage = Some(usage);
            return Ok(json(json_bytes(&list)));
        }
        Wire::OpenAiEmbeddings | Wire::OpenAiResponses => {
            return Err(failure::unreadable(provider));
        }
        Wire::Anthropic => anthropic::read_response(&v, model),
        Wire::Gemini => crate::llm::gemini::read_response(&v, model),
        Wire::Bedrock => crate::llm::bedrock::read_response(&v, model),
        Wire::OpenAiChat => Answer::from_openai(&v),
    }
    .ok_or_else(|| failure::unreadable(provider))?;
    if let Some(name) = &out.json_tool {
        json_answer::answer_from_tool(&mut answer, name);
    }
    call.usage = Some(answer.counts.usage());
    if let Some(t) = call.trace.as_deref_mut() {
        t.response.id = Some(answer.id.clone());
        t.response.model = Some(answer.model.as_str().into());
        t.response.finish_reasons = smallvec::smallvec![answer.finish.openai().into()];
    }
    Ok(json(caller_answer(ask, &answer)?))
}

/// A token count for a backend that cannot count: estimated from the request's text, and labelled so
/// in the body (`"estimated": true`) and in `x-tollgate-token-count: estimated`.
fn estimated_count(ask: &Ask<'_>) -> Attempted {
    let body = request_value(ask)?;
    let n = messages::estimate_input_tokens(&body);
    let mut response = json(Bytes::from(
        serde_json::json!({"input_tokens": n, "estimated": true}).to_string(),
    ));
    response.headers_mut().insert(
        header::HeaderName::from_static("x-tollgate-token-count"),
        HeaderValue::from_static("estimated"),
    );
    Ok(response)
}

/// A JSON value as a body: written straight into bytes (`to_string` goes through `fmt::Write`,
/// which costs half as much again).
fn json_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("JSON values serialise"))
}

/// The encoder of the caller's stream format.
fn caller_encoder(ask: &Ask<'_>, model: &str) -> Box<dyn Encode> {
    match ask.endpoint {
        Endpoint::Messages | Endpoint::CountTokens => Box::new(AnthropicEncoder::new(model)),
        Endpoint::Responses => Box::new(ResponsesEncoder::new(model, ask.echo())),
        Endpoint::Prompt { json_output } => Box::new(PromptEncoder::new(model, json_output)),
        Endpoint::Chat | Endpoint::Embeddings => {
            Box::new(OpenAiEncoder::new(model, ask.include_usage))
        }
    }
}

/// A whole answer in the caller's format (a prompt's promised JSON may be missing: 502).
fn caller_answer(ask: &Ask<'_>, answer: &Answer) -> Result<Bytes, Failed> {
    let v = match ask.endpoint {
        Endpoint::Messages | Endpoint::CountTokens => messages::answer_to_message(answer),
        // Written straight from the answer, with no JSON value between.
        Endpoint::Responses => {
            return Ok(Bytes::from(responses::answer_to_response(
                answer,
                &ask.echo(),
            )));
        }
        Endpoint::Prompt { json_output } => {
            prompt::answer_to_prompt(answer, json_output).map_err(invalid_output)?
        }
        Endpoint::Chat | Endpoint::Embeddings => answer.to_openai(),
    };
    Ok(json_bytes(&v))
}

/// A JSON prompt's answer that is not JSON: 502 `invalid_output`, quoting its start.
fn invalid_output(message: String) -> Failed {
    Failed::rejected(ApiError::upstream(
        http::StatusCode::BAD_GATEWAY,
        "invalid_output",
        message,
    ))
}

/// The Fake provider, for every caller format: chat callers' requests are read as they are and its
/// answers sent as they are made; Anthropic and Responses callers' requests are read in OpenAI's chat
/// shape and its answers and streams translated into the caller's.
async fn fake_attempt(
    provider: &Provider,
    backend: &Backend,
    ask: &Ask<'_>,
    call: &mut Call,
) -> Attempted {
    let rewritten = if ask.foreign_caller() {
        let request = as_openai(ask, request_value(ask)?)?;
        Some(serde_json::to_vec(&request).expect("JSON values serialise"))
    } else {
        None
    };
    let translated_doc =
        match &rewritten {
            Some(bytes) => Some(RequestDoc::parse(bytes).map_err(|e| {
                Failed::rejected(ApiError::bad_request("invalid_json", e.to_string()))
            })?),
            None => None,
        };
    let behaviour = provider.fake.unwrap_or_default();
    if behaviour.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)).await;
    }
    let model: &str = &backend.upstream_model;
    // Prompt callers' requests are in OpenAI's shape already; their answers are translated.
    let doc = translated_doc
        .as_ref()
        .or_else(|| ask.prompt_caller().then_some(&ask.doc));
    let Some(doc) = doc else {
        let answer = match ask.endpoint {
            Endpoint::Embeddings => fake::embeddings(&behaviour, &ask.doc, model),
            Endpoint::Chat
            | Endpoint::Messages
            | Endpoint::Responses
            | Endpoint::CountTokens
            | Endpoint::Prompt { .. } => {
                fake::chat(&behaviour, &ask.doc, model, ask.stream, ask.include_usage)
            }
        }
        .map_err(Failed::rejected)?;
        return Ok(match answer {
            FakeAnswer::Whole { body, usage } => {
                call.usage = Some(usage);
                json(body)
            }
            FakeAnswer::Stream(stream) => event_stream(ResponseBody::fake(stream)),
        });
    };
    match fake::chat(&behaviour, doc, model, ask.stream, true).map_err(Failed::rejected)? {
        FakeAnswer::Whole { body, usage } => {
            call.usage = Some(usage);
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let answer = Answer::from_openai(&v).ok_or_else(|| {
                Failed::rejected(ApiError::upstream(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "fake_error",
                    "The Fake provider's answer could not be translated.",
                ))
            })?;
            Ok(json(caller_answer(ask, &answer)?))
        }
        FakeAnswer::Stream(mut s) => {
            let mut t = Translate::new(
                Box::new(OpenAiDecoder::new()),
                caller_encoder(ask, model),
                Vec::new(),
            );
            s.transcode(&mut t);
            Ok(event_stream(ResponseBody::fake(s)))
        }
    }
}
