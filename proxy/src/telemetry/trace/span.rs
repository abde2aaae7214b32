//! The spans of one sampled call: what is noted while it runs (`CallTrace`), and the OpenTelemetry
//! span data made from it when it ends — one server span for the call, one client span per upstream
//! attempt, named and attributed as the GenAI semantic conventions say
//! (open-telemetry/semantic-conventions-genai, `model/gen-ai/spans.yaml`, `gen_ai.inference.client`).
//! Nothing here is made for a call that is not sampled. Message content is never recorded.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use tollgate_snapshot::ProviderType;

use super::context::TraceParent;

/// A sampled call's trace as it runs.
pub struct CallTrace {
    /// The caller's trace id, or a fresh one.
    pub trace_id: [u8; 16],
    /// The server span's id.
    pub span_id: [u8; 8],
    /// The caller's span, when it sent a `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// The caller's `tracestate`, passed on unchanged.
    pub tracestate: Option<String>,
    /// When the call arrived.
    pub start: SystemTime,
    /// What the caller asked for.
    pub request: GenAiRequest,
    /// What the answering backend said about its answer.
    pub response: GenAiResponse,
    /// Upstream attempts, in order.
    pub attempts: Vec<AttemptSpan>,
}

/// The request's GenAI attributes (parameters, never content).
#[derive(Default)]
pub struct GenAiRequest {
    /// `gen_ai.operation.name`: `chat`, `embeddings`, …
    pub operation: Option<&'static str>,
    /// The endpoint the caller used, e.g. `/v1/chat/completions`.
    pub endpoint: Option<&'static str>,
    /// The model the caller named.
    pub model: Option<Arc<str>>,
    /// Whether the caller asked for a stream.
    pub stream: bool,
    /// The most output tokens the caller allows.
    pub max_tokens: Option<u64>,
    /// The caller's temperature.
    pub temperature: Option<f64>,
}

/// The answer's GenAI attributes, as far as the proxy read them.
#[derive(Default)]
pub struct GenAiResponse {
    /// `gen_ai.response.id`.
    pub id: Option<String>,
    /// `gen_ai.response.model`.
    pub model: Option<String>,
    /// `gen_ai.response.finish_reasons`.
    pub finish_reasons: Vec<String>,
}

/// One upstream attempt.
pub struct AttemptSpan {
    /// The client span's id (also the `traceparent` parent id sent upstream).
    pub span_id: [u8; 8],
    /// When it started.
    pub start: SystemTime,
    /// The same moment on the monotonic clock (for time to first chunk).
    pub started: Instant,
    /// When it failed; the answering attempt ends with the call.
    pub end: Option<SystemTime>,
    /// `gen_ai.provider.name`.
    pub provider_name: &'static str,
    /// The Provider object, `namespace/name`.
    pub provider: String,
    /// The model sent upstream.
    pub model: Arc<str>,
    /// `server.address` and `server.port` of the request sent.
    pub server: Option<(String, u16)>,
    /// The upstream's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why the attempt failed (`error.type`).
    pub error: Option<&'static str>,
}

impl CallTrace {
    /// A sampled call's trace: the caller's trace continued, or a new one.
    pub fn new(
        trace_id: [u8; 16],
        parent: Option<&TraceParent>,
        tracestate: Option<String>,
    ) -> Self {
        Self {
            trace_id,
            span_id: fresh_span_id(),
            parent: parent.map(|p| p.span_id),
            tracestate: tracestate.filter(|_| parent.is_some()),
            start: SystemTime::now(),
            request: GenAiRequest::default(),
            response: GenAiResponse::default(),
            attempts: Vec::new(),
        }
    }

    /// Notes an attempt starting at `provider`.
    pub fn start_attempt(
        &mut self,
        provider_type: ProviderType,
        provider: String,
        model: Arc<str>,
    ) {
        self.attempts.push(AttemptSpan {
            span_id: fresh_span_id(),
            start: SystemTime::now(),
            started: Instant::now(),
            end: None,
            provider_name: provider_name(provider_type),
            provider,
            model,
            server: None,
            status: None,
            error: None,
        });
    }

    /// The attempt under way, if any.
    pub fn attempt(&mut self) -> Option<&mut AttemptSpan> {
        self.attempts.last_mut()
    }

    /// The `traceparent` for the request of the attempt under way (or, without one, of the server
    /// span): our span as the upstream's parent, sampled.
    pub fn traceparent(&self) -> [u8; 55] {
        TraceParent {
            trace_id: self.trace_id,
            span_id: self.attempts.last().map_or(self.span_id, |a| a.span_id),
            flags: 1,
        }
        .format()
    }
}

/// What the call record knows when the call ends.
pub struct CallSummary<'a> {
    pub method: &'static str,
    pub path: &'a str,
    pub request_id: &'a str,
    pub status: u16,
    pub route: Option<String>,
    pub consumer: Option<String>,
    pub subscription: Option<String>,
    pub cache: Option<&'static str>,
    pub error_class: Option<&'static str>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
    /// When the first chunk went to the caller (streams).
    pub first_chunk_at: Option<Instant>,
    /// Whether the last attempt answered (its span then carries the usage and the answer's fields).
    pub answered: bool,
    /// What an MCP call was, for the MCP conventions' server span (`None` for other calls).
    pub mcp: Option<McpSpan<'a>>,
}

/// An MCP call as its server span describes it (open-telemetry/semantic-conventions-genai,
/// `model/mcp/spans.yaml`, `mcp.server`).
pub struct McpSpan<'a> {
    /// `mcp.method.name`.
    pub method: &'static str,
    /// The tool (`tools/call`) or prompt (`prompts/get`) named.
    pub name: Option<&'a str>,
    /// `mcp.protocol.version`, once known.
    pub version: Option<&'static str>,
    /// The JSON-RPC error code answered, if any.
    pub code: Option<i32>,
    /// `jsonrpc.request.id`.
    pub rpc_id: Option<&'a str>,
    /// Whether the tool ran and reported an error (`isError`).
    pub tool_error: bool,
}

impl McpSpan<'_> {
    /// The span's name: `{method} {tool or prompt}`, or the method alone.
    fn span_name(&self) -> String {
        match (self.method, self.name) {
            ("tools/call" | "prompts/get", Some(name)) => format!("{} {name}", self.method),
            (method, _) => method.to_string(),
        }
    }

    /// The conventions' attributes of the server span.
    fn push(&self, attrs: &mut Vec<KeyValue>) {
        attrs.push(KeyValue::new("mcp.method.name", self.method));
        match (self.method, self.name) {
            ("tools/call", Some(name)) => {
                attrs.push(KeyValue::new("gen_ai.tool.name", name.to_string()));
                attrs.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
            }
            ("prompts/get", Some(name)) => {
                attrs.push(KeyValue::new("gen_ai.prompt.name", name.to_string()))
            }
            _ => {}
        }
        if let Some(version) = self.version {
            attrs.push(KeyValue::new("mcp.protocol.version", version));
        }
        if let Some(id) = self.rpc_id {
            attrs.push(KeyValue::new("jsonrpc.request.id", id.to_string()));
        }
        if let Some(code) = self.code {
            attrs.push(KeyValue::new("rpc.response.status_code", code.to_string()));
            attrs.push(KeyValue::new("error.type", code.to_string()));
        } else if self.tool_error {
            attrs.push(KeyValue::new("error.type", "tool_error"));
        }
        attrs.push(KeyValue::new("network.transport", "tcp"));
        attrs.push(KeyValue::new("network.protocol.name", "http"));
    }

    /// Whether the answer is a server error by the conventions: -32603 or -32000 to -32099.
    fn failed(&self) -> bool {
        self.code
            .is_some_and(|c| c == -32603 || (-32099..=-32000).contains(&c))
    }
}

/// The call's spans: the server span, then one client span per attempt.
pub fn spans(
    trace: CallTrace,
    summary: &CallSummary<'_>,
    scope: &InstrumentationScope,
) -> Vec<SpanData> {
    let end = SystemTime::now();
    let trace_id = TraceId::from_bytes(trace.trace_id);
    let state = trace
        .tracestate
        .as_deref()
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or(TraceState::NONE);
    let context = |span: [u8; 8]| {
        SpanContext::new(
            trace_id,
            SpanId::from_bytes(span),
            TraceFlags::SAMPLED,
            false,
            state.clone(),
        )
    };
    let request = &trace.request;
    let operation = request.operation.unwrap_or("chat");
    let mut out = Vec::with_capacity(1 + trace.attempts.len());

    let mut attrs = Vec::with_capacity(20);
    attrs.push(KeyValue::new("http.request.method", summary.method));
    attrs.push(KeyValue::new("url.path", summary.path.to_string()));
    attrs.push(KeyValue::new(
        "http.response.status_code",
        i64::from(summary.status),
    ));
    attrs.push(KeyValue::new(
        "tollgate.request_id",
        summary.request_id.to_string(),
    ));
    if let Some(endpoint) = request.endpoint {
        attrs.push(KeyValue::new("http.route", endpoint));
    }
    push_opt(&mut attrs, "tollgate.route", summary.route.clone());
    push_opt(&mut attrs, "tollgate.consumer", summary.consumer.clone());
    push_opt(
        &mut attrs,
        "tollgate.subscription",
        summary.subscription.clone(),
    );
    if let Some(cache) = summary.cache {
        attrs.push(KeyValue::new("tollgate.cache", cache));
    }
    if let Some(mcp) = &summary.mcp {
        mcp.push(&mut attrs);
    } else {
        if let Some(class) = summary.error_class {
            attrs.push(KeyValue::new("error.type", class));
        }
        if request.operation.is_some() {
            attrs.push(KeyValue::new("gen_ai.operation.name", operation));
        }
    }
    if let Some(model) = &request.model {
        attrs.push(KeyValue::new("gen_ai.request.model", model.to_string()));
    }
    if request.operation.is_some() {
        push_usage(&mut attrs, summary);
    }
    attrs.push(KeyValue::new(
        "tollgate.retries",
        trace.attempts.len().saturating_sub(1) as i64,
    ));
    let name = match (&summary.mcp, request.endpoint) {
        (Some(mcp), _) => Cow::Owned(mcp.span_name()),
        (None, Some(endpoint)) => Cow::Owned(format!("{} {endpoint}", summary.method)),
        (None, None) => Cow::Borrowed(summary.method),
    };
    out.push(span_data(
        context(trace.span_id),
        trace.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        trace.parent.is_some(),
        SpanKind::Server,
        name,
        (trace.start, end),
        attrs,
        if summary.status >= 500 {
            Status::error(summary.error_class.unwrap_or("server error"))
        } else if summary.mcp.as_ref().is_some_and(McpSpan::failed) {
            Status::error("JSON-RPC server error")
        } else {
            Status::Unset
        },
        scope,
    ));

    let last = trace.attempts.len().saturating_sub(1);
    for (i, attempt) in trace.attempts.iter().enumerate() {
        let answered = i == last && summary.answered;
        let mut attrs = Vec::with_capacity(20);
        attrs.push(KeyValue::new("gen_ai.operation.name", operation));
        attrs.push(KeyValue::new("gen_ai.provider.name", attempt.provider_name));
        attrs.push(KeyValue::new(
            "gen_ai.request.model",
            attempt.model.to_string(),
        ));
        attrs.push(KeyValue::new("tollgate.provider", attempt.provider.clone()));
        if let Some((host, port)) = &attempt.server {
            attrs.push(KeyValue::new("server.address", host.clone()));
            attrs.push(KeyValue::new("server.port", i64::from(*port)));
        }
        if request.stream {
            attrs.push(KeyValue::new("gen_ai.request.stream", true));
        }
        if let Some(max) = request.max_tokens {
            attrs.push(KeyValue::new(
                "gen_ai.request.max_tokens",
                i64::try_from(max).unwrap_or(i64::MAX),
            ));
        }
        if let Some(t) = request.temperature {
            attrs.push(KeyValue::new("gen_ai.request.temperature", t));
        }
        if let Some(status) = attempt.status {
            attrs.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        let error = attempt
            .error
            .or(if answered { summary.error_class } else { None });
        if let Some(error) = error {
            attrs.push(KeyValue::new("error.type", error));
        }
        if answered {
            let response = &trace.response;
            push_opt(&mut attrs, "gen_ai.response.id", response.id.clone());
            push_opt(&mut attrs, "gen_ai.response.model", response.model.clone());
            if !response.finish_reasons.is_empty() {
                let reasons: Vec<opentelemetry::StringValue> = response
                    .finish_reasons
                    .iter()
                    .map(|r| r.clone().into())
                    .collect();
                attrs.push(KeyValue::new(
                    "gen_ai.response.finish_reasons",
                    Value::Array(reasons.into()),
                ));
            }
            push_usage(&mut attrs, summary);
            if request.stream
                && let Some(first) = summary.first_chunk_at
            {
                attrs.push(KeyValue::new(
                    "gen_ai.response.time_to_first_chunk",
                    first
                        .saturating_duration_since(attempt.started)
                        .as_secs_f64(),
                ));
            }
        }
        let model: &str = &attempt.model;
        out.push(span_data(
            context(attempt.span_id),
            SpanId::from_bytes(trace.span_id),
            false,
            SpanKind::Client,
            Cow::Owned(format!("{operation} {model}")),
            (attempt.start, attempt.end.unwrap_or(end)),
            attrs,
            match error {
                Some(e) => Status::error(e),
                None => Status::Unset,
            },
            scope,
        ));
    }
    out
}

fn push_usage(attrs: &mut Vec<KeyValue>, summary: &CallSummary<'_>) {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    attrs.push(KeyValue::new(
        "gen_ai.usage.input_tokens",
        n(summary.input_tokens),
    ));
    attrs.push(KeyValue::new(
        "gen_ai.usage.output_tokens",
        n(summary.output_tokens),
    ));
    if summary.cache_read_tokens > 0 {
        attrs.push(KeyValue::new(
            "gen_ai.usage.cache_read.input_tokens",
            n(summary.cache_read_tokens),
        ));
    }
    if summary.cache_write_tokens > 0 {
        attrs.push(KeyValue::new(
            "gen_ai.usage.cache_creation.input_tokens",
            n(summary.cache_write_tokens),
        ));
    }
    attrs.push(KeyValue::new("tollgate.cost_usd", summary.cost_usd));
}

fn push_opt(attrs: &mut Vec<KeyValue>, key: &'static str, value: Option<String>) {
    if let Some(v) = value {
        attrs.push(KeyValue::new(key, v));
    }
}

#[allow(clippy::too_many_arguments)]
fn span_data(
    span_context: SpanContext,
    parent_span_id: SpanId,
    parent_span_is_remote: bool,
    span_kind: SpanKind,
    name: Cow<'static, str>,
    (start_time, end_time): (SystemTime, SystemTime),
    attributes: Vec<KeyValue>,
    status: Status,
    scope: &InstrumentationScope,
) -> SpanData {
    SpanData {
        span_context,
        parent_span_id,
        parent_span_is_remote,
        span_kind,
        name,
        start_time,
        end_time,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// `gen_ai.provider.name`: the conventions' well-known values where there is one.
pub fn provider_name(t: ProviderType) -> &'static str {
    match t {
        ProviderType::OpenAI => "openai",
        ProviderType::AzureOpenAI => "azure.ai.openai",
        ProviderType::Anthropic => "anthropic",
        ProviderType::Gemini => "gcp.gemini",
        ProviderType::VertexAi => "gcp.vertex_ai",
        ProviderType::Bedrock => "aws.bedrock",
        ProviderType::Mistral => "mistral_ai",
        ProviderType::Groq => "groq",
        ProviderType::DeepSeek => "deepseek",
        ProviderType::XAi => "x_ai",
        ProviderType::Cohere => "cohere",
        ProviderType::Together => "together_ai",
        ProviderType::Fireworks => "fireworks_ai",
        ProviderType::OpenRouter => "openrouter",
        ProviderType::Ollama => "ollama",
        ProviderType::Vllm => "vllm",
        ProviderType::OpenAICompatible => "openai_compatible",
        ProviderType::Fake => "tollgate.fake",
    }
}

/// A random trace id (never all zeros).
pub fn fresh_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// A random span id (never all zeros).
fn fresh_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}
