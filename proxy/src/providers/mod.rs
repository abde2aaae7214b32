//! Native translation for providers whose APIs are not OpenAI's (Anthropic, Gemini, Azure OpenAI,
//! Bedrock), and for callers that speak Anthropic's Messages format to any provider.
//!
//! Every translated call goes one way: the caller's body is read as an OpenAI chat request (Anthropic
//! callers' bodies are first rewritten into that shape), written out in the provider's format, and
//! the provider's answer or stream is read into neutral pieces and written in the caller's format.
//! Anthropic callers of Anthropic backends skip all of it and get the provider's bytes.

pub mod anthropic;
pub mod bedrock;
pub mod chat;
pub mod eventstream;
#[cfg(test)]
mod fuzz;
pub mod gemini;
pub mod sigv4;
pub mod sse;
pub mod stream;

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;
use tollgate_snapshot::{Backend, Provider, ProviderType};

use crate::body::ResponseBody;
use crate::dispatch::{Ask, Endpoint, Failed, send_upstream};
use crate::error::ApiError;
use crate::fake::{self, FakeAnswer};
use crate::inbound_anthropic::{self, AnthropicEncoder, AnthropicPassthrough};
use crate::openai::RequestDoc;
use crate::record::Call;
use crate::relay::{Relay, RelayMode};
use crate::state::Shared;
use crate::upstream::ProviderParts;

use chat::{Answer, ChatRequest};
use stream::{Decode, Encode, OpenAiDecoder, OpenAiEncoder, Translate};

/// Largest non-streamed answer read for translation.
const ANSWER_CAP: usize = 32 * 1024 * 1024;
/// Largest error body read for its message.
const ERROR_CAP: usize = 64 * 1024;
/// Azure `api-version` when the provider sets none.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// Whether a call is translated here rather than relayed as OpenAI's format.
pub(crate) fn translates(provider_type: ProviderType, endpoint: Endpoint) -> bool {
    endpoint == Endpoint::Messages
        || matches!(
            provider_type,
            ProviderType::Anthropic
                | ProviderType::Gemini
                | ProviderType::AzureOpenAI
                | ProviderType::Bedrock
        )
}

/// The format of the provider's answer.
enum Wire {
    /// OpenAI chat completions (OpenAI-compatible backends and Azure).
    OpenAiChat,
    /// OpenAI embeddings (Azure).
    OpenAiEmbeddings,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini `generateContent`.
    Gemini,
    /// Gemini embeddings.
    GeminiEmbed(gemini::EmbedAsk),
    /// Bedrock Converse.
    Bedrock,
}

/// A request ready to send, and how to read its answer.
struct Outgoing {
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
    wire: Wire,
}

/// One attempt at a backend for a translated call.
pub(crate) async fn attempt(
    shared: &Shared,
    provider: &Provider,
    backend: &Backend,
    ask: &Ask<'_>,
    call: &mut Call,
) -> Result<Response<ResponseBody>, Failed> {
    let anthropic_caller = ask.endpoint == Endpoint::Messages;
    let body: Value = serde_json::from_slice(ask.body).map_err(|_| {
        Failed::Final(ApiError::bad_request(
            "invalid_json",
            "The request body is not valid JSON.",
        ))
    })?;
    let model: &str = &backend.upstream_model;
    if anthropic_caller && provider.provider_type == ProviderType::Anthropic {
        let out = Outgoing {
            url: format!("{}/v1/messages", provider.endpoint),
            headers: anthropic_headers(),
            body: ask.doc.encode_for_upstream(model, false),
            wire: Wire::Anthropic,
        };
        return exchange(shared, provider, backend, ask, call, out).await;
    }
    let request = if anthropic_caller {
        inbound_anthropic::to_openai_request(&body, ask.stream).map_err(Failed::Final)?
    } else {
        body
    };
    if provider.provider_type == ProviderType::Fake {
        return fake_for_anthropic(provider, backend, ask, call, &request).await;
    }
    let out = outgoing(provider, backend, ask, &request)?;
    exchange(shared, provider, backend, ask, call, out).await
}

fn json_header() -> (HeaderName, HeaderValue) {
    (
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )
}

fn anthropic_headers() -> Vec<(HeaderName, HeaderValue)> {
    vec![
        json_header(),
        (
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(anthropic::API_VERSION),
        ),
    ]
}

fn chat_request(request: &Value) -> Result<ChatRequest, Failed> {
    ChatRequest::from_openai(request).map_err(Failed::Final)
}

fn cannot(provider: &Provider, what: &str) -> Failed {
    // A route that sends this endpoint here is misconfigured; that is no reason to count the backend
    // unhealthy, so the answer is final.
    Failed::Final(ApiError::bad_request(
        "unsupported_endpoint",
        format!(
            "Provider {} ({}) cannot serve {what}.",
            provider.id,
            provider.provider_type.as_str()
        ),
    ))
}

/// Writes the request in the provider's format.
fn outgoing(
    provider: &Provider,
    backend: &Backend,
    ask: &Ask<'_>,
    request: &Value,
) -> Result<Outgoing, Failed> {
    let model: &str = &backend.upstream_model;
    let embeddings = ask.endpoint == Endpoint::Embeddings;
    let encode = |v: &Value| serde_json::to_vec(v).expect("JSON values serialise");
    Ok(match provider.provider_type {
        ProviderType::Anthropic => {
            if embeddings {
                return Err(cannot(
                    provider,
                    "embeddings (Anthropic has no embeddings API)",
                ));
            }
            let req = chat_request(request)?;
            Outgoing {
                url: format!("{}/v1/messages", provider.endpoint),
                headers: anthropic_headers(),
                body: encode(&anthropic::build_request(&req, model, ask.stream)),
                wire: Wire::Anthropic,
            }
        }
        ProviderType::Gemini => {
            let base = gemini_base(&provider.endpoint);
            let name = if model.starts_with("models/") || model.starts_with("tunedModels/") {
                model.to_string()
            } else {
                format!("models/{model}")
            };
            if embeddings {
                let embed = gemini::EmbedAsk::from_openai(request).map_err(Failed::Final)?;
                let short = name.trim_start_matches("models/");
                let (method, body) = embed.build(short);
                Outgoing {
                    url: format!("{base}/{name}:{method}"),
                    headers: vec![json_header()],
                    body: encode(&body),
                    wire: Wire::GeminiEmbed(embed),
                }
            } else {
                let req = chat_request(request)?;
                let method = if ask.stream {
                    "streamGenerateContent?alt=sse"
                } else {
                    "generateContent"
                };
                Outgoing {
                    url: format!("{base}/{name}:{method}"),
                    headers: vec![json_header()],
                    body: encode(&gemini::build_request(&req)),
                    wire: Wire::Gemini,
                }
            }
        }
        ProviderType::Bedrock => {
            if embeddings {
                return Err(cannot(
                    provider,
                    "embeddings (the Converse API has none; use an OpenAI-compatible embeddings provider)",
                ));
            }
            let req = chat_request(request)?;
            let body = bedrock::build_request(&req).map_err(Failed::Final)?;
            Outgoing {
                url: format!("{}{}", provider.endpoint, bedrock::path(model, ask.stream)),
                headers: vec![json_header()],
                body: encode(&body),
                wire: Wire::Bedrock,
            }
        }
        ProviderType::AzureOpenAI => {
            let deployment = provider
                .models
                .iter()
                .find(|m| m.name == model)
                .and_then(|m| m.deployment.as_deref())
                .unwrap_or(model);
            let base = provider.endpoint.trim_end_matches("/openai");
            let path = if embeddings {
                "embeddings"
            } else {
                "chat/completions"
            };
            let version = provider
                .azure_api_version
                .as_deref()
                .unwrap_or(AZURE_DEFAULT_API_VERSION);
            let url = format!(
                "{base}/openai/deployments/{}/{path}?api-version={}",
                sigv4::uri_encode(deployment.as_bytes()),
                sigv4::uri_encode(version.as_bytes())
            );
            Outgoing {
                url,
                headers: vec![json_header()],
                body: openai_body(ask, request, model, false),
                wire: if embeddings {
                    Wire::OpenAiEmbeddings
                } else {
                    Wire::OpenAiChat
                },
            }
        }
        // OpenAI-compatible backends reach here only for Anthropic callers.
        other => Outgoing {
            url: format!("{}/chat/completions", provider.endpoint),
            headers: vec![json_header()],
            body: openai_body(ask, request, model, other == ProviderType::OpenAI),
            wire: Wire::OpenAiChat,
        },
    })
}

/// An OpenAI-format body for `model`: the caller's own bytes when the caller speaks OpenAI, else the
/// translated request (with `max_completion_tokens` for OpenAI itself, which refuses `max_tokens` on
/// its newer models).
fn openai_body(ask: &Ask<'_>, request: &Value, model: &str, completion_tokens: bool) -> Vec<u8> {
    if ask.endpoint != Endpoint::Messages {
        return ask.doc.encode_for_upstream(model, ask.stream);
    }
    let mut v = request.clone();
    v["model"] = model.into();
    if completion_tokens
        && let Some(o) = v.as_object_mut()
        && let Some(n) = o.remove("max_tokens")
    {
        o.insert("max_completion_tokens".into(), n);
    }
    serde_json::to_vec(&v).expect("JSON values serialise")
}

fn gemini_base(endpoint: &str) -> String {
    if endpoint.ends_with("/v1beta") || endpoint.ends_with("/v1") {
        endpoint.to_string()
    } else {
        format!("{endpoint}/v1beta")
    }
}

/// Every credential of the provider and its `:`-separated parts: none may appear in an error.
fn secrets_of(provider: &Provider) -> Vec<String> {
    let mut out = Vec::new();
    for c in &provider.credentials {
        out.push(c.0.clone());
        out.extend(c.0.split(':').filter(|p| p.len() >= 4).map(str::to_string));
    }
    out
}

/// Removes anything that looks like a piece of a secret: a word sharing eight or more consecutive
/// characters with one is replaced whole. Messages are also cut to 1,000 characters.
pub fn scrub(message: &str, secrets: &[String]) -> String {
    let mut text: String = message.chars().take(1_000).collect();
    let is_word = |c: char| !c.is_whitespace() && !matches!(c, '"' | '\'' | ',' | '`');
    for secret in secrets {
        let window = secret.len().min(8);
        if window < 4 || !secret.is_ascii() {
            continue;
        }
        for start in 0..=secret.len() - window {
            let needle = &secret[start..start + window];
            while let Some(at) = text.find(needle) {
                let begin = text[..at]
                    .char_indices()
                    .rev()
                    .find(|(_, c)| !is_word(*c))
                    .map_or(0, |(i, c)| i + c.len_utf8());
                let end = text[at..]
                    .char_indices()
                    .find(|(_, c)| !is_word(*c))
                    .map_or(text.len(), |(i, _)| at + i);
                text.replace_range(begin..end, "[redacted]");
            }
        }
    }
    text
}

/// Adds the credential: the provider's header for API keys, or a SigV4 signature for Bedrock keys.
fn authenticate(
    parts: &ProviderParts,
    provider: &Provider,
    key: Option<usize>,
    request: &mut Request<Full<Bytes>>,
    body: &[u8],
) -> Result<(), Failed> {
    let Some((name, value)) = parts.credential(key) else {
        return Ok(());
    };
    if provider.provider_type != ProviderType::Bedrock {
        request.headers_mut().insert(name, value);
        return Ok(());
    }
    let raw = value.to_str().unwrap_or_default();
    let raw = raw
        .strip_prefix(provider.auth.prefix.as_str())
        .unwrap_or(raw);
    let keys = match bedrock::auth(raw) {
        bedrock::BedrockAuth::ApiKey(key) => {
            let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                Failed::Retry(misconfigured(provider, "its API key is not a valid header"))
            })?;
            v.set_sensitive(true);
            request.headers_mut().insert(header::AUTHORIZATION, v);
            return Ok(());
        }
        bedrock::BedrockAuth::Keys(keys) => keys,
    };
    let uri = request.uri().clone();
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let region = provider
        .bedrock_region
        .clone()
        .or_else(|| {
            host.strip_prefix("bedrock-runtime.")
                .and_then(|h| h.split('.').next())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "us-east-1".into());
    let content_type = "application/json";
    let signed = sigv4::sign(
        &keys,
        &sigv4::Scope {
            region: &region,
            service: "bedrock",
            unix: crate::clock::now_unix(),
        },
        &sigv4::Signable {
            method: "POST",
            host: &host,
            path: uri.path(),
            query: uri.query().unwrap_or(""),
            headers: &[("content-type", content_type)],
            body,
        },
    );
    let headers = request.headers_mut();
    headers.insert(
        header::HOST,
        HeaderValue::from_str(&host)
            .map_err(|_| Failed::Retry(misconfigured(provider, "bad host")))?,
    );
    for (name, value) in signed {
        let mut v = HeaderValue::from_str(&value).map_err(|_| {
            Failed::Retry(misconfigured(
                provider,
                "its AWS credential is not a valid header",
            ))
        })?;
        v.set_sensitive(true);
        headers.insert(HeaderName::from_static(name), v);
    }
    Ok(())
}

fn misconfigured(provider: &Provider, why: &str) -> ApiError {
    ApiError::upstream(
        StatusCode::BAD_GATEWAY,
        "upstream_misconfigured",
        format!("Provider {} is misconfigured: {why}.", provider.id),
    )
}

/// Sends the request and turns the answer into the caller's format.
async fn exchange(
    shared: &Shared,
    provider: &Provider,
    backend: &Backend,
    ask: &Ask<'_>,
    call: &mut Call,
    out: Outgoing,
) -> Result<Response<ResponseBody>, Failed> {
    let who = &provider.id;
    let prepared = crate::dispatch::prepared(shared, call);
    let parts = prepared.provider(backend.provider);
    let accept = match (&out.wire, ask.stream) {
        (Wire::Bedrock, true) => "application/vnd.amazon.eventstream",
        (_, true) => "text/event-stream",
        _ => "application/json",
    };
    let body = Bytes::from(out.body);
    let mut builder = Request::post(&out.url)
        .header(header::ACCEPT, accept)
        .header(
            header::USER_AGENT,
            concat!("tollgate-proxy/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in out.headers {
        builder = builder.header(name, value);
    }
    let mut request = builder
        .body(Full::new(body.clone()))
        .map_err(|_| Failed::Retry(misconfigured(provider, "its endpoint is not a valid URL")))?;
    request
        .headers_mut()
        .insert(crate::pipeline::REQUEST_ID, call.request_id.clone());
    // The pool's next key that is not resting after a 401/403/429; remembered to rest it if refused.
    call.key = shared
        .health
        .of(provider)
        .pick_key(provider.credentials.len(), crate::clock::now_unix_ms());
    authenticate(parts, provider, call.key, &mut request, &body)?;

    let (upstream, deadline) = send_upstream(provider, parts, request, call).await?;
    let status = upstream.status();
    let (parts, incoming) = upstream.into_parts();
    if !status.is_success() {
        let text = tokio::time::timeout_at(deadline, Limited::new(incoming, ERROR_CAP).collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        return Err(failure(provider, &out.wire, status, &parts.headers, &text));
    }
    let anthropic_caller = ask.endpoint == Endpoint::Messages;
    let idle = Duration::from_millis(provider.timeouts.idle_ms);

    if ask.stream {
        let mode = match (&out.wire, anthropic_caller) {
            (Wire::Anthropic, true) => RelayMode::Translate(Box::new(AnthropicPassthrough::new())),
            (Wire::OpenAiChat, false) => RelayMode::Sse {
                strip_usage_chunk: !ask.include_usage,
            },
            (wire, _) => {
                let decoder: Box<dyn Decode> = match wire {
                    Wire::Anthropic => Box::new(anthropic::AnthropicDecoder::new()),
                    Wire::Gemini => Box::new(gemini::GeminiDecoder::new()),
                    Wire::Bedrock => Box::new(bedrock::BedrockDecoder::new()),
                    _ => Box::new(OpenAiDecoder::new()),
                };
                let encoder: Box<dyn Encode> = if anthropic_caller {
                    Box::new(AnthropicEncoder::new(&backend.upstream_model))
                } else {
                    Box::new(OpenAiEncoder::new(
                        &backend.upstream_model,
                        ask.include_usage,
                    ))
                };
                RelayMode::Translate(Box::new(Translate::new(
                    decoder,
                    encoder,
                    secrets_of(provider),
                )))
            }
        };
        let relay = Relay::new(incoming, mode, idle, deadline);
        return Ok(event_stream(ResponseBody::relay(relay)));
    }

    if let (Wire::OpenAiChat | Wire::OpenAiEmbeddings, false) = (&out.wire, anthropic_caller) {
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
            Ok(Err(_)) => {
                return Err(Failed::Retry(ApiError::upstream(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    format!("The connection to provider {who} failed in the middle of its answer."),
                )));
            }
            Err(_) => {
                return Err(Failed::Retry(ApiError::upstream(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    format!("Provider {who} did not finish its answer in time."),
                )));
            }
        };
    let unreadable = || {
        Failed::Retry(ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_bad_response",
            format!("Provider {who} sent an answer this gateway cannot read."),
        ))
    };
    if let (Wire::Anthropic, true) = (&out.wire, anthropic_caller) {
        let v: Value = serde_json::from_slice(&whole).map_err(|_| unreadable())?;
        call.usage = Some(anthropic::counts(v.get("usage").unwrap_or(&Value::Null)).usage());
        return Ok(json(whole));
    }
    let v: Value = serde_json::from_slice(&whole).map_err(|_| unreadable())?;
    let model: &str = &backend.upstream_model;
    let answer = match &out.wire {
        Wire::GeminiEmbed(embed) => {
            let (list, usage) = embed.read(&v, model).ok_or_else(unreadable)?;
            call.usage = Some(usage);
            return Ok(json(Bytes::from(list.to_string())));
        }
        Wire::OpenAiEmbeddings => return Err(unreadable()),
        Wire::Anthropic => anthropic::read_response(&v, model),
        Wire::Gemini => gemini::read_response(&v, model),
        Wire::Bedrock => bedrock::read_response(&v, model),
        Wire::OpenAiChat => Answer::from_openai(&v),
    }
    .ok_or_else(unreadable)?;
    call.usage = Some(answer.counts.usage());
    let shaped = if anthropic_caller {
        inbound_anthropic::answer_to_message(&answer)
    } else {
        answer.to_openai()
    };
    Ok(json(Bytes::from(shaped.to_string())))
}

/// The provider's error as the caller sees it.
fn failure(
    provider: &Provider,
    wire: &Wire,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Failed {
    let who = &provider.id;
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut bad_key = false;
    let message = match wire {
        Wire::Anthropic => anthropic::error_message(&v),
        Wire::Gemini | Wire::GeminiEmbed(_) => gemini::error_message(&v).map(|(m, k)| {
            bad_key = k;
            m
        }),
        Wire::Bedrock => bedrock::error_message(&v),
        Wire::OpenAiChat | Wire::OpenAiEmbeddings => v
            .get("error")
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    let code = status.as_u16();
    if code == 429 {
        let retry_after = headers
            .get(header::RETRY_AFTER)
            .cloned()
            .or_else(|| google_retry_delay(&v));
        return Failed::Retry(
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "upstream_rate_limited",
                format!("Provider {who} is rate limiting this gateway; retry later."),
            )
            .with_retry_after(retry_after),
        );
    }
    if code == 529 {
        return Failed::Retry(
            ApiError::upstream(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_overloaded",
                format!("Provider {who} is overloaded; retry later."),
            )
            .with_retry_after(headers.get(header::RETRY_AFTER).cloned()),
        );
    }
    if code == 401 || code == 403 || bad_key {
        // The provider refused the gateway's credential: not the caller's fault, and its message may
        // quote part of the key, so it is not passed on.
        return Failed::Retry(ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_auth_failed",
            format!("Provider {who} refused the gateway's credential."),
        ));
    }
    if code == 408 {
        return Failed::Retry(ApiError::upstream(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("Provider {who} did not answer in time."),
        ));
    }
    if status.is_server_error() || code == 424 {
        return Failed::Retry(ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("Provider {who} answered with status {code}."),
        ));
    }
    let detail = message
        .map(|m| scrub(&m, &secrets_of(provider)))
        .unwrap_or_else(|| format!("status {code}"));
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_GATEWAY
    };
    Failed::Final(ApiError::new(
        status,
        if status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        },
        "upstream_rejected",
        format!("Provider {who} rejected the request: {detail}"),
    ))
}

/// Google's `RetryInfo.retryDelay` (`"30s"`) as a `Retry-After` value in whole seconds.
fn google_retry_delay(v: &Value) -> Option<HeaderValue> {
    let delay = v
        .get("error")?
        .get("details")?
        .as_array()?
        .iter()
        .find_map(|d| d.get("retryDelay").and_then(Value::as_str))?;
    let seconds: f64 = delay.strip_suffix('s')?.parse().ok()?;
    HeaderValue::from_str(&(seconds.max(0.0).ceil() as u64).to_string()).ok()
}

fn json(body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn event_stream(body: ResponseBody) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The Fake provider serving an Anthropic caller: the request goes in as OpenAI's format, the Fake's
/// answer or stream comes back in Anthropic's.
async fn fake_for_anthropic(
    provider: &Provider,
    backend: &Backend,
    ask: &Ask<'_>,
    call: &mut Call,
    request: &Value,
) -> Result<Response<ResponseBody>, Failed> {
    let behaviour = provider.fake.unwrap_or_default();
    if behaviour.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)).await;
    }
    let bytes = serde_json::to_vec(request).expect("JSON values serialise");
    let doc = RequestDoc::parse(&bytes)
        .map_err(|e| Failed::Final(ApiError::bad_request("invalid_json", e.to_string())))?;
    let model: &str = &backend.upstream_model;
    match fake::chat(&behaviour, &doc, model, ask.stream, true).map_err(Failed::Final)? {
        FakeAnswer::Whole { body, usage } => {
            call.usage = Some(usage);
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let answer = Answer::from_openai(&v).ok_or_else(|| {
                Failed::Final(ApiError::upstream(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "fake_error",
                    "The Fake provider's answer could not be translated.",
                ))
            })?;
            Ok(json(Bytes::from(
                inbound_anthropic::answer_to_message(&answer).to_string(),
            )))
        }
        FakeAnswer::Stream(mut s) => {
            let mut t = Translate::new(
                Box::new(OpenAiDecoder::new()),
                Box::new(AnthropicEncoder::new(model)),
                Vec::new(),
            );
            s.transcode(&mut t);
            Ok(event_stream(ResponseBody::fake(s)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_words_holding_secret_fragments() {
        let secrets = vec!["sk-ant-api03-SECRETSECRET".to_string()];
        assert_eq!(
            scrub("invalid x-api-key: sk-ant-api03-SECR***", &secrets),
            "invalid x-api-key: [redacted]"
        );
        assert_eq!(
            scrub("key 'SECRETSECRET' bad", &secrets),
            "key '[redacted]' bad"
        );
        assert_eq!(scrub("nothing here", &secrets), "nothing here");
    }

    #[test]
    fn google_retry_delay_becomes_retry_after() {
        let v = serde_json::json!({"error": {"code": 429, "details": [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"}]}});
        assert_eq!(google_retry_delay(&v).unwrap(), "13");
    }
}
