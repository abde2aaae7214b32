//! One stored chat answer in the other form: a whole `chat.completion` as a stream of
//! `chat.completion.chunk` events, and a complete stream as one `chat.completion`, with the same text,
//! reasoning, tool calls, finish reason and usage. The response cache answers a streaming call from a
//! stored whole answer, and the reverse, through these.

use serde_json::Value;

use super::chat::{Answer, ToolCall};
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
    if !(finished && usage && done) {
        return None;
    }
    serde_json::to_vec(&answer.to_openai()).ok()
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
