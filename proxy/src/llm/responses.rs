//! Callers that speak OpenAI's Responses API (`POST <prefix>/v1/responses`), used statelessly: their
//! requests are read by [`super::responses_request`], and answers written back as `response` objects,
//! as bytes straight from the neutral answer. Streams are written by [`super::responses_stream`].

use serde_json::Value;

pub use super::responses_request::{to_chat_request, to_openai_request};
use crate::llm::chat::Answer;
use crate::llm::openai::RequestDoc;
use crate::llm::stream::{Finish, TokenCounts};

/// The request's settings a `response` object repeats back, with OpenAI's defaults for the absent:
/// kept as the JSON members it writes (`"instructions":…,"max_output_tokens":…`), read once a call.
#[derive(Clone, Debug)]
pub struct Echo(String);

/// Keys echoed, and the JSON written when the request has none (or `null`).
const ECHOED: [(&str, &str); 12] = [
    ("instructions", "null"),
    ("max_output_tokens", "null"),
    ("metadata", "{}"),
    ("parallel_tool_calls", "true"),
    ("reasoning", r#"{"effort":null,"summary":null}"#),
    ("temperature", "1.0"),
    ("text", r#"{"format":{"type":"text"}}"#),
    ("tool_choice", r#""auto""#),
    ("tools", "[]"),
    ("top_p", "1.0"),
    ("truncation", r#""disabled""#),
    ("user", "null"),
];

impl Default for Echo {
    /// Every setting at its default.
    fn default() -> Self {
        Self::with(|_| None)
    }
}

impl Echo {
    /// Reads the echoed settings from the request's top level: each value's JSON text as the caller
    /// sent it (validated when the body was read), without the space between tokens, which would
    /// otherwise end an event's `data:` line.
    pub fn read(doc: &RequestDoc<'_>) -> Self {
        Self::with(|key| doc.get(key).map(|raw| raw.get()))
    }

    /// The echoed settings, each given by `get` as JSON text.
    fn with<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        let mut s = String::with_capacity(320);
        for (key, default) in ECHOED {
            if !s.is_empty() {
                s.push(',');
            }
            s.push('"');
            s.push_str(key);
            s.push_str("\":");
            match get(key).filter(|v| *v != "null") {
                Some(raw) => push_compact(&mut s, raw),
                None => s.push_str(default),
            }
        }
        Self(s)
    }
}

/// Appends valid JSON text without its insignificant whitespace.
fn push_compact(out: &mut String, json: &str) {
    let space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
    if !json.contains(space) {
        out.push_str(json);
        return;
    }
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if space(c) {
            continue;
        }
        out.push(c);
    }
}

/// A fresh id with OpenAI's prefix for its kind (`resp`, `msg`, `fc`).
pub fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}_{:016x}{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

/// Appends `s` as a JSON string.
pub(super) fn string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("strings serialise");
}

/// Appends `n`.
pub(super) fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Writes the Responses API's `usage` object.
fn write_usage(out: &mut Vec<u8>, c: &TokenCounts) {
    let (i, o) = (c.input.unwrap_or(0), c.output.unwrap_or(0));
    out.extend_from_slice(br#"{"input_tokens":"#);
    number(out, i);
    out.extend_from_slice(br#","input_tokens_details":{"cached_tokens":"#);
    number(out, c.cache_read.unwrap_or(0));
    out.extend_from_slice(br#"},"output_tokens":"#);
    number(out, o);
    out.extend_from_slice(br#","output_tokens_details":{"reasoning_tokens":0},"total_tokens":"#);
    number(out, i + o);
    out.push(b'}');
}

/// Reads the Responses API's `usage` object.
pub fn counts(u: &Value) -> Option<TokenCounts> {
    let o = u.as_object()?;
    Some(TokenCounts {
        input: o.get("input_tokens").and_then(Value::as_u64),
        output: o.get("output_tokens").and_then(Value::as_u64),
        cache_read: u
            .get("input_tokens_details")
            .and_then(|d| d.get("cached_tokens"))
            .and_then(Value::as_u64),
        cache_write: None,
    })
}

/// `status` of a response that stopped for `finish`, and the `incomplete_details.reason` of one
/// that is incomplete.
pub fn status_of(finish: Finish) -> (&'static str, Option<&'static str>) {
    match finish {
        Finish::Length => ("incomplete", Some("max_output_tokens")),
        Finish::ContentFilter => ("incomplete", Some("content_filter")),
        Finish::Stop | Finish::StopSequence | Finish::ToolCalls => ("completed", None),
    }
}

/// One output item of a response, borrowed from what it is written from.
#[derive(Clone, Copy, Debug)]
pub enum OutputItem<'a> {
    /// The model's reasoning as it showed it (Anthropic's thinking, `reasoning_content`), written
    /// as `reasoning_text` content, the form OpenAI gives for models whose reasoning is open; no
    /// summary is made up.
    Reasoning {
        /// Item id.
        id: &'a str,
        /// The reasoning.
        text: &'a str,
    },
    /// The answer's text.
    Message {
        /// Item id.
        id: &'a str,
        /// The text.
        text: &'a str,
    },
    /// A function call.
    Call {
        /// Item id.
        id: &'a str,
        /// The call's id, which the caller's `function_call_output` names.
        call_id: &'a str,
        /// Function name.
        name: &'a str,
        /// Arguments as JSON text.
        arguments: &'a str,
    },
}

impl OutputItem<'_> {
    /// The item's id.
    pub fn id(&self) -> &str {
        match self {
            Self::Reasoning { id, .. } | Self::Message { id, .. } | Self::Call { id, .. } => id,
        }
    }

    /// Writes the item completed, or (`done` false) as `response.output_item.added` shows it: in
    /// progress, without content.
    pub fn write(&self, out: &mut Vec<u8>, done: bool) {
        match *self {
            Self::Reasoning { id, text } => {
                out.extend_from_slice(br#"{"type":"reasoning","id":"#);
                string(out, id);
                out.extend_from_slice(br#","summary":[],"content":["#);
                if done {
                    self.write_part(out, text);
                }
                out.extend_from_slice(b"]}");
            }
            Self::Message { id, text } => {
                out.extend_from_slice(br#"{"type":"message","id":"#);
                string(out, id);
                out.extend_from_slice(if done {
                    br#","status":"completed","role":"assistant","content":["#
                } else {
                    br#","status":"in_progress","role":"assistant","content":["#
                });
                if done {
                    self.write_part(out, text);
                }
                out.extend_from_slice(b"]}");
            }
            Self::Call {
                id,
                call_id,
                name,
                arguments,
            } => {
                out.extend_from_slice(br#"{"type":"function_call","id":"#);
                string(out, id);
                out.extend_from_slice(br#","call_id":"#);
                string(out, call_id);
                out.extend_from_slice(br#","name":"#);
                string(out, name);
                out.extend_from_slice(br#","arguments":"#);
                string(out, if done { arguments } else { "" });
                out.extend_from_slice(if done {
                    br#","status":"completed"}"#
                } else {
                    br#","status":"in_progress"}"#
                });
            }
        }
    }

    /// Writes the content part of a reasoning or message item holding `text` (a call has none).
    pub fn write_part(&self, out: &mut Vec<u8>, text: &str) {
        match self {
            Self::Reasoning { .. } => {
                out.extend_from_slice(br#"{"type":"reasoning_text","text":"#);
                string(out, text);
                out.push(b'}');
            }
            Self::Message { .. } => {
                out.extend_from_slice(br#"{"type":"output_text","text":"#);
                string(out, text);
                out.extend_from_slice(br#","annotations":[],"logprobs":[]}"#);
            }
            Self::Call { .. } => out.extend_from_slice(b"null"),
        }
    }
}

/// Why a response failed: its `error` object.
#[derive(Clone, Copy, Debug)]
pub struct ResponseError<'a> {
    /// `code`.
    pub code: &'a str,
    /// `message`.
    pub message: &'a str,
    /// `type`.
    pub kind: &'a str,
}

/// A `response` object, written by [`ResponseObject::write`].
pub struct ResponseObject<'a> {
    /// `id`.
    pub id: &'a str,
    /// `created_at`.
    pub created_at: i64,
    /// `model`.
    pub model: &'a str,
    /// `status`: `in_progress`, `completed`, `incomplete` or `failed`.
    pub status: &'a str,
    /// `incomplete_details.reason`.
    pub incomplete: Option<&'a str>,
    /// `error`.
    pub error: Option<ResponseError<'a>>,
    /// `usage`.
    pub usage: Option<&'a TokenCounts>,
    /// `output`.
    pub output: &'a [OutputItem<'a>],
    /// The request's settings repeated.
    pub echo: &'a Echo,
}

impl ResponseObject<'_> {
    /// Writes the object as JSON.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"id":"#);
        string(out, self.id);
        out.extend_from_slice(br#","object":"response","created_at":"#);
        number(out, self.created_at);
        out.extend_from_slice(br#","status":"#);
        string(out, self.status);
        out.extend_from_slice(br#","background":false,"error":"#);
        match self.error {
            Some(e) => {
                out.extend_from_slice(br#"{"code":"#);
                string(out, e.code);
                out.extend_from_slice(br#","message":"#);
                string(out, e.message);
                out.extend_from_slice(br#","type":"#);
                string(out, e.kind);
                out.push(b'}');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","incomplete_details":"#);
        match self.incomplete {
            Some(reason) => {
                out.extend_from_slice(br#"{"reason":"#);
                string(out, reason);
                out.push(b'}');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","model":"#);
        string(out, self.model);
        out.extend_from_slice(br#","output":["#);
        for (i, item) in self.output.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            item.write(out, true);
        }
        out.extend_from_slice(br#"],"previous_response_id":null,"store":false,"usage":"#);
        match self.usage {
            Some(c) => write_usage(out, c),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b',');
        out.extend_from_slice(self.echo.0.as_bytes());
        out.push(b'}');
    }
}

/// A whole answer as a `response` object's JSON.
pub fn answer_to_response(a: &Answer, echo: &Echo) -> Vec<u8> {
    let shown = !a.reasoning.is_empty();
    let message = !a.text.is_empty() || a.tool_calls.is_empty();
    // Ids only for the items written (each is three random numbers formatted).
    let reasoning_id = if shown { new_id("rs") } else { String::new() };
    let message_id = if message {
        new_id("msg")
    } else {
        String::new()
    };
    let call_ids: Vec<String> = a.tool_calls.iter().map(|_| new_id("fc")).collect();
    let mut output = Vec::with_capacity(2 + a.tool_calls.len());
    if shown {
        output.push(OutputItem::Reasoning {
            id: &reasoning_id,
            text: &a.reasoning,
        });
    }
    if message {
        output.push(OutputItem::Message {
            id: &message_id,
            text: &a.text,
        });
    }
    for (c, id) in a.tool_calls.iter().zip(&call_ids) {
        output.push(OutputItem::Call {
            id,
            call_id: &c.id,
            name: &c.name,
            arguments: &c.arguments,
        });
    }
    let (status, incomplete) = status_of(a.finish);
    let mut out = Vec::with_capacity(a.text.len() + a.reasoning.len() + 1024);
    ResponseObject {
        id: &new_id("resp"),
        created_at: crate::clock::now_unix(),
        model: &a.model,
        status,
        incomplete,
        error: None,
        usage: Some(&a.counts),
        output: &output,
        echo,
    }
    .write(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::chat::ToolCall;
    use serde_json::json;

    #[test]
    fn answers_become_response_objects_with_items_and_usage() {
        let a = Answer {
            id: "x".into(),
            model: "claude".into(),
            text: "Let me check.".into(),
            reasoning: String::new(),
            tool_calls: vec![ToolCall {
                id: "toolu_1".into(),
                name: "weather".into(),
                arguments: "{}".into(),
            }],
            finish: Finish::ToolCalls,
            counts: TokenCounts {
                input: Some(10),
                output: Some(4),
                cache_read: Some(6),
                cache_write: None,
            },
        };
        let doc = RequestDoc::parse(
            br#"{"instructions": "be brief", "text": {"format": {"type": "text"}}}"#,
        )
        .unwrap();
        let echo = Echo::read(&doc);
        let written = |a: &Answer| -> Value {
            serde_json::from_slice(&answer_to_response(a, &echo)).unwrap()
        };
        let v = written(&a);
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["instructions"], "be brief");
        assert_eq!(v["tool_choice"], "auto");
        assert_eq!(v["text"], json!({"format": {"type": "text"}}));
        assert_eq!(v["temperature"], 1.0);
        assert_eq!(v["error"], Value::Null);
        assert_eq!(v["incomplete_details"], Value::Null);
        assert_eq!(v["output"][0]["content"][0]["text"], "Let me check.");
        assert_eq!(v["output"][1]["type"], "function_call");
        assert_eq!(v["output"][1]["call_id"], "toolu_1");
        assert_eq!(v["usage"]["total_tokens"], 14);
        assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 6);
        assert_eq!(counts(&v["usage"]).unwrap().cache_read, Some(6));
        let cut = Answer {
            finish: Finish::Length,
            ..a
        };
        let v = written(&cut);
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
        // Reasoning the model showed comes first, as a reasoning item.
        let thought = Answer {
            reasoning: "The user wants weather.".into(),
            ..cut
        };
        let v = written(&thought);
        assert_eq!(v["output"][0]["type"], "reasoning");
        assert_eq!(v["output"][0]["summary"], json!([]));
        assert_eq!(
            v["output"][0]["content"],
            json!([{"type": "reasoning_text", "text": "The user wants weather."}])
        );
        assert!(v["output"][0]["id"].as_str().unwrap().starts_with("rs_"));
        assert_eq!(v["output"][1]["type"], "message");
    }
}
