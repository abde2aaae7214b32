//! One stored chat answer in the other form: a whole `chat.completion` as a stream of
//! `chat.completion.chunk` events, and a complete stream as one `chat.completion`, with the same text,
//! reasoning, tool calls, finish reason and usage; and the same for Anthropic's Messages format (a
//! `message` and its events). The response cache answers a streaming call from a stored whole answer,
//! and the reverse, through these.

use serde_json::Value;

use super::anthropic::{AnthropicEvents, read_response};
use super::chat::{Answer, ToolCall};
use super::messages::{AnthropicEncoder, answer_to_message};
use super::stream::{Decode, Encode, Finish, OpenAiEncoder, OpenAiEvents, Piece, SseDecode};

/// A whole `chat.completion` body as server-sent events (with OpenAI's usage chunk when
/// `include_usage`), ending in `data: [DONE]`; `None` when the body is not a chat completion.
pub fn stream_of_whole(body: &[u8], include_usage: bool) -> Option<Vec<u8>> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    if doc.get("object").and_then(Value::as_str) != Some("chat.completion") {
        return None;
    }
    let answer = Answer::from_openai(&doc)?;
    let mut encoder = OpenAiEncoder::new(&answer.model, include_usage);
    let mut out = Vec::with_capacity(body.len() * 2);
    for piece in pieces_of(answer) {
        encoder.piece(piece, &mut out);
    }
    Some(out)
}

/// A complete `chat.completion.chunk` stream (its finish reason, its usage and `data: [DONE]` seen)
/// as one `chat.completion` body; `None` for anything else, an error event included.
pub fn whole_of_stream(sse: &[u8]) -> Option<Vec<u8>> {
    let mut decoder = SseDecode::<OpenAiEvents>::new();
    let mut pieces = Vec::new();
    decoder.feed(sse, &mut pieces);
    decoder.finish(&mut pieces);
    serde_json::to_vec(&answer_of(pieces)?.to_openai()).ok()
}

/// A whole Anthropic `message` body as the events of its stream, ending in `message_stop`; `None`
/// when the body is not a message, or holds what the stream could not say the same: anything but
/// one text block, tool calls and unsigned thinking (signed thinking, citations, server tools), a
/// stop sequence's text.
pub fn message_stream_of_whole(body: &[u8]) -> Option<Vec<u8>> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    if doc.get("type").and_then(Value::as_str) != Some("message") {
        return None;
    }
    let answer = read_response(&doc, "")?;
    // What the neutral answer carries must be the whole message again, or something would be lost.
    let again = answer_to_message(&answer);
    let same = |name: &str| doc.get(name) == again.get(name);
    let usage = |v: &Value, name: &str| v["usage"].get(name).and_then(Value::as_u64).unwrap_or(0);
    if !same("content")
        || !same("stop_reason")
        || !doc.get("stop_sequence").is_none_or(Value::is_null)
        || [
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ]
        .iter()
        .any(|n| usage(&doc, n) != usage(&again, n))
    {
        return None;
    }
    let mut encoder = AnthropicEncoder::new(&answer.model);
    let mut out = Vec::with_capacity(body.len() * 2);
    // The usage first, so that `message_start` carries the input tokens as Anthropic's does.
    let mut pieces = pieces_of(answer);
    let usage = pieces.remove(pieces.len() - 2);
    pieces.insert(0, usage);
    for piece in pieces {
        encoder.piece(piece, &mut out);
    }
    Some(out)
}

/// A complete Anthropic Messages stream (its stop reason, its usage and `message_stop` seen) as one
/// `message` body; `None` for anything else: an error event, or an event the whole message could not
/// say the same (a signature, citations, server tools, a stop sequence's text).
pub fn message_whole_of_stream(sse: &[u8]) -> Option<Vec<u8>> {
    if !plain_message_events(sse) {
        return None;
    }
    let mut decoder = SseDecode::<AnthropicEvents>::new();
    let mut pieces = Vec::new();
    decoder.feed(sse, &mut pieces);
    decoder.finish(&mut pieces);
    serde_json::to_vec(&answer_to_message(&answer_of(pieces)?)).ok()
}

/// Whether every event of an Anthropic stream is one the neutral answer carries whole.
fn plain_message_events(sse: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(sse) else {
        return false;
    };
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .all(|data| {
            let Ok(v) = serde_json::from_str::<Value>(data.trim_start()) else {
                return false;
            };
            let kind = |v: &Value| v.get("type").and_then(Value::as_str).map(str::to_string);
            match kind(&v).as_deref() {
                Some("content_block_start") => {
                    let block = &v["content_block"];
                    match kind(block).as_deref() {
                        Some("text") => block["text"] == "" && block.get("citations").is_none(),
                        Some("tool_use") => true,
                        Some("thinking") => block["signature"] == "",
                        _ => false,
                    }
                }
                Some("content_block_delta") => matches!(
                    kind(&v["delta"]).as_deref(),
                    Some("text_delta" | "input_json_delta" | "thinking_delta")
                ),
                Some("message_delta") => v["delta"]["stop_sequence"].is_null(),
                Some("message_start" | "content_block_stop" | "message_stop" | "ping") => true,
                _ => false,
            }
        })
}

/// The answer a complete stream's pieces make: `None` unless its finish reason, its usage and its
/// end were seen, and no error.
fn answer_of(pieces: Vec<Piece>) -> Option<Answer> {
    let mut answer = Answer {
        id: String::new(),
        model: String::new(),
        text: String::new(),
        reasoning: String::new(),
        tool_calls: Vec::new(),
        finish: Finish::Stop,
        counts: Default::default(),
    };
    let (mut finished, mut usage, mut done) = (false, false, false);
    // Tool-call index → position in `tool_calls`.
    let mut tools: Vec<(usize, usize)> = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Meta { id, model } => {
                answer.id = id.unwrap_or_default();
                answer.model = model.unwrap_or_default();
            }
            Piece::Text(text) => answer.text.push_str(&text),
            Piece::Reasoning(text) => answer.reasoning.push_str(&text),
            Piece::ToolStart { index, id, name } => {
                tools.push((index, answer.tool_calls.len()));
                answer.tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments: String::new(),
                });
            }
            Piece::ToolArgs { index, fragment } => {
                let (_, at) = tools.iter().find(|(i, _)| *i == index)?;
                answer.tool_calls[*at].arguments.push_str(&fragment);
            }
            Piece::Finish(finish) => {
                answer.finish = finish;
                finished = true;
            }
            Piece::Usage(counts) => {
                answer.counts.merge(counts);
                usage = true;
            }
            Piece::Error { .. } => return None,
            Piece::Done => done = true,
        }
    }
    (finished && usage && done).then_some(answer)
}

/// A whole answer as the pieces of its stream.
fn pieces_of(answer: Answer) -> Vec<Piece> {
    let mut out = vec![Piece::Meta {
        id: Some(answer.id),
        model: Some(answer.model),
    }];
    if !answer.reasoning.is_empty() {
        out.push(Piece::Reasoning(answer.reasoning));
    }
    if !answer.text.is_empty() {
        out.push(Piece::Text(answer.text));
    }
    for (index, call) in answer.tool_calls.into_iter().enumerate() {
        out.push(Piece::ToolStart {
            index,
            id: call.id,
            name: call.name,
        });
        out.push(Piece::ToolArgs {
            index,
            fragment: call.arguments,
        });
    }
    out.push(Piece::Finish(answer.finish));
    out.push(Piece::Usage(answer.counts));
    out.push(Piece::Done);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::stream::TokenCounts;
    use proptest::prelude::*;

    fn answer_strategy() -> impl Strategy<Value = Answer> {
        (
            "\\PC{0,40}",
            "\\PC{0,12}",
            prop::collection::vec(("[a-z_]{1,8}", "\\{\"[a-z]{1,4}\": [0-9]{1,3}\\}"), 0..3),
            prop::sample::select(vec![
                Finish::Stop,
                Finish::Length,
                Finish::ToolCalls,
                Finish::ContentFilter,
            ]),
            (0u64..100_000, 0u64..100_000),
            0u64..50,
        )
            .prop_map(
                |(text, reasoning, calls, finish, (input, output), cached)| Answer {
                    id: "chatcmpl-1".into(),
                    model: "gpt-4o-mini".into(),
                    text,
                    reasoning,
                    tool_calls: calls
                        .into_iter()
                        .enumerate()
                        .map(|(i, (name, arguments))| ToolCall {
                            id: format!("call_{i}"),
                            name,
                            arguments,
                        })
                        .collect(),
                    finish,
                    counts: TokenCounts {
                        input: Some(input + cached),
                        output: Some(output),
                        cache_read: Some(cached),
                        cache_write: None,
                    },
                },
            )
    }

    /// What must survive a change of form.
    fn essence(answer: &Answer) -> (String, String, Vec<ToolCall>, &'static str, Value) {
        (
            answer.text.clone(),
            answer.reasoning.clone(),
            answer.tool_calls.clone(),
            answer.finish.openai(),
            answer.counts.openai_json(),
        )
    }

    fn read(body: &[u8]) -> Answer {
        Answer::from_openai(&serde_json::from_slice(body).unwrap()).unwrap()
    }

    proptest! {
        #[test]
        fn a_whole_answer_and_its_stream_say_the_same(answer in answer_strategy()) {
            let whole = serde_json::to_vec(&answer.to_openai()).unwrap();
            let stream = stream_of_whole(&whole, true).unwrap();
            let text = String::from_utf8(stream.clone()).unwrap();
            prop_assert!(text.trim_end().ends_with("data: [DONE]"));
            prop_assert!(text.contains("\"object\":\"chat.completion.chunk\""));
            let back = whole_of_stream(&stream).unwrap();
            prop_assert_eq!(essence(&read(&back)), essence(&answer));
            // Without the usage chunk, a stream cannot become a whole answer again.
            let bare = stream_of_whole(&whole, false).unwrap();
            prop_assert!(whole_of_stream(&bare).is_none());
        }

        #[test]
        fn any_bytes_convert_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = stream_of_whole(&bytes, true);
            let _ = whole_of_stream(&bytes);
        }
    }

    proptest! {
        #[test]
        fn a_whole_message_and_its_stream_say_the_same(answer in answer_strategy()) {
            let whole = answer_to_message(&answer);
            let stream = message_stream_of_whole(&serde_json::to_vec(&whole).unwrap()).unwrap();
            let text = String::from_utf8(stream.clone()).unwrap();
            let last = text.trim_end().lines().last().unwrap_or_default();
            prop_assert_eq!(last, "data: {\"type\":\"message_stop\"}");
            let back: Value = serde_json::from_slice(&message_whole_of_stream(&stream).unwrap()).unwrap();
            prop_assert_eq!(&back["content"], &whole["content"]);
            prop_assert_eq!(&back["stop_reason"], &whole["stop_reason"]);
            prop_assert_eq!(&back["usage"], &whole["usage"]);
            prop_assert_eq!(&back["model"], &whole["model"]);
            // The stream's own first event already says the input tokens, as Anthropic's does, split
            // from the prompt cache's the same way as the whole message's usage.
            let start = text
                .lines()
                .find_map(|l| l.strip_prefix("data: ").filter(|d| d.contains("\"message_start\"")))
                .unwrap();
            let start: Value = serde_json::from_str(start).unwrap();
            for name in ["input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"] {
                prop_assert_eq!(&start["message"]["usage"][name], &whole["usage"][name], "{}", name);
            }
        }

        #[test]
        fn any_bytes_convert_to_messages_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = message_stream_of_whole(&bytes);
            let _ = message_whole_of_stream(&bytes);
        }
    }

    #[test]
    fn messages_the_other_form_would_change_are_not_converted() {
        let whole = |content: &str, stop: &str| {
            format!(
                r#"{{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":{content},
                "stop_reason":{stop},"stop_sequence":null,
                "usage":{{"input_tokens":3,"output_tokens":2,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}}}"#
            )
        };
        let plain = whole(r#"[{"type":"text","text":"Paris."}]"#, r#""end_turn""#);
        let stream = message_stream_of_whole(plain.as_bytes()).unwrap();
        let back: Value =
            serde_json::from_slice(&message_whole_of_stream(&stream).unwrap()).unwrap();
        assert_eq!(back["content"][0]["text"], "Paris.");
        assert_eq!(back["usage"]["input_tokens"], 3);
        // Signed thinking, citations, two text blocks, a stop sequence's text: not the same in the
        // other form, so not converted.
        for content in [
            r#"[{"type":"thinking","thinking":"hm","signature":"EqQBCkYIBx"},{"type":"text","text":"a"}]"#,
            r#"[{"type":"text","text":"a","citations":[{"type":"char_location"}]}]"#,
            r#"[{"type":"text","text":"a"},{"type":"tool_use","id":"t","name":"f","input":{}},{"type":"text","text":"b"}]"#,
            r#"[{"type":"server_tool_use","id":"s","name":"web_search","input":{}}]"#,
        ] {
            assert!(
                message_stream_of_whole(whole(content, r#""end_turn""#).as_bytes()).is_none(),
                "{content}"
            );
        }
        let stopped = whole(r#"[{"type":"text","text":"a"}]"#, r#""stop_sequence""#)
            .replace(r#""stop_sequence":null"#, r#""stop_sequence":"END""#);
        assert!(message_stream_of_whole(stopped.as_bytes()).is_none());
        assert!(message_stream_of_whole(b"{\"type\":\"error\"}").is_none());

        let text = String::from_utf8(stream).unwrap();
        let signed = text.replace(
            "event: content_block_stop",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"x\"}}\n\nevent: content_block_stop",
        );
        assert!(message_whole_of_stream(signed.as_bytes()).is_none());
        let cut = text.replace(
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            "",
        );
        assert!(message_whole_of_stream(cut.as_bytes()).is_none());
        let failed = text.replace(
            "event: message_stop",
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}\n\nevent: message_stop",
        );
        assert!(message_whole_of_stream(failed.as_bytes()).is_none());
    }

    #[test]
    fn streams_cut_short_or_failing_are_not_whole_answers() {
        let whole = br#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,
            "message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let stream = stream_of_whole(whole, true).unwrap();
        let back = read(&whole_of_stream(&stream).unwrap());
        assert_eq!(back.text, "Paris.");
        assert_eq!(back.counts.usage().input, 3);
        let text = String::from_utf8(stream).unwrap();
        let cut = text.replace("data: [DONE]\n\n", "");
        assert!(whole_of_stream(cut.as_bytes()).is_none());
        let failed = text.replace(
            "data: [DONE]",
            "data: {\"error\":{\"message\":\"x\",\"type\":\"server_error\"}}\n\ndata: [DONE]",
        );
        assert!(whole_of_stream(failed.as_bytes()).is_none());
        assert!(stream_of_whole(b"{\"object\":\"list\",\"data\":[]}", true).is_none());
    }
}
