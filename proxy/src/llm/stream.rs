//! Streams translated event by event: a provider's stream is decoded into neutral [`Piece`]s, which
//! the caller's format encodes as soon as they arrive. Nothing waits for the end of the answer, so a
//! translated stream lags its upstream by at most the event being decoded.

use bytes::Bytes;
use serde_json::{Value, json};

use super::sse::{SseDecoder, SseEvent};
use crate::clock;
use crate::llm::Usage;

/// Token counts as a provider reports them; absent fields keep earlier values when merged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// All prompt tokens, cached ones included.
    pub input: Option<u64>,
    /// Completion tokens.
    pub output: Option<u64>,
    /// Prompt tokens read from a cache.
    pub cache_read: Option<u64>,
    /// Prompt tokens written to a cache.
    pub cache_write: Option<u64>,
}

impl TokenCounts {
    /// Overwrites the fields `newer` has.
    pub fn merge(&mut self, newer: TokenCounts) {
        self.input = newer.input.or(self.input);
        self.output = newer.output.or(self.output);
        self.cache_read = newer.cache_read.or(self.cache_read);
        self.cache_write = newer.cache_write.or(self.cache_write);
    }

    /// What the access log and cost use.
    pub fn usage(&self) -> Usage {
        Usage {
            input: self.input.unwrap_or(0),
            output: self.output.unwrap_or(0),
            cache_read: self.cache_read.unwrap_or(0),
            cache_write: self.cache_write.unwrap_or(0),
        }
    }

    /// OpenAI's `usage` object.
    pub fn openai_json(&self) -> Value {
        let (i, o) = (self.input.unwrap_or(0), self.output.unwrap_or(0));
        json!({
            "prompt_tokens": i,
            "completion_tokens": o,
            "total_tokens": i + o,
            "prompt_tokens_details": {"cached_tokens": self.cache_read.unwrap_or(0)}
        })
    }

    /// Reads OpenAI's `usage` object.
    pub fn from_openai(u: &Value) -> Option<TokenCounts> {
        let o = u.as_object()?;
        Some(TokenCounts {
            input: o.get("prompt_tokens").and_then(Value::as_u64),
            output: o.get("completion_tokens").and_then(Value::as_u64),
            cache_read: u
                .get("prompt_tokens_details")
                .and_then(|d| d.get("cached_tokens"))
                .and_then(Value::as_u64),
            cache_write: None,
        })
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Natural end.
    Stop,
    /// A stop sequence matched.
    StopSequence,
    /// Token limit.
    Length,
    /// The model called tools.
    ToolCalls,
    /// Withheld by a safety system.
    ContentFilter,
}

impl Finish {
    /// OpenAI's `finish_reason`.
    pub fn openai(self) -> &'static str {
        match self {
            Self::Stop | Self::StopSequence => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
        }
    }

    /// Anthropic's `stop_reason`.
    pub fn anthropic(self) -> &'static str {
        match self {
            Self::Stop => "end_turn",
            Self::StopSequence => "stop_sequence",
            Self::Length => "max_tokens",
            Self::ToolCalls => "tool_use",
            Self::ContentFilter => "refusal",
        }
    }

    /// From OpenAI's `finish_reason`.
    pub fn from_openai(reason: &str) -> Self {
        match reason {
            "length" => Self::Length,
            "tool_calls" | "function_call" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            _ => Self::Stop,
        }
    }
}

/// One step of an answer, in no provider's format.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// The answer began.
    Meta {
        /// Provider's message id.
        id: Option<String>,
        /// Model that answers.
        model: Option<String>,
    },
    /// Text.
    Text(String),
    /// The model's reasoning (thinking) text, shown before its answer.
    Reasoning(String),
    /// A tool call began; `index` counts tool calls only.
    ToolStart {
        /// Tool-call index.
        index: usize,
        /// Call id.
        id: String,
        /// Function name.
        name: String,
    },
    /// More of a tool call's JSON arguments.
    ToolArgs {
        /// Tool-call index.
        index: usize,
        /// JSON text fragment.
        fragment: String,
    },
    /// Why it stopped.
    Finish(Finish),
    /// Token counts so far.
    Usage(TokenCounts),
    /// The provider reported an error in the stream.
    Error {
        /// HTTP-like status describing it (429, 500, 529…).
        status: u16,
        /// Provider's message.
        message: String,
    },
    /// The provider said the answer is complete.
    Done,
}

/// A provider's stream format, read.
pub trait Decode: Send {
    /// Takes upstream bytes split anywhere.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Piece>);
    /// The upstream body ended.
    fn finish(&mut self, out: &mut Vec<Piece>);
}

/// A stream format carried in server-sent events, read one event's data at a time.
pub trait SseEvents: Send {
    /// Reads one event's `data`.
    fn event(&mut self, data: &str, out: &mut Vec<Piece>);

    /// Called once the body has ended, after its last event.
    fn end(&mut self, _out: &mut Vec<Piece>) {}
}

/// The [`Decode`] of any format carried in server-sent events: the bytes are split into events, and
/// each event's data goes to the format's reader.
#[derive(Default)]
pub struct SseDecode<E> {
    sse: SseDecoder,
    events: Vec<SseEvent>,
    format: E,
}

impl<E: SseEvents + Default> SseDecode<E> {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self {
            sse: SseDecoder::new(),
            events: Vec::new(),
            format: E::default(),
        }
    }
}

impl<E: SseEvents> Decode for SseDecode<E> {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Piece>) {
        self.sse.feed(bytes, &mut self.events);
        for e in self.events.drain(..) {
            self.format.event(&e.data, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<Piece>) {
        self.sse.finish(&mut self.events);
        for e in self.events.drain(..) {
            self.format.event(&e.data, out);
        }
        self.format.end(out);
    }
}

/// A caller's stream format, written.
pub trait Encode: Send {
    /// Writes what a piece means to the caller.
    fn piece(&mut self, piece: Piece, out: &mut Vec<u8>);
    /// The stream is over: close it properly (or report that it ended early).
    fn finish(&mut self, out: &mut Vec<u8>);
    /// A gateway-side failure (timeout, broken connection) ends the stream.
    fn fail(&mut self, status: u16, message: &str, out: &mut Vec<u8>);
}

/// Upstream bytes in, caller bytes out: what the relay runs a translated stream through.
pub trait Transcode: Send {
    /// Takes upstream bytes; returns what to send now (possibly nothing).
    fn feed(&mut self, bytes: &[u8]) -> Bytes;
    /// The upstream body ended; returns the stream's close.
    fn finish(&mut self) -> Bytes;
    /// The relay gave up (timeout, broken connection); returns a final error event.
    fn fail(&mut self, code: &str, message: &str) -> Bytes;
    /// Tokens reported so far.
    fn usage(&self) -> Option<Usage>;
}

/// A decoder and an encoder joined, with usage tracking and credential scrubbing of error messages.
pub struct Translate {
    decoder: Box<dyn Decode>,
    encoder: Box<dyn Encode>,
    counts: Option<TokenCounts>,
    pieces: Vec<Piece>,
    secrets: Vec<String>,
}

impl Translate {
    /// Joins `decoder` to `encoder`; `secrets` never appear in error messages passed on.
    pub fn new(decoder: Box<dyn Decode>, encoder: Box<dyn Encode>, secrets: Vec<String>) -> Self {
        Self {
            decoder,
            encoder,
            counts: None,
            pieces: Vec::new(),
            secrets,
        }
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        for piece in self.pieces.drain(..) {
            let piece = match piece {
                Piece::Usage(c) => {
                    self.counts.get_or_insert_default().merge(c);
                    Piece::Usage(c)
                }
                Piece::Error { status, message } => Piece::Error {
                    status,
                    message: crate::llm::scrub::scrub(&message, &self.secrets),
                },
                p => p,
            };
            self.encoder.piece(piece, out);
        }
    }
}

impl Transcode for Translate {
    fn feed(&mut self, bytes: &[u8]) -> Bytes {
        self.decoder.feed(bytes, &mut self.pieces);
        let mut out = Vec::new();
        self.drain(&mut out);
        Bytes::from(out)
    }

    fn finish(&mut self) -> Bytes {
        self.decoder.finish(&mut self.pieces);
        let mut out = Vec::new();
        self.drain(&mut out);
        self.encoder.finish(&mut out);
        Bytes::from(out)
    }

    fn fail(&mut self, _code: &str, message: &str) -> Bytes {
        let mut out = Vec::new();
        self.encoder.fail(502, message, &mut out);
        Bytes::from(out)
    }

    fn usage(&self) -> Option<Usage> {
        self.counts.map(|c| c.usage())
    }
}

#[cfg(test)]
/// Runs a whole stream through a decoder at once (non-streaming callers of streaming-only paths,
/// and tests).
pub fn decode_all(decoder: &mut dyn Decode, bytes: &[u8]) -> Vec<Piece> {
    let mut out = Vec::new();
    decoder.feed(bytes, &mut out);
    decoder.finish(&mut out);
    out
}

/// Writes one SSE event: `event:` line if named, one `data:` line.
pub fn write_sse(out: &mut Vec<u8>, event: Option<&str>, data: &Value) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, data).expect("JSON values serialise");
    out.extend_from_slice(b"\n\n");
}

/// OpenAI's error `type` for an HTTP-like status.
pub fn openai_error_type(status: u16) -> &'static str {
    match status {
        400..=499 if status != 429 => "invalid_request_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}

/// What every caller's stream says when the provider's stream ends before its finish.
pub const CUT_SHORT: &str = "the provider's stream ended before the answer was complete";

/// OpenAI `chat.completion.chunk` events, ending in `data: [DONE]`.
pub struct OpenAiEncoder {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    started: bool,
    finished: bool,
    ended: bool,
    counts: TokenCounts,
}

impl OpenAiEncoder {
    /// An encoder for `model`; `include_usage` adds the final usage chunk the client asked for.
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self {
            id: format!(
                "chatcmpl-{:016x}{:08x}",
                fastrand::u64(..),
                fastrand::u32(..)
            ),
            model: model.to_string(),
            created: clock::now_unix(),
            include_usage,
            started: false,
            finished: false,
            ended: false,
            counts: TokenCounts::default(),
        }
    }

    fn chunk(&self, choices: Value, usage: Option<Value>, out: &mut Vec<u8>) {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if self.include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        write_sse(out, None, &c);
    }

    fn delta(&mut self, delta: Value, out: &mut Vec<u8>) {
        self.start(out);
        self.chunk(
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]),
            None,
            out,
        );
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.chunk(
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
                None,
                out,
            );
        }
    }
}

impl Encode for OpenAiEncoder {
    fn piece(&mut self, piece: Piece, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match piece {
            Piece::Meta { model, .. } => {
                if !self.started
                    && let Some(m) = model.filter(|m| !m.is_empty())
                {
                    self.model = m;
                }
                self.start(out);
            }
            Piece::Text(t) if !t.is_empty() => self.delta(json!({"content": t}), out),
            Piece::Text(_) => {}
            Piece::Reasoning(t) if !t.is_empty() => {
                self.delta(json!({"reasoning_content": t}), out)
            }
            Piece::Reasoning(_) => {}
            Piece::ToolStart { index, id, name } => self.delta(
                json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                        "function": {"name": name, "arguments": ""}}]}),
                out,
            ),
            Piece::ToolArgs { index, fragment } => {
                if !fragment.is_empty() {
                    self.delta(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
                        out,
                    );
                }
            }
            Piece::Finish(f) => {
                if !self.finished {
                    self.start(out);
                    self.finished = true;
                    self.chunk(
                        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": f.openai()}]),
                        None,
                        out,
                    );
                }
            }
            Piece::Usage(c) => self.counts.merge(c),
            Piece::Error { status, message } => self.fail(status, &message, out),
            Piece::Done => self.finish(out),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        if !self.finished {
            self.fail(502, CUT_SHORT, out);
            return;
        }
        self.ended = true;
        if self.include_usage {
            self.chunk(json!([]), Some(self.counts.openai_json()), out);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    fn fail(&mut self, status: u16, message: &str, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        let code = if status == 429 {
            "upstream_rate_limited"
        } else {
            "upstream_stream_error"
        };
        write_sse(
            out,
            None,
            &json!({"error": {"message": message, "type": openai_error_type(status), "param": null, "code": code}}),
        );
    }
}

/// Reads OpenAI `chat.completion.chunk` events (an OpenAI-compatible backend serving an Anthropic caller).
#[derive(Default)]
pub struct OpenAiEvents {
    started: bool,
    tools_started: Vec<usize>,
}

impl OpenAiEvents {
    fn read_event(&mut self, data: &str, out: &mut Vec<Piece>) {
        if data.trim() == "[DONE]" {
            out.push(Piece::Done);
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            out.push(Piece::Error {
                status: if e.get("type").and_then(Value::as_str) == Some("rate_limit_error") {
                    429
                } else {
                    500
                },
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the provider reported an error")
                    .to_string(),
            });
            return;
        }
        if !self.started {
            self.started = true;
            out.push(Piece::Meta {
                id: v.get("id").and_then(Value::as_str).map(str::to_string),
                model: v.get("model").and_then(Value::as_str).map(str::to_string),
            });
        }
        let choice = v.get("choices").and_then(|c| c.get(0));
        if let Some(delta) = choice.and_then(|c| c.get("delta")) {
            // Reasoning providers (DeepSeek, vLLM, Ollama…) stream their reasoning apart from the answer.
            if let Some(t) = delta
                .get("reasoning_content")
                .or_else(|| delta.get("reasoning"))
                .and_then(Value::as_str)
                && !t.is_empty()
            {
                out.push(Piece::Reasoning(t.to_string()));
            }
            if let Some(t) = delta.get("content").and_then(Value::as_str)
                && !t.is_empty()
            {
                out.push(Piece::Text(t.to_string()));
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                let f = call.get("function");
                if !self.tools_started.contains(&index) {
                    self.tools_started.push(index);
                    out.push(Piece::ToolStart {
                        index,
                        id: call
                            .get("id")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("call_{index}")),
                        name: f
                            .and_then(|f| f.get("name"))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    });
                }
                if let Some(a) = f.and_then(|f| f.get("arguments")).and_then(Value::as_str)
                    && !a.is_empty()
                {
                    out.push(Piece::ToolArgs {
                        index,
                        fragment: a.to_string(),
                    });
                }
            }
        }
        if let Some(r) = choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
        {
            out.push(Piece::Finish(Finish::from_openai(r)));
        }
        if let Some(c) = v.get("usage").and_then(TokenCounts::from_openai) {
            out.push(Piece::Usage(c));
        }
    }
}

impl SseEvents for OpenAiEvents {
    fn event(&mut self, data: &str, out: &mut Vec<Piece>) {
        self.read_event(data, out);
    }
}

/// A decoder of OpenAi's stream.
pub type OpenAiDecoder = SseDecode<OpenAiEvents>;

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(bytes: &[u8]) -> Vec<Value> {
        let mut d = SseDecoder::new();
        let mut events = Vec::new();
        d.feed(bytes, &mut events);
        d.finish(&mut events);
        events
            .into_iter()
            .map(|e| serde_json::from_str(&e.data).unwrap_or(Value::String(e.data)))
            .collect()
    }

    #[test]
    fn openai_encoder_writes_role_deltas_tools_finish_usage_and_done() {
        let mut e = OpenAiEncoder::new("m", true);
        let mut out = Vec::new();
        for p in [
            Piece::Meta {
                id: Some("x".into()),
                model: Some("up".into()),
            },
            Piece::Text("Hi".into()),
            Piece::ToolStart {
                index: 0,
                id: "call_1".into(),
                name: "f".into(),
            },
            Piece::ToolArgs {
                index: 0,
                fragment: "{\"a\"".into(),
            },
            Piece::Finish(Finish::ToolCalls),
            Piece::Usage(TokenCounts {
                input: Some(3),
                output: Some(4),
                ..Default::default()
            }),
            Piece::Done,
        ] {
            e.piece(p, &mut out);
        }
        let p = payloads(&out);
        assert_eq!(p.len(), 7);
        assert_eq!(p[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(p[0]["model"], "up");
        assert_eq!(p[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(
            p[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "f"
        );
        assert_eq!(
            p[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\""
        );
        assert_eq!(p[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(p[5]["choices"], json!([]));
        assert_eq!(p[5]["usage"]["total_tokens"], 7);
        assert_eq!(p[6], Value::String("[DONE]".into()));
    }

    #[test]
    fn an_unfinished_stream_ends_in_an_error_event() {
        let mut e = OpenAiEncoder::new("m", false);
        let mut out = Vec::new();
        e.piece(Piece::Text("partial".into()), &mut out);
        e.finish(&mut out);
        let p = payloads(&out);
        assert_eq!(p.last().unwrap()["error"]["code"], "upstream_stream_error");
        assert!(!String::from_utf8_lossy(&out).contains("[DONE]"));
    }

    #[test]
    fn openai_decoder_reads_chunks() {
        let text = concat!(
            "data: {\"id\":\"c\",\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_9\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
            "data: [DONE]\n\n"
        );
        let pieces = decode_all(&mut OpenAiDecoder::new(), text.as_bytes());
        assert_eq!(
            pieces,
            vec![
                Piece::Meta {
                    id: Some("c".into()),
                    model: Some("g".into())
                },
                Piece::Text("Hel".into()),
                Piece::ToolStart {
                    index: 0,
                    id: "call_9".into(),
                    name: "f".into()
                },
                Piece::ToolArgs {
                    index: 0,
                    fragment: "{}".into()
                },
                Piece::Finish(Finish::ToolCalls),
                Piece::Usage(TokenCounts {
                    input: Some(5),
                    output: Some(2),
                    ..Default::default()
                }),
                Piece::Done,
            ]
        );
    }
}
