//! The answers of prompt APIs (`POST <prefix>/prompts/<name>`), whole and streamed. A prompt call
//! goes upstream as a chat call; its answer, read into the neutral model whatever the provider, is
//! written here in the prompt API's own small format:
//!
//! - whole: `{"id", "object": "prompt.result", "model", "output", "finish_reason", "usage":
//!   {"input_tokens", "output_tokens", "total_tokens"}}`, where `output` is the text, or for JSON
//!   prompts the answer parsed;
//! - streamed: `event: delta` / `data: {"text": "…"}` for each piece of text, then `event: done` /
//!   `data: {"id", "model", "finish_reason", "usage"}` (with `output` parsed for JSON prompts), or
//!   `event: error` / `data: {"error": {…}}` in OpenAI's error shape.

use serde_json::{Value, json};

use super::chat::Answer;
use super::stream::{Encode, Finish, Piece, TokenCounts, openai_error_type, write_sse};

/// How much of an answer that is not JSON is quoted in the error about it.
const QUOTED: usize = 2048;

/// A JSON prompt's answer that is not JSON: the error message, quoting the start of the answer.
pub fn not_json(text: &str, error: &serde_json::Error) -> String {
    let mut end = text.len().min(QUOTED);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < text.len() { "…" } else { "" };
    format!(
        "The model's answer is not the JSON this prompt promises ({error}); it began: {:?}{more}",
        &text[..end]
    )
}

/// The `output` of an answer: the text, or for JSON prompts the text parsed.
pub fn output_of(text: &str, json_output: bool) -> Result<Value, String> {
    if !json_output {
        return Ok(Value::String(text.to_string()));
    }
    serde_json::from_str(strip_fence(text)).map_err(|e| not_json(text, &e))
}

/// Models asked for JSON without a native structured-output mode sometimes wrap it in a Markdown
/// code fence: the fence is not part of the value.
fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    let Some(rest) = t.strip_prefix("```") else {
        return t;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").map(str::trim).unwrap_or(t)
}

fn usage_json(counts: &TokenCounts) -> Value {
    let u = counts.usage();
    json!({"input_tokens": u.input, "output_tokens": u.output, "total_tokens": u.input + u.output})
}

/// A whole answer as the prompt API's result, or the message of a 502 when a JSON prompt's answer
/// is not JSON.
pub fn answer_to_prompt(answer: &Answer, json_output: bool) -> Result<Value, String> {
    let output = output_of(&answer.text, json_output)?;
    Ok(json!({
        "id": answer.id,
        "object": "prompt.result",
        "model": answer.model,
        "output": output,
        "finish_reason": answer.finish.openai(),
        "usage": usage_json(&answer.counts),
    }))
}

/// The prompt API's stream: text deltas, then one `done` event.
pub struct PromptEncoder {
    id: String,
    model: String,
    json_output: bool,
    /// The whole text, kept only for JSON prompts (parsed at the end).
    text: String,
    finish: Option<Finish>,
    counts: TokenCounts,
    ended: bool,
}

impl PromptEncoder {
    /// An encoder for an answer of `model`; `json_output` parses the text at the end.
    pub fn new(model: &str, json_output: bool) -> Self {
        Self {
            id: format!("prompt-{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..)),
            model: model.to_string(),
            json_output,
            text: String::new(),
            finish: None,
            counts: TokenCounts::default(),
            ended: false,
        }
    }

    fn error(&mut self, status: u16, code: &str, message: &str, out: &mut Vec<u8>) {
        self.ended = true;
        write_sse(
            out,
            Some("error"),
            &json!({"error": {"message": message, "type": openai_error_type(status), "param": null, "code": code}}),
        );
    }
}

impl Encode for PromptEncoder {
    fn piece(&mut self, piece: Piece, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match piece {
            Piece::Meta { id, model } => {
                if let Some(m) = model.filter(|m| !m.is_empty()) {
                    self.model = m;
                }
                if let Some(id) = id.filter(|id| !id.is_empty()) {
                    self.id = id;
                }
            }
            Piece::Text(t) if !t.is_empty() => {
                if self.json_output {
                    self.text.push_str(&t);
                }
                write_sse(out, Some("delta"), &json!({ "text": t }));
            }
            // A prompt's answer is its text: reasoning and tool calls are not part of it.
            Piece::Text(_)
            | Piece::Reasoning(_)
            | Piece::ToolStart { .. }
            | Piece::ToolArgs { .. } => {}
            Piece::Finish(f) => {
                self.finish.get_or_insert(f);
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
        let Some(finish) = self.finish else {
            self.fail(502, super::stream::CUT_SHORT, out);
            return;
        };
        let mut done = json!({
            "id": self.id,
            "model": self.model,
            "finish_reason": finish.openai(),
            "usage": usage_json(&self.counts),
        });
        if self.json_output {
            match output_of(&self.text, true) {
                Ok(output) => done["output"] = output,
                Err(message) => {
                    self.error(502, "invalid_output", &message, out);
                    return;
                }
            }
        }
        self.ended = true;
        write_sse(out, Some("done"), &done);
    }

    fn fail(&mut self, status: u16, message: &str, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let code = if status == 429 {
            "upstream_rate_limited"
        } else {
            "upstream_stream_error"
        };
        self.error(status, code, message, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(pieces: Vec<Piece>, json_output: bool) -> String {
        let mut e = PromptEncoder::new("m", json_output);
        let mut out = Vec::new();
        for p in pieces {
            e.piece(p, &mut out);
        }
        e.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn counts() -> TokenCounts {
        TokenCounts {
            input: Some(7),
            output: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn streams_text_deltas_then_done_with_usage() {
        let out = events(
            vec![
                Piece::Meta {
                    id: Some("abc".into()),
                    model: Some("gpt".into()),
                },
                Piece::Text("Hel".into()),
                Piece::Text("lo".into()),
                Piece::Finish(Finish::Stop),
                Piece::Usage(counts()),
                Piece::Done,
            ],
            false,
        );
        assert_eq!(
            out,
            "event: delta\ndata: {\"text\":\"Hel\"}\n\n\
             event: delta\ndata: {\"text\":\"lo\"}\n\n\
             event: done\ndata: {\"finish_reason\":\"stop\",\"id\":\"abc\",\"model\":\"gpt\",\
             \"usage\":{\"input_tokens\":7,\"output_tokens\":3,\"total_tokens\":10}}\n\n"
        );
    }

    #[test]
    fn json_streams_end_with_the_parsed_output_or_an_error() {
        let ok = events(
            vec![
                Piece::Text("{\"a\":".into()),
                Piece::Text(" 1}".into()),
                Piece::Finish(Finish::Stop),
            ],
            true,
        );
        assert!(ok.contains("\"output\":{\"a\":1}"), "{ok}");
        let bad = events(
            vec![Piece::Text("{\"a\":".into()), Piece::Finish(Finish::Length)],
            true,
        );
        assert!(
            bad.contains("event: error") && bad.contains("invalid_output"),
            "{bad}"
        );
        assert!(!bad.contains("event: done"), "{bad}");
    }

    #[test]
    fn a_stream_cut_short_ends_with_an_error_event() {
        let out = events(vec![Piece::Text("x".into())], false);
        assert!(
            out.ends_with("\"type\":\"server_error\"}}\n\n") || out.contains("event: error"),
            "{out}"
        );
        assert!(!out.contains("event: done"));
    }

    #[test]
    fn whole_answers_parse_json_and_fenced_json() {
        let answer = |text: &str| Answer {
            id: "id1".into(),
            model: "m".into(),
            text: text.into(),
            reasoning: Default::default(),
            tool_calls: Vec::new(),
            finish: Finish::Stop,
            counts: counts(),
        };
        let v = answer_to_prompt(&answer("plain"), false).unwrap();
        assert_eq!(v["output"], "plain");
        assert_eq!(v["usage"]["total_tokens"], 10);
        let v = answer_to_prompt(&answer("```json\n{\"x\": [1]}\n```"), true).unwrap();
        assert_eq!(v["output"], json!({"x": [1]}));
        let e = answer_to_prompt(&answer("not json"), true).unwrap_err();
        assert!(
            e.contains("not the JSON") && e.contains("\"not json\""),
            "{e}"
        );
    }
}
