//! OTLP/HTTP with protobuf bodies, written by hand: an `ExportTraceServiceRequest` encoded straight
//! from the spans (opentelemetry-proto's `collector/trace/v1/trace_service.proto`,
//! `trace/v1/trace.proto`, `common/v1/common.proto`, `resource/v1/resource.proto`), and posted to
//! the collector's `/v1/traces`. The exporter crate first converts every span into its own protobuf
//! types (a string copied per key and value) and then encodes them; here each field is written once.
//! Only what the proxy's spans hold is written: no links, no events, no dropped counts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// `Span.flags`: the parent's remoteness is known, and whether it is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn tag(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, field << 3 | wire);
}

fn bytes_field(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    tag(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A length-delimited field holding what `write` writes (built aside, then copied after its length).
fn nested(out: &mut Vec<u8>, field: u64, scratch: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    scratch.clear();
    write(scratch);
    bytes_field(out, field, scratch);
}

/// The encoded size of an `AnyValue` holding `v` (without its own tag and length).
fn any_value_len(v: &Value) -> usize {
    let scalar = |len: usize| 1 + len;
    match v {
        Value::Bool(_) => 2,
        Value::I64(i) => scalar(varint_len(*i as u64)),
        Value::F64(_) => 9,
        Value::String(s) => 1 + varint_len(s.as_str().len() as u64) + s.as_str().len(),
        Value::Array(a) => {
            let inner = array_len(a);
            1 + varint_len(inner as u64) + inner
        }
        _ => 0,
    }
}

/// The encoded size of an `ArrayValue`'s members.
fn array_len(a: &Array) -> usize {
    let each = |len: usize| 1 + varint_len(len as u64) + len;
    match a {
        Array::Bool(v) => v.len() * each(2),
        Array::I64(v) => v.iter().map(|i| each(1 + varint_len(*i as u64))).sum(),
        Array::F64(v) => v.len() * each(9),
        Array::String(v) => v
            .iter()
            .map(|s| each(1 + varint_len(s.as_str().len() as u64) + s.as_str().len()))
            .sum(),
        _ => 0,
    }
}

/// An `AnyValue`'s fields.
fn any_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Bool(b) => {
            tag(out, 2, VARINT);
            out.push(u8::from(*b));
        }
        Value::I64(i) => {
            tag(out, 3, VARINT);
            varint(out, *i as u64);
        }
        Value::F64(f) => {
            tag(out, 4, FIXED64);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => bytes_field(out, 1, s.as_str().as_bytes()),
        Value::Array(a) => {
            tag(out, 5, LEN);
            varint(out, array_len(a) as u64);
            let element = |out: &mut Vec<u8>, v: Value| {
                tag(out, 1, LEN);
                varint(out, any_value_len(&v) as u64);
                any_value(out, &v);
            };
            match a {
                Array::Bool(v) => v.iter().for_each(|b| element(out, Value::Bool(*b))),
                Array::I64(v) => v.iter().for_each(|i| element(out, Value::I64(*i))),
                Array::F64(v) => v.iter().for_each(|f| element(out, Value::F64(*f))),
                Array::String(v) => v
                    .iter()
                    .for_each(|s| element(out, Value::String(s.clone()))),
                _ => {}
            }
        }
        _ => {}
    }
}

/// A `KeyValue` as field `field` of its message.
fn key_value(out: &mut Vec<u8>, field: u64, kv: &KeyValue) {
    let key = kv.key.as_str();
    let value = any_value_len(&kv.value);
    let len = 1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(value as u64) + value;
    tag(out, field, LEN);
    varint(out, len as u64);
    bytes_field(out, 1, key.as_bytes());
    tag(out, 2, LEN);
    varint(out, value as u64);
    any_value(out, &kv.value);
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn fixed64(out: &mut Vec<u8>, field: u64, v: u64) {
    tag(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

/// One `Span`'s fields.
fn span(out: &mut Vec<u8>, s: &SpanData, scratch: &mut Vec<u8>) {
    let context = &s.span_context;
    bytes_field(out, 1, &context.trace_id().to_bytes());
    bytes_field(out, 2, &context.span_id().to_bytes());
    let state = context.trace_state().header();
    if !state.is_empty() {
        bytes_field(out, 3, state.as_bytes());
    }
    if s.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        bytes_field(out, 4, &s.parent_span_id.to_bytes());
    }
    bytes_field(out, 5, s.name.as_bytes());
    // SPAN_KIND_INTERNAL = 1, SERVER = 2, CLIENT = 3, PRODUCER = 4, CONSUMER = 5.
    let kind = match s.span_kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    };
    tag(out, 6, VARINT);
    varint(out, kind);
    fixed64(out, 7, nanos(s.start_time));
    fixed64(out, 8, nanos(s.end_time));
    for kv in &s.attributes {
        key_value(out, 9, kv);
    }
    // STATUS_CODE_UNSET = 0, OK = 1, ERROR = 2.
    match &s.status {
        Status::Unset => {}
        Status::Ok => nested(out, 15, scratch, |m| {
            tag(m, 3, VARINT);
            varint(m, 1);
        }),
        Status::Error { description } => nested(out, 15, scratch, |m| {
            if !description.is_empty() {
                bytes_field(m, 2, description.as_bytes());
            }
            tag(m, 3, VARINT);
            varint(m, 2);
        }),
    }
    let remote = if s.parent_span_is_remote {
        IS_REMOTE
    } else {
        0
    };
    tag(out, 16, FIXED32);
    let flags = u32::from(context.trace_flags().to_u8()) | HAS_IS_REMOTE | remote;
    out.extend_from_slice(&flags.to_le_bytes());
}

/// An `ExportTraceServiceRequest` of one resource (its attributes `resource`) and one scope holding
/// `spans`.
pub fn encode_request(
    resource: &[KeyValue],
    scope: &InstrumentationScope,
    spans: &[SpanData],
) -> Vec<u8> {
    let mut scope_spans = Vec::with_capacity(spans.len() * 768);
    let (mut span_buf, mut scratch) = (Vec::with_capacity(1024), Vec::new());
    // InstrumentationScope: name = 1, version = 2.
    nested(&mut scope_spans, 1, &mut scratch, |m| {
        bytes_field(m, 1, scope.name().as_bytes());
        if let Some(version) = scope.version() {
            bytes_field(m, 2, version.as_bytes());
        }
    });
    for s in spans {
        span_buf.clear();
        span(&mut span_buf, s, &mut scratch);
        bytes_field(&mut scope_spans, 2, &span_buf);
    }
    // ResourceSpans: resource = 1 (attributes = 1), scope_spans = 2.
    let mut resource_spans = Vec::with_capacity(scope_spans.len() + 256);
    nested(&mut resource_spans, 1, &mut scratch, |m| {
        for kv in resource {
            key_value(m, 1, kv);
        }
    });
    bytes_field(&mut resource_spans, 2, &scope_spans);
    // ExportTraceServiceRequest: resource_spans = 1.
    let mut request = Vec::with_capacity(resource_spans.len() + 8);
    bytes_field(&mut request, 1, &resource_spans);
    request
}

/// Posts encoded requests to a collector's `/v1/traces` over plain HTTP.
pub struct HttpSender {
    client: Client<HttpConnector, Full<Bytes>>,
    url: http::Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

/// Why an export failed (for the debug log; the spans are counted as dropped).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the collector answered {0}")]
    Status(http::StatusCode),
    #[error("the collector could not be reached: {0}")]
    Transport(String),
    #[error("the export took longer than {0:?}")]
    Timeout(Duration),
}

impl HttpSender {
    /// A sender to `url` (the whole URL, `/v1/traces` included) with `headers` on every request.
    pub fn new(url: http::Uri, headers: &[(String, String)], timeout: Duration) -> Self {
        let headers = headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
                    HeaderValue::from_str(v.trim()).ok()?,
                ))
            })
            .collect();
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            url,
            headers,
            timeout,
        }
    }

    /// Sends one request body.
    pub async fn send(&self, body: Vec<u8>) -> Result<(), SendError> {
        let mut request = http::Request::post(self.url.clone())
            .body(Full::new(Bytes::from(body)))
            .expect("a request from valid parts");
        let h = request.headers_mut();
        for (k, v) in &self.headers {
            h.insert(k.clone(), v.clone());
        }
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        let answered = tokio::time::timeout(self.timeout, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| SendError::Transport(e.to_string()))?;
            let status = response.status();
            // Read the answer whole so that the connection is kept.
            let _ = http_body_util::BodyExt::collect(response.into_body()).await;
            if status.is_success() {
                Ok(())
            } else {
                Err(SendError::Status(status))
            }
        })
        .await;
        answered.unwrap_or(Err(SendError::Timeout(self.timeout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use proptest::prelude::*;
    use prost::Message;
    use std::borrow::Cow;
    use std::str::FromStr;

    fn a_span(attributes: Vec<KeyValue>, status: Status, remote: bool) -> SpanData {
        let state = TraceState::from_str("vendor=opaque").unwrap();
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes([7; 16]),
                SpanId::from_bytes([3; 8]),
                TraceFlags::SAMPLED,
                false,
                state,
            ),
            parent_span_id: SpanId::from_bytes([9; 8]),
            parent_span_is_remote: remote,
            span_kind: SpanKind::Client,
            name: Cow::Borrowed("chat gpt-up"),
            start_time: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            end_time: UNIX_EPOCH + Duration::from_nanos(1_700_000_001_000_000_000),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: InstrumentationScope::builder("tollgate-proxy").build(),
        }
    }

    fn value_of(v: &Value) -> Option<any_value::Value> {
        Some(match v {
            Value::Bool(b) => any_value::Value::BoolValue(*b),
            Value::I64(i) => any_value::Value::IntValue(*i),
            Value::F64(f) => any_value::Value::DoubleValue(*f),
            Value::String(s) => any_value::Value::StringValue(s.to_string()),
            _ => return None,
        })
    }

    #[test]
    fn a_request_decodes_as_the_protobuf_types_say() {
        let attrs = vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.usage.input_tokens", 1234_i64),
            KeyValue::new("gen_ai.usage.output_tokens", -1_i64),
            KeyValue::new("tollgate.cost_usd", 0.0125),
            KeyValue::new("gen_ai.request.stream", true),
            KeyValue::new(
                "gen_ai.response.finish_reasons",
                Value::Array(Array::String(vec!["stop".into(), "length".into()])),
            ),
        ];
        let spans = [
            a_span(attrs.clone(), Status::error("upstream_5xx"), true),
            a_span(Vec::new(), Status::Unset, false),
        ];
        let scope = InstrumentationScope::builder("tollgate-proxy")
            .with_version("1.2.3")
            .build();
        let resource = [KeyValue::new("service.name", "tollgate-test")];
        let bytes = encode_request(&resource, &scope, &spans);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let rs = &decoded.resource_spans[0];
        let resource_attrs = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(resource_attrs[0].key, "service.name");
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "tollgate-proxy");
        assert_eq!(ss.scope.as_ref().unwrap().version, "1.2.3");
        assert_eq!(ss.spans.len(), 2);
        let s = &ss.spans[0];
        assert_eq!(s.trace_id, vec![7; 16]);
        assert_eq!(s.span_id, vec![3; 8]);
        assert_eq!(s.parent_span_id, vec![9; 8]);
        assert_eq!(s.trace_state, "vendor=opaque");
        assert_eq!(s.name, "chat gpt-up");
        assert_eq!(s.kind, 3);
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(s.end_time_unix_nano, 1_700_000_001_000_000_000);
        assert_eq!(s.flags, 0x301);
        assert_eq!(ss.spans[1].flags, 0x101);
        let status = s.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "upstream_5xx"));
        assert_eq!(ss.spans[1].status, None);
        assert_eq!(s.attributes.len(), attrs.len());
        for (got, want) in s.attributes.iter().zip(&attrs) {
            assert_eq!(got.key, want.key.as_str());
            let got = got.value.as_ref().unwrap().value.clone().unwrap();
            match (&want.value, got) {
                (Value::Array(Array::String(want)), any_value::Value::ArrayValue(a)) => {
                    let texts: Vec<_> = a.values.iter().map(|v| v.value.clone().unwrap()).collect();
                    let want: Vec<_> = want
                        .iter()
                        .map(|s| any_value::Value::StringValue(s.to_string()))
                        .collect();
                    assert_eq!(texts, want);
                }
                (want, got) => assert_eq!(Some(got), value_of(want)),
            }
        }
    }

    fn any_attribute() -> impl Strategy<Value = KeyValue> {
        let value = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::I64),
            any::<f64>().prop_map(Value::F64),
            ".{0,300}".prop_map(|s| Value::String(s.into())),
            prop::collection::vec(".{0,40}", 0..4)
                .prop_map(|v| Value::Array(Array::String(v.into_iter().map(Into::into).collect()))),
            prop::collection::vec(any::<i64>(), 0..4).prop_map(|v| Value::Array(Array::I64(v))),
        ];
        (".{0,200}", value).prop_map(|(k, v)| KeyValue::new(k, v))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Any attributes round-trip through the protobuf types (sizes computed ahead agree with
        /// what is written, or the decoding fails).
        #[test]
        fn any_attributes_decode_to_themselves(attrs in prop::collection::vec(any_attribute(), 0..12)) {
            let spans = [a_span(attrs.clone(), Status::Unset, false)];
            let scope = InstrumentationScope::builder("s").build();
            let bytes = encode_request(&attrs, &scope, &spans);
            let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
            let got = &decoded.resource_spans[0].scope_spans[0].spans[0].attributes;
            let resource = &decoded.resource_spans[0].resource.as_ref().unwrap().attributes;
            prop_assert_eq!(got, resource);
            prop_assert_eq!(got.len(), attrs.len());
            for (got, want) in got.iter().zip(&attrs) {
                prop_assert_eq!(got.key.as_str(), want.key.as_str());
                let got = got.value.as_ref().and_then(|v| v.value.clone());
                match (&want.value, got) {
                    (Value::F64(w), Some(any_value::Value::DoubleValue(g))) => {
                        prop_assert_eq!(w.to_bits(), g.to_bits());
                    }
                    (Value::Array(a), Some(any_value::Value::ArrayValue(g))) => {
                        let n = match a {
                            Array::String(v) => v.len(),
                            Array::I64(v) => v.len(),
                            _ => 0,
                        };
                        prop_assert_eq!(g.values.len(), n);
                    }
                    (want, got) => prop_assert_eq!(got, value_of(want)),
                }
            }
        }
    }
}
