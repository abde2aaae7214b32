//! Request and response bodies, built once: about 1 KB each way for chat, 20 content chunks for streams,
//! a 1,536-dimension vector for embeddings (the size of `text-embedding-3-small`).

use bytes::Bytes;
use serde_json::{Value, json};

/// Content chunks in every streamed answer, before the usage chunk and `[DONE]`.
pub const STREAM_CHUNKS: usize = 20;
/// Dimensions of the fake embedding.
pub const EMBEDDING_DIMENSIONS: usize = 1536;

const CREATED: u64 = 1_700_000_000;
const PROMPT_TOKENS: u64 = 240;
const COMPLETION_TOKENS: u64 = 180;

/// What the fake's answers say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Text {
    /// Ordinary words, no digits.
    #[default]
    Prose,
    /// Full of numbers: dates, amounts, versions, card-like and IBAN-like numbers whose checksums are
    /// wrong, phone-like groups, and a few real values (an address, a card, a phone number). What
    /// a guardrail's digit-led detectors find hardest.
    Digits,
    /// Ordinary words with now and then a date or an e-mail address, as chat text has: every
    /// detector has something to look at now and then, and little to find.
    Mixed,
}

impl Text {
    /// `len` bytes of this text, starting at its `start`-th piece.
    pub fn make(self, start: usize, len: usize) -> String {
        const WORDS: [&str; 12] = [
            "gateway ",
            "latency ",
            "routing ",
            "tenant ",
            "budget ",
            "stream ",
            "token ",
            "upstream ",
            "snapshot ",
            "quota ",
            "model ",
            "request ",
        ];
        const FIGURES: [&str; 13] = [
            "invoice 2026-11-30 total 1,234.56 EUR ",
            "ref 4111 1111 1111 1112 ",
            "call 415-555-0199 x12 ",
            "order 88231 shipped 12.10.2026 14:05 ",
            "acct DE89 3704 0044 0532 0130 01 ",
            "v1.2.3 build 20261206.4 ",
            "99.95 x 12 = 1199.40 USD ",
            "id 123-45-000 ",
            "host 10.0.300.1 ",
            "tel 555 0100 ",
            "mail bob@example.com ",
            "qty 4 @ 19.99 ",
            "card 4111 1111 1111 1111 ",
        ];
        const MIXED: [&str; 16] = [
            "gateway ",
            "latency ",
            "routing ",
            "tenant ",
            "budget ",
            "stream ",
            "due 2026-12-01 ",
            "token ",
            "upstream ",
            "snapshot ",
            "quota ",
            "model ",
            "request ",
            "ask ops@example.com ",
            "team ",
            "review ",
        ];
        let words: &[&str] = match self {
            Text::Prose => &WORDS,
            Text::Digits => &FIGURES,
            Text::Mixed => &MIXED,
        };
        let mut out = String::with_capacity(len + 40);
        let mut i = start;
        while out.len() < len {
            out.push_str(words[i % words.len()]);
            i += 7;
        }
        out.truncate(len);
        out
    }
}

/// Text of `len` bytes made of ordinary words, so nothing can compress or special-case it.
fn prose(len: usize) -> String {
    Text::Prose.make(0, len)
}

/// A chat request of about 1 KB; `stream` asks for SSE.
pub fn chat_request(model: &str, stream: bool) -> Vec<u8> {
    chat_request_saying(model, stream, Text::Prose)
}

/// Like [`chat_request`], the user's message being `text`.
pub fn chat_request_saying(model: &str, stream: bool, text: Text) -> Vec<u8> {
    let mut body = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant for an internal platform team."},
            {"role": "user", "content": text.make(0, 820)},
        ],
        "temperature": 0.2,
        "max_tokens": 256,
    });
    if stream {
        body["stream"] = Value::Bool(true);
    }
    serde_json::to_vec(&body).expect("a literal serializes")
}

/// An embeddings request with one short input.
pub fn embeddings_request(model: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"model": model, "input": prose(200)})).expect("a literal serializes")
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// A complete `chat.completion` of about 1 KB.
pub fn chat_response(text: Text) -> Bytes {
    let body = json!({
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": CREATED,
        "model": "bench-chat",
        "system_fingerprint": "fp_bench",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text.make(0, 760), "refusal": null},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": usage(PROMPT_TOKENS, COMPLETION_TOKENS),
    });
    Bytes::from(serde_json::to_vec(&body).expect("a literal serializes"))
}

/// The same answer as [`chat_response`] as an Anthropic Messages `message`, for calls translated to
/// Anthropic.
pub fn messages_response(text: Text) -> Bytes {
    let body = json!({
        "id": "msg_bench000000000000000000",
        "type": "message",
        "role": "assistant",
        "model": "bench-claude",
        "content": [{"type": "text", "text": text.make(0, 760)}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": COMPLETION_TOKENS},
    });
    Bytes::from(serde_json::to_vec(&body).expect("a literal serializes"))
}

fn sse(event: &Value) -> Bytes {
    let mut line = b"data: ".to_vec();
    line.extend(serde_json::to_vec(event).expect("a literal serializes"));
    line.extend_from_slice(b"\n\n");
    Bytes::from(line)
}

/// The SSE events of one streamed answer: [`STREAM_CHUNKS`] content chunks, a usage chunk, `[DONE]`.
pub fn chat_stream_events(text: Text) -> Vec<Bytes> {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-bench0000000000000000000000",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": "bench-chat",
            "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut events = Vec::with_capacity(STREAM_CHUNKS + 2);
    for i in 0..STREAM_CHUNKS {
        let delta = if i == 0 {
            json!({"role": "assistant", "content": text.make(i, 24)})
        } else {
            json!({"content": text.make(i, 24)})
        };
        let finish = if i + 1 == STREAM_CHUNKS {
            json!("stop")
        } else {
            Value::Null
        };
        events.push(sse(&chunk(delta, finish)));
    }
    events.push(sse(&json!({
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "bench-chat",
        "choices": [],
        "usage": usage(PROMPT_TOKENS, STREAM_CHUNKS as u64),
    })));
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// An embeddings answer with one vector of [`EMBEDDING_DIMENSIONS`] floats.
pub fn embeddings_response() -> Bytes {
    // A fixed, unremarkable sequence in [-0.1, 0.1] with the digits real vectors have.
    // f32, as the API's JSON carries about 8 significant digits.
    let vector: Vec<f32> = (0..EMBEDDING_DIMENSIONS)
        .map(|i| ((i * 7919 % 2003) as f32 / 2003.0 - 0.5) / 5.0)
        .collect();
    let body = json!({
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "model": "bench-embed",
        "usage": {"prompt_tokens": 40, "total_tokens": 40},
    });
    Bytes::from(serde_json::to_vec(&body).expect("a literal serializes"))
}

/// Whether a request body asks for a stream (`"stream": true`), without a full JSON parse:
/// the fake must stay far cheaper than anything it measures.
pub fn wants_stream(body: &[u8]) -> bool {
    const KEY: &[u8] = b"\"stream\"";
    let mut rest = body;
    while let Some(at) = rest.windows(KEY.len()).position(|w| w == KEY) {
        let after = &rest[at + KEY.len()..];
        let value = after
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b':'))
            .map(|start| &after[start..]);
        if value.is_some_and(|v| v.starts_with(b"true")) {
            return true;
        }
        rest = after;
    }
    false
}
