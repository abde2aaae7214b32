//! The GenAI metrics and the access log's records as OTLP protobuf, written by hand like the spans
//! (opentelemetry-proto's `metrics/v1/metrics.proto`, `logs/v1/logs.proto`, `common/v1/common.proto`).
//! Each function writes the items of a scope message (`ScopeMetrics.metrics`, `ScopeLogs.log_records`:
//! field 2 of both); the envelope around them is the traces' `encode_request`, since
//! `Export{Metrics,Logs}ServiceRequest`, `Resource{Metrics,Logs}` and `Scope{Metrics,Logs}` number
//! their fields as the traces' messages do.

use std::time::SystemTime;

use tollgate_snapshot::ObjectRef;

use super::genai::{Attributes, GenAiMetrics, Histogram};
use crate::telemetry::access_log::AccessLine;
use crate::telemetry::trace::otlp::{
    FIXED32, FIXED64, LEN, VARINT, bytes_field, fixed64, nanos, tag, varint, varint_len,
};

/// `AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: u64 = 2;
/// `SEVERITY_NUMBER_INFO`, `SEVERITY_NUMBER_ERROR`.
const INFO: u64 = 9;
const ERROR: u64 = 17;
/// The `event_name` of an access-log record.
pub const ACCESS_EVENT: &str = "tollgate.access";

/// A value of an attribute.
#[derive(Clone, Copy)]
enum Value<'a> {
    Str(&'a str),
    /// A string in pieces (`namespace`, `/`, `name`), written without joining them first.
    Parts(&'a [&'a str]),
    Int(i64),
    Double(f64),
    Bool(bool),
}

impl Value<'_> {
    /// The encoded size of the `AnyValue` holding it.
    fn any_len(&self) -> usize {
        match self {
            Value::Str(s) => 1 + varint_len(s.len() as u64) + s.len(),
            Value::Parts(p) => {
                let n: usize = p.iter().map(|s| s.len()).sum();
                1 + varint_len(n as u64) + n
            }
            Value::Int(i) => 1 + varint_len(*i as u64),
            Value::Double(_) => 9,
            Value::Bool(_) => 2,
        }
    }

    fn write_any(&self, out: &mut Vec<u8>) {
        match self {
            Value::Str(s) => bytes_field(out, 1, s.as_bytes()),
            Value::Parts(p) => {
                tag(out, 1, LEN);
                varint(out, p.iter().map(|s| s.len()).sum::<usize>() as u64);
                for s in p.iter() {
                    out.extend_from_slice(s.as_bytes());
                }
            }
            Value::Bool(b) => {
                tag(out, 2, VARINT);
                out.push(u8::from(*b));
            }
            Value::Int(i) => {
                tag(out, 3, VARINT);
                varint(out, *i as u64);
            }
            Value::Double(d) => {
                tag(out, 4, FIXED64);
                out.extend_from_slice(&d.to_le_bytes());
            }
        }
    }
}

/// A `KeyValue` as field `field`, its lengths computed ahead (nothing built aside).
fn key_value(out: &mut Vec<u8>, field: u64, key: &str, value: Value<'_>) {
    let any = value.any_len();
    let short = 2 + key.len() + 2 + any;
    if field < 16 && short < 128 {
        // The usual attribute: every length one varint byte, so the heads are written as slices
        // rather than field by field (a call's record has some thirty of these).
        out.reserve(2 + short);
        out.extend_from_slice(&[
            (field << 3 | LEN) as u8,
            short as u8,
            (1 << 3 | LEN) as u8,
            key.len() as u8,
        ]);
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&[(2 << 3 | LEN) as u8, any as u8]);
        match value {
            Value::Str(s) => {
                out.extend_from_slice(&[(1 << 3 | LEN) as u8, s.len() as u8]);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Double(d) => {
                out.push((4 << 3 | FIXED64) as u8);
                out.extend_from_slice(&d.to_le_bytes());
            }
            Value::Bool(b) => out.extend_from_slice(&[(2 << 3 | VARINT) as u8, u8::from(b)]),
            other => other.write_any(out),
        }
        return;
    }
    let len = 1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any as u64) + any;
    tag(out, field, LEN);
    varint(out, len as u64);
    bytes_field(out, 1, key.as_bytes());
    tag(out, 2, LEN);
    varint(out, any as u64);
    value.write_any(out);
}

/// A length-delimited field holding what `write` writes (into a buffer of its own: used only where
/// the size is not known ahead, once per export or for a call's rare guardrail list).
fn message(out: &mut Vec<u8>, field: u64, write: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    write(&mut inner);
    bytes_field(out, field, &inner);
}

/// The GenAI metrics' attributes of one set; `token_type` for `gen_ai.client.token.usage`,
/// `error.type` only on `gen_ai.server.request.duration`.
fn attributes(
    out: &mut Vec<u8>,
    field: u64,
    set: Option<&Attributes>,
    token_type: Option<&str>,
    with_error: bool,
) {
    let Some(set) = set else {
        key_value(out, field, "otel.metric.overflow", Value::Bool(true));
        if let Some(t) = token_type {
            key_value(out, field, "gen_ai.token.type", Value::Str(t));
        }
        return;
    };
    key_value(
        out,
        field,
        "gen_ai.operation.name",
        Value::Str(set.operation),
    );
    key_value(out, field, "gen_ai.provider.name", Value::Str(set.provider));
    key_value(
        out,
        field,
        "gen_ai.request.model",
        Value::Str(&set.request_model),
    );
    key_value(
        out,
        field,
        "gen_ai.response.model",
        Value::Str(&set.response_model),
    );
    if let Some(t) = token_type {
        key_value(out, field, "gen_ai.token.type", Value::Str(t));
    }
    if with_error && let Some(error) = set.error {
        key_value(out, field, "error.type", Value::Str(error));
    }
}

/// One `HistogramDataPoint` (field 1 of `Histogram`), or nothing when nothing was counted.
/// `scale` turns the histogram's integer sum into the metric's unit (1e-9 for nanoseconds).
fn data_point(
    out: &mut Vec<u8>,
    h: &Histogram,
    scale: f64,
    start: SystemTime,
    now: u64,
    write_attributes: impl FnOnce(&mut Vec<u8>),
) {
    let (buckets, sum) = h.read();
    let count: u64 = buckets.iter().sum();
    if count == 0 {
        return;
    }
    message(out, 1, |p| {
        write_attributes(p);
        fixed64(p, 2, nanos(start));
        fixed64(p, 3, now);
        fixed64(p, 4, count);
        tag(p, 5, FIXED64);
        p.extend_from_slice(&(sum as f64 * scale).to_le_bytes());
        // Packed repeated fields: one length, then the values.
        tag(p, 6, LEN);
        varint(p, 8 * buckets.len() as u64);
        for b in &buckets {
            p.extend_from_slice(&b.to_le_bytes());
        }
        tag(p, 7, LEN);
        varint(p, 8 * h.bounds().len() as u64);
        for b in h.bounds() {
            p.extend_from_slice(&b.to_le_bytes());
        }
    });
}

/// One histogram `Metric` (field 2 of `ScopeMetrics`) from `points`, or nothing without points.
fn histogram_metric(
    out: &mut Vec<u8>,
    name: &str,
    description: &str,
    unit: &str,
    points: impl FnOnce(&mut Vec<u8>),
) {
    let mut data = Vec::new();
    points(&mut data);
    if data.is_empty() {
        return;
    }
    message(out, 2, |m| {
        bytes_field(m, 1, name.as_bytes());
        bytes_field(m, 2, description.as_bytes());
        bytes_field(m, 3, unit.as_bytes());
        message(m, 9, |h| {
            h.extend_from_slice(&data);
            tag(h, 2, VARINT);
            varint(h, CUMULATIVE);
        });
    });
}

/// The three GenAI metrics as the `metrics` of a `ScopeMetrics`, cumulative since each set began,
/// read at `now`. Empty when no call has been counted.
pub fn encode_metrics(out: &mut Vec<u8>, metrics: &GenAiMetrics, now: SystemTime) {
    let now = nanos(now);
    // `each` lends the series one at a time; gather what each metric needs in one pass per metric.
    let mut tokens = Vec::new();
    let mut durations = Vec::new();
    let mut ttfts = Vec::new();
    metrics.each(|set, series| {
        for (token_type, h) in [
            ("input", &series.input_tokens),
            ("output", &series.output_tokens),
        ] {
            data_point(&mut tokens, h, 1.0, series.start, now, |p| {
                attributes(p, 9, set, Some(token_type), false);
            });
        }
        data_point(
            &mut durations,
            &series.duration,
            1e-9,
            series.start,
            now,
            |p| {
                attributes(p, 9, set, None, true);
            },
        );
        data_point(&mut ttfts, &series.ttft, 1e-9, series.start, now, |p| {
            attributes(p, 9, set, None, false);
        });
    });
    histogram_metric(
        out,
        "gen_ai.client.token.usage",
        "Number of input and output tokens used.",
        "{token}",
        |d| d.extend_from_slice(&tokens),
    );
    histogram_metric(
        out,
        "gen_ai.server.request.duration",
        "Generative AI server request duration such as time-to-last byte or last output token.",
        "s",
        |d| d.extend_from_slice(&durations),
    );
    histogram_metric(
        out,
        "gen_ai.server.time_to_first_token",
        "Time to generate first token for successful responses.",
        "s",
        |d| d.extend_from_slice(&ttfts),
    );
}

/// The span a log record belongs to: the call's trace id and server span id.
pub type SpanIds = ([u8; 16], [u8; 8]);

fn object_ref<'a>(parts: &'a mut [&'a str; 3], id: &'a ObjectRef) -> Value<'a> {
    *parts = [&id.namespace, "/", &id.name];
    Value::Parts(parts)
}

/// One access-log line as the fields of a `LogRecord` (without its own tag and length): the JSON
/// line's fields as attributes of the same names (a `null` left out, `time` as the record's time),
/// `event_name` `tollgate.access`, the call's span when it was traced, and a short body.
pub fn encode_log(
    out: &mut Vec<u8>,
    line: &AccessLine<'_>,
    span: Option<SpanIds>,
    now: SystemTime,
) {
    fixed64(
        out,
        1,
        u64::try_from(line.time_unix_ms).unwrap_or(0) * 1_000_000,
    );
    tag(out, 2, VARINT);
    varint(out, if line.status >= 500 { ERROR } else { INFO });
    bytes_field(
        out,
        3,
        if line.status >= 500 {
            b"ERROR"
        } else {
            b"INFO"
        },
    );
    // Body: `METHOD path status`, the line a person reads first.
    let mut status = itoa::Buffer::new();
    let body = [line.method, " ", line.path, " ", status.format(line.status)];
    let body = Value::Parts(&body);
    tag(out, 5, LEN);
    varint(out, body.any_len() as u64);
    body.write_any(out);
    let kv = |out: &mut Vec<u8>, key: &str, value: Value<'_>| key_value(out, 6, key, value);
    kv(out, "request_id", Value::Str(line.request_id));
    kv(out, "method", Value::Str(line.method));
    kv(out, "path", Value::Str(line.path));
    let strs = [("namespace", line.namespace), ("route", line.route)];
    for (key, v) in strs {
        if let Some(v) = v {
            kv(out, key, Value::Str(v));
        }
    }
    for (key, id) in [
        ("consumer", line.consumer),
        ("subscription", line.subscription),
    ] {
        if let Some(id) = id {
            let mut parts = [""; 3];
            kv(out, key, object_ref(&mut parts, id));
        }
    }
    for (key, v) in [
        ("model_requested", line.model_requested),
        ("model_served", line.model_served),
    ] {
        if let Some(v) = v {
            kv(out, key, Value::Str(v));
        }
    }
    if let Some(id) = line.provider {
        let mut parts = [""; 3];
        kv(out, "provider", object_ref(&mut parts, id));
    }
    kv(out, "stream", Value::Bool(line.stream));
    kv(out, "status", Value::Int(i64::from(line.status)));
    kv(
        out,
        "latency_ms",
        Value::Double(line.latency_us as f64 / 1000.0),
    );
    if let Some(us) = line.ttft_us {
        kv(out, "ttft_ms", Value::Double(us as f64 / 1000.0));
    }
    kv(out, "tokens_in", Value::Int(line.tokens_in as i64));
    kv(out, "tokens_out", Value::Int(line.tokens_out as i64));
    kv(out, "cost_usd", Value::Double(line.cost_usd));
    kv(out, "retries", Value::Int(i64::from(line.retries)));
    if let Some(class) = line.error_class {
        kv(out, "error_class", Value::Str(class));
    }
    if let Some(cache) = line.cache {
        kv(out, "cache", Value::Str(cache));
    }
    if let Some(saved) = line.saved {
        kv(out, "saved_tokens_in", Value::Int(saved.tokens_in as i64));
        kv(out, "saved_tokens_out", Value::Int(saved.tokens_out as i64));
        kv(out, "saved_cost_usd", Value::Double(saved.cost_usd));
    }
    if !line.guardrails.is_empty() {
        guardrails(out, line.guardrails);
    }
    if let Some(v) = line.snapshot_version {
        kv(out, "snapshot_version", Value::Int(v as i64));
    }
    kv(out, "api", Value::Str(line.api));
    if let Some(operation) = line.operation {
        kv(out, "operation", Value::Str(operation));
        if let Some(version) = line.operation_version {
            kv(out, "operation_version", Value::Str(version));
        }
    }
    if let Some(method) = line.mcp_method {
        kv(out, "mcp_method", Value::Str(method));
    }
    if let Some((trace_id, span_id)) = span {
        // Flags: the W3C trace flags, sampled.
        tag(out, 8, FIXED32);
        out.extend_from_slice(&1u32.to_le_bytes());
        bytes_field(out, 9, &trace_id);
        bytes_field(out, 10, &span_id);
    }
    fixed64(out, 11, nanos(now));
    bytes_field(out, 12, ACCESS_EVENT.as_bytes());
}

/// `guardrails`: an array of `{rule, action}` key-value lists, as the JSON line's array of objects.
fn guardrails(out: &mut Vec<u8>, rules: &[(std::sync::Arc<str>, &'static str)]) {
    message(out, 6, |kv| {
        bytes_field(kv, 1, b"guardrails");
        message(kv, 2, |any| {
            // AnyValue.array_value = 5; ArrayValue.values = 1.
            message(any, 5, |array| {
                for (rule, action) in rules {
                    message(array, 1, |value| {
                        // AnyValue.kvlist_value = 6; KeyValueList.values = 1.
                        message(value, 6, |list| {
                            key_value(list, 1, "rule", Value::Str(rule));
                            key_value(list, 1, "action", Value::Str(action));
                        });
                    });
                }
            });
        });
    });
}

#[cfg(test)]
mod tests {
    //! The encodings read back by a protobuf reader written here from the wire format's rules (not
    //! by the generated types), checked field by field against the `.proto` numbers; the JSON access
    //! line is the oracle of the log record's attributes.

    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;
    use serde_json::{Value as Json, json};
    use tollgate_snapshot::ObjectRef;

    use super::*;
    use crate::telemetry::access_log::Saved;
    use crate::telemetry::otlp::genai::{DURATION_BOUNDS, GenAiCall, TOKEN_BOUNDS, TTFT_BOUNDS};
    use crate::telemetry::trace::otlp::{Scope, encode_request};

    /// One field as the wire has it.
    #[derive(Clone, Debug, PartialEq)]
    enum Raw<'a> {
        Varint(u64),
        Fixed64(u64),
        Len(&'a [u8]),
        Fixed32(u32),
    }

    fn read_varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
        }
        panic!("varint longer than 10 bytes")
    }

    /// Every field of a message, in order; panics on anything malformed.
    fn fields(mut b: &[u8]) -> Vec<(u64, Raw<'_>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let key = read_varint(&mut b);
            let raw = match key & 7 {
                0 => Raw::Varint(read_varint(&mut b)),
                1 => {
                    let (v, rest) = b.split_at(8);
                    b = rest;
                    Raw::Fixed64(u64::from_le_bytes(v.try_into().unwrap()))
                }
                2 => {
                    let n = read_varint(&mut b) as usize;
                    let (v, rest) = b.split_at(n);
                    b = rest;
                    Raw::Len(v)
                }
                5 => {
                    let (v, rest) = b.split_at(4);
                    b = rest;
                    Raw::Fixed32(u32::from_le_bytes(v.try_into().unwrap()))
                }
                w => panic!("wire type {w}"),
            };
            out.push((key >> 3, raw));
        }
        out
    }

    fn all<'a>(m: &[(u64, Raw<'a>)], field: u64) -> Vec<Raw<'a>> {
        m.iter()
            .filter(|(f, _)| *f == field)
            .map(|(_, r)| r.clone())
            .collect()
    }

    fn one<'a>(m: &[(u64, Raw<'a>)], field: u64) -> Raw<'a> {
        let mut v = all(m, field);
        assert_eq!(v.len(), 1, "field {field} once in {m:?}");
        v.remove(0)
    }

    fn bytes<'a>(r: Raw<'a>) -> &'a [u8] {
        match r {
            Raw::Len(b) => b,
            other => panic!("not length-delimited: {other:?}"),
        }
    }

    fn text(r: Raw<'_>) -> String {
        String::from_utf8(bytes(r).to_vec()).unwrap()
    }

    fn fixed64(r: Raw<'_>) -> u64 {
        match r {
            Raw::Fixed64(v) => v,
            other => panic!("not fixed64: {other:?}"),
        }
    }

    /// An `AnyValue` as JSON (a string, number, bool, array or object).
    fn any_value(b: &[u8]) -> Json {
        let f = fields(b);
        assert_eq!(f.len(), 1, "one value in {f:?}");
        match f[0].clone() {
            (1, r) => Json::from(text(r)),
            (2, Raw::Varint(v)) => Json::from(v != 0),
            (3, Raw::Varint(v)) => Json::from(v as i64),
            (4, Raw::Fixed64(v)) => Json::from(f64::from_bits(v)),
            (5, Raw::Len(array)) => Json::Array(
                all(&fields(array), 1)
                    .into_iter()
                    .map(|v| any_value(bytes(v)))
                    .collect(),
            ),
            (6, Raw::Len(list)) => Json::Object(key_values(&fields(list), 1).into_iter().collect()),
            other => panic!("unexpected AnyValue field {other:?}"),
        }
    }

    /// The `KeyValue`s of field `field`, in order.
    fn key_values(m: &[(u64, Raw<'_>)], field: u64) -> Vec<(String, Json)> {
        all(m, field)
            .into_iter()
            .map(|kv| {
                let kv = fields(bytes(kv));
                (text(one(&kv, 1)), any_value(bytes(one(&kv, 2))))
            })
            .collect()
    }

    fn packed_f64(b: &[u8]) -> Vec<f64> {
        b.chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn packed_u64(b: &[u8]) -> Vec<u64> {
        b.chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// The items of the one scope of the one resource of a request, with the resource's attributes.
    fn items(request: &[u8]) -> (Vec<(String, Json)>, Vec<Vec<u8>>) {
        let req = fields(request);
        let resource_x = fields(bytes(one(&req, 1)));
        let resource = key_values(&fields(bytes(one(&resource_x, 1))), 1);
        let scope_x = fields(bytes(one(&resource_x, 2)));
        let scope = fields(bytes(one(&scope_x, 1)));
        assert_eq!(text(one(&scope, 1)), "tollgate-proxy");
        let items = all(&scope_x, 2)
            .into_iter()
            .map(|i| bytes(i).to_vec())
            .collect();
        (resource, items)
    }

    fn envelope(items: &[u8]) -> Vec<u8> {
        let scope = Scope {
            name: "tollgate-proxy",
            version: Some("9.9.9"),
        };
        encode_request(&[("service.name".into(), "gw".into())], &scope, items)
    }

    /// A data point read back: attributes, count, sum, bucket counts.
    type Point = (Vec<(String, Json)>, u64, f64, Vec<u64>);

    #[test]
    fn the_genai_metrics_decode_with_their_names_units_attributes_and_buckets() {
        let counter = prometheus_client::metrics::counter::Counter::default();
        let metrics = GenAiMetrics::new(10, counter);
        let model: Arc<str> = "front-model".into();
        let served: Arc<str> = "gpt-up".into();
        let call = |error, tokens, ttft| GenAiCall {
            operation: "chat",
            provider: "openai",
            request_model: &model,
            response_model: &served,
            error,
            duration: Duration::from_millis(300),
            ttft,
            tokens,
        };
        metrics.record(&call(None, Some((10, 100)), Some(Duration::from_millis(3))));
        metrics.record(&call(None, Some((20, 200)), None));
        metrics.record(&call(Some("upstream_5xx"), None, None));
        let mut out = Vec::new();
        encode_metrics(
            &mut out,
            &metrics,
            UNIX_EPOCH + Duration::from_secs(2_000_000_000),
        );
        let (resource, items) = items(&envelope(&out));
        assert_eq!(resource, [("service.name".to_string(), json!("gw"))]);
        let metrics: Vec<Vec<(u64, Raw<'_>)>> = items.iter().map(|m| fields(m)).collect();
        let names: Vec<(String, String)> = metrics
            .iter()
            .map(|m| (text(one(m, 1)), text(one(m, 3))))
            .collect();
        assert_eq!(
            names,
            [
                ("gen_ai.client.token.usage".into(), "{token}".into()),
                ("gen_ai.server.request.duration".into(), "s".into()),
                ("gen_ai.server.time_to_first_token".into(), "s".into()),
            ]
        );
        // Each: a Histogram (field 9), cumulative, its points with the conventions' bounds.
        let points = |m: &[(u64, Raw<'_>)], bounds: &[f64]| -> Vec<Point> {
            let h = fields(bytes(one(m, 9)));
            assert_eq!(one(&h, 2), Raw::Varint(2), "cumulative");
            all(&h, 1)
                .into_iter()
                .map(|p| {
                    let p = fields(bytes(p));
                    assert_eq!(packed_f64(bytes(one(&p, 7))), bounds);
                    let buckets = packed_u64(bytes(one(&p, 6)));
                    assert_eq!(buckets.len(), bounds.len() + 1);
                    let count = fixed64(one(&p, 4));
                    assert_eq!(buckets.iter().sum::<u64>(), count);
                    assert_eq!(fixed64(one(&p, 3)), 2_000_000_000 * 1_000_000_000);
                    assert!(fixed64(one(&p, 2)) > 0, "start time set");
                    let sum = f64::from_bits(fixed64(one(&p, 5)));
                    (key_values(&p, 9), count, sum, buckets)
                })
                .collect()
        };
        let base = |extra: &[(&str, &str)]| {
            let mut v: Vec<(String, Json)> = [
                ("gen_ai.operation.name", "chat"),
                ("gen_ai.provider.name", "openai"),
                ("gen_ai.request.model", "front-model"),
                ("gen_ai.response.model", "gpt-up"),
            ]
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let sorted = |mut v: Vec<(String, Json)>| {
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let tokens = points(&metrics[0], &TOKEN_BOUNDS);
        assert_eq!(
            tokens.len(),
            2,
            "input and output of the one successful set"
        );
        let (attrs, count, sum, buckets) = &tokens[0];
        assert_eq!(
            sorted(attrs.clone()),
            base(&[("gen_ai.token.type", "input")])
        );
        assert_eq!((*count, *sum), (2, 30.0));
        // 10 tokens in (4, 16], 20 in (16, 64].
        assert_eq!(&buckets[..4], &[0, 0, 1, 1]);
        assert_eq!(
            sorted(tokens[1].0.clone()),
            base(&[("gen_ai.token.type", "output")])
        );
        assert_eq!((tokens[1].1, tokens[1].2), (2, 300.0));
        let durations = points(&metrics[1], &DURATION_BOUNDS);
        assert_eq!(durations.len(), 2, "the successful set and the failed one");
        let mut by_error: Vec<(Vec<(String, Json)>, u64)> = durations
            .iter()
            .map(|(a, c, s, _)| {
                assert!((s / *c as f64 - 0.3).abs() < 1e-9, "seconds: {s}");
                (sorted(a.clone()), *c)
            })
            .collect();
        by_error.sort_by_key(|(a, _)| a.len());
        assert_eq!(by_error[0], (base(&[]), 2));
        assert_eq!(by_error[1], (base(&[("error.type", "upstream_5xx")]), 1));
        let ttft = points(&metrics[2], &TTFT_BOUNDS);
        assert_eq!(ttft.len(), 1);
        assert_eq!(ttft[0].1, 1);
        assert!((ttft[0].2 - 0.003).abs() < 1e-12);
        // 3 ms: in (0.001, 0.005].
        assert_eq!(&ttft[0].3[..2], &[0, 1]);
    }

    #[test]
    fn nothing_counted_is_no_metric() {
        let metrics = GenAiMetrics::new(10, Default::default());
        let mut out = Vec::new();
        encode_metrics(&mut out, &metrics, SystemTime::now());
        assert!(out.is_empty());
    }

    #[test]
    fn the_overflow_set_is_named_by_its_attribute() {
        let metrics = GenAiMetrics::new(0, Default::default());
        let model: Arc<str> = "m".into();
        metrics.record(&GenAiCall {
            operation: "chat",
            provider: "openai",
            request_model: &model,
            response_model: &model,
            error: None,
            duration: Duration::from_millis(1),
            ttft: None,
            tokens: Some((1, 1)),
        });
        let mut out = Vec::new();
        encode_metrics(&mut out, &metrics, SystemTime::now());
        let (_, items) = items(&envelope(&out));
        let duration = fields(&items[1]);
        let h = fields(bytes(one(&duration, 9)));
        let p = fields(bytes(one(&h, 1)));
        assert_eq!(
            key_values(&p, 9),
            [("otel.metric.overflow".to_string(), json!(true))]
        );
    }

    /// The record's attributes as a JSON object, with its other fields checked.
    fn record_attributes(record: &[u8], traced: Option<SpanIds>) -> serde_json::Map<String, Json> {
        let r = fields(record);
        match traced {
            Some((trace, span)) => {
                assert_eq!(bytes(one(&r, 9)), trace);
                assert_eq!(bytes(one(&r, 10)), span);
                assert_eq!(one(&r, 8), Raw::Fixed32(1));
            }
            None => assert!(all(&r, 9).is_empty() && all(&r, 10).is_empty()),
        }
        assert_eq!(text(one(&r, 12)), ACCESS_EVENT);
        assert!(fixed64(one(&r, 11)) > 0);
        key_values(&r, 6).into_iter().collect()
    }

    /// The JSON access line, its `null`s and `time` left out: what the record's attributes must be.
    fn json_line(line: &AccessLine<'_>) -> serde_json::Map<String, Json> {
        let mut out = Vec::new();
        line.write_json(&mut out);
        let Json::Object(mut o) = serde_json::from_slice(&out).unwrap() else {
            panic!("an object")
        };
        o.remove("time");
        o.retain(|_, v| !v.is_null());
        o
    }

    fn a_line<'a>(id: &'a ObjectRef, rules: &'a [(Arc<str>, &'static str)]) -> AccessLine<'a> {
        AccessLine {
            time_unix_ms: 1_709_210_096_007,
            request_id: "req-1",
            method: "POST",
            path: "/team/v1/chat/completions",
            namespace: Some("team"),
            route: Some("chat"),
            consumer: Some(id),
            subscription: Some(id),
            model_requested: Some("front-model"),
            model_served: Some("gpt-up"),
            provider: Some(id),
            stream: true,
            status: 200,
            latency_us: 1_470,
            ttft_us: Some(12_000),
            tokens_in: 5,
            tokens_out: 7,
            cost_usd: 0.000_125,
            retries: 1,
            error_class: None,
            snapshot_version: Some(3),
            api: "prompt",
            operation: Some("summarise"),
            operation_version: Some("v2"),
            mcp_method: None,
            cache: Some("hit"),
            saved: Some(Saved {
                tokens_in: 3,
                tokens_out: 4,
                cost_usd: 0.5,
            }),
            guardrails: rules,
        }
    }

    #[test]
    fn a_log_record_has_the_access_line_s_fields_and_the_call_s_span() {
        let id = ObjectRef::new("team", "app");
        let rules: Vec<(Arc<str>, &'static str)> = vec![
            ("team/pii:email".into(), "mask"),
            ("team/pii:card".into(), "reject"),
        ];
        let line = a_line(&id, &rules);
        let mut record = Vec::new();
        let span = ([7; 16], [9; 8]);
        encode_log(&mut record, &line, Some(span), SystemTime::now());
        let mut batch = Vec::new();
        bytes_field(&mut batch, 2, &record);
        let (_, items) = items(&envelope(&batch));
        assert_eq!(items.len(), 1);
        let attrs = record_attributes(&items[0], Some(span));
        assert_eq!(attrs, json_line(&line));
        assert_eq!(
            attrs["guardrails"],
            json!([{"rule": "team/pii:email", "action": "mask"}, {"rule": "team/pii:card", "action": "reject"}])
        );
        let r = fields(&record);
        assert_eq!(fixed64(one(&r, 1)), 1_709_210_096_007 * 1_000_000);
        assert_eq!(one(&r, 2), Raw::Varint(9));
        assert_eq!(
            any_value(bytes(one(&r, 5))),
            json!("POST /team/v1/chat/completions 200")
        );
    }

    #[test]
    fn an_untraced_failed_call_s_record_is_an_error_without_a_span() {
        let id = ObjectRef::new("team", "app");
        let mut line = a_line(&id, &[]);
        line.status = 502;
        line.error_class = Some("upstream_5xx");
        line.ttft_us = None;
        line.saved = None;
        line.cache = None;
        line.consumer = None;
        let mut record = Vec::new();
        encode_log(&mut record, &line, None, SystemTime::now());
        let attrs = record_attributes(&record, None);
        assert_eq!(attrs, json_line(&line));
        assert_eq!(one(&fields(&record), 2), Raw::Varint(17));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any text in any field (lengths past one varint byte included) gives the JSON line's
        /// values: the lengths computed ahead agree with what is written.
        #[test]
        fn any_line_s_record_carries_the_json_line_s_values(
            texts in prop::collection::vec(".{0,200}", 9),
            numbers in prop::collection::vec(any::<u32>(), 5),
            cost in 0.0f64..1e6,
            rule in ".{0,150}",
            status in 100u16..600,
        ) {
            let id = ObjectRef::new(texts[0].as_str(), texts[1].as_str());
            let rules: Vec<(Arc<str>, &'static str)> = vec![(rule.as_str().into(), "monitor")];
            let line = AccessLine {
                time_unix_ms: i64::from(numbers[0]) * 1000,
                request_id: &texts[2],
                method: "GET",
                path: &texts[3],
                namespace: Some(&texts[4]),
                route: Some(&texts[5]),
                consumer: Some(&id),
                subscription: None,
                model_requested: Some(&texts[6]),
                model_served: Some(&texts[7]),
                provider: Some(&id),
                stream: numbers[1] % 2 == 0,
                status,
                latency_us: u64::from(numbers[2]),
                ttft_us: None,
                tokens_in: u64::from(numbers[3]),
                tokens_out: u64::from(numbers[4]),
                cost_usd: cost,
                retries: numbers[1],
                error_class: Some("timeout"),
                snapshot_version: None,
                api: "mcp",
                operation: Some(&texts[8]),
                operation_version: None,
                mcp_method: Some("tools/call"),
                cache: None,
                saved: None,
                guardrails: &rules,
            };
            let mut record = Vec::new();
            encode_log(&mut record, &line, None, SystemTime::now());
            let attrs = record_attributes(&record, None);
            let want = json_line(&line);
            prop_assert_eq!(attrs.len(), want.len());
            for (k, v) in &want {
                let got = &attrs[k];
                match (v.as_f64(), got.as_f64()) {
                    // JSON writes milliseconds with three decimals and costs as text: compare as numbers.
                    (Some(w), Some(g)) => prop_assert!((w - g).abs() <= 1e-9 * w.abs().max(1.0), "{k}: {w} vs {g}"),
                    _ => prop_assert_eq!(got, v, "{}", k),
                }
            }
        }
    }
}
