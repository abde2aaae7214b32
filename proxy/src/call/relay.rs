//! Relaying an upstream response body to the client, frame by frame.
//!
//! Backpressure is structural: a frame is pulled from upstream only when the server polls this body,
//! which it does only when the client connection can take more. Dropping the body (client gone) drops
//! the upstream response, which closes that upstream connection instead of returning it to the pool.
//!
//! Along the way the relay reads `usage`: for SSE streams from the chunk that carries it, for whole
//! JSON bodies from their last frames (kept as reference-counted frames, no copy, about 16 KiB).
//! Error events in a stream pass through the scrubber, since a provider may quote the gateway's key.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use memchr::memmem;
use tokio::time::{Instant, Sleep};
use tollgate_snapshot::{ProviderIdx, Snapshot};

use crate::call::record::Call;
use crate::error::ApiError;
use crate::error::BoxError;
use crate::llm::Usage;
use crate::llm::openai;
use crate::llm::scrub::{self, LazySecrets, event_end, is_error_event};
use crate::llm::sse;
use crate::llm::stream::Transcode;
use crate::telemetry::trace::CallTrace;

/// How much of the end of a non-streamed body is kept to read its usage (which providers write last):
/// older frames are let go, so a large answer is never held whole.
const JSON_TAIL: usize = 16 * 1024;
/// Longest SSE event buffered while looking for its end.
const SSE_EVENT_CAP: usize = 1024 * 1024;

/// How the body is interpreted.
pub enum RelayMode {
    /// A whole JSON document; usage read at the end.
    Json,
    /// Server-sent events; `strip_usage_chunk` drops the usage-only chunk the client did not ask for.
    Sse {
        /// Whether to remove the `choices: []` usage chunk from what the client sees.
        strip_usage_chunk: bool,
        /// What error events are scrubbed of.
        secrets: StreamSecrets,
    },
    /// Translated from a provider's stream format to the caller's, event by event.
    Translate(Box<dyn Transcode>),
    /// Passed on untouched and unread (REST services' answers: no usage in them).
    Bytes,
}

enum Scan {
    Json {
        /// The last frames, at least `JSON_TAIL` bytes of them when the body is that long.
        tail: VecDeque<Bytes>,
        /// Bytes in `tail`.
        size: usize,
        /// Whether earlier frames were let go.
        cut: bool,
    },
    Sse(SseScanner),
    Translate(Box<dyn Transcode>),
    Bytes,
}

/// An upstream body being relayed, with idle and total deadlines.
pub struct Relay {
    upstream: Incoming,
    scan: Scan,
    idle: Duration,
    /// When the last frame arrived (or the relay started).
    quiet_since: Instant,
    deadline: Instant,
    /// One timer for whichever comes first, the idle or the total deadline; made on the first wait
    /// only, since most answers are already there when the relay is first polled.
    timer: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl Relay {
    /// Relays `upstream`, failing if it stays silent for `idle` or runs past `deadline`.
    pub fn new(upstream: Incoming, mode: RelayMode, idle: Duration, deadline: Instant) -> Self {
        let scan = match mode {
            RelayMode::Json => Scan::Json {
                tail: VecDeque::new(),
                size: 0,
                cut: false,
            },
            RelayMode::Sse {
                strip_usage_chunk,
                secrets,
            } => Scan::Sse(SseScanner::new(strip_usage_chunk, secrets)),
            RelayMode::Translate(t) => Scan::Translate(t),
            RelayMode::Bytes => Scan::Bytes,
        };
        Self {
            upstream,
            scan,
            idle,
            quiet_since: Instant::now(),
            deadline,
            timer: None,
            done: false,
        }
    }

    /// Whether the relay has ended.
    pub fn is_end_stream(&self) -> bool {
        self.done
    }

    /// Upstream's size hint, when the bytes pass unchanged.
    pub fn size_hint(&self) -> SizeHint {
        match self.scan {
            Scan::Sse(_) | Scan::Translate(_) => SizeHint::default(),
            _ => self.upstream.size_hint(),
        }
    }

    /// Polls the next frame for the client.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
        mut call: Option<&mut Call>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.upstream).poll_frame(cx) {
                Poll::Pending => {
                    let due = self.deadline.min(self.quiet_since + self.idle);
                    let timer = match &mut self.timer {
                        Some(timer) => {
                            if timer.deadline() != due {
                                timer.as_mut().reset(due);
                            }
                            timer
                        }
                        empty => empty.insert(Box::pin(tokio::time::sleep_until(due))),
                    };
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if Instant::now() >= self.deadline {
                        return self.fail(
                            call,
                            "upstream_timeout",
                            "the provider did not finish its answer in time",
                        );
                    }
                    return self.fail(
                        call,
                        "upstream_idle_timeout",
                        "the provider went silent in the middle of its answer",
                    );
                }
                Poll::Ready(None) => {
                    self.done = true;
                    let tail = self.finish(call.as_deref_mut());
                    return Poll::Ready(tail.map(|b| Ok(Frame::data(b))));
                }
                Poll::Ready(Some(Err(_))) => {
                    return self.fail(
                        call,
                        "upstream_stream_error",
                        "the provider's connection broke in the middle of its answer",
                    );
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers: not relayed
                    };
                    self.quiet_since = Instant::now();
                    let out = match &mut self.scan {
                        Scan::Json { tail, size, cut } => {
                            *size += data.len();
                            tail.push_back(data.clone());
                            while tail.len() > 1 && *size - tail[0].len() >= JSON_TAIL {
                                *size -= tail.pop_front().map_or(0, |b| b.len());
                                *cut = true;
                            }
                            Some(data)
                        }
                        Scan::Sse(scanner) => {
                            if let Some(t) =
                                call.as_deref_mut().and_then(|c| c.trace.as_deref_mut())
                            {
                                note_chunk_heads(t, &data);
                            }
                            let usage = call.as_deref_mut().map(|c| &mut c.usage);
                            scanner.process(data, usage)
                        }
                        Scan::Translate(t) => {
                            let out = t.feed(&data);
                            if let (Some(c), Some(u)) = (call.as_deref_mut(), t.usage()) {
                                c.usage = Some(u);
                            }
                            Some(out)
                        }
                        Scan::Bytes => Some(data),
                    };
                    // With a known length the server stops polling once it has every byte, so the
                    // end must be noticed here rather than from a final `None`.
                    let out = if self.upstream.is_end_stream() {
                        self.done = true;
                        match (out, self.finish(call.as_deref_mut())) {
                            (Some(a), Some(b)) => Some([a, b].concat().into()),
                            (a, b) => a.or(b),
                        }
                    } else {
                        out
                    };
                    if let Some(out) = out.filter(|b| !b.is_empty()) {
                        if let Some(c) = call.as_deref_mut() {
                            c.mark_first_chunk();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }

    fn finish(&mut self, call: Option<&mut Call>) -> Option<Bytes> {
        match &mut self.scan {
            Scan::Json { tail, size, cut } => {
                if let Some(call) = call {
                    // A whole body read by the trace too (sampled calls only): id, model, finish reasons.
                    // The usage is read from the back first; the head reader stops where it began.
                    let read = |body: &[u8], call: &mut Call| {
                        let (usage, last) = openai::usage_and_last_member(body, *cut);
                        if let (Some(t), false) = (call.trace.as_deref_mut(), *cut)
                            && let Some(head) = openai::answer_head_before(
                                body,
                                last,
                                t.request.finish_reasons_expected(),
                            )
                        {
                            note_head(t, &head);
                        }
                        usage
                    };
                    call.usage = match tail.make_contiguous() {
                        [] => None,
                        [one] => read(one, call),
                        parts => {
                            let mut joined = BytesMut::with_capacity(*size);
                            for part in parts.iter() {
                                joined.extend_from_slice(part);
                            }
                            read(&joined, call)
                        }
                    };
                }
                None
            }
            Scan::Sse(scanner) => scanner.leftover(),
            Scan::Bytes => None,
            Scan::Translate(t) => {
                let out = t.finish();
                if let (Some(c), Some(u)) = (call, t.usage()) {
                    c.usage = Some(u);
                }
                Some(out)
            }
        }
    }

    /// Ends the relay because of an upstream problem. A stream gets a final SSE `error` event (the
    /// OpenAI SDKs raise it as an API error); a JSON body can only be cut, so the connection is reset.
    fn fail(
        &mut self,
        call: Option<&mut Call>,
        class: &'static str,
        message: &'static str,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        if let Some(call) = call {
            call.fail(class);
        }
        match &mut self.scan {
            Scan::Translate(t) => Poll::Ready(Some(Ok(Frame::data(t.fail(class, message))))),
            Scan::Sse(_) => {
                let err = ApiError::upstream(http::StatusCode::BAD_GATEWAY, class, message);
                let mut event = BytesMut::from(&b"data: "[..]);
                event.extend_from_slice(&err.body());
                event.extend_from_slice(b"\n\n");
                Poll::Ready(Some(Ok(Frame::data(event.freeze()))))
            }
            _ => Poll::Ready(Some(Err(message.into()))),
        }
    }
}

/// A streamed provider's credentials, for scrubbing its error events: listed only when one comes,
/// since most streams have none.
pub struct StreamSecrets {
    source: Option<(Arc<Snapshot>, ProviderIdx)>,
    listed: Option<Vec<String>>,
}

impl StreamSecrets {
    /// The credentials of `provider` in `snapshot`.
    pub fn of(snapshot: Arc<Snapshot>, provider: ProviderIdx) -> Self {
        Self {
            source: Some((snapshot, provider)),
            listed: None,
        }
    }

    /// Credentials already listed.
    #[cfg(test)]
    fn listed(secrets: Vec<String>) -> Self {
        Self {
            source: None,
            listed: Some(secrets),
        }
    }
}

impl LazySecrets for StreamSecrets {
    fn get(&mut self) -> &[String] {
        self.listed.get_or_insert_with(|| {
            self.source
                .as_ref()
                .map(|(snapshot, idx)| scrub::secrets_of(snapshot.provider(*idx)))
                .unwrap_or_default()
        })
    }
}

/// Reassembles SSE events across frames to find the usage chunk and error events. Only whole events
/// are passed on (a partial one waits for its end), so an error event is scrubbed before any of it
/// leaves; events pass as the reference-counted frame they came in unless one is dropped or rewritten.
struct SseScanner {
    strip_usage_chunk: bool,
    secrets: StreamSecrets,
    pending: BytesMut,
}

impl SseScanner {
    fn new(strip_usage_chunk: bool, secrets: StreamSecrets) -> Self {
        Self {
            strip_usage_chunk,
            secrets,
            pending: BytesMut::new(),
        }
    }

    /// Takes one upstream frame; returns what to send the client now.
    fn process(&mut self, frame: Bytes, mut usage: Option<&mut Option<Usage>>) -> Option<Bytes> {
        let carried = self.pending.len();
        self.pending.extend_from_slice(&frame);
        // Made only once an event is dropped or rewritten: until then the events pass unchanged.
        let mut rewritten: Option<BytesMut> = None;
        let mut start = 0;
        while let Some(len) = event_end(&self.pending[start..]) {
            let event = &self.pending[start..start + len];
            let change = if is_error_event(event) {
                scrub_error_event(event, self.secrets.get())
            } else {
                match inspect_event(event) {
                    Some(found) => {
                        if let (Some(slot), Some(u)) = (usage.as_deref_mut(), found.usage) {
                            *slot = Some(u);
                        }
                        (self.strip_usage_chunk && found.usage_only).then(Vec::new)
                    }
                    None => None,
                }
            };
            match (change, rewritten.as_mut()) {
                (Some(replacement), Some(out)) => out.extend_from_slice(&replacement),
                (Some(replacement), None) => {
                    let mut out = BytesMut::from(&self.pending[..start]);
                    out.extend_from_slice(&replacement);
                    rewritten = Some(out);
                }
                (None, Some(out)) => out.extend_from_slice(event),
                (None, None) => {}
            }
            start += len;
        }
        let mut out = match rewritten {
            Some(out) => out.freeze(),
            // The common case: the frame held whole events only, and is passed on as it is.
            None if carried == 0 => frame.slice(..start),
            None => Bytes::copy_from_slice(&self.pending[..start]),
        };
        self.pending.advance(start);
        if self.pending.len() > SSE_EVENT_CAP {
            // Not SSE as we know it: stop waiting for an event's end, pass the bytes on.
            let raw = self.pending.split().freeze();
            out = if out.is_empty() {
                raw
            } else {
                [out, raw].concat().into()
            };
        }
        Some(out)
    }

    /// Bytes still held at the end of the stream: a last event without its blank line.
    fn leftover(&mut self) -> Option<Bytes> {
        let rest = self.pending.split().freeze();
        if rest.is_empty() {
            return None;
        }
        if is_error_event(&rest)
            && let Some(scrubbed) = scrub_error_event(&rest, self.secrets.get())
        {
            return Some(Bytes::from(scrubbed));
        }
        Some(rest)
    }
}

/// Notes a read answer's id, model and finish reasons in a sampled call's trace.
fn note_head(trace: &mut CallTrace, head: &openai::AnswerHead<'_>) {
    let (id, model) = (
        head.id.and_then(openai::Name::text),
        head.model.and_then(openai::Name::text),
    );
    trace.note_response(
        id.as_deref(),
        model.as_deref(),
        head.finish_reasons.iter().filter_map(|r| r.text()),
    );
}

/// Notes the heads of the OpenAI stream events whose `data:` lines are in one frame of a stream. A
/// line cut between two frames is not read (the id and model come again in the next chunk; a finish
/// reason so cut is missed).
fn note_chunk_heads(trace: &mut CallTrace, frame: &[u8]) {
    for line in sse::lines(frame) {
        if let Some(payload) = line.strip_prefix(b"data:").map(<[u8]>::trim_ascii)
            && payload.first() == Some(&b'{')
            && let Some(head) = openai::answer_head(payload)
        {
            note_head(trace, &head);
        }
    }
}

/// An error event scrubbed, data that is not JSON replaced by an OpenAI-format error.
fn scrub_error_event(event: &[u8], secrets: &[String]) -> Option<Vec<u8>> {
    let unreadable = ApiError::upstream(
        http::StatusCode::BAD_GATEWAY,
        "upstream_error",
        "the provider sent an error this gateway cannot read",
    )
    .body();
    scrub::scrub_error_event(event, secrets, &unreadable)
}

fn inspect_event(event: &[u8]) -> Option<openai::ChunkUsage> {
    // Built once: building a searcher costs more than searching one chunk with it.
    static USAGE_KEY: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"usage\""));
    for line in sse::lines(event) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(payload) = line.strip_prefix(b"data:") else {
            continue;
        };
        let payload = payload.strip_prefix(b" ").unwrap_or(payload);
        if payload.first() != Some(&b'{') {
            continue;
        }
        let Some(at) = USAGE_KEY.find(payload) else {
            continue;
        };
        // With include_usage, OpenAI puts `"usage":null` in every chunk but the last: no need to
        // parse those (a quoted "usage" inside a string would be escaped, so this is the key).
        let value = payload[at + 7..]
            .iter()
            .position(|b| !matches!(b, b' ' | b':' | b'\t' | b'\r' | b'\n'))
            .map(|i| &payload[at + 7 + i..]);
        let only_one = USAGE_KEY.find(&payload[at + 7..]).is_none();
        if only_one && value.is_some_and(|v| v.starts_with(b"null")) {
            return Some(openai::ChunkUsage {
                usage: None,
                usage_only: false,
            });
        }
        return openai::usage_of_chunk(payload);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: &[u8] =
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n";
    const USAGE: &[u8] = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n\n";
    const DONE: &[u8] = b"data: [DONE]\n\n";

    fn run(strip: bool, frames: &[&[u8]]) -> (Vec<u8>, Option<Usage>) {
        let mut scanner = SseScanner::new(strip, StreamSecrets::listed(Vec::new()));
        let mut usage = None;
        let mut out = Vec::new();
        for f in frames {
            if let Some(b) = scanner.process(Bytes::copy_from_slice(f), Some(&mut usage)) {
                out.extend_from_slice(&b);
            }
        }
        if let Some(b) = scanner.leftover() {
            out.extend_from_slice(&b);
        }
        (out, usage)
    }

    #[test]
    fn passes_frames_and_finds_usage_across_splits() {
        let all = [CHUNK, USAGE, DONE].concat();
        for cut in 1..all.len() {
            let (out, usage) = run(false, &[&all[..cut], &all[cut..]]);
            assert_eq!(out, all);
            assert_eq!(
                usage,
                Some(Usage {
                    input: 5,
                    output: 7,
                    ..Usage::default()
                }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn strips_the_usage_chunk_when_asked() {
        let all = [CHUNK, USAGE, DONE].concat();
        for cut in 1..all.len() {
            let (out, usage) = run(true, &[&all[..cut], &all[cut..]]);
            assert_eq!(out, [CHUNK, DONE].concat(), "cut at {cut}");
            assert_eq!(
                usage,
                Some(Usage {
                    input: 5,
                    output: 7,
                    ..Usage::default()
                })
            );
        }
    }

    #[test]
    fn null_usage_chunks_are_recognised_without_parsing_and_others_are_parsed() {
        let found = inspect_event(CHUNK).expect("a chunk with a usage key");
        assert!(found.usage.is_none() && !found.usage_only);
        let found = inspect_event(USAGE).expect("the usage chunk");
        assert!(found.usage_only);
        assert_eq!(found.usage.map(|u| u.input), Some(5));
        // A second "usage" key: the whole chunk decides, not the first null.
        let nested = b"data: {\"choices\":[{\"usage\":null}],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\n";
        let found = inspect_event(nested).expect("parsed");
        assert_eq!(found.usage.map(|u| (u.input, u.output)), Some((2, 3)));
    }

    const KEY: &str = "sk-upstream-secret-a";
    const ERROR: &[u8] = b"data: {\"error\":{\"message\":\"Key sk-upstream-secr*** is over its quota\",\"type\":\"insufficient_quota\",\"param\":null,\"code\":\"insufficient_quota\"}}\n\n";
    // Keys in serde_json's order.
    const SCRUBBED: &[u8] = b"data: {\"error\":{\"code\":\"insufficient_quota\",\"message\":\"Key [redacted] is over its quota\",\"param\":null,\"type\":\"insufficient_quota\"}}\n\n";

    fn run_scrubbing(strip: bool, frames: &[&[u8]]) -> Vec<u8> {
        let mut scanner = SseScanner::new(strip, StreamSecrets::listed(vec![KEY.to_string()]));
        let mut out = Vec::new();
        for f in frames {
            if let Some(b) = scanner.process(Bytes::copy_from_slice(f), None) {
                assert!(
                    memmem::find(&b, b"upstream-secr").is_none(),
                    "a fragment left before its event ended"
                );
                out.extend_from_slice(&b);
            }
        }
        out.extend_from_slice(&scanner.leftover().unwrap_or_default());
        out
    }

    #[test]
    fn error_events_are_scrubbed_wherever_the_frames_split_them() {
        let all = [CHUNK, ERROR, DONE].concat();
        for strip in [false, true] {
            for cut in 1..all.len() {
                let out = run_scrubbing(strip, &[&all[..cut], &all[cut..]]);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&[CHUNK, SCRUBBED, DONE].concat()),
                    "strip {strip}, cut at {cut}"
                );
            }
        }
        // The last event without its blank line, an `event: error` line, data that is not JSON.
        let out = run_scrubbing(false, &[&ERROR[..ERROR.len() - 2]]);
        assert_eq!(out, SCRUBBED);
        let named = b"event: error\ndata: {\"message\":\"sk-upstream-secret-a\"}\n\n";
        let out = run_scrubbing(false, &[named]);
        assert_eq!(out, b"event: error\ndata: {\"message\":\"[redacted]\"}\n\n");
        let raw = b"event: error\ndata: bad key sk-upstream-secret-a\n\n";
        let out = String::from_utf8(run_scrubbing(false, &[raw])).unwrap();
        assert!(
            out.contains("upstream_error") && !out.contains("secret"),
            "{out}"
        );
    }

    #[test]
    fn events_without_secrets_pass_unchanged() {
        let finished =
            b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"error\"}]}\n\n";
        let all = [CHUNK, finished, DONE].concat();
        assert_eq!(run_scrubbing(false, &[&all]), all);
    }

    #[test]
    fn finds_event_ends() {
        assert_eq!(event_end(b"data: x\n\nrest"), Some(9));
        assert_eq!(event_end(b"data: x\r\n\r\n"), Some(11));
        assert_eq!(event_end(b"data: x\n"), None);
    }
}
