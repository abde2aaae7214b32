//! The built-in `Fake` provider, answered in-process: deterministic text derived from the prompt,
//! configurable latency, token counts and stream cadence, embeddings of a configured size, and the
//! exact response and chunk shapes of OpenAI's API.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Sleep;
use tollgate_snapshot::FakeBehaviour;

use crate::call::record::Call;
use crate::clock;
use crate::error::ApiError;
use crate::error::BoxError;
use crate::llm::Usage;
use crate::llm::openai::RequestDoc;

const VOCABULARY: [&str; 48] = [
    "the",
    "gateway",
    "routes",
    "every",
    "request",
    "to",
    "a",
    "model",
    "and",
    "counts",
    "tokens",
    "with",
    "care",
    "while",
    "teams",
    "share",
    "keys",
    "under",
    "clear",
    "limits",
    "so",
    "that",
    "answers",
    "arrive",
    "quickly",
    "from",
    "fake",
    "providers",
    "in",
    "tests",
    "benchmarks",
    "demos",
    "of",
    "streams",
    "chunks",
    "usage",
    "cost",
    "per",
    "call",
    "is",
    "logged",
    "once",
    "for",
    "each",
    "route",
    "snapshot",
    "swap",
    "safely",
];

/// FNV-1a, 64 bit: a stable seed from text (std's hasher is not stable across releases).
fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// SplitMix64: a tiny deterministic generator.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

/// The prompt's texts, for seeding and counting.
fn prompt_texts(doc: &RequestDoc<'_>) -> Result<Vec<String>, ApiError> {
    let raw = doc.get("messages").ok_or_else(|| {
        ApiError::bad_request("missing_required_parameter", "`messages` is required")
            .with_param("messages")
    })?;
    let messages: Vec<Message> = serde_json::from_str(raw.get()).map_err(|_| {
        ApiError::bad_request(
            "invalid_type",
            "`messages` must be an array of message objects",
        )
        .with_param("messages")
    })?;
    Ok(messages
        .into_iter()
        .map(|m| match m.content {
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => parts
                .into_iter()
                .filter_map(|p| p.text)
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .collect())
}

fn completion_id() -> String {
    format!(
        "chatcmpl-{:016x}{:08x}",
        fastrand::u64(..),
        fastrand::u32(..)
    )
}

/// A Fake answer: either whole, or a stream of SSE chunks.
pub enum FakeAnswer {
    /// A `chat.completion` or embeddings list.
    Whole {
        /// JSON body.
        body: Bytes,
        /// Its usage.
        usage: Usage,
    },
    /// `chat.completion.chunk` events.
    Stream(FakeStream),
}

/// Answers a chat completion.
pub fn chat(
    behaviour: &FakeBehaviour,
    doc: &RequestDoc<'_>,
    model: &str,
    stream: bool,
    include_usage: bool,
) -> Result<FakeAnswer, ApiError> {
    let texts = prompt_texts(doc)?;
    let seed = texts
        .iter()
        .fold(FNV_OFFSET, |h, t| fnv1a(t.as_bytes(), fnv1a(b"\x1e", h)));
    let prompt_tokens: u64 = texts.iter().map(|t| 4 + estimate_tokens(t)).sum::<u64>() + 3;
    let n = behaviour.completion_tokens.max(1) as usize;
    let mut rng = SplitMix(seed);
    let words: Vec<&str> = (0..n)
        .map(|_| VOCABULARY[(rng.next() % VOCABULARY.len() as u64) as usize])
        .collect();
    let usage = Usage {
        input: prompt_tokens,
        output: n as u64,
        ..Usage::default()
    };
    let wire_usage = json!({
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
        }
    });
    let id = completion_id();
    let created = clock::now_unix();
    if !stream {
        let body = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": words.join(" "), "refusal": null, "annotations": []},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": wire_usage,
            "service_tier": "default",
            "system_fingerprint": "fp_tollgate_fake"
        });
        return Ok(FakeAnswer::Whole {
            body: Bytes::from(serde_json::to_vec(&body).expect("json serialises")),
            usage,
        });
    }

    let chunk = |choices: serde_json::Value, usage: Option<&serde_json::Value>| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_tollgate_fake",
            "choices": choices,
        });
        if include_usage {
            c["usage"] = usage.cloned().unwrap_or(serde_json::Value::Null);
        }
        sse_event(&c)
    };
    let pieces = behaviour.stream_chunks.clamp(1, n as u32) as usize;
    let mut events = VecDeque::with_capacity(pieces + 4);
    events.push_back(chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}]),
        None,
    ));
    let mut next_word = 0;
    for p in 0..pieces {
        let take = n / pieces + usize::from(p < n % pieces);
        let mut text = String::new();
        for w in &words[next_word..next_word + take] {
            if next_word > 0 || !text.is_empty() {
                text.push(' ');
            }
            text.push_str(w);
        }
        next_word += take;
        events.push_back(chunk(
            json!([{"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": null}]),
            None,
        ));
    }
    events.push_back(chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
        None,
    ));
    if include_usage {
        events.push_back(chunk(json!([]), Some(&wire_usage)));
    }
    events.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    Ok(FakeAnswer::Stream(FakeStream {
        events,
        interval: Duration::from_millis(behaviour.chunk_interval_ms),
        timer: None,
        usage,
    }))
}

fn sse_event<T: Serialize>(value: &T) -> Bytes {
    let mut out = BytesMut::with_capacity(256).writer();
    std::io::Write::write_all(&mut out, b"data: ").expect("memory write");
    serde_json::to_writer(&mut out, value).expect("json serialises");
    std::io::Write::write_all(&mut out, b"\n\n").expect("memory write");
    out.into_inner().freeze()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

/// Answers an embeddings request.
pub fn embeddings(
    behaviour: &FakeBehaviour,
    doc: &RequestDoc<'_>,
    model: &str,
) -> Result<FakeAnswer, ApiError> {
    let bad_input = || {
        ApiError::bad_request(
            "invalid_type",
            "`input` must be a non-empty string, array of strings, or array of token arrays",
        )
        .with_param("input")
    };
    let raw = doc.get("input").ok_or_else(bad_input)?;
    let input: EmbeddingInput = serde_json::from_str(raw.get()).map_err(|_| bad_input())?;
    // Each item: (seed bytes, token count).
    let items: Vec<(Vec<u8>, u64)> = match input {
        EmbeddingInput::One(s) => vec![(s.as_bytes().to_vec(), estimate_tokens(&s).max(1))],
        EmbeddingInput::Many(v) => v
            .into_iter()
            .map(|s| (s.as_bytes().to_vec(), estimate_tokens(&s).max(1)))
            .collect(),
        EmbeddingInput::Tokens(t) => vec![(format!("{t:?}").into_bytes(), t.len() as u64)],
        EmbeddingInput::TokenLists(v) => v
            .into_iter()
            .map(|t| (format!("{t:?}").into_bytes(), t.len() as u64))
            .collect(),
    };
    if items.is_empty() {
        return Err(bad_input());
    }
    let base64 = doc
        .get("encoding_format")
        .is_some_and(|v| v.get() == "\"base64\"");
    let dimensions = doc
        .get("dimensions")
        .and_then(|v| v.get().parse::<u32>().ok())
        .filter(|d| (1..=behaviour.embedding_dimensions).contains(d))
        .unwrap_or(behaviour.embedding_dimensions)
        .max(1) as usize;
    let mut data = Vec::with_capacity(items.len());
    let mut tokens = 0;
    for (index, (seed, count)) in items.iter().enumerate() {
        tokens += count;
        let vector = unit_vector(fnv1a(seed, FNV_OFFSET), dimensions);
        let embedding = if base64 {
            let mut raw = Vec::with_capacity(vector.len() * 4);
            for x in &vector {
                raw.extend_from_slice(&x.to_le_bytes());
            }
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(raw))
        } else {
            json!(vector)
        };
        data.push(json!({"object": "embedding", "index": index, "embedding": embedding}));
    }
    let body = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    });
    Ok(FakeAnswer::Whole {
        body: Bytes::from(serde_json::to_vec(&body).expect("json serialises")),
        usage: Usage {
            input: tokens,
            output: 0,
            ..Usage::default()
        },
    })
}

fn unit_vector(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut rng = SplitMix(seed);
    let mut v: Vec<f32> = (0..dimensions)
        .map(|_| (rng.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// A Fake stream: prepared SSE events released at the configured interval.
pub struct FakeStream {
    events: VecDeque<Bytes>,
    interval: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    usage: Usage,
}

impl FakeStream {
    /// Rewrites the prepared events into another caller format, one event at a time so the pacing
    /// stays; events that translate to nothing are dropped.
    pub fn transcode(&mut self, t: &mut dyn crate::llm::stream::Transcode) {
        let last = self.events.len().saturating_sub(1);
        for (i, event) in self.events.iter_mut().enumerate() {
            let mut out = t.feed(event).to_vec();
            if i == last {
                out.extend_from_slice(&t.finish());
            }
            *event = Bytes::from(out);
        }
        self.events.retain(|e| !e.is_empty());
    }

    /// Whether every event was sent.
    pub fn is_end_stream(&self) -> bool {
        self.events.is_empty()
    }

    /// Polls the next event.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
        call: Option<&mut Call>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.events.is_empty() {
            return Poll::Ready(None);
        }
        if let Some(timer) = self.timer.as_mut() {
            ready!(timer.as_mut().poll(cx));
        }
        let event = self.events.pop_front().expect("checked non-empty");
        if let Some(call) = call {
            call.mark_first_chunk();
            if self.events.is_empty() {
                call.usage = Some(self.usage);
            }
        }
        if !self.interval.is_zero() && !self.events.is_empty() {
            let at = tokio::time::Instant::now() + self.interval;
            match self.timer.as_mut() {
                Some(t) => t.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        Poll::Ready(Some(Ok(Frame::data(event))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn behaviour() -> FakeBehaviour {
        FakeBehaviour {
            completion_tokens: 5,
            stream_chunks: 2,
            ..FakeBehaviour::default()
        }
    }

    #[test]
    fn chat_is_deterministic_and_counts() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hello there"}]}"#;
        let doc = RequestDoc::parse(body).unwrap();
        let answer =
            |doc: &RequestDoc<'_>| match chat(&behaviour(), doc, "up", false, false).unwrap() {
                FakeAnswer::Whole { body, usage } => (body, usage),
                FakeAnswer::Stream(_) => unreachable!(),
            };
        let (a, usage) = answer(&doc);
        let (b, _) = answer(&doc);
        let va: serde_json::Value = serde_json::from_slice(&a).unwrap();
        let vb: serde_json::Value = serde_json::from_slice(&b).unwrap();
        let content = va["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(content, vb["choices"][0]["message"]["content"]);
        assert_eq!(content.split(' ').count(), 5);
        assert_eq!(usage.output, 5);
        assert_eq!(va["usage"]["total_tokens"], usage.input + 5);
        assert_eq!(va["model"], "up");
    }

    #[test]
    fn stream_deltas_add_up_to_the_whole_answer() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hello there"}]}"#;
        let doc = RequestDoc::parse(body).unwrap();
        let FakeAnswer::Whole { body: whole, .. } =
            chat(&behaviour(), &doc, "up", false, false).unwrap()
        else {
            unreachable!()
        };
        let whole: serde_json::Value = serde_json::from_slice(&whole).unwrap();
        let FakeAnswer::Stream(stream) = chat(&behaviour(), &doc, "up", true, true).unwrap() else {
            unreachable!()
        };
        let mut text = String::new();
        let mut usage_chunks = 0;
        let events: Vec<_> = stream.events.iter().cloned().collect();
        assert_eq!(events.last().unwrap().as_ref(), b"data: [DONE]\n\n");
        for e in &events[..events.len() - 1] {
            let v: serde_json::Value =
                serde_json::from_slice(e.strip_prefix(b"data: ").unwrap()).unwrap();
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(c);
            }
            if v["usage"].is_object() {
                usage_chunks += 1;
                assert_eq!(v["choices"], json!([]));
            }
        }
        assert_eq!(
            text,
            whole["choices"][0]["message"]["content"].as_str().unwrap()
        );
        assert_eq!(usage_chunks, 1);
    }

    #[test]
    fn embeddings_have_the_configured_size() {
        let doc =
            RequestDoc::parse(br#"{"model":"e","input":["a","b"],"encoding_format":"base64"}"#)
                .unwrap();
        let FakeAnswer::Whole { body, usage } = embeddings(&behaviour(), &doc, "e").unwrap() else {
            unreachable!()
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["data"][1]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw.len(), 8 * 4);
        assert_eq!(usage.input, 2);
    }
}
