//! One attempt's request, written in its provider's format: the URL, the body, and the format its
//! answer will come in. OpenAI-compatible providers serving OpenAI callers get the identity
//! translation (the caller's own bytes when only the model name would change); everyone else's
//! request is read as JSON values and written out by the provider's module in `llm/`.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Uri};
use http_body_util::Full;
use serde_json::Value;
use tollgate_snapshot::{Backend, Provider, ProviderType};

use super::ask::{Ask, Endpoint};
use super::failure::Failed;
use crate::error::ApiError;
use crate::llm::chat::ChatRequest;
use crate::llm::{anthropic, bedrock, gemini, json_answer, messages, responses, sigv4, vertex};
use crate::upstream::ProviderParts;

/// Azure `api-version` when the provider sets none.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

/// The format of the provider's answer.
pub(super) enum Wire {
    /// OpenAI chat completions (OpenAI-compatible backends and Azure).
    OpenAiChat,
    /// OpenAI embeddings (OpenAI-compatible backends and Azure).
    OpenAiEmbeddings,
    /// OpenAI's Responses API (OpenAI and Azure, passed through).
    OpenAiResponses,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini `generateContent`.
    Gemini,
    /// Gemini embeddings.
    GeminiEmbed(gemini::EmbedAsk),
    /// Bedrock Converse.
    Bedrock,
}

impl Wire {
    /// The message of an error body in this format, and whether it says the key is bad.
    pub(super) fn error_message(&self, v: &Value) -> (Option<String>, bool) {
        match self {
            Self::Anthropic => (anthropic::error_message(v), false),
            Self::Gemini | Self::GeminiEmbed(_) => match gemini::error_message(v) {
                Some((message, bad_key)) => (Some(message), bad_key),
                None => (None, false),
            },
            Self::Bedrock => (bedrock::error_message(v), false),
            Self::OpenAiChat | Self::OpenAiEmbeddings | Self::OpenAiResponses => (
                v.get("error")
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                false,
            ),
        }
    }
}

/// A request ready to send, and how to read its answer.
pub(super) struct Outgoing {
    pub(super) uri: Uri,
    /// The `Host` header when it is already made (else the pool writes it from the URL).
    pub(super) host: Option<HeaderValue>,
    pub(super) body: Bytes,
    pub(super) wire: Wire,
    /// Whether Anthropic's `anthropic-version` header goes with it.
    pub(super) anthropic_version: bool,
    /// Whether the caller's own `anthropic-version` and `anthropic-beta` go instead (its request
    /// passes through to Anthropic).
    pub(super) caller_anthropic_headers: bool,
    /// Whether the provider's answer, errors about the request included, goes to the caller as it
    /// comes (an OpenAI-compatible provider and an OpenAI caller).
    pub(super) as_is: bool,
    /// The tool whose call carries the answer, for a JSON Schema asked of a provider without a
    /// schema-constrained output (see `llm::json_answer`).
    pub(super) json_tool: Option<String>,
}

/// Whether `provider_type` speaks OpenAI's API as OpenAI does (same paths, same authentication).
fn openai_compatible(provider_type: ProviderType) -> bool {
    !matches!(
        provider_type,
        ProviderType::Anthropic
            | ProviderType::Gemini
            | ProviderType::AzureOpenAI
            | ProviderType::Bedrock
            | ProviderType::VertexAi
            | ProviderType::Fake
    )
}

/// The request for `backend`, in its provider's format.
pub(super) fn outgoing(
    parts: &ProviderParts,
    provider: &Provider,
    backend: &Backend,
    ask: &Ask<'_>,
) -> Result<Outgoing, Failed> {
    let model: &str = &backend.upstream_model;
    if ask.responses_caller()
        && let Some(out) = responses_passthrough(parts, provider, model, ask)?
    {
        return Ok(out);
    }
    if openai_compatible(provider.provider_type) && !ask.foreign_caller() {
        let uri = parts.uri(ask.endpoint.upstream_path()).ok_or_else(|| {
            Failed::misconfigured_as(format!(
                "The endpoint of provider {} is not a valid URL.",
                provider.id
            ))
        })?;
        return Ok(Outgoing {
            uri,
            host: parts.host(),
            body: ask.openai_body(model),
            wire: if ask.endpoint == Endpoint::Embeddings {
                Wire::OpenAiEmbeddings
            } else {
                Wire::OpenAiChat
            },
            anthropic_version: false,
            caller_anthropic_headers: false,
            as_is: !ask.prompt_caller(),
            json_tool: None,
        });
    }
    // Read whole even where it passes through, so that a body that is no JSON gets the same answer on
    // every translated path.
    let body = request_value(ask)?;
    let vertex_claude = provider.provider_type == ProviderType::VertexAi
        && vertex::family(model) == vertex::Family::Claude;
    let (url, body, wire, json_tool) =
        if ask.anthropic_caller() && vertex_claude && ask.endpoint == Endpoint::Messages {
            // Anthropic callers of Claude on Vertex AI: the caller's own request (thinking blocks,
            // cache_control and all), in Vertex's form.
            (
                vertex_url(provider, model, ask.stream)?,
                serde_json::to_vec(&vertex::claude_body(body)).expect("JSON values serialise"),
                Wire::Anthropic,
                None,
            )
        } else if ask.anthropic_caller() && provider.provider_type == ProviderType::Anthropic {
            // Anthropic callers of Anthropic backends: the caller's own request, with the model replaced.
            let path = if ask.endpoint == Endpoint::CountTokens {
                "/v1/messages/count_tokens"
            } else {
                "/v1/messages"
            };
            (
                format!("{}{path}", provider.endpoint),
                ask.doc.encode_for_upstream(model, false),
                Wire::Anthropic,
                None,
            )
        } else {
            translated(provider, backend, ask, &Translatable::of(ask, body)?)?
        };
    let uri = Uri::try_from(url)
        .map_err(|_| Failed::misconfigured(provider, "its endpoint is not a valid URL"))?;
    Ok(Outgoing {
        uri,
        host: None,
        body: Bytes::from(body),
        // Vertex AI takes the version in the body.
        anthropic_version: matches!(wire, Wire::Anthropic)
            && provider.provider_type == ProviderType::Anthropic,
        caller_anthropic_headers: ask.anthropic_caller()
            && provider.provider_type == ProviderType::Anthropic,
        wire,
        as_is: false,
        json_tool,
    })
}

/// A Responses request to a provider that serves the Responses API itself (OpenAI, Azure OpenAI):
/// the caller's own request with the model replaced, its answer relayed as it comes. `None` for the
/// providers it is translated for.
fn responses_passthrough(
    parts: &ProviderParts,
    provider: &Provider,
    model: &str,
    ask: &Ask<'_>,
) -> Result<Option<Outgoing>, Failed> {
    let (uri, host, body) = match provider.provider_type {
        ProviderType::OpenAI => {
            let uri = parts.uri(ask.endpoint.upstream_path()).ok_or_else(|| {
                Failed::misconfigured_as(format!(
                    "The endpoint of provider {} is not a valid URL.",
                    provider.id
                ))
            })?;
            let body = if ask.doc.only_model_is(model) {
                ask.body.clone()
            } else {
                Bytes::from(ask.doc.encode_for_upstream(model, false))
            };
            (uri, parts.host(), body)
        }
        ProviderType::AzureOpenAI => {
            // Azure's v1 API takes the deployment as the model and needs no `api-version`.
            let base = provider.endpoint.trim_end_matches("/openai");
            let uri = Uri::try_from(format!("{base}/openai/v1/responses"))
                .map_err(|_| Failed::misconfigured(provider, "its endpoint is not a valid URL"))?;
            let deployment = azure_deployment(provider, model);
            (
                uri,
                None,
                Bytes::from(ask.doc.encode_for_upstream(deployment, false)),
            )
        }
        _ => return Ok(None),
    };
    Ok(Some(Outgoing {
        uri,
        host,
        body,
        wire: Wire::OpenAiResponses,
        anthropic_version: false,
        caller_anthropic_headers: false,
        as_is: true,
        json_tool: None,
    }))
}

/// The Azure deployment serving `model`: the provider's model entry's, else the model's own name.
fn azure_deployment<'a>(provider: &'a Provider, model: &'a str) -> &'a str {
    provider
        .models
        .iter()
        .find(|m| m.name == model)
        .and_then(|m| m.deployment.as_deref())
        .unwrap_or(model)
}

/// The request body as JSON values (a translation reads it whole).
pub(super) fn request_value(ask: &Ask<'_>) -> Result<Value, Failed> {
    serde_json::from_slice(ask.body).map_err(|_| {
        Failed::rejected(ApiError::bad_request(
            "invalid_json",
            "The request body is not valid JSON.",
        ))
    })
}

/// The caller's request in OpenAI's chat shape: as it is for chat callers, rewritten for Anthropic and
/// Responses ones.
pub(super) fn as_openai(ask: &Ask<'_>, body: Value) -> Result<Value, Failed> {
    match ask.endpoint {
        Endpoint::Messages | Endpoint::CountTokens => {
            messages::to_openai_request(&body, ask.stream)
        }
        Endpoint::Responses => responses::to_openai_request(&body, ask.stream),
        Endpoint::Chat | Endpoint::Embeddings | Endpoint::Prompt { .. } => return Ok(body),
    }
    .map_err(Failed::rejected)
}

/// The caller's request as a translation reads it: in OpenAI's chat shape, or, for a Responses
/// caller, its own body, read straight into the neutral request by the providers that take that.
pub(super) enum Translatable {
    /// An OpenAI chat request (the caller's, or an Anthropic caller's rewritten).
    Chat(Value),
    /// A Responses caller's body.
    Responses { body: Value, stream: bool },
}

impl Translatable {
    /// The caller's request `body`, read as its endpoint's format.
    fn of(ask: &Ask<'_>, body: Value) -> Result<Self, Failed> {
        if ask.responses_caller() {
            return Ok(Self::Responses {
                body,
                stream: ask.stream,
            });
        }
        as_openai(ask, body).map(Self::Chat)
    }

    /// The neutral chat request.
    fn chat_request(&self) -> Result<ChatRequest, Failed> {
        match self {
            Self::Chat(v) => ChatRequest::from_openai(v),
            Self::Responses { body, .. } => responses::to_chat_request(body),
        }
        .map_err(Failed::rejected)
    }

    /// The request in OpenAI's chat shape.
    fn openai(&self) -> Result<std::borrow::Cow<'_, Value>, Failed> {
        match self {
            Self::Chat(v) => Ok(std::borrow::Cow::Borrowed(v)),
            Self::Responses { body, stream } => responses::to_openai_request(body, *stream)
                .map(std::borrow::Cow::Owned)
                .map_err(Failed::rejected),
        }
    }
}

fn cannot(provider: &Provider, what: &str) -> Failed {
    // A route that sends this endpoint here is misconfigured; that is no reason to count the backend
    // unhealthy, so the answer is final.
    Failed::rejected(ApiError::bad_request(
        "unsupported_endpoint",
        format!(
            "Provider {} ({}) cannot serve {what}.",
            provider.id,
            provider.provider_type.as_str()
        ),
    ))
}

/// The URL, body and answer format of a translated request, and the tool carrying a JSON answer.
fn translated(
    provider: &Provider,
    backend: &Backend,
    ask: &Ask<'_>,
    request: &Translatable,
) -> Result<(String, Vec<u8>, Wire, Option<String>), Failed> {
    let model: &str = &backend.upstream_model;
    let embeddings = ask.endpoint == Endpoint::Embeddings;
    let encode = |v: &Value| serde_json::to_vec(v).expect("JSON values serialise");
    let (url, body, wire) = match provider.provider_type {
        ProviderType::Anthropic => {
            if embeddings {
                return Err(cannot(
                    provider,
                    "embeddings (Anthropic has no embeddings API)",
                ));
            }
            let req = request.chat_request()?;
            return Ok((
                format!("{}/v1/messages", provider.endpoint),
                encode(&anthropic::build_request(&req, model, ask.stream)),
                Wire::Anthropic,
                json_answer::tool_for(&req).map(|(name, _)| name),
            ));
        }
        ProviderType::Gemini => {
            let base = gemini_base(&provider.endpoint);
            let name = if model.starts_with("models/") || model.starts_with("tunedModels/") {
                model.to_string()
            } else {
                format!("models/{model}")
            };
            if embeddings {
                let embed =
                    gemini::EmbedAsk::from_openai(&*request.openai()?).map_err(Failed::rejected)?;
                let short = name.trim_start_matches("models/");
                let (method, body) = embed.build(short);
                (
                    format!("{base}/{name}:{method}"),
                    encode(&body),
                    Wire::GeminiEmbed(embed),
                )
            } else {
                let req = request.chat_request()?;
                let method = if ask.stream {
                    "streamGenerateContent?alt=sse"
                } else {
                    "generateContent"
                };
                (
                    format!("{base}/{name}:{method}"),
                    encode(&gemini::build_request(&req)),
                    Wire::Gemini,
                )
            }
        }
        ProviderType::VertexAi => {
            if embeddings {
                return Err(cannot(
                    provider,
                    "embeddings (Vertex AI embeddings are not translated yet)",
                ));
            }
            let req = request.chat_request()?;
            let url = vertex_url(provider, model, ask.stream)?;
            return Ok(match vertex::family(model) {
                vertex::Family::Claude => (
                    url,
                    encode(&vertex::claude_body(anthropic::build_request(
                        &req, model, ask.stream,
                    ))),
                    Wire::Anthropic,
                    json_answer::tool_for(&req).map(|(name, _)| name),
                ),
                vertex::Family::Gemini => (
                    url,
                    encode(&gemini::build_request(&req)),
                    Wire::Gemini,
                    None,
                ),
            });
        }
        ProviderType::Bedrock => {
            if embeddings {
                return Err(cannot(
                    provider,
                    "embeddings (the Converse API has none; use an OpenAI-compatible embeddings provider)",
                ));
            }
            let req = request.chat_request()?;
            let tool = bedrock::json_tool(&req, model);
            let body = bedrock::build_request(&req, tool.as_ref()).map_err(Failed::rejected)?;
            return Ok((
                format!("{}{}", provider.endpoint, bedrock::path(model, ask.stream)),
                encode(&body),
                Wire::Bedrock,
                tool.map(|(name, _)| name),
            ));
        }
        ProviderType::AzureOpenAI => {
            let deployment = azure_deployment(provider, model);
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
            (
                url,
                openai_body(ask, &*request.openai()?, model, false),
                if embeddings {
                    Wire::OpenAiEmbeddings
                } else {
                    Wire::OpenAiChat
                },
            )
        }
        // OpenAI-compatible backends reach here only for Anthropic and Responses callers.
        other => (
            format!("{}/chat/completions", provider.endpoint),
            openai_body(
                ask,
                &*request.openai()?,
                model,
                other == ProviderType::OpenAI,
            ),
            Wire::OpenAiChat,
        ),
    };
    Ok((url, body, wire, None))
}

/// An OpenAI-format body for `model`: the caller's own bytes when the caller speaks OpenAI, else the
/// translated request (with `max_completion_tokens` for OpenAI itself, which refuses `max_tokens` on
/// its newer models).
fn openai_body(ask: &Ask<'_>, request: &Value, model: &str, completion_tokens: bool) -> Vec<u8> {
    if !ask.foreign_caller() {
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

/// The Vertex AI URL of a call to `model` of `provider`.
fn vertex_url(provider: &Provider, model: &str, stream: bool) -> Result<String, Failed> {
    let target = provider
        .vertex
        .as_ref()
        .ok_or_else(|| Failed::misconfigured(provider, "it has no Vertex AI project and region"))?;
    Ok(vertex::url(
        &provider.endpoint,
        &target.project,
        &target.region,
        model,
        stream,
    ))
}

fn gemini_base(endpoint: &str) -> String {
    if endpoint.ends_with("/v1beta") || endpoint.ends_with("/v1") {
        endpoint.to_string()
    } else {
        format!("{endpoint}/v1beta")
    }
}

/// Adds the credential: the provider's header for API keys, or a SigV4 signature for Bedrock keys.
pub(super) fn authenticate(
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
                Failed::misconfigured(provider, "its API key is not a valid header")
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
        HeaderValue::from_str(&host).map_err(|_| Failed::misconfigured(provider, "bad host"))?,
    );
    for (name, value) in signed {
        let mut v = HeaderValue::from_str(&value).map_err(|_| {
            Failed::misconfigured(provider, "its AWS credential is not a valid header")
        })?;
        v.set_sensitive(true);
        headers.insert(HeaderName::from_static(name), v);
    }
    Ok(())
}
