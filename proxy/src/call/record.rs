//! The record of one call: created when a request arrives, it travels with the call into the response
//! body when there is one. Whatever ends the call (the body finishing, the client going away, the
//! handler being dropped), its `Drop` settles the limiter's grant and writes the access-log line, the
//! metrics and the usage tally, so no path can skip or double them.

use std::sync::Arc;
use std::time::Instant;

use tollgate_snapshot::{ConsumerIdx, GuardrailAction, Price, ProviderIdx, RouteIdx, Snapshot};

use super::ask::Endpoint;
use crate::clock;
use crate::guard::StreamFormat;
use crate::llm::Usage;
use crate::llm::genai_content::{self, Format};
use crate::telemetry::metrics::{CallSample, SeriesOf};
use crate::telemetry::otlp::GenAiCall;
use crate::telemetry::trace::{
    Begun, CallSummary, CallTrace, ClientSpan, Content, McpSpan, TRACEPARENT, TRACESTATE,
    TraceParent, provider_name, tracestate_ok,
};
use crate::telemetry::{AccessLine, Recorder, Saved};

/// Which backend answered.
#[derive(Clone, Debug)]
pub struct Served {
    /// Provider index in the call's snapshot.
    pub provider: ProviderIdx,
    /// Model name sent upstream (the snapshot's string, shared).
    pub model: Arc<str>,
    /// Price of that model there.
    pub price: Price,
}

/// What an MCP JSON-RPC call was, for its access-log line and metrics.
#[derive(Clone, Debug, Default)]
pub struct McpNote {
    /// The JSON-RPC method, one of the MCP methods served (else `other`).
    pub method: &'static str,
    /// The tool or prompt named, when the method names one the route has.
    pub name: Option<String>,
    /// `ok`, `tool_error` (the tool ran and failed), `refused` (key, subscription, limits),
    /// `invalid` (a malformed or mismatched request) or `error`.
    pub outcome: &'static str,
    /// The protocol revision the request spoke, once known.
    pub version: Option<&'static str>,
    /// The JSON-RPC error code answered, if the answer is an error.
    pub code: Option<i32>,
    /// The request's JSON-RPC id as text, kept only for a sampled call's span.
    pub rpc_id: Option<String>,
}

/// A `traceparent` and, when there is one, a `tracestate` header value.
pub type TraceHeaders = (http::HeaderValue, Option<http::HeaderValue>);

/// The W3C trace context headers, parsed once.
pub(crate) const TRACEPARENT_HEADER: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);
pub(crate) const TRACESTATE_HEADER: http::HeaderName = http::HeaderName::from_static(TRACESTATE);

/// Puts `trace` into `headers`.
pub(crate) fn insert_trace(headers: &mut http::HeaderMap, (parent, state): TraceHeaders) {
    headers.insert(TRACEPARENT_HEADER, parent);
    if let Some(state) = state {
        headers.insert(TRACESTATE_HEADER, state);
    }
}

/// One call in progress. Dropping it writes its record.
pub struct Call {
    recorder: Arc<Recorder>,
    started: Instant,
    started_unix_ms: i64,
    /// Request id (sent upstream and back in `x-request-id`): visible ASCII.
    pub request_id: http::HeaderValue,
    /// HTTP method.
    pub method: &'static str,
    /// Request path (truncated).
    pub path: String,
    /// The snapshot the call is served from.
    pub snapshot: Option<Arc<Snapshot>>,
    /// Matched route.
    pub route: Option<RouteIdx>,
    /// Authenticated consumer.
    pub consumer: Option<ConsumerIdx>,
    /// `model` from the request body, when the route does not serve it (when it does, `model` says
    /// which of the route's models it is, and its name is the snapshot's).
    pub model_requested: Option<String>,
    /// Index of the requested model among the route's models, when the route serves it (only then
    /// does it become a metric label).
    pub model: Option<u32>,
    /// Index of the called prompt API among the route's prompts.
    pub prompt: Option<u16>,
    /// Backend that answered.
    pub served: Option<Served>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// HTTP status sent; 0 until a response exists.
    pub status: u16,
    /// Tokens used, once known.
    pub usage: Option<Usage>,
    /// When the first body chunk reached the client (streams).
    pub first_chunk_at: Option<Instant>,
    /// Backends tried after the first.
    pub retries: u32,
    /// Why the call failed, if it did.
    pub error_class: Option<&'static str>,
    /// The limiter's claim, settled with the real usage and cost when the call ends.
    pub grant: Option<crate::limits::Grant>,
    /// Which key of the provider's pool the current attempt uses.
    pub key: Option<usize>,
    /// The HTTP/1.1 connection carrying the current attempt's answer, given back to its pool when
    /// the call ends (or the next attempt starts).
    pub upstream: Option<crate::upstream::Checkin>,
    /// What the response cache did: `hit`, `miss` or `bypass`; `None` where the route has no cache.
    pub cache: Option<&'static str>,
    /// On a cache hit, the tokens and cost of the call that made the stored answer.
    pub saved: Option<Saved>,
    /// For a REST passthrough call, the index of its operation in the route's REST service.
    pub rest_operation: Option<u32>,
    /// The call's trace, when it is sampled: its spans are made when the call ends.
    pub trace: Option<Box<CallTrace>>,
    /// The caller's `traceparent` and `tracestate`, passed upstream unchanged when the call is not
    /// recorded.
    pub trace_headers: Option<Box<TraceHeaders>>,
    /// Guardrail rules that matched and what they did (`mask`, `reject`, `monitor`), once each.
    pub guardrails: Vec<(Arc<str>, &'static str)>,
    /// For a call to the MCP endpoint, what it was.
    pub mcp: Option<Box<McpNote>>,
    /// For a model call, its `gen_ai.operation.name` (`chat`, `embeddings`, …).
    pub operation: Option<&'static str>,
}

impl Call {
    /// Whether this call is sampled for tracing (its spans will be made).
    pub fn traced(&self) -> bool {
        self.trace.is_some()
    }

    /// The W3C trace context (`traceparent`, `tracestate`) for a request the call makes outside a
    /// model attempt (to an upstream MCP server): the call's own span as the parent when it is
    /// recorded, else the caller's headers as they came, else none.
    pub fn outgoing_trace(&self) -> Option<TraceHeaders> {
        match self.trace.as_deref() {
            Some(t) => Some((
                http::HeaderValue::from_bytes(&t.traceparent()).expect("hex digits and dashes"),
                t.tracestate
                    .as_deref()
                    .and_then(|s| http::HeaderValue::from_str(s).ok()),
            )),
            None => self.trace_headers.as_deref().cloned(),
        }
    }

    /// Starts the client span of a request to a REST service or an MCP server when the call is
    /// recorded, and gives the trace context to send with it: that span as the parent; when the
    /// call is not recorded, the caller's headers as they came, else none.
    pub fn start_client(&mut self, span: impl FnOnce() -> ClientSpan) -> Option<TraceHeaders> {
        match self.trace.as_deref_mut() {
            Some(t) => {
                let parent = t.start_client(span());
                Some((
                    http::HeaderValue::from_bytes(&parent).expect("hex digits and dashes"),
                    t.tracestate
                        .as_deref()
                        .and_then(|s| http::HeaderValue::from_str(s).ok()),
                ))
            }
            None => self.trace_headers.as_deref().cloned(),
        }
    }

    /// The client span of the request to a REST service or an MCP server under way, when the call
    /// is recorded.
    pub fn client_span(&mut self) -> Option<&mut ClientSpan> {
        self.trace.as_deref_mut().and_then(CallTrace::client)
    }

    /// Starts recording a call.
    pub fn start(
        recorder: Arc<Recorder>,
        request_id: http::HeaderValue,
        method: &http::Method,
        path: &str,
    ) -> Self {
        recorder.metrics.call_started();
        let path = if path.len() > 256 {
            let mut end = 256;
            while !path.is_char_boundary(end) {
                end -= 1;
            }
            path[..end].to_string()
        } else {
            path.to_string()
        };
        Self {
            recorder,
            started: Instant::now(),
            started_unix_ms: clock::now_unix_ms(),
            request_id,
            method: method_name(method),
            path,
            snapshot: None,
            route: None,
            consumer: None,
            model_requested: None,
            model: None,
            prompt: None,
            served: None,
            stream: false,
            status: 0,
            usage: None,
            first_chunk_at: None,
            retries: 0,
            error_class: None,
            grant: None,
            key: None,
            upstream: None,
            cache: None,
            saved: None,
            rest_operation: None,
            trace: None,
            trace_headers: None,
            guardrails: Vec::new(),
            mcp: None,
            operation: None,
        }
    }

    /// Reads the caller's W3C trace context: a sampled call records its trace (continuing the
    /// caller's, or starting one); otherwise a valid `traceparent` (and `tracestate`) is passed on.
    pub fn begin_trace(&mut self, headers: &http::HeaderMap) {
        // By `HeaderName`: a `&str` name would be parsed again on every call.
        let given = headers.get(&TRACEPARENT_HEADER);
        let parent = given.and_then(|v| TraceParent::parse(v.as_bytes()));
        let state = parent
            .and_then(|_| headers.get(&TRACESTATE_HEADER))
            .filter(|v| tracestate_ok(v.as_bytes()));
        if let Some(tracer) = &self.recorder.traces
            && let Begun::Recorded(trace) =
                tracer.begin(parent.as_ref(), state.map(|v| v.as_bytes()))
        {
            self.trace = Some(trace);
            return;
        }
        if let (Some(given), Some(_)) = (given, parent) {
            self.trace_headers = Some(Box::new((given.clone(), state.cloned())));
        }
    }

    /// When the call started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Notes the first chunk sent to the client, once.
    pub fn mark_first_chunk(&mut self) {
        if self.first_chunk_at.is_none() {
            self.first_chunk_at = Some(Instant::now());
        }
    }

    /// Notes something a guardrail rule did that is not a text match (a moderation service that
    /// failed: `fail_open`, `fail_closed`), once per rule and action.
    pub fn note_guardrail(&mut self, rule: &Arc<str>, action: &'static str) {
        if !self
            .guardrails
            .iter()
            .any(|(r, a)| r == rule && *a == action)
        {
            self.guardrails.push((Arc::clone(rule), action));
        }
    }

    /// Notes what guardrail rules did, once per rule and action.
    pub fn note_guardrails(&mut self, decisions: &[crate::guard::Decision]) {
        if self.guardrails.is_empty() {
            self.guardrails.reserve_exact(decisions.len());
        }
        for d in decisions {
            let action = match d.action {
                GuardrailAction::Mask => "mask",
                GuardrailAction::Reject => "reject",
                GuardrailAction::Monitor => "monitor",
            };
            if !self
                .guardrails
                .iter()
                .any(|(r, a)| *r == d.rule && *a == action)
            {
                self.guardrails.push((Arc::clone(&d.rule), action));
            }
        }
    }

    /// What the call's usage costs at the prices of the backend that answered it (0 before one did).
    pub fn cost_usd(&self) -> f64 {
        let usage = self.usage.unwrap_or_default();
        self.served.as_ref().map_or(0.0, |b| {
            b.price.cost_with_cache(
                usage.input,
                usage.cache_read,
                usage.cache_write,
                usage.output,
            )
        })
    }

    /// Records an error class unless one is already set (the first cause wins).
    pub fn fail(&mut self, class: &'static str) {
        self.error_class.get_or_insert(class);
    }

    fn finish(&mut self) {
        if self.status == 0 {
            // The handler was dropped before answering: the client went away (nginx's 499).
            self.status = 499;
            self.fail("client_disconnected");
        }
        let elapsed = self.started.elapsed();
        let snapshot = self.snapshot.as_deref();
        let route = snapshot
            .zip(self.route)
            .map(|(s, r)| &s.content.routes[r as usize]);
        let consumer = snapshot
            .zip(self.consumer)
            .map(|(s, c)| &s.content.consumers[c as usize]);
        let subscription = match (snapshot, self.consumer, self.route) {
            (Some(s), Some(c), Some(r)) => s.subscription(c, r),
            _ => None,
        };
        let prompt = route
            .zip(self.prompt)
            .and_then(|(r, p)| r.prompts.get(p as usize));
        let provider = snapshot
            .zip(self.served.as_ref())
            .map(|(s, b)| &s.provider(b.provider).id);
        let usage = self.usage.unwrap_or_default();
        let cost = self.cost_usd();
        if let Some(grant) = self.grant.take() {
            grant.settle(usage.input + usage.output, cost);
        }
        if let Some(sub) = subscription
            && (200..300).contains(&self.status)
        {
            self.recorder
                .usage
                .record(&sub.id, usage.input, usage.output, cost);
        }
        let ttft = self
            .first_chunk_at
            .filter(|_| self.stream)
            .map(|t| (t - self.started).as_secs_f64());
        self.recorder.metrics.call_finished(&CallSample {
            series: snapshot.zip(self.route).map(|(s, r)| SeriesOf {
                snapshot: s,
                route: r,
                model: self.model,
                provider: self.served.as_ref().map(|b| b.provider),
            }),
            status: self.status,
            duration_s: elapsed.as_secs_f64(),
            ttft_s: ttft,
            input_tokens: usage.input,
            output_tokens: usage.output,
            cost_usd: cost,
            consumer: self.consumer,
        });
        let rest_operation = route
            .and_then(|r| {
                r.rest
                    .as_ref()?
                    .operations
                    .get(self.rest_operation? as usize)
            })
            .map(|op| match &op.operation_id {
                Some(id) => std::borrow::Cow::Borrowed(id.as_str()),
                None => std::borrow::Cow::Owned(format!("{} {}", op.method, op.path)),
            });
        let line = AccessLine {
            time_unix_ms: self.started_unix_ms,
            request_id: self.request_id.to_str().unwrap_or(""),
            method: self.method,
            path: &self.path,
            namespace: route.map(|r| &*r.id.namespace),
            route: route.map(|r| &*r.id.name),
            consumer: consumer.map(|c| &c.id),
            subscription: subscription.map(|s| &s.id),
            model_requested: self.model_requested.as_deref().or_else(|| {
                let model = route?.models.get(self.model? as usize)?;
                Some(&*model.name)
            }),
            model_served: self.served.as_ref().map(|b| &*b.model),
            provider,
            stream: self.stream,
            status: self.status,
            latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            ttft_us: ttft.map(|t| (t * 1_000_000.0).round() as u64),
            tokens_in: usage.input,
            tokens_out: usage.output,
            cost_usd: cost,
            retries: self.retries,
            error_class: self.error_class,
            snapshot_version: snapshot.map(|s| s.version),
            api: if self.mcp.is_some() {
                "mcp"
            } else if self.rest_operation.is_some() {
                "rest"
            } else if prompt.is_some() {
                "prompt"
            } else {
                "model"
            },
            operation: match &self.mcp {
                Some(mcp) => mcp.name.as_deref(),
                None => prompt
                    .map(|p| p.name.as_str())
                    .or(rest_operation.as_deref()),
            },
            operation_version: prompt.and_then(|p| p.version.as_deref()),
            mcp_method: self.mcp.as_ref().map(|m| m.method),
            cache: self.cache,
            saved: self.saved,
            guardrails: &self.guardrails,
        };
        for (rule, action) in &self.guardrails {
            self.recorder.metrics.guardrail_decision(rule, action);
        }
        self.recorder.write_line(&line);
        self.recorder.export_line(
            &line,
            self.trace.as_deref().map(|t| (t.trace_id, t.span_id)),
        );
        if let (Some(genai), Some(operation), Some(served), Some(snapshot), Some(route)) = (
            &self.recorder.genai,
            self.operation,
            &self.served,
            snapshot,
            route,
        ) && let Some(model) = self.model.and_then(|m| route.models.get(m as usize))
        {
            genai.record(&GenAiCall {
                operation,
                provider: provider_name(snapshot.provider(served.provider).provider_type),
                request_model: &model.name,
                response_model: &served.model,
                error: self
                    .error_class
                    .filter(|_| !(200..300).contains(&self.status)),
                duration: elapsed,
                ttft: self
                    .first_chunk_at
                    .filter(|_| self.stream)
                    .map(|t| t - self.started),
                tokens: self.usage.map(|u| (u.input, u.output)),
            });
        }
        if let Some(mut trace) = self.trace.take()
            && let Some(tracer) = &self.recorder.traces
        {
            if let Some(content) = trace.content.as_deref_mut() {
                content.output_messages =
                    output_messages(trace.request.endpoint, self.stream, content);
            }
            tracer.finish(
                &trace,
                &CallSummary {
                    method: self.method,
                    path: &self.path,
                    request_id: line.request_id,
                    status: self.status,
                    route: route.map(|r| &r.id),
                    consumer: consumer.map(|c| &c.id),
                    subscription: subscription.map(|s| &s.id),
                    cache: self.cache,
                    error_class: self.error_class,
                    input_tokens: usage.input,
                    output_tokens: usage.output,
                    cache_read_tokens: usage.cache_read,
                    cache_write_tokens: usage.cache_write,
                    cost_usd: cost,
                    first_chunk_at: self.first_chunk_at,
                    answered: (200..300).contains(&self.status) && self.served.is_some(),
                    mcp: self.mcp.as_deref().map(|m| McpSpan {
                        method: m.method,
                        name: m.name.as_deref(),
                        version: m.version,
                        code: m.code,
                        rpc_id: m.rpc_id.as_deref(),
                        tool_error: m.outcome == "tool_error",
                    }),
                },
            );
        }
        if let Some(mcp) = &self.mcp {
            let at = snapshot.zip(self.route);
            self.recorder.metrics.mcp_call(at, mcp.method, mcp.outcome);
        }
    }
}

/// `gen_ai.output.messages` of the answer the caller was sent, read in the format of the endpoint
/// it called (cold: only sampled calls of routes that record content come here).
#[cold]
#[inline(never)]
fn output_messages(
    endpoint: Option<&'static str>,
    streamed: bool,
    content: &mut Content,
) -> Option<String> {
    let format = [
        Endpoint::Chat,
        Endpoint::Messages,
        Endpoint::Responses,
        Endpoint::Prompt { json_output: false },
    ]
    .into_iter()
    .find(|e| Some(e.path()) == endpoint)?
    .content_format()?;
    let answer = std::mem::take(&mut content.answer);
    let max = content.max_bytes as usize;
    if streamed {
        let stream = match format {
            Format::Chat => StreamFormat::OpenAiChat,
            Format::Messages => StreamFormat::AnthropicMessages,
            Format::Responses => StreamFormat::Responses,
            Format::Prompt => StreamFormat::Prompt,
        };
        let texts = crate::guard::stream_texts(stream, &answer);
        genai_content::streamed_output(texts, max)
    } else {
        genai_content::output(format, &answer, max)
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A client span for a request to `uri`: its host and port (the scheme's when the URL names none)
/// and its path, without the query.
pub fn client_span_to(method: &http::Method, uri: &http::Uri) -> ClientSpan {
    let server = uri.host().map(|host| {
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        (host.trim_matches(['[', ']']).to_string(), port)
    });
    ClientSpan::new(method_name(method), server, uri.path().to_string())
}

fn method_name(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}
