//! The spans of generated calls encoded as they are made (`otlp::encode_call`, what the proxy sends)
//! against their span list encoded (`otlp::encode_spans`): the same bytes, decoding to the spans of
//! the list.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use proptest::prelude::*;
use prost::Message;
use tollgate_snapshot::ObjectRef;

use super::otlp::tests::value_of;
use super::otlp::{Runs, Scope, encode_call, encode_request, encode_spans, nanos};
use super::span::{Attr, CallSummary, CallTrace, Kind};

/// A generated attempt: provider, model, server, status, error.
type GeneratedAttempt = (
    String,
    String,
    Option<(String, u16)>,
    Option<u16>,
    Option<&'static str>,
);

/// A generated call: what the spans of a sampled call can hold.
#[derive(Clone, Debug)]
struct GeneratedCall {
    parent: Option<[u8; 8]>,
    tracestate: Option<String>,
    operation: Option<&'static str>,
    endpoint: Option<&'static str>,
    model: Option<String>,
    stream: bool,
    max_tokens: Option<u64>,
    temperature: Option<f64>,
    response: (Option<String>, Option<String>, Vec<String>),
    attempts: Vec<GeneratedAttempt>,
    content: Option<(String, usize)>,
    clients: Vec<(String, Option<u16>, Option<String>)>,
    status: u16,
    names: (Option<ObjectRef>, Option<ObjectRef>, Option<ObjectRef>),
    cache: Option<&'static str>,
    error_class: Option<&'static str>,
    tokens: (u64, u64, u64, u64),
    cost: f64,
    answered: bool,
    mcp: Option<(&'static str, Option<String>, Option<i32>, bool)>,
}

/// An object reference, now and then too long for the usual attribute's one-byte lengths.
fn object() -> impl Strategy<Value = ObjectRef> {
    ("[a-z]{1,20}", prop_oneof!["[a-z-]{1,30}", "[a-z]{130}"])
        .prop_map(|(ns, name)| ObjectRef::new(ns, name))
}

fn any_call() -> impl Strategy<Value = GeneratedCall> {
    let text = || ".{0,40}";
    let request = (
        (
            any::<Option<[u8; 8]>>(),
            proptest::option::of("[a-z]{1,8}=[a-z0-9]{1,16}"),
            proptest::option::of(prop_oneof![Just("chat"), Just("embeddings")]),
            proptest::option::of(prop_oneof![
                Just("/v1/chat/completions"),
                Just("/v1/messages")
            ]),
            proptest::option::of(text()),
        ),
        (
            any::<bool>(),
            any::<Option<u64>>(),
            any::<Option<f64>>(),
            (
                proptest::option::of(text()),
                proptest::option::of(text()),
                prop::collection::vec("[a-z_]{1,12}", 0..3),
            ),
        ),
    );
    let attempt = (
        text(),
        text(),
        proptest::option::of((text(), any::<u16>())),
        any::<Option<u16>>(),
        proptest::option::of(Just("upstream_5xx")),
    );
    let rest = (
        (
            prop::collection::vec(attempt, 0..3),
            // Content up to 20 KiB, so that a span's length takes three bytes.
            proptest::option::of(("[a-z ]{0,64}", 0usize..20_000)),
            prop::collection::vec(
                (
                    "/[a-z/]{0,20}",
                    any::<Option<u16>>(),
                    proptest::option::of(text()),
                ),
                0..2,
            ),
            100u16..600,
        ),
        (
            (
                proptest::option::of(object()),
                proptest::option::of(object()),
                proptest::option::of(object()),
            ),
            proptest::option::of(prop_oneof![Just("hit"), Just("miss")]),
            proptest::option::of(Just("rate_limited")),
            any::<(u64, u64, u64, u64)>(),
            any::<f64>(),
            any::<bool>(),
            proptest::option::of((
                prop_oneof![Just("tools/call"), Just("tools/list")],
                proptest::option::of(text()),
                any::<Option<i32>>(),
                any::<bool>(),
            )),
        ),
    );
    (request, rest).prop_map(
        |(
            (
                (parent, tracestate, operation, endpoint, model),
                (stream, max_tokens, temperature, response),
            ),
            (
                (attempts, content, clients, status),
                (names, cache, error_class, tokens, cost, answered, mcp),
            ),
        )| GeneratedCall {
            parent,
            tracestate,
            operation,
            endpoint,
            model,
            stream,
            max_tokens,
            temperature,
            response,
            attempts,
            content,
            clients,
            status,
            names,
            cache,
            error_class,
            tokens,
            cost,
            answered,
            mcp,
        },
    )
}

fn trace_of(g: &GeneratedCall) -> CallTrace {
    use super::context::TraceParent;
    use super::span::{ClientSpan, Content, fresh_trace_id};
    let parent = g
        .parent
        .filter(|p| *p != [0; 8])
        .map(|span_id| TraceParent {
            trace_id: fresh_trace_id(),
            span_id,
            flags: 1,
        });
    let mut t = CallTrace::new(
        parent.map_or_else(fresh_trace_id, |p| p.trace_id),
        parent.as_ref(),
        g.tracestate.clone(),
    );
    t.request.operation = g.operation;
    t.request.endpoint = g.endpoint;
    t.request.model = g.model.as_deref().map(Into::into);
    t.request.stream = g.stream;
    t.request.max_tokens = g.max_tokens;
    t.request.temperature = g.temperature;
    // A choice count now and then (not recorded when it is 1).
    t.request.choice_count = g.max_tokens.map(|m| m % 4);
    t.response.id = g.response.0.clone();
    t.response.model = g.response.1.as_deref().map(Into::into);
    t.response.finish_reasons = g.response.2.iter().cloned().map(Into::into).collect();
    for (provider, model, server, status, error) in &g.attempts {
        t.start_attempt(
            tollgate_snapshot::ProviderType::OpenAI,
            ObjectRef::new("team", provider.as_str()),
            model.as_str().into(),
        );
        let a = t.attempt().unwrap();
        a.server = server.as_ref().map(|(h, p)| (h.as_str().into(), *p));
        a.status = *status;
        a.error = *error;
        if error.is_some() {
            a.end = Some(SystemTime::now());
        }
    }
    if let Some((text, repeat)) = &g.content {
        t.content = Some(Box::new(Content {
            max_bytes: 1 << 20,
            input_messages: Some(text.repeat(repeat / text.len().max(1))),
            ..Content::default()
        }));
    }
    for (path, status, error) in &g.clients {
        let mut span = ClientSpan::new("POST", Some(("svc.internal".into(), 443)), path.clone());
        span.status = *status;
        span.finish(error.clone().map(Cow::Owned));
        t.start_client(span);
    }
    t
}

fn summary_of(g: &GeneratedCall) -> CallSummary<'_> {
    CallSummary {
        method: "POST",
        path: "/r/v1/chat/completions",
        request_id: "req-7",
        status: g.status,
        route: g.names.0.as_ref(),
        consumer: g.names.1.as_ref(),
        subscription: g.names.2.as_ref(),
        cache: g.cache,
        error_class: g.error_class,
        input_tokens: g.tokens.0,
        output_tokens: g.tokens.1,
        cache_read_tokens: g.tokens.2,
        cache_write_tokens: g.tokens.3,
        cost_usd: g.cost,
        first_chunk_at: Some(std::time::Instant::now()),
        answered: g.answered,
        mcp: g
            .mcp
            .as_ref()
            .map(|(method, name, code, tool_error)| super::span::McpSpan {
                method,
                name: name.as_deref(),
                version: Some("2025-11-25"),
                code: *code,
                rpc_id: Some("7"),
                tool_error: *tool_error,
            }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A call's spans written as they are made are the bytes of its span list encoded, and
    /// decode to the spans of that list: names, ids, kinds, status and every attribute.
    #[test]
    fn a_call_encoded_as_it_goes_is_its_span_list_encoded(g in any_call()) {
        let trace = trace_of(&g);
        let summary = summary_of(&g);
        let end = SystemTime::now();
        let records = super::span::spans_ended(&trace, &summary, end);
        let mut listed = Vec::new();
        encode_spans(&mut listed, &records);
        let mut direct = Vec::new();
        let n = encode_call(&mut direct, &trace, &summary, end, &mut Runs::default());
        prop_assert_eq!(n, records.len());
        prop_assert!(listed == direct, "the two encodings differ");

        let scope = Scope { name: "tollgate-proxy", version: None };
        let decoded =
            ExportTraceServiceRequest::decode(encode_request(&[], &scope, &direct).as_slice())
                .unwrap();
        let spans = &decoded.resource_spans[0].scope_spans[0].spans;
        prop_assert_eq!(spans.len(), records.len());
        for (got, want) in spans.iter().zip(&records) {
            prop_assert_eq!(&got.name, &want.name.to_string());
            prop_assert_eq!(&got.span_id[..], &want.span_id[..]);
            prop_assert_eq!(&got.trace_id[..], &want.trace_id[..]);
            prop_assert_eq!(got.kind, if want.kind == Kind::Server { 2 } else { 3 });
            prop_assert_eq!(got.end_time_unix_nano, nanos(want.end));
            prop_assert_eq!(
                got.status.as_ref().map(|s| s.message.as_str()),
                want.error
            );
            prop_assert_eq!(got.attributes.len(), want.attrs.len());
            for (a, (key, value)) in got.attributes.iter().zip(&want.attrs) {
                prop_assert_eq!(&a.key, key);
                let a = a.value.as_ref().and_then(|v| v.value.clone()).unwrap();
                match (value, a) {
                    (Attr::Float(w), any_value::Value::DoubleValue(g)) => {
                        prop_assert_eq!(w.to_bits(), g.to_bits());
                    }
                    (want, got) => prop_assert_eq!(got, value_of(want)),
                }
            }
        }
    }
}

/// A call to `route` answered by `model` of `provider` at `server`.
fn routed_call(provider: &ObjectRef, model: &str, server: &str) -> CallTrace {
    use super::span::fresh_trace_id;
    let mut t = CallTrace::new(fresh_trace_id(), None, None);
    t.request.operation = Some("chat");
    t.request.model = Some("front".into());
    t.start_attempt(
        tollgate_snapshot::ProviderType::OpenAI,
        provider.clone(),
        model.into(),
    );
    t.attempt().unwrap().server = Some((server.into(), 8443));
    t
}

fn names_summary<'a>(
    route: &'a ObjectRef,
    consumer: &'a ObjectRef,
    subscription: Option<&'a ObjectRef>,
) -> CallSummary<'a> {
    CallSummary {
        method: "POST",
        path: "/r/v1/chat/completions",
        request_id: "req-1",
        status: 200,
        route: Some(route),
        consumer: Some(consumer),
        subscription,
        cache: None,
        error_class: None,
        input_tokens: 10,
        output_tokens: 20,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        cost_usd: 0.5,
        first_chunk_at: None,
        answered: true,
        mcp: None,
    }
}

/// The call encoded with `runs` and the bytes of its span list, each attribute written alone.
fn with_runs_and_alone(
    trace: &CallTrace,
    summary: &CallSummary<'_>,
    runs: &mut Runs,
) -> (Vec<u8>, Vec<u8>) {
    let end = SystemTime::now();
    let mut alone = Vec::new();
    encode_spans(&mut alone, &super::span::spans_ended(trace, summary, end));
    let mut grouped = Vec::new();
    encode_call(&mut grouped, trace, summary, end, runs);
    (grouped, alone)
}

#[test]
fn route_and_backend_attributes_copied_from_runs_are_those_written_one_by_one() {
    let mut runs = Runs::default();
    let (route, consumer, sub) = (
        ObjectRef::new("team", "chat"),
        ObjectRef::new("apps", "billing"),
        ObjectRef::new("team", "billing-chat"),
    );
    let provider = ObjectRef::new("team", "openai");
    let trace = routed_call(&provider, "gpt-up", "api.example.com");
    let summary = names_summary(&route, &consumer, Some(&sub));
    // Encoded the first time, copied the second.
    for _ in 0..2 {
        let (grouped, alone) = with_runs_and_alone(&trace, &summary, &mut runs);
        assert!(grouped == alone);
    }
    let decoded = |bytes: &[u8]| {
        let scope = Scope {
            name: "t",
            version: None,
        };
        ExportTraceServiceRequest::decode(encode_request(&[], &scope, bytes).as_slice()).unwrap()
    };
    let attr = |bytes: &[u8], span: usize, key: &str| {
        let request = decoded(bytes);
        request.resource_spans[0].scope_spans[0].spans[span]
            .attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.clone()?.value)
    };
    let text = |s: &str| Some(any_value::Value::StringValue(s.into()));

    // A new snapshot: the same texts in new allocations give the same bytes; a changed route,
    // consumer, subscription (here gone) or backend gives its own.
    let (route2, consumer2) = (
        ObjectRef::new("team", "chat"),
        ObjectRef::new("apps", "billing-2"),
    );
    let summary2 = names_summary(&route2, &consumer2, None);
    let provider2 = ObjectRef::new("team", "openai");
    let trace2 = routed_call(&provider2, "gpt-up-2", "eu.example.com");
    let (grouped, alone) = with_runs_and_alone(&trace2, &summary2, &mut runs);
    assert!(grouped == alone);
    assert_eq!(attr(&grouped, 0, "tollgate.route"), text("team/chat"));
    assert_eq!(
        attr(&grouped, 0, "tollgate.consumer"),
        text("apps/billing-2")
    );
    assert_eq!(attr(&grouped, 0, "tollgate.subscription"), None);
    assert_eq!(attr(&grouped, 1, "gen_ai.request.model"), text("gpt-up-2"));
    assert_eq!(attr(&grouped, 1, "server.address"), text("eu.example.com"));
    assert_eq!(
        attr(&grouped, 1, "server.port"),
        Some(any_value::Value::IntValue(8443))
    );
    // Another endpoint and operation of the same route and backend: runs of their own.
    let mut other = routed_call(&provider2, "gpt-up-2", "eu.example.com");
    other.request.endpoint = Some("/v1/embeddings");
    other.request.operation = Some("embeddings");
    let (grouped, alone) = with_runs_and_alone(&other, &summary2, &mut runs);
    assert!(grouped == alone);
    assert_eq!(attr(&grouped, 0, "http.route"), text("/v1/embeddings"));
    assert_eq!(
        attr(&grouped, 1, "gen_ai.operation.name"),
        text("embeddings")
    );
    let (grouped, alone) = with_runs_and_alone(&trace2, &summary2, &mut runs);
    assert!(grouped == alone);
    assert_eq!(attr(&grouped, 0, "http.route"), None);
    assert_eq!(attr(&grouped, 1, "gen_ai.operation.name"), text("chat"));
    // The first call again, after more groups than are kept.
    for i in 0..40 {
        let provider = ObjectRef::new("team", format!("p{i}"));
        let (grouped, alone) =
            with_runs_and_alone(&routed_call(&provider, "m", "h"), &summary2, &mut runs);
        assert!(grouped == alone);
    }
    let (grouped, alone) = with_runs_and_alone(&trace, &summary, &mut runs);
    assert!(grouped == alone);
    assert_eq!(
        attr(&grouped, 0, "tollgate.subscription"),
        text("team/billing-chat")
    );
}

#[test]
fn usage_copied_from_a_server_span_that_was_moved_is_the_usage_written() {
    // A server span of 16 KiB or more takes a three-byte length: it is moved after it is written,
    // and the usage the answering attempt copies from it moves with it.
    let route = ObjectRef::new("team", "chat");
    let consumer = ObjectRef::new("apps", "billing");
    let provider = ObjectRef::new("team", "openai");
    let trace = routed_call(&provider, "gpt-up", "api.example.com");
    let long = format!("/r/{}", "p".repeat(17_000));
    for path in ["/r/v1/chat/completions", long.as_str()] {
        let mut summary = names_summary(&route, &consumer, None);
        summary.path = path;
        summary.cache_read_tokens = 7;
        let (grouped, alone) = with_runs_and_alone(&trace, &summary, &mut Runs::default());
        assert!(grouped == alone);
    }
}
