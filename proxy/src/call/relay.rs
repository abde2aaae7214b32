//! Relaying an upstream response body to the client, frame by frame.
//!
//! Backpressure is structural: a frame is pulled from upstream only when the server polls this body,
//! which it does only when the client connection can take more. Dropping the body (client gone) drops
//! the upstream response, which closes that upstream connection instead of returning it to the pool.
//!
//! Along the way the relay reads `usage`: for SSE streams from the chunk that carries it, for whole
//! JSON bodies from their last frames (kept as reference-counted frames, no copy, about 16 KiB).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::call::record::Call;
use crate::error::ApiError;
use crate::error::BoxError;
use crate::llm::Usage;
use crate::llm::openai;
use crate::llm::stream::Transcode;

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
    },
    /// Passed through untouched (upstream error bodies).
    Opaque,
    /// Translated from a provider's stream format to the caller's, event by event.
    Translate(Box<dyn Transcode>),
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
    Opaque,
    Translate(Box<dyn Transcode>),
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
            RelayMode::Sse { strip_usage_chunk } => Scan::Sse(SseScanner::new(strip_usage_chunk)),
            RelayMode::Opaque => Scan::Opaque,
            RelayMode::Translate(t) => Scan::Translate(t),
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
                            let usage = call.as_deref_mut().map(|c| &mut c.usage);
                            scanner.process(data, usage)
                        }
                        Scan::Opaque => Some(data),
                        Scan::Translate(t) => {
                            let out = t.feed(&data);
                            if let (Some(c), Some(u)) = (call.as_deref_mut(), t.usage()) {
                                c.usage = Some(u);
                            }
                            Some(out)
                        }
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
                    call.usage = match tail.make_contiguous() {
                        [] => None,
                        [one] => openai::usage_of_body(one, *cut),
                        parts => {
                            let mut joined = BytesMut::with_capacity(*size);
                            for part in parts.iter() {
                                joined.extend_from_slice(part);
                            }
                            openai::usage_of_body(&joined, *cut)
                        }
                    };
                }
                None
            }
            Scan::Sse(scanner) => scanner.leftover(),
            Scan::Opaque => None,
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

/// Reassembles SSE events across frames to find the usage chunk.
struct SseScanner {
    strip_usage_chunk: bool,
    pending: BytesMut,
}

impl SseScanner {
    fn new(strip_usage_chunk: bool) -> Self {
        Self {
            strip_usage_chunk,
            pending: BytesMut::new(),
        }
    }

    /// Takes one upstream frame; returns what to send the client now.
    fn process(&mut self, frame: Bytes, mut usage: Option<&mut Option<Usage>>) -> Option<Bytes> {
        self.pending.extend_from_slice(&frame);
        let mut kept: Option<BytesMut> = self.strip_usage_chunk.then(BytesMut::new);
        let mut start = 0;
        while let Some(len) = event_end(&self.pending[start..]) {
            let event = &self.pending[start..start + len];
            let keep = match inspect_event(event) {
                Some(found) => {
                    if let (Some(slot), Some(u)) = (usage.as_deref_mut(), found.usage) {
                        *slot = Some(u);
                    }
                    !found.usage_only
                }
                None => true,
            };
            if keep && let Some(out) = kept.as_mut() {
                out.extend_from_slice(event);
            }
            start += len;
        }
        self.pending.advance(start);
        if self.pending.len() > SSE_EVENT_CAP {
            // Not SSE as we know it: stop looking, pass the bytes on.
            let raw = self.pending.split().freeze();
            if let Some(out) = kept.as_mut() {
                out.extend_from_slice(&raw);
            }
        }
        match kept {
            Some(out) => Some(out.freeze()),
            None => Some(frame),
        }
    }

    /// Bytes still held at the end of the stream (only when stripping; otherwise they were sent).
    fn leftover(&mut self) -> Option<Bytes> {
        let rest = self.pending.split().freeze();
        (self.strip_usage_chunk && !rest.is_empty()).then_some(rest)
    }
}

/// Length of the first complete event (through its blank line), if there is one.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
        let at = from + i;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at + 2),
            Some(b'\r') if buf.get(at + 2) == Some(&b'\n') => return Some(at + 3),
            _ => from = at + 1,
        }
    }
    None
}

fn inspect_event(event: &[u8]) -> Option<openai::ChunkUsage> {
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(payload) = line.strip_prefix(b"data:") else {
            continue;
        };
        let payload = payload.strip_prefix(b" ").unwrap_or(payload);
        if payload.first() != Some(&b'{') {
            continue;
        }
        let Some(at) = memchr::memmem::find(payload, b"\"usage\"") else {
            continue;
        };
        // With include_usage, OpenAI puts `"usage":null` in every chunk but the last: no need to
        // parse those (a quoted "usage" inside a string would be escaped, so this is the key).
        let value = payload[at + 7..]
            .iter()
            .position(|b| !matches!(b, b' ' | b':' | b'\t' | b'\r' | b'\n'))
            .map(|i| &payload[at + 7 + i..]);
        let only_one = memchr::memmem::find(&payload[at + 7..], b"\"usage\"").is_none();
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
        let mut scanner = SseScanner::new(strip);
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
                    output: 7
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
                    output: 7
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

    #[test]
    fn finds_event_ends() {
        assert_eq!(event_end(b"data: x\n\nrest"), Some(9));
        assert_eq!(event_end(b"data: x\r\n\r\n"), Some(11));
        assert_eq!(event_end(b"data: x\n"), None);
    }
}
