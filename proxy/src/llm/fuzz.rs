//! Property tests (fuzzing) of the translators and stream parsers: arbitrary and near-valid inputs
//! must never panic, and incremental parsers must not depend on where their input is split.
//!
//! The suite runs a few thousand cases per target. For the long run set `TOLLGATE_FUZZ_CASES`, e.g.
//! `TOLLGATE_FUZZ_CASES=1000000 cargo test -p tollgate-proxy --release --lib llm::fuzz`.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};

use super::anthropic::{self, AnthropicDecoder};
use super::bedrock::{self, BedrockDecoder};
use super::canonical_json::Canonical;
use super::chat::{Answer, ChatRequest};
use super::eventstream::{self, FrameDecoder};
use super::gemini::{self, GeminiDecoder};
use super::json_answer::{self, ToolAsText};
use super::openai::RequestDoc;
use super::responses::{self, Echo};
use super::responses_stream::{ResponsesEncoder, ResponsesPassthrough};
use super::sse::SseDecoder;
use super::stream::Transcode;
use super::stream::{Decode, Encode, OpenAiDecoder, OpenAiEncoder, Piece};
use super::vertex;
use crate::llm::messages::{self, AnthropicEncoder};

fn cases() -> u32 {
    std::env::var("TOLLGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Field names of every format involved, so random documents often look like real ones.
const KEYS: &[&str] = &[
    "role",
    "content",
    "messages",
    "type",
    "text",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "image_url",
    "url",
    "tools",
    "tool_choice",
    "max_tokens",
    "stop",
    "system",
    "tool_use",
    "input",
    "source",
    "data",
    "media_type",
    "id",
    "tool_call_id",
    "tool_use_id",
    "candidates",
    "parts",
    "functionCall",
    "args",
    "finishReason",
    "usageMetadata",
    "output",
    "message",
    "stopReason",
    "usage",
    "delta",
    "index",
    "content_block",
    "partial_json",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "prompt_tokens",
    "completion_tokens",
    "toolUse",
    "toolUseId",
    "error",
    "choices",
    "finish_reason",
    "model",
    "temperature",
    "top_p",
    "n",
    "stream",
    "cache_read_input_tokens",
    "promptTokenCount",
    "candidatesTokenCount",
    "inputTokens",
    "outputTokens",
    "embedding",
    "embeddings",
    "values",
    "response_format",
    "parameters",
    "input_schema",
    "description",
    "disable_parallel_tool_use",
    "metadata",
    "user_id",
    "is_error",
    "stop_sequences",
    "max_completion_tokens",
    "inlineData",
    "thought",
    "promptFeedback",
    "blockReason",
    "contentBlockIndex",
    "start",
    "functions",
    "instructions",
    "call_id",
    "max_output_tokens",
    "previous_response_id",
    "format",
    "schema",
    "json_schema",
    "reasoning",
    "effort",
    "sequence_number",
    "response",
    "input_tokens_details",
    "cached_tokens",
    "reasoning_content",
    "reasoning_effort",
    "thinking",
    "budget_tokens",
];

const WORDS: &[&str] = &[
    "user",
    "assistant",
    "tool",
    "system",
    "developer",
    "text",
    "image_url",
    "function",
    "image",
    "tool_use",
    "tool_result",
    "base64",
    "url",
    "data:image/png;base64,AAAA",
    "https://x/y.png",
    "data:,x",
    "auto",
    "required",
    "none",
    "any",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "message_delta",
    "message_stop",
    "text_delta",
    "input_json_delta",
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "tool_use",
    "end_turn",
    "max_tokens",
    "{\"a\":1}",
    "{",
    "",
    "json_object",
    "image/png",
    "custom",
    "web_search",
    "error",
    "rate_limit_error",
    "ü\u{0}",
    "message",
    "function_call",
    "function_call_output",
    "input_text",
    "output_text",
    "input_image",
    "json_schema",
    "reasoning",
    "item_reference",
    "response.completed",
    "response.output_text.delta",
    "thinking_delta",
    "enabled",
    "low",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (0u64..5_000).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(WORDS).prop_map(|w| Value::String(w.to_string())),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        4 => prop::sample::select(KEYS).prop_map(str::to_string),
                        1 => "[a-z]{1,6}".prop_map(String::from),
                    ],
                    inner
                ),
                0..7
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An OpenAI-looking chat request with random parts.
fn chat_like() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(
            (prop::sample::select(WORDS), json_value(), json_value()),
            0..5,
        ),
        json_value(),
        json_value(),
        json_value(),
    )
        .prop_map(|(messages, tools, choice, extra)| {
            let messages: Vec<Value> = messages
                .into_iter()
                .map(|(role, content, calls)| {
                    serde_json::json!({"role": role, "content": content, "tool_calls": calls,
                                       "tool_call_id": "call_1"})
                })
                .collect();
            let mut v = serde_json::json!({"model": "m", "messages": messages, "tools": tools,
                                           "tool_choice": choice});
            if let (Value::Object(o), Value::Object(e)) = (&mut v, extra) {
                o.extend(e);
            }
            v
        })
}

/// A Responses-looking request with random items and settings.
fn responses_like() -> impl Strategy<Value = Value> {
    let item = (
        prop::sample::select(WORDS),
        prop::sample::select(WORDS),
        json_value(),
        json_value(),
    )
        .prop_map(|(kind, role, content, output)| {
            serde_json::json!({"type": kind, "role": role, "content": content, "call_id": "c1",
                               "name": "f", "arguments": "{}", "output": output})
        });
    (
        prop_oneof![
            json_value(),
            prop::collection::vec(item, 0..5).prop_map(Value::Array)
        ],
        json_value(),
        json_value(),
        json_value(),
    )
        .prop_map(|(input, tools, text, extra)| {
            let mut v = serde_json::json!({"model": "m", "input": input, "tools": tools,
                                           "text": text});
            if let (Value::Object(o), Value::Object(e)) = (&mut v, extra) {
                o.extend(e);
            }
            v
        })
}

fn all_encoders() -> Vec<Box<dyn Encode>> {
    vec![
        Box::new(OpenAiEncoder::new("m", true)),
        Box::new(OpenAiEncoder::new("m", false)),
        Box::new(AnthropicEncoder::new("m")),
        Box::new(ResponsesEncoder::new("m", Echo::default())),
    ]
}

/// Runs pieces through every encoder; each output must be well-formed SSE that ends once.
fn encode_everywhere(pieces: &[Piece]) {
    for mut e in all_encoders() {
        let mut out = Vec::new();
        for p in pieces {
            e.piece(p.clone(), &mut out);
        }
        e.finish(&mut out);
        e.finish(&mut out);
        let mut d = SseDecoder::new();
        let mut events = Vec::new();
        d.feed(&out, &mut events);
        for ev in &events {
            assert!(ev.data == "[DONE]" || serde_json::from_str::<Value>(&ev.data).is_ok());
        }
    }
}

fn split_feed(decoder: &mut dyn Decode, bytes: &[u8], cuts: &[usize]) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    for c in cuts {
        decoder.feed(&bytes[at..c.max(at)], &mut out);
        at = c.max(at);
    }
    decoder.feed(&bytes[at..], &mut out);
    decoder.finish(&mut out);
    out
}

#[test]
fn sse_decoder_is_split_invariant_and_never_panics() {
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        prop::collection::vec(
            prop_oneof![
                Just(b"data: ".to_vec()),
                Just(b"event: x\n".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b":c\n".to_vec()),
                "[ -~]{0,10}".prop_map(|s| s.into_bytes()),
            ],
            0..40
        )
        .prop_map(|v| v.concat()),
    ];
    runner()
        .run(
            &(bytes, prop::collection::vec(any::<usize>(), 0..6)),
            |(bytes, cuts)| {
                let mut whole = Vec::new();
                let mut d = SseDecoder::new();
                d.feed(&bytes, &mut whole);
                d.finish(&mut whole);
                let mut split = Vec::new();
                let mut d = SseDecoder::new();
                let mut at = 0;
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
                cuts.sort_unstable();
                for c in cuts {
                    d.feed(&bytes[at..c], &mut split);
                    at = c;
                }
                d.feed(&bytes[at..], &mut split);
                d.finish(&mut split);
                prop_assert_eq!(whole, split);
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn event_stream_decoder_never_panics_on_noise_or_damaged_frames() {
    let frames = prop::collection::vec(
        (
            prop::collection::vec(("[:a-z-]{1,12}", "[ -~]{0,16}"), 0..4),
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        0..5,
    )
    .prop_map(|frames| {
        frames
            .iter()
            .flat_map(|(headers, payload)| {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                eventstream::encode(&h, payload)
            })
            .collect::<Vec<u8>>()
    });
    let input = (
        frames,
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<usize>(), 0..5),
    );
    runner()
        .run(&input, |(mut bytes, flips, noise, cuts)| {
            let clean = bytes.clone();
            for (at, x) in &flips {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] ^= x;
                }
            }
            if flips.is_empty() && noise.is_empty() {
                // Undamaged frames decode whole however they are split.
                let mut a = Vec::new();
                FrameDecoder::new().feed(&clean, &mut a);
                let mut b = Vec::new();
                let mut d = FrameDecoder::new();
                let mut at = 0;
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (clean.len() + 1)).collect();
                cuts.sort_unstable();
                for c in cuts {
                    d.feed(&clean[at..c], &mut b);
                    at = c;
                }
                d.feed(&clean[at..], &mut b);
                prop_assert_eq!(&a, &b);
                prop_assert!(a.iter().all(Result::is_ok));
            }
            bytes.extend_from_slice(&noise);
            let mut out = Vec::new();
            FrameDecoder::new().feed(&bytes, &mut out);
            let pieces = split_feed(&mut BedrockDecoder::new(), &bytes, &cuts);
            encode_everywhere(&pieces);
            Ok(())
        })
        .unwrap();
}

#[test]
fn request_translators_never_panic() {
    let input = prop_oneof![json_value(), chat_like(), responses_like()];
    runner()
        .run(&(input, any::<bool>()), |(v, stream)| {
            if let Ok(openai) = responses::to_openai_request(&v, stream)
                && let Ok(req) = ChatRequest::from_openai(&openai)
            {
                let _ = anthropic::build_request(&req, "m", stream);
                let _ = json_answer::tool_for(&req);
            }
            if let Ok(req) = responses::to_chat_request(&v) {
                let _ = gemini::build_request(&req);
            }
            echo_is_repeated_as_sent(&v);
            let _ = messages::estimate_input_tokens(&v);
            if let Ok(req) = ChatRequest::from_openai(&v) {
                let _ = anthropic::build_request(&req, "m", stream);
                let _ = gemini::build_request(&req);
                let _ = bedrock::build_request(
                    &req,
                    bedrock::json_tool(&req, "anthropic.claude").as_ref(),
                );
            }
            let _ = gemini::EmbedAsk::from_openai(&v).map(|e| e.build("m"));
            if let Ok(openai) = messages::to_openai_request(&v, stream) {
                let _ = ChatRequest::from_openai(&openai);
            }
            let _ = vertex::claude_body(v.clone());
            Ok(())
        })
        .unwrap();
}

/// A request's settings, as a `response` object in a stream repeats them, are the request's own
/// values (or the defaults where it has none), however the caller spaced its JSON.
fn echo_is_repeated_as_sent(v: &Value) {
    let text = serde_json::to_string_pretty(v).expect("JSON values serialise");
    let Ok(doc) = RequestDoc::parse(text.as_bytes()) else {
        return;
    };
    // Compared with serde's reading of the same text, which is not exact for every float.
    let v: Value = serde_json::from_str(&text).expect("JSON it wrote");
    let mut out = Vec::new();
    ResponsesEncoder::new("m", Echo::read(&doc)).finish(&mut out);
    let mut events = Vec::new();
    let mut d = SseDecoder::new();
    d.feed(&out, &mut events);
    d.finish(&mut events);
    let last = events
        .last()
        .expect("a failed stream ends in response.failed");
    let data: Value = serde_json::from_str(&last.data).expect("events are JSON");
    let response = &data["response"];
    for key in [
        "instructions",
        "metadata",
        "tools",
        "text",
        "temperature",
        "user",
    ] {
        match v.get(key).filter(|x| !x.is_null()) {
            Some(sent) => assert_eq!(&response[key], sent, "{key}"),
            None => assert!(response.get(key).is_some(), "{key}"),
        }
    }
}

/// A Responses request of well-formed pieces (messages of every role with text, refusal and image
/// parts, calls, their outputs, reasoning, tools, formats) and now and then a mistake, so that most
/// are read to the end.
fn responses_request() -> impl Strategy<Value = Value> {
    let text = || {
        prop_oneof![
            prop::sample::select(WORDS).prop_map(str::to_string),
            ".{0,8}".prop_map(String::from),
        ]
    };
    let image = prop::sample::select(
        &[
            "https://x/y.png",
            "data:image/png;base64,AAAA",
            "data:,x",
            "ftp://x",
        ][..],
    );
    let part = prop_oneof![
        4 => (prop::sample::select(&["input_text", "output_text", "text"][..]), text())
            .prop_map(|(kind, t)| serde_json::json!({"type": kind, "text": t})),
        1 => text().prop_map(|t| serde_json::json!({"type": "refusal", "refusal": t})),
        2 => (image, prop::option::of(prop::sample::select(&["low", "high"][..]))).prop_map(
            |(url, detail)| {
                let mut p = serde_json::json!({"type": "input_image", "image_url": url});
                if let Some(d) = detail {
                    p["detail"] = d.into();
                }
                p
            }
        ),
        1 => json_value(),
    ];
    let content = prop_oneof![
        text().prop_map(Value::String),
        prop::collection::vec(part, 0..4).prop_map(Value::Array),
    ];
    let roles = prop::sample::select(&["user", "assistant", "system", "developer"][..]);
    let item = prop_oneof![
        6 => (roles, content, any::<bool>()).prop_map(|(role, content, typed)| {
            let mut m = serde_json::json!({"role": role, "content": content});
            if typed {
                m["type"] = "message".into();
            }
            m
        }),
        3 => (text(), prop_oneof![Just(Value::Null), text().prop_map(Value::String), json_value()])
            .prop_map(|(name, arguments)| serde_json::json!({"type": "function_call",
                "call_id": "call_1", "name": name, "arguments": arguments})),
        2 => prop_oneof![
            text().prop_map(Value::String),
            prop::collection::vec(text().prop_map(|t| serde_json::json!({"type": "input_text", "text": t})), 0..3)
                .prop_map(Value::Array),
        ]
        .prop_map(|output| serde_json::json!({"type": "function_call_output", "call_id": "call_1",
                                              "output": output})),
        1 => Just(serde_json::json!({"type": "reasoning", "id": "rs_1", "summary": []})),
        1 => text().prop_map(Value::String),
        1 => json_value(),
    ];
    let tool = (text(), json_value(), any::<bool>(), json_value()).prop_map(
        |(name, description, object, parameters)| {
            serde_json::json!({"type": "function", "name": name, "description": description,
                "parameters": if object { serde_json::json!({"type": "object"}) } else { parameters }})
        },
    );
    let format = prop_oneof![
        Just(Value::Null),
        Just(serde_json::json!({"format": {"type": "text"}})),
        Just(serde_json::json!({"format": {"type": "json_object"}})),
        Just(
            serde_json::json!({"format": {"type": "json_schema", "name": "w", "strict": true,
                                           "schema": {"type": "object"}}})
        ),
        json_value(),
    ];
    let choice = prop_oneof![
        Just(Value::Null),
        prop::sample::select(WORDS).prop_map(|w| Value::String(w.to_string())),
        Just(serde_json::json!({"type": "function", "name": "f"})),
        json_value(),
    ];
    let number = prop_oneof![
        Just(Value::Null),
        (0u64..300).prop_map(Value::from),
        (0.0f64..2.0).prop_map(Value::from),
        json_value(),
    ];
    (
        (
            prop::option::of(text()),
            prop_oneof![
                8 => prop::collection::vec(item, 0..6).prop_map(Value::Array),
                1 => text().prop_map(Value::String),
            ],
            prop::option::of(prop::collection::vec(tool, 0..3)),
            choice,
            format,
        ),
        (
            number.clone(),
            number,
            prop::option::of(prop::sample::select(WORDS)),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (instructions, input, tools, choice, format),
                (max, temperature, effort, parallel),
            )| {
                let mut v = serde_json::json!({"model": "m", "input": input,
                    "tool_choice": choice, "text": format, "max_output_tokens": max,
                    "temperature": temperature, "parallel_tool_calls": parallel});
                if let Some(i) = instructions {
                    v["instructions"] = i.into();
                }
                if let Some(t) = tools {
                    v["tools"] = t.into();
                }
                if let Some(e) = effort {
                    v["reasoning"] = serde_json::json!({"effort": e});
                }
                v
            },
        )
}

/// Reading a Responses request straight into the neutral request gives what reading it into OpenAI's
/// chat shape and that into the neutral request gives: the same request, or the same 400.
#[test]
fn responses_requests_read_alike_straight_and_through_the_chat_shape() {
    runner()
        .run(
            &prop_oneof![3 => responses_request(), 1 => responses_like()],
            |v| {
                let straight = responses::to_chat_request(&v);
                let through = responses::to_openai_request(&v, false)
                    .and_then(|chat| ChatRequest::from_openai(&chat));
                match (straight, through) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                    (Err(a), Err(b)) => prop_assert_eq!(
                        (a.status, a.code, a.param, a.message),
                        (b.status, b.code, b.param, b.message)
                    ),
                    (a, b) => prop_assert!(false, "straight {:?}, through {:?}", a, b),
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn response_translators_never_panic() {
    runner()
        .run(&json_value(), |v| {
            for answer in [
                anthropic::read_response(&v, "m"),
                gemini::read_response(&v, "m"),
                bedrock::read_response(&v, "m"),
                Answer::from_openai(&v),
            ]
            .into_iter()
            .flatten()
            {
                let _ = answer.to_openai();
                let _ = messages::answer_to_message(&answer);
                let written = responses::answer_to_response(&answer, &Echo::default());
                let read: Value = serde_json::from_slice(&written).expect("a response is JSON");
                assert_eq!(read["model"].as_str(), Some(answer.model.as_str()));
                let mut as_json = answer.clone();
                json_answer::answer_from_tool(&mut as_json, "f");
            }
            let _ = responses::counts(&v);
            let _ = anthropic::error_message(&v);
            let _ = gemini::error_message(&v);
            let _ = bedrock::error_message(&v);
            Ok(())
        })
        .unwrap();
}

#[test]
fn stream_translators_never_panic() {
    let events = prop::collection::vec(
        (
            prop::option::of(prop::sample::select(WORDS)),
            prop_oneof![
                json_value().prop_map(|v| v.to_string()),
                Just("[DONE]".to_string()),
                "[ -~]{0,20}".prop_map(String::from),
            ],
        ),
        0..8,
    );
    runner()
        .run(
            &(events, prop::collection::vec(any::<usize>(), 0..5)),
            |(events, cuts)| {
                let mut sse = String::new();
                for (name, data) in &events {
                    if let Some(n) = name {
                        sse.push_str(&format!("event: {n}\n"));
                    }
                    sse.push_str(&format!("data: {data}\n\n"));
                }
                let bytes = sse.as_bytes();
                let decoders: Vec<Box<dyn Decode>> = vec![
                    Box::new(ToolAsText::new(
                        Box::new(AnthropicDecoder::new()),
                        "f".into(),
                    )),
                    Box::new(AnthropicDecoder::new()),
                    Box::new(GeminiDecoder::new()),
                    Box::new(OpenAiDecoder::new()),
                ];
                for mut d in decoders {
                    let pieces = split_feed(d.as_mut(), bytes, &cuts);
                    encode_everywhere(&pieces);
                }
                let mut frames = Vec::new();
                for (name, data) in &events {
                    frames.extend(eventstream::encode(
                        &[
                            (":event-type", name.unwrap_or("contentBlockDelta")),
                            (":message-type", "event"),
                        ],
                        data.as_bytes(),
                    ));
                }
                encode_everywhere(&split_feed(&mut BedrockDecoder::new(), &frames, &cuts));
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn responses_passthrough_keeps_streams_without_errors_whole_however_split() {
    let events = prop::collection::vec(
        (
            prop::option::of(prop::sample::select(WORDS)),
            prop_oneof![
                json_value().prop_map(|v| v.to_string()),
                "[ -~]{0,20}".prop_map(String::from),
            ],
        ),
        0..8,
    );
    runner()
        .run(
            &(events, prop::collection::vec(any::<usize>(), 0..5)),
            |(events, cuts)| {
                let mut sse = String::new();
                for (name, data) in &events {
                    if let Some(n) = name {
                        sse.push_str(&format!("event: {n}\n"));
                    }
                    sse.push_str(&format!("data: {data}\n\n"));
                }
                let bytes = sse.as_bytes();
                let mut p =
                    ResponsesPassthrough::new(Box::new(vec!["sk-fuzz-secret-1".to_string()]));
                let mut out = Vec::new();
                let mut at = 0;
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
                cuts.sort_unstable();
                for c in cuts {
                    out.extend_from_slice(&p.feed(&bytes[at..c]));
                    at = c;
                }
                out.extend_from_slice(&p.feed(&bytes[at..]));
                out.extend_from_slice(&p.finish());
                let _ = p.usage();
                if !sse.contains("error") {
                    prop_assert_eq!(out.as_slice(), bytes);
                }
                Ok(())
            },
        )
        .unwrap();
}

/// The canonical form of a request (what the cache key hashes) never panics on any bytes, is made
/// exactly when serde_json reads an object, holds that object's content, and is the same however the
/// object was spaced or its members ordered.
#[test]
fn canonical_json_never_panics_and_keeps_the_object() {
    let input = prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        chat_like().prop_map(|v| serde_json::to_vec_pretty(&v).unwrap()),
        chat_like().prop_map(|v| reversed(&v).into_bytes()),
        responses_like().prop_map(|v| reversed(&v).into_bytes()),
        prop::collection::vec(any::<u8>(), 0..256),
    ];
    let damage = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3);
    runner()
        .run(&(input, damage), |(mut bytes, damage)| {
            for (at, byte) in damage {
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
            }
            let mut canonical = Canonical::default();
            let mut out = Vec::new();
            let made = canonical.object(&bytes, &["model", "stream"], &mut out);
            let read = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .filter(Value::is_object);
            prop_assert_eq!(made.is_some(), read.is_some());
            let Some(mut doc) = read else {
                return Ok(());
            };
            let members = doc.as_object_mut().unwrap();
            members.remove("model");
            members.remove("stream");
            // serde_json's map is ordered by name (no `preserve_order`), so this is the canonical
            // form as serde_json would write it.
            prop_assert_eq!(&out, &serde_json::to_vec(&doc).unwrap());
            // The same object spaced and ordered otherwise. (Not `out` itself: serde_json reads
            // some floats one unit off their shortest text, so canonical text is not always a
            // fixed point; both of these are written from the same floats.)
            let mut pretty = Vec::new();
            canonical
                .object(&serde_json::to_vec_pretty(&doc).unwrap(), &[], &mut pretty)
                .unwrap();
            let mut backwards = Vec::new();
            canonical
                .object(reversed(&doc).as_bytes(), &[], &mut backwards)
                .unwrap();
            prop_assert_eq!(pretty, backwards, "spacing and order do not matter");
            Ok(())
        })
        .unwrap();
}

/// `value` as JSON with every object's members in reverse order (serde_json's map keeps them
/// sorted), spaced.
fn reversed(value: &Value) -> String {
    match value {
        Value::Object(members) => {
            let members: Vec<String> = members
                .iter()
                .rev()
                .map(|(k, v)| format!("{} : {}", Value::from(k.as_str()), reversed(v)))
                .collect();
            format!("{{ {} }}", members.join(", "))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(reversed).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}
