//! The spans of one sampled call: what is noted while it runs (`CallTrace`), and the OpenTelemetry
//! span data made from it when it ends — one server span for the call, one client span per upstream
//! attempt, named and attributed as the GenAI semantic conventions say
//! (open-telemetry/semantic-conventions-genai, `model/gen-ai/spans.yaml`, `gen_ai.inference.client`).
//! Nothing here is made for a call that is not sampled. Message content is recorded only for a
//! route that opted in (`Content`).

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use smallvec::SmallVec;
use tollgate_snapshot::{ObjectRef, ProviderType};

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
    /// Upstream attempts, in order; most calls make one, kept in place (no allocation of its own).
    pub attempts: SmallVec<[AttemptSpan; 1]>,
    /// Message content, when the route opted in (`spec.telemetry.captureContent`).
    pub content: Option<Box<Content>>,
    /// Requests made outside model attempts (REST passthrough, upstream MCP tool calls), in order.
    pub clients: Vec<ClientSpan>,
}

/// One request the call made to an upstream other than a model provider: a REST service, or an
/// upstream MCP server. Its client span carries the HTTP conventions' attributes, and for MCP the
/// MCP conventions' (`model/mcp/spans.yaml`, `mcp.client`).
pub struct ClientSpan {
    /// The client span's id (also the `traceparent` parent id sent upstream).
    pub span_id: [u8; 8],
    /// When it started.
    pub start: SystemTime,
    /// When it ended; a request whose answer is relayed ends with the call.
    pub end: Option<SystemTime>,
    /// `http.request.method`.
    pub method: &'static str,
    /// `server.address` and `server.port`.
    pub server: Option<(String, u16)>,
    /// `url.path`: the path alone, never the query (which may carry a secret).
    pub path: String,
    /// The upstream's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why it failed (`error.type`).
    pub error: Option<Cow<'static, str>>,
    /// For an upstream MCP call, what it was.
    pub mcp: Option<McpClient>,
}

/// An upstream MCP request as its client span describes it.
pub struct McpClient {
    /// `mcp.method.name`.
    pub method: &'static str,
    /// `gen_ai.tool.name` (the server's own name for it).
    pub tool: Option<String>,
    /// The JSON-RPC error code answered (`rpc.response.status_code`).
    pub code: Option<i32>,
}

impl ClientSpan {
    /// A request starting now to `server`, at `path`.
    pub fn new(method: &'static str, server: Option<(String, u16)>, path: String) -> Self {
        Self {
            span_id: fresh_span_id(),
            start: SystemTime::now(),
            end: None,
            method,
            server,
            path,
            status: None,
            error: None,
            mcp: None,
        }
    }

    /// Notes that it ended now, failed with `error` if given.
    pub fn finish(&mut self, error: Option<Cow<'static, str>>) {
        self.end = Some(SystemTime::now());
        self.error = error;
    }

    fn name(&self) -> Cow<'_, str> {
        match &self.mcp {
            Some(McpClient {
                method,
                tool: Some(tool),
                ..
            }) => Cow::Owned([method, " ", tool.as_str()].concat()),
            Some(mcp) => Cow::Borrowed(mcp.method),
            None => Cow::Borrowed(self.method),
        }
    }

    fn attrs<'a>(&'a self, sink: &mut impl SpanSink<'a>) {
        sink.str("http.request.method", self.method);
        sink.str("url.path", &self.path);
        if let Some((host, port)) = &self.server {
            sink.str("server.address", host);
            sink.int("server.port", i64::from(*port));
        }
        if let Some(status) = self.status {
            sink.int("http.response.status_code", i64::from(status));
        }
        if let Some(mcp) = &self.mcp {
            sink.str("mcp.method.name", mcp.method);
            if let Some(tool) = &mcp.tool {
                sink.str("gen_ai.tool.name", tool);
                sink.str("gen_ai.operation.name", "execute_tool");
            }
            if let Some(code) = mcp.code {
                sink.attr(
                    "rpc.response.status_code",
                    Attr::Str(Cow::Owned(code.to_string())),
                );
            }
            sink.str("network.transport", "tcp");
            sink.str("network.protocol.name", "http");
        }
        if let Some(error) = &self.error {
            sink.str("error.type", error);
        }
    }
}

/// A call's message content for a route that records it: the GenAI conventions' attributes as
/// JSON text, each at most `max_bytes`, read after the guardrails masked what they mask.
#[derive(Default)]
pub struct Content {
    /// Most bytes of each attribute.
    pub max_bytes: u32,
    /// `gen_ai.system_instructions`.
    pub system_instructions: Option<String>,
    /// `gen_ai.input.messages`.
    pub input_messages: Option<String>,
    /// `gen_ai.output.messages`, made from `answer` when the call ends.
    pub output_messages: Option<String>,
    /// The answer as it went to the caller, its first [`Content::ANSWER_LIMIT`] bytes.
    pub answer: Vec<u8>,
}

impl Content {
    /// The most answer bytes kept to read the output messages from.
    pub const ANSWER_LIMIT: usize = 1 << 20;

    /// Keeps a piece of the answer sent to the caller, up to the limit.
    pub fn keep_answer(&mut self, data: &[u8]) {
        let room = Self::ANSWER_LIMIT.saturating_sub(self.answer.len());
        self.answer.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn push<'a>(&'a self, sink: &mut impl SpanSink<'a>) {
        for (key, value) in [
            ("gen_ai.system_instructions", &self.system_instructions),
            ("gen_ai.input.messages", &self.input_messages),
            ("gen_ai.output.messages", &self.output_messages),
        ] {
            if let Some(v) = value {
                sink.str(key, v);
            }
        }
    }
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
    /// The choices the caller asked for (`n`), when given as a whole number.
    pub choice_count: Option<u64>,
}

impl GenAiRequest {
    /// How many finish reasons the answer holds: one per choice asked for in a chat (one when the
    /// caller named no number), none for other operations (embeddings, token counts).
    pub fn finish_reasons_expected(&self) -> usize {
        match self.operation {
            Some("chat") => self
                .choice_count
                .map_or(1, |n| usize::try_from(n).unwrap_or(usize::MAX).max(1)),
            _ => 0,
        }
    }
}

/// The answer's GenAI attributes, as far as the proxy read them.
#[derive(Default)]
pub struct GenAiResponse {
    /// `gen_ai.response.id`.
    pub id: Option<String>,
    /// `gen_ai.response.model`: the model sent upstream shared when the answer names the same.
    pub model: Option<Arc<str>>,
    /// `gen_ai.response.finish_reasons`: one for most answers, kept in place, and the reasons
    /// OpenAI names not copied.
    pub finish_reasons: SmallVec<[Cow<'static, str>; 1]>,
}

/// One upstream attempt.
pub struct AttemptSpan {
    /// The client span's id (also the `traceparent` parent id sent upstream).
    pub span_id: [u8; 8],
    /// When it started.
    pub start: SystemTime,
    /// The same moment on the monotonic clock, for a stream's time to first chunk (not read for
    /// other calls).
    pub started: Option<Instant>,
    /// When it failed; the answering attempt ends with the call.
    pub end: Option<SystemTime>,
    /// `gen_ai.provider.name`.
    pub provider_name: &'static str,
    /// The Provider object.
    pub provider: ObjectRef,
    /// The model sent upstream.
    pub model: Arc<str>,
    /// `server.address` and `server.port` of the request sent.
    pub server: Option<(Arc<str>, u16)>,
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
            attempts: SmallVec::new(),
            content: None,
            clients: Vec::new(),
        }
    }

    /// Notes an attempt starting at `provider`.
    pub fn start_attempt(
        &mut self,
        provider_type: ProviderType,
        provider: ObjectRef,
        model: Arc<str>,
    ) {
        self.attempts.push(AttemptSpan {
            span_id: fresh_span_id(),
            start: SystemTime::now(),
            started: self.request.stream.then(Instant::now),
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

    /// Notes a request to a REST service or an MCP server starting; the `traceparent` to send
    /// with it names its span.
    pub fn start_client(&mut self, span: ClientSpan) -> [u8; 55] {
        let traceparent = TraceParent {
            trace_id: self.trace_id,
            span_id: span.span_id,
            flags: 1,
        }
        .format();
        self.clients.push(span);
        traceparent
    }

    /// The request to a REST service or an MCP server under way, if any.
    pub fn client(&mut self) -> Option<&mut ClientSpan> {
        self.clients.last_mut()
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
    pub route: Option<&'a ObjectRef>,
    pub consumer: Option<&'a ObjectRef>,
    pub subscription: Option<&'a ObjectRef>,
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
    fn span_name(&self) -> Cow<'static, str> {
        match (self.method, self.name) {
            ("tools/call" | "prompts/get", Some(name)) => {
                Cow::Owned([self.method, " ", name].concat())
            }
            (method, _) => Cow::Borrowed(method),
        }
    }

    /// The conventions' attributes of the server span.
    fn push<'a>(&'a self, sink: &mut impl SpanSink<'a>) {
        sink.str("mcp.method.name", self.method);
        match (self.method, self.name) {
            ("tools/call", Some(name)) => {
                sink.str("gen_ai.tool.name", name);
                sink.str("gen_ai.operation.name", "execute_tool");
            }
            ("prompts/get", Some(name)) => sink.str("gen_ai.prompt.name", name),
            _ => {}
        }
        if let Some(version) = self.version {
            sink.str("mcp.protocol.version", version);
        }
        if let Some(id) = self.rpc_id {
            sink.str("jsonrpc.request.id", id);
        }
        if let Some(code) = self.code {
            sink.attr(
                "rpc.response.status_code",
                Attr::Str(Cow::Owned(code.to_string())),
            );
            sink.attr("error.type", Attr::Str(Cow::Owned(code.to_string())));
        } else if self.tool_error {
            sink.str("error.type", "tool_error");
        }
        sink.str("network.transport", "tcp");
        sink.str("network.protocol.name", "http");
    }

    /// Whether the answer is a server error by the conventions: -32603 or -32000 to -32099.
    fn failed(&self) -> bool {
        self.code
            .is_some_and(|c| c == -32603 || (-32099..=-32000).contains(&c))
    }
}

/// An attribute's value, borrowed from the call's trace and record where it can be.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// An array of strings.
    Strs(&'a [Cow<'static, str>]),
    /// A Kubernetes object's `namespace/name`, written without being joined first.
    Ref(&'a ObjectRef),
}

impl<'a> Attr<'a> {
    fn str(s: &'a str) -> Self {
        Attr::Str(Cow::Borrowed(s))
    }

    fn count(n: u64) -> Self {
        Attr::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

/// The kinds of span the proxy makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Server,
    Client,
}

/// A span's name: one text, or two joined by a space (`{operation} {model}`), kept in its pieces
/// until it is written.
#[derive(Clone, Debug, PartialEq)]
pub enum SpanName<'a> {
    One(Cow<'a, str>),
    Two(&'a str, &'a str),
}

impl SpanName<'_> {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            SpanName::One(s) => s.len(),
            SpanName::Two(a, b) => a.len() + 1 + b.len(),
        }
    }

    /// Appends its bytes to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            SpanName::One(s) => out.extend_from_slice(s.as_bytes()),
            SpanName::Two(a, b) => {
                out.extend_from_slice(a.as_bytes());
                out.push(b' ');
                out.extend_from_slice(b.as_bytes());
            }
        }
    }
}

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpanName::One(s) => f.write_str(s),
            SpanName::Two(a, b) => write!(f, "{a} {b}"),
        }
    }
}

impl PartialEq<&str> for SpanName<'_> {
    fn eq(&self, other: &&str) -> bool {
        match self {
            SpanName::One(s) => s == other,
            SpanName::Two(a, b) => {
                other.len() == a.len() + 1 + b.len()
                    && other.starts_with(a)
                    && other[a.len()..].starts_with(' ')
                    && other.ends_with(b)
            }
        }
    }
}

/// One finished span, as the OTLP encoder (`otlp`) writes it — or, for gRPC, as it becomes the
/// exporter crate's `SpanData` ([`SpanRecord::to_span_data`]).
pub struct SpanRecord<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    /// Whether the parent is the caller's span (in another process).
    pub parent_remote: bool,
    /// The caller's `tracestate`, as it came.
    pub trace_state: Option<&'a str>,
    pub kind: Kind,
    pub name: SpanName<'a>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attrs: Vec<(&'a str, Attr<'a>)>,
    /// The error status's description; `None`: status unset.
    pub error: Option<&'a str>,
}

/// Where [`each_span`] puts the spans of a call as it makes them: each begun (everything but its
/// attributes, `attrs` left empty), then its attributes one by one in order, then ended. A list of
/// [`SpanRecord`]s ([`spans`], for the exporter crate and the tests) or the spans' OTLP encoding
/// written straight away (`otlp::encode_call`), from the one description of what a span holds.
pub trait SpanSink<'a> {
    /// A span begins.
    fn begin(&mut self, span: SpanRecord<'a>);

    /// The span has the attribute `key: value`.
    fn attr(&mut self, key: &'a str, value: Attr<'a>);

    /// A string attribute.
    fn str(&mut self, key: &'a str, value: &'a str) {
        self.attr(key, Attr::str(value));
    }

    /// An integer attribute.
    fn int(&mut self, key: &'a str, value: i64) {
        self.attr(key, Attr::Int(value));
    }

    /// A count (an integer attribute, at most `i64::MAX`).
    fn count(&mut self, key: &'a str, value: u64) {
        self.attr(key, Attr::count(value));
    }

    /// A floating-point attribute.
    fn float(&mut self, key: &'a str, value: f64) {
        self.attr(key, Attr::Float(value));
    }

    /// Attributes the same for every call of a route or backend, in their order.
    fn group(&mut self, group: Group<'a>) {
        group.each(|key, value| self.attr(key, value));
    }

    /// The call's token counts and cost: the same attributes on the server span and on the
    /// answering attempt's.
    fn usage(&mut self, summary: &CallSummary<'_>)
    where
        Self: Sized,
    {
        push_usage(self, summary);
    }

    /// The span has all its attributes.
    fn end(&mut self);
}

/// The spans in a list.
impl<'a> SpanSink<'a> for Vec<SpanRecord<'a>> {
    fn begin(&mut self, mut span: SpanRecord<'a>) {
        span.attrs.reserve(24);
        self.push(span);
    }

    fn attr(&mut self, key: &'a str, value: Attr<'a>) {
        if let Some(span) = self.last_mut() {
            span.attrs.push((key, value));
        }
    }

    fn end(&mut self) {}
}

/// Attributes that are the same for every call of a route's endpoint, consumer and subscription,
/// or of an operation on a backend, kept together so that the OTLP encoder can copy them from bytes
/// encoded once (`otlp::Runs`) instead of writing each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Group<'a> {
    /// `http.request.method`, `http.route` when the endpoint is known, `tollgate.route`,
    /// `tollgate.consumer`, `tollgate.subscription`, `gen_ai.operation.name`,
    /// `gen_ai.request.model` (those present), `url.path`, `http.response.status_code` and
    /// `tollgate.retries`: the same for most calls of one route, endpoint, consumer and model.
    Names {
        method: &'static str,
        endpoint: Option<&'static str>,
        names: [Option<&'a ObjectRef>; 3],
        operation: Option<&'static str>,
        model: Option<&'a Arc<str>>,
        path: &'a str,
        status: u16,
        retries: u64,
    },
    /// `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`,
    /// `tollgate.provider`, `server.address` and `server.port` when known, and
    /// `http.response.status_code` when the upstream answered, then for the answer relayed
    /// `gen_ai.response.model` and `gen_ai.response.finish_reasons`: an attempt's operation and
    /// backend, and how it answered (the same for most calls to one backend).
    Backend {
        operation: &'static str,
        provider_name: &'static str,
        model: &'a Arc<str>,
        provider: &'a ObjectRef,
        server: Option<&'a (Arc<str>, u16)>,
        status: Option<u16>,
        response_model: Option<&'a Arc<str>>,
        finish_reasons: &'a [Cow<'static, str>],
    },
}

impl<'a> Group<'a> {
    /// The object names of [`Group::Names`].
    const NAME_KEYS: [&'static str; 3] = [
        "tollgate.route",
        "tollgate.consumer",
        "tollgate.subscription",
    ];

    /// Its attributes, in order.
    pub fn each(&self, mut attr: impl FnMut(&'static str, Attr<'a>)) {
        match *self {
            Group::Names {
                method,
                endpoint,
                names,
                operation,
                model,
                path,
                status,
                retries,
            } => {
                attr("http.request.method", Attr::str(method));
                if let Some(endpoint) = endpoint {
                    attr("http.route", Attr::str(endpoint));
                }
                for (key, name) in Self::NAME_KEYS.into_iter().zip(names) {
                    if let Some(name) = name {
                        attr(key, Attr::Ref(name));
                    }
                }
                if let Some(operation) = operation {
                    attr("gen_ai.operation.name", Attr::str(operation));
                }
                if let Some(model) = model {
                    attr("gen_ai.request.model", Attr::str(model));
                }
                attr("url.path", Attr::str(path));
                attr("http.response.status_code", Attr::Int(i64::from(status)));
                attr("tollgate.retries", Attr::count(retries));
            }
            Group::Backend {
                operation,
                provider_name,
                model,
                provider,
                server,
                status,
                response_model,
                finish_reasons,
            } => {
                attr("gen_ai.operation.name", Attr::str(operation));
                attr("gen_ai.provider.name", Attr::str(provider_name));
                attr("gen_ai.request.model", Attr::str(model));
                attr("tollgate.provider", Attr::Ref(provider));
                if let Some((host, port)) = server {
                    attr("server.address", Attr::str(host));
                    attr("server.port", Attr::Int(i64::from(*port)));
                }
                if let Some(status) = status {
                    attr("http.response.status_code", Attr::Int(i64::from(status)));
                }
                if let Some(model) = response_model {
                    attr("gen_ai.response.model", Attr::str(model));
                }
                if !finish_reasons.is_empty() {
                    attr("gen_ai.response.finish_reasons", Attr::Strs(finish_reasons));
                }
            }
        }
    }
}

impl<'a> SpanRecord<'a> {
    /// The same span as the exporter crate's data (for OTLP/gRPC).
    pub fn to_span_data(&self, scope: &InstrumentationScope) -> SpanData {
        let state = self
            .trace_state
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or(TraceState::NONE);
        let mut attributes = Vec::with_capacity(self.attrs.len());
        for (k, v) in &self.attrs {
            let value = match v {
                Attr::Str(s) => Value::from(s.to_string()),
                Attr::Ref(r) => Value::from(r.joined()),
                Attr::Int(i) => Value::I64(*i),
                Attr::Float(f) => Value::F64(*f),
                Attr::Bool(b) => Value::Bool(*b),
                Attr::Strs(v) => Value::Array(
                    v.iter()
                        .map(|s| opentelemetry::StringValue::from(s.to_string()))
                        .collect::<Vec<_>>()
                        .into(),
                ),
            };
            attributes.push(KeyValue::new(k.to_string(), value));
        }
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(self.trace_id),
                SpanId::from_bytes(self.span_id),
                TraceFlags::SAMPLED,
                false,
                state,
            ),
            parent_span_id: self.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: self.parent_remote,
            span_kind: match self.kind {
                Kind::Server => SpanKind::Server,
                Kind::Client => SpanKind::Client,
            },
            name: Cow::Owned(self.name.to_string()),
            start_time: self.start,
            end_time: self.end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: match self.error {
                Some(e) => Status::error(e.to_string()),
                None => Status::Unset,
            },
            instrumentation_scope: scope.clone(),
        }
    }
}

/// The call's spans: the server span, then one client span per attempt.
pub fn spans<'a>(trace: &'a CallTrace, summary: &'a CallSummary<'a>) -> Vec<SpanRecord<'a>> {
    spans_ended(trace, summary, SystemTime::now())
}

/// The call's spans, the call having ended at `end`.
pub fn spans_ended<'a>(
    trace: &'a CallTrace,
    summary: &'a CallSummary<'a>,
    end: SystemTime,
) -> Vec<SpanRecord<'a>> {
    let mut out = Vec::with_capacity(1 + trace.attempts.len() + trace.clients.len());
    each_span(trace, summary, end, &mut out);
    out
}

/// Makes the spans of the call that ended at `end` one at a time (the server span, then one client
/// span per attempt, then one per other upstream request) into `sink`.
pub fn each_span<'a>(
    trace: &'a CallTrace,
    summary: &'a CallSummary<'a>,
    end: SystemTime,
    sink: &mut impl SpanSink<'a>,
) {
    let request = &trace.request;
    let operation = request.operation.unwrap_or("chat");
    let record = |span_id, parent, kind, name, start, end, error| SpanRecord {
        trace_id: trace.trace_id,
        span_id,
        parent,
        parent_remote: false,
        trace_state: trace.tracestate.as_deref(),
        kind,
        name,
        start,
        end,
        attrs: Vec::new(),
        error,
    };

    let name = match (&summary.mcp, request.endpoint) {
        (Some(mcp), _) => SpanName::One(mcp.span_name()),
        (None, Some(endpoint)) => SpanName::Two(summary.method, endpoint),
        (None, None) => SpanName::One(Cow::Borrowed(summary.method)),
    };
    let error = if summary.status >= 500 {
        Some(summary.error_class.unwrap_or("server error"))
    } else if summary.mcp.as_ref().is_some_and(McpSpan::failed) {
        Some("JSON-RPC server error")
    } else {
        None
    };
    let mut server = record(
        trace.span_id,
        trace.parent,
        Kind::Server,
        name,
        trace.start,
        end,
        error,
    );
    server.parent_remote = trace.parent.is_some();
    sink.begin(server);
    sink.group(Group::Names {
        method: summary.method,
        endpoint: request.endpoint,
        names: [summary.route, summary.consumer, summary.subscription],
        operation: request.operation.filter(|_| summary.mcp.is_none()),
        model: request.model.as_ref(),
        path: summary.path,
        status: summary.status,
        retries: trace.attempts.len().saturating_sub(1) as u64,
    });
    sink.str("tollgate.request_id", summary.request_id);
    if let Some(cache) = summary.cache {
        sink.str("tollgate.cache", cache);
    }
    if let Some(mcp) = &summary.mcp {
        mcp.push(sink);
    } else if let Some(class) = summary.error_class {
        sink.str("error.type", class);
    }
    if request.operation.is_some() {
        sink.usage(summary);
    }
    // A call answered without an upstream attempt (a cache hit) carries its content here.
    if trace.attempts.is_empty()
        && let Some(content) = &trace.content
    {
        content.push(sink);
    }
    sink.end();

    let last = trace.attempts.len().saturating_sub(1);
    for (i, attempt) in trace.attempts.iter().enumerate() {
        let answered = i == last && summary.answered;
        let error = attempt
            .error
            .or(if answered { summary.error_class } else { None });
        sink.begin(record(
            attempt.span_id,
            Some(trace.span_id),
            Kind::Client,
            SpanName::Two(operation, &attempt.model),
            attempt.start,
            attempt.end.unwrap_or(end),
            error,
        ));
        sink.group(Group::Backend {
            operation,
            provider_name: attempt.provider_name,
            model: &attempt.model,
            provider: &attempt.provider,
            server: attempt.server.as_ref(),
            status: attempt.status,
            response_model: trace.response.model.as_ref().filter(|_| answered),
            finish_reasons: if answered {
                &trace.response.finish_reasons
            } else {
                &[]
            },
        });
        if request.stream {
            sink.attr("gen_ai.request.stream", Attr::Bool(true));
        }
        if let Some(max) = request.max_tokens {
            sink.count("gen_ai.request.max_tokens", max);
        }
        if let Some(t) = request.temperature {
            sink.float("gen_ai.request.temperature", t);
        }
        if let Some(n) = request.choice_count.filter(|&n| n != 1) {
            sink.count("gen_ai.request.choice.count", n);
        }
        if let Some(error) = error {
            sink.str("error.type", error);
        }
        if answered {
            let response = &trace.response;
            if let Some(id) = &response.id {
                sink.str("gen_ai.response.id", id);
            }
            sink.usage(summary);
            if request.stream
                && let (Some(first), Some(started)) = (summary.first_chunk_at, attempt.started)
            {
                sink.float(
                    "gen_ai.response.time_to_first_chunk",
                    first.saturating_duration_since(started).as_secs_f64(),
                );
            }
        }
        if i == last
            && let Some(content) = &trace.content
        {
            content.push(sink);
        }
        sink.end();
    }
    for span in &trace.clients {
        sink.begin(record(
            span.span_id,
            Some(trace.span_id),
            Kind::Client,
            SpanName::One(span.name()),
            span.start,
            span.end.unwrap_or(end),
            span.error.as_deref(),
        ));
        span.attrs(sink);
        sink.end();
    }
}

/// The usage attributes of [`SpanSink::usage`], one by one.
pub(super) fn push_usage<'a>(sink: &mut impl SpanSink<'a>, summary: &CallSummary<'_>) {
    sink.count("gen_ai.usage.input_tokens", summary.input_tokens);
    sink.count("gen_ai.usage.output_tokens", summary.output_tokens);
    if summary.cache_read_tokens > 0 {
        sink.count(
            "gen_ai.usage.cache_read.input_tokens",
            summary.cache_read_tokens,
        );
    }
    if summary.cache_write_tokens > 0 {
        sink.count(
            "gen_ai.usage.cache_creation.input_tokens",
            summary.cache_write_tokens,
        );
    }
    sink.float("tollgate.cost_usd", summary.cost_usd);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> CallSummary<'static> {
        CallSummary {
            method: "POST",
            path: "/r/mcp",
            request_id: "req-1",
            status: 200,
            route: None,
            consumer: None,
            subscription: None,
            cache: None,
            error_class: None,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cost_usd: 0.0,
            first_chunk_at: None,
            answered: false,
            mcp: None,
        }
    }

    fn attr<'a>(span: &'a SpanRecord<'_>, key: &str) -> Option<&'a Attr<'a>> {
        span.attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    #[test]
    fn a_chat_expects_a_finish_reason_per_choice_asked_for_and_other_operations_none() {
        let mut r = GenAiRequest {
            operation: Some("chat"),
            ..GenAiRequest::default()
        };
        assert_eq!(r.finish_reasons_expected(), 1);
        r.choice_count = Some(3);
        assert_eq!(r.finish_reasons_expected(), 3);
        r.choice_count = Some(0);
        assert_eq!(r.finish_reasons_expected(), 1);
        r.operation = Some("embeddings");
        assert_eq!(r.finish_reasons_expected(), 0);
    }

    #[test]
    fn an_upstream_mcp_error_is_a_failed_client_span_named_for_its_tool() {
        let mut trace = CallTrace::new(fresh_trace_id(), None, None);
        let mut span = ClientSpan::new("POST", Some(("mcp.internal".into(), 8443)), "/mcp".into());
        span.mcp = Some(McpClient {
            method: "tools/call",
            tool: Some("add".into()),
            code: None,
        });
        let parent = trace.start_client(span);
        let client = trace.client().unwrap();
        client.mcp.as_mut().unwrap().code = Some(-32603);
        client.finish(Some(Cow::Borrowed("-32603")));
        let id = trace.clients[0].span_id;
        // The `traceparent` sent upstream names the client span.
        assert_eq!(TraceParent::parse(&parent).map(|p| p.span_id), Some(id));

        let summary = summary();
        let spans = spans(&trace, &summary);
        assert_eq!(spans.len(), 2);
        let client = &spans[1];
        assert_eq!(client.kind, Kind::Client);
        assert_eq!(client.parent, Some(trace.span_id));
        assert_eq!(client.name, "tools/call add");
        assert_eq!(client.error, Some("-32603"));
        assert_eq!(
            attr(client, "mcp.method.name"),
            Some(&Attr::str("tools/call"))
        );
        assert_eq!(attr(client, "gen_ai.tool.name"), Some(&Attr::str("add")));
        assert_eq!(
            attr(client, "rpc.response.status_code"),
            Some(&Attr::str("-32603"))
        );
        assert_eq!(attr(client, "error.type"), Some(&Attr::str("-32603")));
        assert_eq!(attr(client, "server.port"), Some(&Attr::Int(8443)));
        assert_eq!(attr(client, "http.response.status_code"), None);
    }

    #[test]
    fn content_goes_on_the_last_attempt_or_on_the_server_span_without_one() {
        let mut trace = CallTrace::new(fresh_trace_id(), None, None);
        trace.content = Some(Box::new(Content {
            max_bytes: 4096,
            input_messages: Some("[]".into()),
            ..Content::default()
        }));
        let summary = summary();
        let alone = spans(&trace, &summary);
        assert!(attr(&alone[0], "gen_ai.input.messages").is_some());
        drop(alone);
        for _ in 0..2 {
            trace.start_attempt(ProviderType::Fake, ObjectRef::new("team", "p"), "m".into());
        }
        let spans = spans(&trace, &summary);
        let with: Vec<bool> = spans
            .iter()
            .map(|s| attr(s, "gen_ai.input.messages").is_some())
            .collect();
        assert_eq!(with, [false, false, true]);
    }
}
