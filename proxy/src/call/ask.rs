//! What the client asked for, read once and shared by every attempt at a backend.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::llm::genai_content;
use crate::llm::openai::RequestDoc;

/// The request id header, sent upstream and back to the client (a `HeaderName` constant: inserting
/// with a `&str` name checks and converts it on every call).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Which model endpoint was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/messages`: Anthropic's format (see `llm::messages`).
    Messages,
    /// `/prompts/<name>`: a rendered template, sent as a chat call and answered in the prompt API's
    /// format (see `llm::prompt`); `json_output` when the answer's text is parsed as JSON.
    Prompt {
        /// Whether the prompt answers with JSON.
        json_output: bool,
    },
    /// `/v1/responses`: OpenAI's Responses API, stateless unless passed through (see `llm::responses`).
    Responses,
    /// `/v1/messages/count_tokens`: Anthropic's token counting, passed to Anthropic backends and
    /// estimated for the others.
    CountTokens,
}

impl Endpoint {
    /// `gen_ai.operation.name` of a call to it.
    pub fn operation_name(self) -> &'static str {
        match self {
            Self::Chat | Self::Messages | Self::Prompt { .. } | Self::Responses => "chat",
            Self::Embeddings => "embeddings",
            Self::CountTokens => "count_tokens",
        }
    }

    /// The caller's path (after the route's prefix), as a template.
    pub fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Messages => "/v1/messages",
            Self::Prompt { .. } => "/prompts/{name}",
            Self::Responses => "/v1/responses",
            Self::CountTokens => "/v1/messages/count_tokens",
        }
    }

    /// The format of its messages, for the endpoints whose content a route may record.
    pub fn content_format(self) -> Option<genai_content::Format> {
        match self {
            Self::Chat => Some(genai_content::Format::Chat),
            Self::Messages => Some(genai_content::Format::Messages),
            Self::Responses => Some(genai_content::Format::Responses),
            Self::Prompt { .. } => Some(genai_content::Format::Prompt),
            Self::Embeddings | Self::CountTokens => None,
        }
    }

    /// Index of its path in [`crate::upstream::OPENAI_PATHS`].
    pub(super) fn upstream_path(self) -> usize {
        match self {
            Self::Chat | Self::Prompt { .. } => 0,
            Self::Embeddings => 1,
            Self::Messages | Self::CountTokens => 2,
            Self::Responses => 3,
        }
    }
}

/// What the client asked for, parsed once and shared by every attempt.
pub(super) struct Ask<'a> {
    pub(super) endpoint: Endpoint,
    pub(super) doc: RequestDoc<'a>,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
    /// The whole request body, for translation into other providers' formats.
    pub(super) body: &'a Bytes,
    /// The caller's Anthropic headers, forwarded when its request passes through to Anthropic.
    pub(super) anthropic_headers: AnthropicHeaders,
}

/// `anthropic-version` and `anthropic-beta` as the caller sent them.
#[derive(Default)]
pub(super) struct AnthropicHeaders {
    pub(super) version: Option<HeaderValue>,
    pub(super) beta: Option<HeaderValue>,
}

/// `anthropic-version`.
pub(super) const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
/// `anthropic-beta`.
pub(super) const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

impl AnthropicHeaders {
    /// The headers of a caller's request.
    pub(super) fn of(headers: &HeaderMap) -> Self {
        Self {
            version: headers.get(ANTHROPIC_VERSION).cloned(),
            beta: headers.get(ANTHROPIC_BETA).cloned(),
        }
    }
}

impl Ask<'_> {
    /// Whether the caller speaks Anthropic's Messages format.
    pub(super) fn anthropic_caller(&self) -> bool {
        matches!(self.endpoint, Endpoint::Messages | Endpoint::CountTokens)
    }

    /// Whether the caller speaks OpenAI's Responses format.
    pub(super) fn responses_caller(&self) -> bool {
        self.endpoint == Endpoint::Responses
    }

    /// Whether the caller's request is not a chat request and must be translated into one for every
    /// backend that does not speak the caller's own format.
    pub(super) fn foreign_caller(&self) -> bool {
        matches!(
            self.endpoint,
            Endpoint::Messages | Endpoint::Responses | Endpoint::CountTokens
        )
    }

    /// The settings a Responses caller's `response` objects repeat back.
    pub(super) fn echo(&self) -> crate::llm::responses::Echo {
        crate::llm::responses::Echo::read(&self.doc)
    }

    /// Whether the caller called a prompt API (and its answer is always translated).
    pub(super) fn prompt_caller(&self) -> bool {
        matches!(self.endpoint, Endpoint::Prompt { .. })
    }

    /// The body for an OpenAI-compatible upstream serving `upstream_model`: the client's own bytes
    /// when nothing needs to change (no copy), else re-encoded with the model replaced and, for
    /// streams, usage requested.
    pub(super) fn openai_body(&self, upstream_model: &str) -> Bytes {
        if !self.stream && self.doc.only_model_is(upstream_model) {
            return self.body.clone();
        }
        Bytes::from(self.doc.encode_for_upstream(upstream_model, self.stream))
    }
}
