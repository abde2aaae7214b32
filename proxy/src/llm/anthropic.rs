//! Anthropic's Messages API (`POST /v1/messages`): requests written from a [`ChatRequest`], answers and
//! streams read back, from Anthropic's public API reference.

use serde_json::{Map, Value, json};

use super::chat::{
    Answer, ChatRequest, Image, Part, RoleTurns, ToolCall, ToolChoice, Turn, arguments_object,
};
use super::stream::{Finish, Piece, SseDecode, SseEvents, TokenCounts};

/// The API version sent in `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by Anthropic; this is sent when the caller gave none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The request body for `model`.
pub fn build_request(req: &ChatRequest, model: &str, stream: bool) -> Value {
    let mut messages = RoleTurns::default();
    let mut push = |role: &'static str, blocks: Vec<Value>| messages.push(role, blocks);
    for turn in &req.turns {
        match turn {
            Turn::User(parts) => push("user", parts.iter().filter_map(user_block).collect()),
            Turn::Assistant { text, tool_calls } => {
                let mut blocks = Vec::new();
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for c in tool_calls {
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name,
                                       "input": arguments_object(&c.arguments)}));
                }
                push("assistant", blocks);
            }
            Turn::ToolResult { call_id, content } => push(
                "user",
                vec![json!({"type": "tool_result", "tool_use_id": call_id, "content": content})],
            ),
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert(
        "max_tokens".into(),
        req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).into(),
    );
    body.insert(
        "messages".into(),
        messages
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect(),
    );
    // A JSON Schema answer comes as a forced tool's input (below): no instruction needed.
    let instruction = req
        .json_instruction()
        .filter(|_| super::json_answer::tool_for(req).is_none());
    let system: Vec<&str> = req
        .system
        .iter()
        .map(String::as_str)
        .chain(instruction.as_deref())
        .filter(|s| !s.is_empty())
        .collect();
    if !system.is_empty() {
        body.insert("system".into(), system.join("\n\n").into());
    }
    let budget = req.reasoning_effort.as_deref().and_then(thinking_budget);
    if let Some(budget) = budget {
        // Extended thinking: the budget must stay below `max_tokens`, and sampling stays Anthropic's.
        let max = req
            .max_tokens
            .unwrap_or(DEFAULT_MAX_TOKENS)
            .max(budget + 1024);
        body.insert("max_tokens".into(), max.into());
        body.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    } else {
        if let Some(t) = req.temperature {
            // Anthropic's range is 0–1, OpenAI's 0–2.
            body.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
        }
        if let Some(p) = req.top_p {
            body.insert("top_p".into(), json!(p));
        }
    }
    if !req.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(req.stop));
    }
    if let Some(u) = &req.user {
        body.insert("metadata".into(), json!({"user_id": u}));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut o = json!({"name": t.name, "input_schema": t.parameters});
                if let Some(d) = &t.description {
                    o["description"] = d.clone().into();
                }
                o
            })
            .collect();
        body.insert("tools".into(), tools.into());
        let mut choice = match &req.tool_choice {
            None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
            Some(ToolChoice::None) => json!({"type": "none"}),
            Some(ToolChoice::Required) => json!({"type": "any"}),
            Some(ToolChoice::Named(n)) => json!({"type": "tool", "name": n}),
        };
        if req.parallel_tool_calls == Some(false) && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = true.into();
        }
        if req.tool_choice.is_some() || req.parallel_tool_calls == Some(false) {
            body.insert("tool_choice".into(), choice);
        }
    }
    if let Some((name, schema)) = super::json_answer::tool_for(req) {
        // A JSON Schema answer: the one tool the model must call (see `json_answer`).
        body.insert(
            "tools".into(),
            json!([{"name": name, "description": "Give the answer, as this tool's input.",
                    "input_schema": schema}]),
        );
        body.insert("tool_choice".into(), json!({"type": "tool", "name": name}));
    }
    if stream {
        body.insert("stream".into(), true.into());
    }
    Value::Object(body)
}

/// Thinking budget for an OpenAI `reasoning_effort`; `None` for no thinking.
pub fn thinking_budget(effort: &str) -> Option<u64> {
    match effort {
        "low" => Some(2_048),
        "medium" => Some(8_192),
        "high" => Some(24_576),
        _ => None,
    }
}

/// OpenAI `reasoning_effort` for a thinking budget (the inverse of [`thinking_budget`], by range).
pub fn effort_of_budget(budget: u64) -> &'static str {
    match budget {
        0..4_096 => "low",
        4_096..16_384 => "medium",
        _ => "high",
    }
}

fn user_block(part: &Part) -> Option<Value> {
    Some(match part {
        Part::Text(t) if t.is_empty() => return None,
        Part::Text(t) => json!({"type": "text", "text": t}),
        Part::Image(Image::Inline { media_type, data }) => json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data}
        }),
        Part::Image(Image::Url(url)) => json!({
            "type": "image",
            "source": {"type": "url", "url": url}
        }),
    })
}

/// Anthropic `usage` → counts (its `input_tokens` leave out cache reads and writes).
pub fn counts(u: &Value) -> TokenCounts {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let (read, write) = (
        n("cache_read_input_tokens"),
        n("cache_creation_input_tokens"),
    );
    TokenCounts {
        input: n("input_tokens").map(|i| i + read.unwrap_or(0) + write.unwrap_or(0)),
        output: n("output_tokens"),
        cache_read: read,
        cache_write: write,
    }
}

/// `stop_reason` → finish.
pub fn finish(reason: &str) -> Finish {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => Finish::Length,
        "tool_use" => Finish::ToolCalls,
        "stop_sequence" => Finish::StopSequence,
        "refusal" => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

/// Reads a Messages API response.
pub fn read_response(v: &Value, fallback_model: &str) -> Option<Answer> {
    let content = v.get("content")?.as_array()?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or(""))
            }
            Some("tool_use") => tool_calls.push(ToolCall {
                id: block
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                arguments: block
                    .get("input")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "{}".into()),
            }),
            _ => {}
        }
    }
    Some(Answer {
        id: v
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(fallback_model)
            .to_string(),
        text,
        reasoning,
        tool_calls,
        finish: finish(
            v.get("stop_reason")
                .and_then(Value::as_str)
                .unwrap_or("end_turn"),
        ),
        counts: counts(v.get("usage").unwrap_or(&Value::Null)),
    })
}

/// The message of an Anthropic error body (`{"type":"error","error":{"type","message"}}`).
pub fn error_message(v: &Value) -> Option<String> {
    v.get("error")?.get("message")?.as_str().map(str::to_string)
}

/// Status for an error `type` met inside a stream.
fn error_status(kind: &str) -> u16 {
    match kind {
        "rate_limit_error" => 429,
        "overloaded_error" => 529,
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        _ => 500,
    }
}

/// Reads Anthropic's stream: `message_start`, `content_block_start/delta/stop`, `message_delta`,
/// `message_stop`, `ping` and `error` events.
#[derive(Default)]
pub struct AnthropicEvents {
    /// Content-block index → tool-call index, for `tool_use` blocks.
    tools: Vec<(u64, usize)>,
}

impl AnthropicEvents {
    fn read_event(&mut self, data: &str, out: &mut Vec<Piece>) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match v.get("type").and_then(Value::as_str).unwrap_or_default() {
            "message_start" => {
                let m = v.get("message").unwrap_or(&Value::Null);
                out.push(Piece::Meta {
                    id: m.get("id").and_then(Value::as_str).map(str::to_string),
                    model: m.get("model").and_then(Value::as_str).map(str::to_string),
                });
                if let Some(u) = m.get("usage") {
                    out.push(Piece::Usage(counts(u)));
                }
            }
            "content_block_start" => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = block.get("text").and_then(Value::as_str)
                            && !t.is_empty()
                        {
                            out.push(Piece::Text(t.to_string()));
                        }
                    }
                    Some("tool_use") => {
                        let tool = self.tools.len();
                        self.tools.push((index, tool));
                        out.push(Piece::ToolStart {
                            index: tool,
                            id: block
                                .get("id")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            name: block
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                        });
                        // Input arrives as deltas; a non-empty start input is sent whole.
                        if let Some(input) = block.get("input").and_then(Value::as_object)
                            && !input.is_empty()
                        {
                            out.push(Piece::ToolArgs {
                                index: tool,
                                fragment: Value::Object(input.clone()).to_string(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        if let Some(t) = delta.get("text").and_then(Value::as_str) {
                            out.push(Piece::Text(t.to_string()));
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(t) = delta.get("thinking").and_then(Value::as_str) {
                            out.push(Piece::Reasoning(t.to_string()));
                        }
                    }
                    Some("input_json_delta") => {
                        if let Some(&(_, tool)) = self.tools.iter().find(|(b, _)| *b == index)
                            && let Some(j) = delta.get("partial_json").and_then(Value::as_str)
                        {
                            out.push(Piece::ToolArgs {
                                index: tool,
                                fragment: j.to_string(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    out.push(Piece::Finish(finish(r)));
                }
                if let Some(u) = v.get("usage") {
                    out.push(Piece::Usage(counts(u)));
                }
            }
            "message_stop" => out.push(Piece::Done),
            "error" => {
                let e = v.get("error").unwrap_or(&Value::Null);
                out.push(Piece::Error {
                    status: error_status(e.get("type").and_then(Value::as_str).unwrap_or("")),
                    message: e
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("the provider reported an error")
                        .to_string(),
                });
            }
            _ => {}
        }
    }
}

impl SseEvents for AnthropicEvents {
    fn event(&mut self, data: &str, out: &mut Vec<Piece>) {
        self.read_event(data, out);
    }
}

/// A decoder of Anthropic's stream.
pub type AnthropicDecoder = SseDecode<AnthropicEvents>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::stream::decode_all;

    #[test]
    fn a_json_schema_becomes_the_one_tool_the_model_must_call() {
        let req = ChatRequest::from_openai(&json!({"model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "city", "schema": {"type": "object"}}}}))
        .unwrap();
        let body = build_request(&req, "claude", false);
        assert_eq!(body["tools"][0]["name"], "city");
        assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
        assert_eq!(body["tool_choice"], json!({"type": "tool", "name": "city"}));
    }

    #[test]
    fn usage_counts_cached_tokens_as_input() {
        let c = counts(&json!({"input_tokens": 10, "output_tokens": 5,
                              "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20}));
        assert_eq!(c.input, Some(130));
        assert_eq!(c.cache_read, Some(100));
        assert_eq!(c.usage().output, 5);
    }

    #[test]
    fn stream_with_text_and_a_tool_call() {
        let text = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me check\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"weather\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":30}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let pieces = decode_all(&mut AnthropicDecoder::new(), text.as_bytes());
        assert_eq!(
            pieces,
            vec![
                Piece::Meta {
                    id: Some("msg_1".into()),
                    model: Some("claude".into())
                },
                Piece::Usage(TokenCounts {
                    input: Some(12),
                    output: Some(1),
                    ..Default::default()
                }),
                Piece::Text("Let me check".into()),
                Piece::ToolStart {
                    index: 0,
                    id: "toolu_1".into(),
                    name: "weather".into()
                },
                Piece::ToolArgs {
                    index: 0,
                    fragment: "{\"city\":".into()
                },
                Piece::ToolArgs {
                    index: 0,
                    fragment: "\"Paris\"}".into()
                },
                Piece::Finish(Finish::ToolCalls),
                Piece::Usage(TokenCounts {
                    output: Some(30),
                    ..Default::default()
                }),
                Piece::Done,
            ]
        );
    }
}
