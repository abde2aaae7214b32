//! Answers in a caller's JSON Schema from providers without a schema-constrained output mode
//! (Anthropic): the schema is offered as the one tool the model must call, and the call's arguments
//! come back as the answer's text, in whole answers and streams alike.

use serde_json::Value;

use super::chat::{Answer, ChatRequest};
use super::stream::{Decode, Finish, Piece};

/// The tool that carries a JSON answer: its name and input schema, when the request asks for a JSON
/// Schema, offers no tools of its own, and the schema describes an object (tool inputs are objects).
pub fn tool_for(req: &ChatRequest) -> Option<(String, Value)> {
    let spec = req.json_schema.as_ref()?;
    if !req.tools.is_empty() || spec.schema.get("type").and_then(Value::as_str) != Some("object") {
        return None;
    }
    // Tool names are `[A-Za-z0-9_-]{1,64}`; a schema name that is not one gets a fixed name.
    let valid = !spec.name.is_empty()
        && spec.name.len() <= 64
        && spec
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let name = if valid {
        spec.name.as_str()
    } else {
        "json_answer"
    };
    Some((name.to_string(), spec.schema.clone()))
}

/// A whole answer whose call of the answer tool `name` becomes its text.
pub fn answer_from_tool(answer: &mut Answer, name: &str) {
    let Some(at) = answer.tool_calls.iter().position(|c| c.name == name) else {
        return;
    };
    let call = answer.tool_calls.remove(at);
    answer.text = call.arguments;
    if answer.tool_calls.is_empty() && answer.finish == Finish::ToolCalls {
        answer.finish = Finish::Stop;
    }
}

/// A stream whose call of the answer tool becomes its text: text before it (a preamble) is dropped,
/// its argument fragments are the text, and its tool-use stop is a plain stop.
pub struct ToolAsText {
    inner: Box<dyn Decode>,
    name: String,
    tool: Option<usize>,
    pieces: Vec<Piece>,
}

impl ToolAsText {
    /// Reads `inner`'s stream, with `name` as the answer tool.
    pub fn new(inner: Box<dyn Decode>, name: String) -> Self {
        Self {
            inner,
            name,
            tool: None,
            pieces: Vec::new(),
        }
    }

    fn map(&mut self, out: &mut Vec<Piece>) {
        for p in self.pieces.drain(..) {
            match p {
                Piece::Text(_) => {}
                Piece::ToolStart { index, name, .. } if name == self.name => {
                    self.tool = Some(index);
                }
                Piece::ToolArgs { index, fragment } if Some(index) == self.tool => {
                    out.push(Piece::Text(fragment));
                }
                Piece::Finish(Finish::ToolCalls) if self.tool.is_some() => {
                    out.push(Piece::Finish(Finish::Stop));
                }
                other => out.push(other),
            }
        }
    }
}

impl Decode for ToolAsText {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Piece>) {
        self.inner.feed(bytes, &mut self.pieces);
        self.map(out);
    }

    fn finish(&mut self, out: &mut Vec<Piece>) {
        self.inner.finish(&mut self.pieces);
        self.map(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::chat::ToolCall;
    use crate::llm::stream::{OpenAiDecoder, TokenCounts, decode_all};
    use serde_json::json;

    fn request(format: Value) -> ChatRequest {
        ChatRequest::from_openai(
            &json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                         "response_format": format}),
        )
        .unwrap()
    }

    #[test]
    fn only_object_schemas_of_requests_without_tools_get_the_tool() {
        let req = request(
            json!({"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}}),
        );
        assert_eq!(
            tool_for(&req),
            Some(("city".into(), json!({"type": "object"})))
        );
        let odd = request(
            json!({"type": "json_schema", "json_schema": {"name": "a b", "schema": {"type": "object"}}}),
        );
        assert_eq!(tool_for(&odd).unwrap().0, "json_answer");
        let list = request(
            json!({"type": "json_schema", "json_schema": {"name": "l", "schema": {"type": "array"}}}),
        );
        assert_eq!(tool_for(&list), None);
        assert_eq!(tool_for(&request(json!({"type": "json_object"}))), None);
    }

    #[test]
    fn the_tool_call_comes_back_as_text() {
        let mut a = Answer {
            id: "x".into(),
            model: "m".into(),
            text: "Sure.".into(),
            reasoning: String::new(),
            tool_calls: vec![ToolCall {
                id: "t".into(),
                name: "city".into(),
                arguments: "{\"city\":\"Paris\"}".into(),
            }],
            finish: Finish::ToolCalls,
            counts: TokenCounts::default(),
        };
        answer_from_tool(&mut a, "city");
        assert_eq!(a.text, "{\"city\":\"Paris\"}");
        assert!(a.tool_calls.is_empty());
        assert_eq!(a.finish, Finish::Stop);

        let stream = concat!(
            "data: {\"id\":\"c\",\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Sure.\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_9\",\"type\":\"function\",\"function\":{\"name\":\"city\",\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        let mut d = ToolAsText::new(Box::new(OpenAiDecoder::new()), "city".into());
        let pieces = decode_all(&mut d, stream.as_bytes());
        let text: String = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "{\"city\":\"Paris\"}");
        assert!(pieces.contains(&Piece::Finish(Finish::Stop)));
        assert!(!pieces.iter().any(|p| matches!(p, Piece::ToolStart { .. })));
    }
}
