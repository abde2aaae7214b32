//! OTLP/HTTP with protobuf bodies, written by hand: an `ExportTraceServiceRequest` encoded straight
//! from the spans (opentelemetry-proto's `collector/trace/v1/trace_service.proto`,
//! `trace/v1/trace.proto`, `common/v1/common.proto`, `resource/v1/resource.proto`), and posted to
//! the collector's `/v1/traces`. The exporter crate first converts every span into its own protobuf
//! types (a string copied per key and value) and then encodes them; here each field is written once.
//! Only what the proxy's spans hold is written: no links, no events, no dropped counts.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::borrow::Cow;

use tollgate_snapshot::ObjectRef;

use super::span::{
    Attr, CallSummary, CallTrace, Group, Kind, SpanRecord, SpanSink, each_span, push_usage,
};

/// Protobuf wire types.
pub(crate) const VARINT: u64 = 0;
pub(crate) const FIXED64: u64 = 1;
pub(crate) const LEN: u64 = 2;
pub(crate) const FIXED32: u64 = 5;

/// `Span.flags`: the parent's remoteness is known, and whether it is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

pub(crate) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

pub(crate) fn tag(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, field << 3 | wire);
}

pub(crate) fn bytes_field(out: &mut Vec<u8>, field: u64, b: &[u8]) {
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

/// The encoded size of a string field's body with its tag: tag, length, bytes.
fn str_len(s: &str) -> usize {
    1 + varint_len(s.len() as u64) + s.len()
}

/// The encoded size of an `AnyValue` holding `v` (without its own tag and length).
fn any_value_len(v: &Attr<'_>) -> usize {
    match v {
        Attr::Bool(_) => 2,
        Attr::Int(i) => 1 + varint_len(*i as u64),
        Attr::Float(_) => 9,
        Attr::Str(s) => str_len(s),
        Attr::Ref(r) => {
            let n = ref_len(r);
            1 + varint_len(n as u64) + n
        }
        Attr::Strs(v) => {
            let inner = strs_len(v);
            1 + varint_len(inner as u64) + inner
        }
    }
}

/// The encoded size of an `ArrayValue` of strings: each an `AnyValue` holding a string.
fn strs_len(v: &[Cow<'static, str>]) -> usize {
    v.iter()
        .map(|s| {
            let each = str_len(s);
            1 + varint_len(each as u64) + each
        })
        .sum()
}

/// The length of `namespace/name`.
fn ref_len(r: &ObjectRef) -> usize {
    r.namespace.len() + 1 + r.name.len()
}

/// Writes `namespace/name`.
fn write_ref(out: &mut Vec<u8>, r: &ObjectRef) {
    out.extend_from_slice(r.namespace.as_bytes());
    out.push(b'/');
    out.extend_from_slice(r.name.as_bytes());
}

/// An `AnyValue`'s fields.
fn any_value(out: &mut Vec<u8>, v: &Attr<'_>) {
    match v {
        Attr::Bool(b) => {
            tag(out, 2, VARINT);
            out.push(u8::from(*b));
        }
        Attr::Int(i) => {
            tag(out, 3, VARINT);
            varint(out, *i as u64);
        }
        Attr::Float(f) => {
            tag(out, 4, FIXED64);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Attr::Str(s) => bytes_field(out, 1, s.as_bytes()),
        Attr::Ref(r) => {
            tag(out, 1, LEN);
            varint(out, ref_len(r) as u64);
            write_ref(out, r);
        }
        Attr::Strs(v) => {
            tag(out, 5, LEN);
            varint(out, strs_len(v) as u64);
            for s in v.iter() {
                tag(out, 1, LEN);
                varint(out, str_len(s) as u64);
                bytes_field(out, 1, s.as_bytes());
            }
        }
    }
}

/// A `KeyValue` as field `field` of its message.
fn key_value(out: &mut Vec<u8>, field: u64, key: &str, value: &Attr<'_>) {
    if field < 16
        && match value {
            Attr::Strs(v) => short_strs(out, field as u8, key, v),
            _ => short_key_value(out, field as u8, key, value),
        }
    {
        return;
    }
    long_key_value(out, field, key, value);
}

/// A `KeyValue` whose lengths take more than a byte each, or an array, written field by field.
#[inline(never)]
fn long_key_value(out: &mut Vec<u8>, field: u64, key: &str, value: &Attr<'_>) {
    let value_len = any_value_len(value);
    let len = str_len(key) + 1 + varint_len(value_len as u64) + value_len;
    out.reserve(len + 4);
    tag(out, field, LEN);
    varint(out, len as u64);
    bytes_field(out, 1, key.as_bytes());
    tag(out, 2, LEN);
    varint(out, value_len as u64);
    any_value(out, value);
}

/// The usual `KeyValue` — a key and a scalar or string value whose every length fits in one varint
/// byte — written with a few slice copies instead of field by field; `false` (nothing written) for
/// any other.
fn short_key_value(out: &mut Vec<u8>, field: u8, key: &str, value: &Attr<'_>) -> bool {
    // The value's field (2) with its length, then the AnyValue's own bytes for a scalar (tag and
    // value, at most 1 + 10) or a string's tag and length: at most 2 + 11 bytes, written with one
    // copy; a string's text follows.
    let mut head = [0u8; 13];
    // A string's text, or the object reference written after the head.
    let mut object = None;
    let (head_len, text): (usize, &[u8]) = match value {
        Attr::Str(s) if s.len() < 128 => {
            head[2] = (1 << 3 | LEN) as u8;
            head[3] = s.len() as u8;
            (4, s.as_bytes())
        }
        Attr::Ref(r) if ref_len(r) < 128 => {
            head[2] = (1 << 3 | LEN) as u8;
            head[3] = ref_len(r) as u8;
            object = Some(*r);
            (4, &[])
        }
        Attr::Int(i) => {
            head[2] = (3 << 3 | VARINT) as u8;
            let mut v = *i as u64;
            let mut n = 3;
            while v >= 0x80 {
                head[n] = (v as u8) | 0x80;
                v >>= 7;
                n += 1;
            }
            head[n] = v as u8;
            (n + 1, &[])
        }
        Attr::Float(f) => {
            head[2] = (4 << 3 | FIXED64) as u8;
            head[3..11].copy_from_slice(&f.to_le_bytes());
            (11, &[])
        }
        Attr::Bool(b) => {
            head[2] = (2 << 3 | VARINT) as u8;
            head[3] = u8::from(*b);
            (4, &[])
        }
        _ => return false,
    };
    let any_len = head_len - 2 + text.len() + object.map_or(0, ref_len);
    let len = 2 + key.len() + 2 + any_len;
    if key.len() >= 128 || len >= 128 {
        return false;
    }
    head[0] = (2 << 3 | LEN) as u8;
    head[1] = any_len as u8;
    short_key(out, field, len, key);
    out.extend_from_slice(&head[..head_len]);
    out.extend_from_slice(text);
    if let Some(r) = object {
        write_ref(out, r);
    }
    true
}

/// A `KeyValue`'s tag and length (`len` under 128) under `field`, then its key (under 128 bytes).
/// Inlined where it is called, so that a literal key's length and copy are known when compiled.
#[inline(always)]
fn short_key(out: &mut Vec<u8>, field: u8, len: usize, key: &str) {
    out.reserve(2 + len);
    out.extend_from_slice(&[
        field << 3 | LEN as u8,
        len as u8,
        (1 << 3 | LEN) as u8,
        key.len() as u8,
    ]);
    out.extend_from_slice(key.as_bytes());
}

/// A `KeyValue` holding an array of strings (an answer's finish reasons) whose every length fits in
/// one varint byte, its lengths worked out once; `false` (nothing written) for any other.
fn short_strs(out: &mut Vec<u8>, field: u8, key: &str, v: &[Cow<'static, str>]) -> bool {
    // Each element is an AnyValue (tag, length) holding a string (tag, length, text).
    let array_len: usize = v.iter().map(|s| 4 + s.len()).sum();
    // The AnyValue: the array's tag and length, then the array.
    let any_len = 2 + array_len;
    let len = 2 + key.len() + 2 + any_len;
    if len >= 128 {
        return false;
    }
    short_key(out, field, len, key);
    out.extend_from_slice(&[
        (2 << 3 | LEN) as u8,
        any_len as u8,
        (5 << 3 | LEN) as u8,
        array_len as u8,
    ]);
    for s in v {
        out.extend_from_slice(&[
            (1 << 3 | LEN) as u8,
            (s.len() + 2) as u8,
            (1 << 3 | LEN) as u8,
            s.len() as u8,
        ]);
        out.extend_from_slice(s.as_bytes());
    }
    true
}

pub(crate) fn nanos(t: SystemTime) -> u64 {
    // Seconds and nanoseconds apart, not `as_nanos` (a 128-bit product and a check for each).
    t.duration_since(UNIX_EPOCH).map_or(0, |d| {
        d.as_secs()
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(u64::from(d.subsec_nanos())))
            .unwrap_or(u64::MAX)
    })
}

pub(crate) fn fixed64(out: &mut Vec<u8>, field: u64, v: u64) {
    tag(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

/// A `Span`'s fields before its attributes (fields 1 to 8): the fixed-size ones gathered on the
/// stack and copied in two runs around the texts. `end`, when given, is a time and its
/// nanoseconds worked out already (the call's end, where most of its spans end).
fn span_head(out: &mut Vec<u8>, s: &SpanRecord<'_>, end: Option<(SystemTime, u64)>) {
    // trace_id = 1, span_id = 2, each with its tag and one-byte length.
    let mut ids = [0u8; 28];
    ids[0] = (1 << 3 | LEN) as u8;
    ids[1] = 16;
    ids[2..18].copy_from_slice(&s.trace_id);
    ids[18] = (2 << 3 | LEN) as u8;
    ids[19] = 8;
    ids[20..].copy_from_slice(&s.span_id);
    out.extend_from_slice(&ids);
    if let Some(state) = s.trace_state {
        bytes_field(out, 3, state.as_bytes());
    }
    if let Some(parent) = &s.parent {
        let mut field = [0u8; 10];
        field[0] = (4 << 3 | LEN) as u8;
        field[1] = 8;
        field[2..].copy_from_slice(parent);
        out.extend_from_slice(&field);
    }
    tag(out, 5, LEN);
    varint(out, s.name.len() as u64);
    s.name.write(out);
    // kind = 6 (SPAN_KIND_INTERNAL = 1, SERVER = 2, CLIENT = 3, PRODUCER = 4, CONSUMER = 5), then
    // start_time_unix_nano = 7 and end_time_unix_nano = 8, fixed 64-bit.
    let mut times = [0u8; 20];
    times[0] = (6 << 3 | VARINT) as u8;
    times[1] = match s.kind {
        Kind::Server => 2,
        Kind::Client => 3,
    };
    times[2] = (7 << 3 | FIXED64) as u8;
    times[3..11].copy_from_slice(&nanos(s.start).to_le_bytes());
    times[11] = (8 << 3 | FIXED64) as u8;
    let end = match end {
        Some((at, n)) if at == s.end => n,
        _ => nanos(s.end),
    };
    times[12..].copy_from_slice(&end.to_le_bytes());
    out.extend_from_slice(&times);
}

/// A `Span`'s fields after its attributes: its status (when an error) and flags.
fn span_tail(out: &mut Vec<u8>, error: Option<&str>, parent_remote: bool) {
    // STATUS_CODE_UNSET = 0, OK = 1, ERROR = 2.
    if let Some(description) = error {
        // Status: message = 2, code = 3.
        let len = if description.is_empty() {
            0
        } else {
            str_len(description)
        } + 2;
        tag(out, 15, LEN);
        varint(out, len as u64);
        if !description.is_empty() {
            bytes_field(out, 2, description.as_bytes());
        }
        tag(out, 3, VARINT);
        varint(out, 2);
    }
    let remote = if parent_remote { IS_REMOTE } else { 0 };
    tag(out, 16, FIXED32);
    // The trace flags: sampled.
    let flags = 1 | HAS_IS_REMOTE | remote;
    out.extend_from_slice(&flags.to_le_bytes());
}

/// Appends `spans` to `out` as the `spans` fields of a `ScopeSpans` (field 2 each), every
/// attribute written by the general [`key_value`]: a list of spans encoded, the reference
/// [`encode_call`] is tested against.
#[cfg(test)]
pub fn encode_spans(out: &mut Vec<u8>, spans: &[SpanRecord<'_>]) {
    for s in spans {
        let at = open_span(out);
        span_head(out, s, None);
        for (key, value) in &s.attrs {
            key_value(out, 9, key, value);
        }
        span_tail(out, s.error, s.parent_remote);
        close_span(out, at);
    }
}

/// Appends the spans of a call that ended at `end` to `out` as [`encode_spans`] does, each written
/// as it is made (no list of spans or of attributes first), the attributes of its route and
/// backends copied from `runs`; returns how many.
pub fn encode_call(
    out: &mut Vec<u8>,
    trace: &CallTrace,
    summary: &CallSummary<'_>,
    end: SystemTime,
    runs: &mut Runs,
) -> usize {
    let mut sink = Encoder {
        out,
        runs,
        end: (end, nanos(end)),
        at: 0,
        tail: (None, false),
        n: 0,
        usage_pending: None,
        usage_written: None,
    };
    each_span(trace, summary, end, &mut sink);
    sink.n
}

/// The spans of a call encoded as [`each_span`] makes them.
struct Encoder<'o, 'a> {
    out: &'o mut Vec<u8>,
    runs: &'o mut Runs,
    /// The call's end and its nanoseconds.
    end: (SystemTime, u64),
    /// Where the span under way's length goes.
    at: usize,
    /// The span under way's error and whether its parent is remote, written after its attributes.
    tail: (Option<&'a str>, bool),
    /// Spans written.
    n: usize,
    /// The usage attributes written in the span under way: where they start after its length, and
    /// how many bytes.
    usage_pending: Option<(usize, usize)>,
    /// The usage attributes written in an ended span: where they are in `out`, to copy.
    usage_written: Option<(usize, usize)>,
}

impl<'a> SpanSink<'a> for Encoder<'_, 'a> {
    fn begin(&mut self, span: SpanRecord<'a>) {
        self.at = open_span(self.out);
        span_head(self.out, &span, Some(self.end));
        self.tail = (span.error, span.parent_remote);
    }

    fn attr(&mut self, key: &'a str, value: Attr<'a>) {
        key_value(self.out, 9, key, &value);
    }

    #[inline(always)]
    fn str(&mut self, key: &'a str, value: &'a str) {
        str_attr(self.out, key, value);
    }

    #[inline(always)]
    fn int(&mut self, key: &'a str, value: i64) {
        int_attr(self.out, key, value);
    }

    #[inline(always)]
    fn count(&mut self, key: &'a str, value: u64) {
        int_attr(self.out, key, i64::try_from(value).unwrap_or(i64::MAX));
    }

    #[inline(always)]
    fn float(&mut self, key: &'a str, value: f64) {
        float_attr(self.out, key, value);
    }

    fn group(&mut self, group: Group<'a>) {
        self.out.extend_from_slice(self.runs.encoded(&group));
    }

    fn usage(&mut self, summary: &CallSummary<'_>) {
        if let Some((start, len)) = self.usage_written {
            self.out.extend_from_within(start..start + len);
            return;
        }
        let start = self.out.len();
        push_usage(self, summary);
        self.usage_pending = Some((start - (self.at + 2), self.out.len() - start));
    }

    fn end(&mut self) {
        span_tail(self.out, self.tail.0, self.tail.1);
        let content = close_span(self.out, self.at);
        if let Some((from_content, len)) = self.usage_pending.take() {
            self.usage_written = Some((content + from_content, len));
        }
        self.n += 1;
    }
}

/// A string attribute (field 9 of a `Span`); when the lengths take one byte each (the usual case)
/// written here with two copies besides the key and value, else the long way. Inlined where it is
/// called, so that a literal key's length and copy are known when compiled.
#[inline(always)]
fn str_attr(out: &mut Vec<u8>, key: &str, value: &str) {
    // The AnyValue: the string's tag and length, then its bytes.
    let any_len = 2 + value.len();
    // The KeyValue: the key's tag, length and bytes, then the AnyValue's tag and length.
    let len = 2 + key.len() + 2 + any_len;
    if len >= 128 {
        long_key_value(out, 9, key, &Attr::Str(Cow::Borrowed(value)));
        return;
    }
    short_key(out, 9, len, key);
    out.extend_from_slice(&[
        (2 << 3 | LEN) as u8,
        any_len as u8,
        (1 << 3 | LEN) as u8,
        value.len() as u8,
    ]);
    out.extend_from_slice(value.as_bytes());
}

/// An integer attribute (field 9 of a `Span`), written as [`str_attr`] writes a string.
#[inline(always)]
fn int_attr(out: &mut Vec<u8>, key: &str, value: i64) {
    let n = varint_len(value as u64);
    let any_len = 1 + n;
    let len = 2 + key.len() + 2 + any_len;
    if len >= 128 {
        long_key_value(out, 9, key, &Attr::Int(value));
        return;
    }
    short_key(out, 9, len, key);
    out.extend_from_slice(&[(2 << 3 | LEN) as u8, any_len as u8, (3 << 3 | VARINT) as u8]);
    varint(out, value as u64);
}

/// A floating-point attribute (field 9 of a `Span`), written as [`str_attr`] writes a string.
#[inline(always)]
fn float_attr(out: &mut Vec<u8>, key: &str, value: f64) {
    let len = 2 + key.len() + 2 + 9;
    if len >= 128 {
        long_key_value(out, 9, key, &Attr::Float(value));
        return;
    }
    short_key(out, 9, len, key);
    let mut any = [0u8; 11];
    any[0] = (2 << 3 | LEN) as u8;
    any[1] = 9;
    any[2] = (4 << 3 | FIXED64) as u8;
    any[3..].copy_from_slice(&value.to_le_bytes());
    out.extend_from_slice(&any);
}

/// Opens a span as field 2 of a `ScopeSpans`: its tag and room for a two-byte length; returns
/// where the length goes.
fn open_span(out: &mut Vec<u8>) -> usize {
    tag(out, 2, LEN);
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    at
}

/// Fills in the length of the span opened at `at`; a span whose length takes another number of
/// bytes (under 128 or from 16 KiB) is moved. Returns where the span's fields start.
fn close_span(out: &mut Vec<u8>, at: usize) -> usize {
    let len = out.len() - at - 2;
    if varint_len(len as u64) == 2 {
        out[at] = (len as u8 & 0x7f) | 0x80;
        out[at + 1] = (len >> 7) as u8;
        at + 2
    } else {
        let mut prefix = Vec::with_capacity(5);
        varint(&mut prefix, len as u64);
        let fields = at + prefix.len();
        out.splice(at..at + 2, prefix);
        fields
    }
}

/// The encoded attributes of the [`Group`]s met lately (a worker's own): the route, consumer and
/// subscription of a call, and an attempt's backend, are the same for call after call, so their
/// `KeyValue` fields are written once and then copied as one run. An entry keeps the names it was
/// made from (their `Arc`s, so that a pointer seen again is the same text) and matches a group of
/// the same texts, so a changed object in a new snapshot gets bytes of its own.
#[derive(Default)]
pub struct Runs {
    entries: Vec<(RunKey, Vec<u8>)>,
    /// The entry replaced next once all [`Runs::MAX`] are in use.
    next: usize,
}

/// What a run was encoded from.
enum RunKey {
    Names {
        method: &'static str,
        endpoint: Option<&'static str>,
        names: [Option<ObjectRef>; 3],
        operation: Option<&'static str>,
        model: Option<Arc<str>>,
        path: String,
        status: u16,
        retries: u64,
    },
    Backend {
        operation: &'static str,
        provider_name: &'static str,
        model: Arc<str>,
        provider: ObjectRef,
        server: Option<(Arc<str>, u16)>,
        status: Option<u16>,
        response_model: Option<Arc<str>>,
        finish_reasons: Vec<Cow<'static, str>>,
    },
}

/// The same text: the same allocation, or equal bytes.
fn same_text(a: &Arc<str>, b: &str) -> bool {
    same_str(a, b)
}

/// The same text: the same bytes in memory (the usual case of the constants and shared names a run
/// is keyed by, told apart without a comparison call), or equal bytes.
fn same_str(a: &str, b: &str) -> bool {
    std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len() || a == b
}

/// [`same_str`] for optional texts.
fn same_opt(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same_str(a, b),
        (None, None) => true,
        _ => false,
    }
}

#[inline]
fn same_object(a: &ObjectRef, b: &ObjectRef) -> bool {
    same_text(&a.namespace, &b.namespace) && same_text(&a.name, &b.name)
}

impl RunKey {
    fn of(group: &Group<'_>) -> Self {
        match *group {
            Group::Names {
                method,
                endpoint,
                names,
                operation,
                model,
                path,
                status,
                retries,
            } => RunKey::Names {
                method,
                endpoint,
                names: names.map(|n| n.cloned()),
                operation,
                model: model.cloned(),
                path: path.to_owned(),
                status,
                retries,
            },
            Group::Backend {
                operation,
                provider_name,
                model,
                provider,
                server,
                status,
                response_model,
                finish_reasons,
            } => RunKey::Backend {
                operation,
                provider_name,
                model: model.clone(),
                provider: provider.clone(),
                server: server.cloned(),
                status,
                response_model: response_model.cloned(),
                finish_reasons: finish_reasons.to_vec(),
            },
        }
    }

    fn matches(&self, group: &Group<'_>) -> bool {
        match (self, group) {
            (
                RunKey::Names {
                    method: kept_method,
                    endpoint: kept_endpoint,
                    names: kept,
                    operation: kept_operation,
                    model: kept_model,
                    path: kept_path,
                    status: kept_status,
                    retries: kept_retries,
                },
                Group::Names {
                    method,
                    endpoint,
                    names,
                    operation,
                    model,
                    path,
                    status,
                    retries,
                },
            ) => {
                kept_status == status
                    && kept_retries == retries
                    && same_str(kept_method, method)
                    && same_opt(*kept_endpoint, *endpoint)
                    && same_opt(*kept_operation, *operation)
                    && same_opt(kept_model.as_deref(), model.map(|m| &**m))
                    && same_str(kept_path, path)
                    && kept.iter().zip(names).all(|(k, n)| match (k, n) {
                        (Some(k), Some(n)) => same_object(k, n),
                        (None, None) => true,
                        _ => false,
                    })
            }
            (
                RunKey::Backend {
                    operation,
                    provider_name,
                    model,
                    provider,
                    server,
                    status,
                    response_model,
                    finish_reasons,
                },
                Group::Backend {
                    operation: op,
                    provider_name: name,
                    model: m,
                    provider: p,
                    server: s,
                    status: st,
                    response_model: rm,
                    finish_reasons: fr,
                },
            ) => {
                status == st
                    && same_str(operation, op)
                    && same_opt(response_model.as_deref(), rm.map(|m| &**m))
                    && finish_reasons.len() == fr.len()
                    && finish_reasons.iter().zip(*fr).all(|(a, b)| same_str(a, b))
                    && same_str(provider_name, name)
                    && same_text(model, m)
                    && same_object(provider, p)
                    && match (server, s) {
                        (Some((host, port)), Some((h, p))) => port == p && same_text(host, h),
                        (None, None) => true,
                        _ => false,
                    }
            }
            _ => false,
        }
    }
}

impl Runs {
    /// Most groups kept.
    const MAX: usize = 16;

    /// The `KeyValue` fields (field 9 of a `Span`) of `group`'s attributes.
    pub fn encoded(&mut self, group: &Group<'_>) -> &[u8] {
        let found = self.entries.iter().position(|(key, _)| key.matches(group));
        let at = match found {
            Some(at) => at,
            None => {
                let mut bytes = Vec::with_capacity(128);
                group.each(|key, value| key_value(&mut bytes, 9, key, &value));
                let entry = (RunKey::of(group), bytes);
                if self.entries.len() < Self::MAX {
                    self.entries.push(entry);
                    self.entries.len() - 1
                } else {
                    let at = self.next;
                    self.next = (self.next + 1) % Self::MAX;
                    self.entries[at] = entry;
                    at
                }
            }
        };
        &self.entries[at].1
    }
}

/// The scope every span of the proxy's comes from.
pub struct Scope<'a> {
    pub name: &'a str,
    pub version: Option<&'a str>,
}

/// The envelope of an `ExportTraceServiceRequest` of one resource and one scope, before the scope's
/// items: what does not change from one export to the next, written once.
pub struct RequestHead {
    /// `ResourceSpans.resource` (field 1) with its tag and length.
    resource: Vec<u8>,
    /// `ScopeSpans.scope` (field 1) with its tag and length.
    scope: Vec<u8>,
}

impl RequestHead {
    /// The envelope of one resource (its string attributes `resource`) and one scope.
    pub fn new(resource: &[(String, String)], scope: &Scope<'_>) -> Self {
        let mut scratch = Vec::new();
        // InstrumentationScope: name = 1, version = 2.
        let mut scope_head = Vec::with_capacity(64);
        nested(&mut scope_head, 1, &mut scratch, |m| {
            bytes_field(m, 1, scope.name.as_bytes());
            if let Some(version) = scope.version {
                bytes_field(m, 2, version.as_bytes());
            }
        });
        // Resource: attributes = 1.
        let mut resource_head = Vec::with_capacity(256);
        nested(&mut resource_head, 1, &mut scratch, |m| {
            for (k, v) in resource {
                key_value(m, 1, k, &Attr::Str(Cow::Borrowed(v)));
            }
        });
        Self {
            resource: resource_head,
            scope: scope_head,
        }
    }

    /// The most bytes [`RequestHead::write`] writes (two lengths of at most 5 bytes each).
    pub fn max_len(&self) -> usize {
        self.resource.len() + self.scope.len() + 12
    }

    /// Writes the request up to its items, for `items_len` bytes of items (the `spans` fields of a
    /// `ScopeSpans`, or the scope items of another signal) to follow.
    pub fn write(&self, out: &mut Vec<u8>, items_len: usize) {
        let scope_spans_len = self.scope.len() + items_len;
        // ResourceSpans: resource = 1, scope_spans = 2.
        let resource_spans_len =
            self.resource.len() + 1 + varint_len(scope_spans_len as u64) + scope_spans_len;
        // ExportTraceServiceRequest: resource_spans = 1.
        tag(out, 1, LEN);
        varint(out, resource_spans_len as u64);
        out.extend_from_slice(&self.resource);
        tag(out, 2, LEN);
        varint(out, scope_spans_len as u64);
        out.extend_from_slice(&self.scope);
    }
}

/// An `ExportTraceServiceRequest` of one resource (its string attributes `resource`) and one scope
/// holding the spans `spans` (encoded by [`encode_spans`]).
pub fn encode_request(resource: &[(String, String)], scope: &Scope<'_>, spans: &[u8]) -> Vec<u8> {
    let head = RequestHead::new(resource, scope);
    // Written front to back, the spans copied once.
    let mut request = Vec::with_capacity(head.max_len() + spans.len());
    head.write(&mut request, spans.len());
    request.extend_from_slice(spans);
    request
}

/// Posts encoded requests to a collector's `/v1/traces` (or another signal's path) over HTTP, or
/// HTTPS with the TLS settings it was made with.
pub struct HttpSender {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: http::Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

/// The TLS settings of an OTLP/gRPC channel to an `https://` collector: trust in the certificates of
/// `ca_pem` alone when given (checked first by `upstream::tls::client_config`, so a text without a
/// usable certificate is refused before tonic sees it), else in the public roots.
pub fn grpc_tls(ca_pem: Option<&str>) -> Result<tonic::transport::ClientTlsConfig, &'static str> {
    let tls = tonic::transport::ClientTlsConfig::new();
    match ca_pem {
        None => Ok(tls.with_webpki_roots()),
        Some(pem) => {
            crate::upstream::tls::client_config(Some(pem))
                .map_err(|_| "its CA certificates cannot be used as trust roots")?;
            Ok(tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)))
        }
    }
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
    /// A sender to `url` (the whole URL, `/v1/traces` included) with `headers` on every request;
    /// an `https://` URL is reached with `tls`.
    pub fn new(
        url: http::Uri,
        headers: &[(String, String)],
        timeout: Duration,
        tls: rustls::ClientConfig,
    ) -> Self {
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
            client: Client::builder(TokioExecutor::new())
                .build(crate::upstream::tls::connector(tls, timeout)),
            url,
            headers,
            timeout,
        }
    }

    /// Sends one request body.
    pub async fn send(&self, body: Vec<u8>) -> Result<(), SendError> {
        self.send_bytes(Bytes::from(body)).await
    }

    /// Sends one request body held as `Bytes` (a batch's tail, not copied).
    pub async fn send_bytes(&self, body: Bytes) -> Result<(), SendError> {
        let mut request = http::Request::post(self.url.clone())
            .body(Full::new(body))
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
pub(super) mod tests {
    use super::*;
    use crate::telemetry::trace::span::SpanName;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use proptest::prelude::*;
    use prost::Message;

    fn a_span<'a>(
        attrs: Vec<(&'a str, Attr<'a>)>,
        error: Option<&'a str>,
        remote: bool,
    ) -> SpanRecord<'a> {
        SpanRecord {
            trace_id: [7; 16],
            span_id: [3; 8],
            parent: Some([9; 8]),
            parent_remote: remote,
            trace_state: Some("vendor=opaque"),
            kind: Kind::Client,
            name: SpanName::Two("chat", "gpt-up"),
            start: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            end: UNIX_EPOCH + Duration::from_nanos(1_700_000_001_000_000_000),
            attrs,
            error,
        }
    }

    pub(crate) fn value_of(v: &Attr<'_>) -> any_value::Value {
        match v {
            Attr::Bool(b) => any_value::Value::BoolValue(*b),
            Attr::Int(i) => any_value::Value::IntValue(*i),
            Attr::Float(f) => any_value::Value::DoubleValue(*f),
            Attr::Str(s) => any_value::Value::StringValue(s.to_string()),
            Attr::Ref(r) => any_value::Value::StringValue(r.joined()),
            Attr::Strs(v) => {
                any_value::Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                    values: v
                        .iter()
                        .map(|s| opentelemetry_proto::tonic::common::v1::AnyValue {
                            value: Some(any_value::Value::StringValue(s.to_string())),
                        })
                        .collect(),
                })
            }
        }
    }

    fn request(
        resource: &[(String, String)],
        spans: &[SpanRecord<'_>],
    ) -> ExportTraceServiceRequest {
        let mut encoded = Vec::new();
        encode_spans(&mut encoded, spans);
        let scope = Scope {
            name: "tollgate-proxy",
            version: Some("1.2.3"),
        };
        ExportTraceServiceRequest::decode(encode_request(resource, &scope, &encoded).as_slice())
            .unwrap()
    }

    #[test]
    fn a_request_decodes_as_the_protobuf_types_say() {
        let reasons = vec![Cow::Borrowed("stop"), Cow::Owned("length".to_string())];
        let attrs = vec![
            ("gen_ai.operation.name", Attr::Str(Cow::Borrowed("chat"))),
            ("gen_ai.usage.input_tokens", Attr::Int(1234)),
            ("gen_ai.usage.output_tokens", Attr::Int(-1)),
            ("tollgate.cost_usd", Attr::Float(0.0125)),
            ("gen_ai.request.stream", Attr::Bool(true)),
            ("gen_ai.response.finish_reasons", Attr::Strs(&reasons)),
        ];
        let mut plain = a_span(Vec::new(), None, false);
        plain.parent = None;
        plain.trace_state = None;
        plain.kind = Kind::Server;
        let spans = [a_span(attrs.clone(), Some("upstream_5xx"), true), plain];
        let decoded = request(&[("service.name".into(), "tollgate-test".into())], &spans);
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
        let status = s.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "upstream_5xx"));
        let other = &ss.spans[1];
        assert_eq!(other.flags, 0x101);
        assert_eq!(other.status, None);
        assert_eq!(other.kind, 2);
        assert!(other.parent_span_id.is_empty() && other.trace_state.is_empty());
        assert_eq!(s.attributes.len(), attrs.len());
        for (got, (key, want)) in s.attributes.iter().zip(&attrs) {
            assert_eq!(&got.key, key);
            assert_eq!(
                got.value.as_ref().unwrap().value.clone().unwrap(),
                value_of(want)
            );
        }
    }

    #[test]
    fn a_short_array_of_strings_is_written_as_the_long_way_writes_it() {
        let key = "gen_ai.response.finish_reasons";
        for v in [
            vec![],
            vec![Cow::Borrowed("stop")],
            vec!["stop".into(), "length".into(), Cow::Owned("x".repeat(40))],
            vec![Cow::Owned("y".repeat(90))],
        ] {
            let (mut short, mut long) = (Vec::new(), Vec::new());
            let written = short_strs(&mut short, 9, key, &v);
            long_key_value(&mut long, 9, key, &Attr::Strs(&v));
            // The last is too long for one-byte lengths: left to the long way.
            assert_eq!(written, v.first().is_none_or(|s| s.len() < 90));
            assert!(if written {
                short == long
            } else {
                short.is_empty()
            });
        }
    }

    /// An attribute's value with storage of its own, for the proptest.
    #[derive(Clone, Debug)]
    enum Owned {
        Str(String),
        Int(i64),
        Float(f64),
        Bool(bool),
        Strs(Vec<Cow<'static, str>>),
    }

    impl Owned {
        fn attr(&self) -> Attr<'_> {
            match self {
                Owned::Str(s) => Attr::Str(Cow::Borrowed(s)),
                Owned::Int(i) => Attr::Int(*i),
                Owned::Float(f) => Attr::Float(*f),
                Owned::Bool(b) => Attr::Bool(*b),
                Owned::Strs(v) => Attr::Strs(v),
            }
        }
    }

    fn any_attribute() -> impl Strategy<Value = (String, Owned)> {
        let value = prop_oneof![
            any::<bool>().prop_map(Owned::Bool),
            any::<i64>().prop_map(Owned::Int),
            any::<f64>().prop_map(Owned::Float),
            ".{0,300}".prop_map(Owned::Str),
            prop::collection::vec(".{0,40}", 0..4)
                .prop_map(|v| Owned::Strs(v.into_iter().map(Cow::Owned).collect())),
        ];
        (".{0,200}", value)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// The typed attribute writers write what the general one writes, for keys and values
        /// short and long.
        #[test]
        fn typed_attributes_are_written_as_the_general_writer_writes_them(
            key in ".{0,140}",
            text in ".{0,140}",
            int in any::<i64>(),
            float in any::<f64>(),
        ) {
            let general = |value: Attr<'_>| {
                let mut out = Vec::new();
                key_value(&mut out, 9, &key, &value);
                out
            };
            let typed = |write: &dyn Fn(&mut Vec<u8>)| {
                let mut out = vec![7];
                write(&mut out);
                out.split_off(1)
            };
            prop_assert_eq!(
                typed(&|out| str_attr(out, &key, &text)),
                general(Attr::Str(Cow::Borrowed(&text)))
            );
            prop_assert_eq!(typed(&|out| int_attr(out, &key, int)), general(Attr::Int(int)));
            prop_assert_eq!(
                typed(&|out| float_attr(out, &key, float)),
                general(Attr::Float(float))
            );
        }

        /// Any attributes round-trip through the protobuf types (sizes computed ahead agree with
        /// what is written, or the decoding fails).
        #[test]
        fn any_attributes_decode_to_themselves(
            attrs in prop::collection::vec(any_attribute(), 0..12),
            name in ".{0,100}",
        ) {
            let borrowed: Vec<(&str, Attr<'_>)> = attrs.iter().map(|(k, v)| (k.as_str(), v.attr())).collect();
            let mut span = a_span(borrowed.clone(), None, false);
            span.name = SpanName::One(Cow::Borrowed(&name));
            let strings: Vec<(String, String)> = attrs
                .iter()
                .filter_map(|(k, v)| match v { Owned::Str(s) => Some((k.clone(), s.clone())), _ => None })
                .collect();
            let decoded = request(&strings, &[span]);
            let s = &decoded.resource_spans[0].scope_spans[0].spans[0];
            prop_assert_eq!(&s.name, &name);
            prop_assert_eq!(s.attributes.len(), attrs.len());
            for (got, (key, want)) in s.attributes.iter().zip(&borrowed) {
                prop_assert_eq!(&got.key, key);
                let got = got.value.as_ref().and_then(|v| v.value.clone()).unwrap();
                match (want, got) {
                    (Attr::Float(w), any_value::Value::DoubleValue(g)) => {
                        prop_assert_eq!(w.to_bits(), g.to_bits());
                    }
                    (want, got) => prop_assert_eq!(got, value_of(want)),
                }
            }
            let resource = &decoded.resource_spans[0].resource.as_ref().unwrap().attributes;
            prop_assert_eq!(resource.len(), strings.len());
            for (got, (k, v)) in resource.iter().zip(&strings) {
                prop_assert_eq!(&got.key, k);
                prop_assert_eq!(
                    got.value.as_ref().and_then(|v| v.value.clone()),
                    Some(any_value::Value::StringValue(v.clone()))
                );
            }
        }
    }
}
