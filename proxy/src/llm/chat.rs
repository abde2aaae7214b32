//! An OpenAI chat request read into a provider-neutral conversation, which each provider's request
//! builder writes out in its own format. Reading validates once, with OpenAI's wording, so every
//! provider refuses the same mistakes the same way.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// A whole chat request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    /// System and developer messages, in order.
    pub system: Vec<String>,
    /// The conversation without system messages.
    pub turns: Vec<Turn>,
    /// Function tools offered.
    pub tools: Vec<Tool>,
    /// How tools may be used.
    pub tool_choice: Option<ToolChoice>,
    /// `parallel_tool_calls`.
    pub parallel_tool_calls: Option<bool>,
    /// `max_completion_tokens` or `max_tokens`.
    pub max_tokens: Option<u64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// End-user id.
    pub user: Option<String>,
    /// Seed.
    pub seed: Option<i64>,
    /// Presence penalty.
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f64>,
    /// `response_format` asks for JSON.
    pub json_output: bool,
    /// `response_format` gives a JSON Schema the answer must follow.
    pub json_schema: Option<JsonSchema>,
    /// `reasoning_effort`: `minimal`, `low`, `medium` or `high`.
    pub reasoning_effort: Option<String>,
}

/// A JSON Schema the answer must follow (`response_format.json_schema`).
#[derive(Clone, Debug, PartialEq)]
pub struct JsonSchema {
    /// Its name.
    pub name: String,
    /// The schema.
    pub schema: Value,
}

/// One turn of the conversation.
#[derive(Clone, Debug, PartialEq)]
pub enum Turn {
    /// A user message.
    User(Vec<Part>),
    /// An assistant message: text and the tools it called.
    Assistant {
        /// Text parts.
        text: String,
        /// Tool calls.
        tool_calls: Vec<ToolCall>,
    },
    /// A tool's answer to a call.
    ToolResult {
        /// The call answered.
        call_id: String,
        /// What the tool returned, as text.
        content: String,
    },
}

/// A piece of user content.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// Text.
    Text(String),
    /// An image.
    Image(Image),
}

/// An image input.
#[derive(Clone, Debug, PartialEq)]
pub enum Image {
    /// Base64 data with its media type (from a `data:` URL).
    Inline {
        /// e.g. `image/png`.
        media_type: String,
        /// Base64 text.
        data: String,
    },
    /// An `http(s)` URL.
    Url(String),
}

/// A call the assistant made.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    /// Call id.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

/// A function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// `tool_choice`.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool.
    None,
    /// Some tool.
    Required,
    /// This tool.
    Named(String),
}

fn bad(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_value", message.into()).with_param(param)
}

fn unsupported(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("unsupported_parameter", message.into()).with_param(param)
}

fn number(v: &Value, param: &'static str) -> Result<Option<f64>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        _ => Err(bad(param, format!("`{param}` must be a number"))),
    }
}

impl ChatRequest {
    /// Reads an OpenAI chat request body.
    pub fn from_openai(body: &Value) -> Result<Self, ApiError> {
        let Some(obj) = body.as_object() else {
            return Err(ApiError::bad_request(
                "invalid_json",
                "the request body must be a JSON object",
            ));
        };
        let get = |k: &str| obj.get(k).unwrap_or(&Value::Null);
        let mut req = ChatRequest::default();
        let Some(messages) = get("messages").as_array() else {
            return Err(ApiError::bad_request(
                "missing_required_parameter",
                "`messages` is required",
            )
            .with_param("messages"));
        };
        if messages.is_empty() {
            return Err(bad("messages", "`messages` must not be empty"));
        }
        for m in messages {
            read_message(m, &mut req)?;
        }
        if let Some(tools) = get("tools").as_array() {
            for t in tools {
                req.tools.push(read_tool(t)?);
            }
        } else if !get("tools").is_null() {
            return Err(bad("tools", "`tools` must be an array"));
        }
        if !get("functions").is_null() || !get("function_call").is_null() {
            return Err(unsupported(
                "functions",
                "the deprecated `functions` parameter is not translated to this provider; use `tools`",
            ));
        }
        req.tool_choice = match get("tool_choice") {
            Value::Null => None,
            Value::String(s) => Some(match s.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                _ => return Err(bad("tool_choice", format!("unknown tool_choice {s:?}"))),
            }),
            Value::Object(o) => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("tool_choice", "`tool_choice.function.name` is required"))?;
                Some(ToolChoice::Named(name.to_string()))
            }
            _ => {
                return Err(bad(
                    "tool_choice",
                    "`tool_choice` must be a string or object",
                ));
            }
        };
        req.parallel_tool_calls = get("parallel_tool_calls").as_bool();
        let max = match get("max_completion_tokens") {
            Value::Null => get("max_tokens"),
            v => v,
        };
        req.max_tokens = match max {
            Value::Null => None,
            v => Some(
                v.as_u64()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("max_tokens", "`max_tokens` must be a positive integer"))?,
            ),
        };
        req.temperature = number(get("temperature"), "temperature")?;
        req.top_p = number(get("top_p"), "top_p")?;
        req.presence_penalty = number(get("presence_penalty"), "presence_penalty")?;
        req.frequency_penalty = number(get("frequency_penalty"), "frequency_penalty")?;
        req.seed = get("seed").as_i64();
        req.stop = match get("stop") {
            Value::Null => vec![],
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("stop", "`stop` must be a string or array of strings"))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad("stop", "`stop` must be a string or array of strings")),
        };
        req.user = get("user").as_str().map(str::to_string);
        if let Some(n) = get("n").as_u64()
            && n > 1
        {
            return Err(unsupported(
                "n",
                "only one choice (`n`: 1) can be translated to this provider",
            ));
        }
        req.reasoning_effort = get("reasoning_effort").as_str().map(str::to_string);
        let format = get("response_format");
        req.json_output = matches!(
            format.get("type").and_then(Value::as_str),
            Some("json_object" | "json_schema")
        );
        if format.get("type").and_then(Value::as_str) == Some("json_schema") {
            let spec = format.get("json_schema").unwrap_or(&Value::Null);
            req.json_schema = Some(JsonSchema {
                name: spec
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("answer")
                    .to_string(),
                schema: spec
                    .get("schema")
                    .filter(|s| s.is_object())
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object"})),
            });
        }
        Ok(req)
    }

    /// For providers without OpenAI's structured output: the instruction that asks for JSON (and
    /// the schema), added to the system text when `response_format` asks for JSON.
    pub fn json_instruction(&self) -> Option<String> {
        if !self.json_output {
            return None;
        }
        Some(match &self.json_schema {
            Some(schema) => format!(
                "Answer with one JSON value matching this JSON Schema, and nothing else (no prose, no code fence): {}",
                schema.schema
            ),
            None => "Answer with one JSON value and nothing else (no prose, no code fence).".into(),
        })
    }

    /// The name of the function a tool call id refers to (providers that answer by name need it).
    pub fn tool_name_of(&self, call_id: &str) -> Option<&str> {
        self.turns.iter().find_map(|t| match t {
            Turn::Assistant { tool_calls, .. } => tool_calls
                .iter()
                .find(|c| c.id == call_id)
                .map(|c| c.name.as_str()),
            _ => None,
        })
    }
}

/// Text of a `content` that must be text: a string, or an array of `text` parts.
fn text_content(content: &Value, param: &'static str) -> Result<String, ApiError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") | Some("refusal") => {
                        let t = p
                            .get("text")
                            .or_else(|| p.get("refusal"))
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(param, "a text part needs `text`"))?;
                        text.push_str(t);
                    }
                    _ => return Err(bad(param, "only text parts are allowed here")),
                }
            }
            Ok(text)
        }
        _ => Err(bad(
            param,
            "`content` must be a string or an array of parts",
        )),
    }
}

fn read_message(m: &Value, req: &mut ChatRequest) -> Result<(), ApiError> {
    let role = m
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("messages", "every message needs a `role`"))?;
    let content = m.get("content").unwrap_or(&Value::Null);
    match role {
        "system" | "developer" => req.system.push(text_content(content, "messages")?),
        "user" => {
            let parts = match content {
                Value::String(s) => vec![Part::Text(s.clone())],
                Value::Array(items) => items.iter().map(read_part).collect::<Result<_, _>>()?,
                _ => return Err(bad("messages", "a user message needs `content`")),
            };
            req.turns.push(Turn::User(parts));
        }
        "assistant" => {
            let text = text_content(content, "messages")?;
            let mut tool_calls = Vec::new();
            if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                for c in calls {
                    let f = c.get("function").unwrap_or(&Value::Null);
                    let name = f
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("messages", "a tool call needs `function.name`"))?;
                    let arguments = match f.get("arguments") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => "{}".into(),
                        Some(other) => other.to_string(),
                    };
                    let id = c
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad("messages", "a tool call needs an `id`"))?;
                    tool_calls.push(ToolCall {
                        id: id.to_string(),
                        name: name.to_string(),
                        arguments,
                    });
                }
            }
            req.turns.push(Turn::Assistant { text, tool_calls });
        }
        "tool" => {
            let call_id = m
                .get("tool_call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("messages", "a tool message needs `tool_call_id`"))?;
            req.turns.push(Turn::ToolResult {
                call_id: call_id.to_string(),
                content: text_content(content, "messages")?,
            });
        }
        "function" => {
            return Err(unsupported(
                "messages",
                "`function` messages are deprecated and not translated; use `tool` messages",
            ));
        }
        other => {
            return Err(bad(
                "messages",
                format!(
                    "unknown message role {:?}",
                    other.chars().take(40).collect::<String>()
                ),
            ));
        }
    }
    Ok(())
}

fn read_part(p: &Value) -> Result<Part, ApiError> {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => Ok(Part::Text(
            p.get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("messages", "a text part needs `text`"))?
                .to_string(),
        )),
        Some("image_url") => {
            let url = p
                .get("image_url")
                .and_then(|i| i.get("url").or(Some(i)))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("messages", "an image part needs `image_url.url`"))?;
            Ok(Part::Image(read_image_url(url)?))
        }
        Some(other) => Err(unsupported(
            "messages",
            format!(
                "content parts of type {:?} are not translated to this provider",
                other.chars().take(40).collect::<String>()
            ),
        )),
        None => Err(bad("messages", "every content part needs a `type`")),
    }
}

/// A `data:<type>;base64,<data>` URL or an http(s) URL.
pub fn read_image_url(url: &str) -> Result<Image, ApiError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| bad("messages", "an image data URL needs a `,`"))?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or_else(|| bad("messages", "image data URLs must be base64-encoded"))?;
        return Ok(Image::Inline {
            media_type: if media_type.is_empty() {
                "image/png".into()
            } else {
                media_type.to_string()
            },
            data: data.to_string(),
        });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Image::Url(url.to_string()));
    }
    Err(bad(
        "messages",
        "`image_url.url` must be an http(s) URL or a base64 data URL",
    ))
}

fn read_tool(t: &Value) -> Result<Tool, ApiError> {
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(unsupported(
            "tools",
            "only tools of type `function` are translated to this provider",
        ));
    }
    let f = t.get("function").unwrap_or(&Value::Null);
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("tools", "a tool needs `function.name`"))?;
    Ok(Tool {
        name: name.to_string(),
        description: f
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
        parameters: tool_parameters(f.get("parameters")),
    })
}

/// A tool's JSON Schema of its arguments: the object given, else one of no properties.
pub fn tool_parameters(given: Option<&Value>) -> Value {
    match given {
        Some(Value::Object(o)) => Value::Object(o.clone()),
        _ => {
            let mut o = Map::new();
            o.insert("type".into(), "object".into());
            o.insert("properties".into(), Value::Object(Map::new()));
            Value::Object(o)
        }
    }
}

/// Parses tool-call arguments into an object, as providers that take structured input need.
/// Anything that is not a JSON object is kept under `arguments` rather than lost.
pub fn arguments_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ if arguments.trim().is_empty() => Value::Object(Map::new()),
        Ok(other) => serde_json::json!({ "arguments": other }),
        Err(_) => serde_json::json!({ "arguments": arguments }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_conversation_with_tools_and_images() {
        let req = ChatRequest::from_openai(&json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}
            ],
            "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "look"}},
            "max_tokens": 100,
            "stop": "END"
        }))
        .unwrap();
        assert_eq!(req.system, vec!["be brief"]);
        assert_eq!(req.turns.len(), 3);
        assert_eq!(
            req.turns[0],
            Turn::User(vec![
                Part::Text("what is this?".into()),
                Part::Image(Image::Inline {
                    media_type: "image/png".into(),
                    data: "iVBORw0KGgo=".into()
                }),
                Part::Image(Image::Url("https://example.com/cat.jpg".into())),
            ])
        );
        assert_eq!(req.tool_name_of("call_1"), Some("look"));
        assert_eq!(req.tool_choice, Some(ToolChoice::Named("look".into())));
        assert_eq!(req.max_tokens, Some(100));
        assert_eq!(req.stop, vec!["END"]);
    }

    #[test]
    fn refuses_what_cannot_be_translated() {
        for body in [
            json!({"messages": []}),
            json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
        ] {
            let e = ChatRequest::from_openai(&body).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
        }
    }

    #[test]
    fn arguments_become_objects() {
        assert_eq!(arguments_object("{\"a\":1}"), json!({"a": 1}));
        assert_eq!(arguments_object(""), json!({}));
        assert_eq!(arguments_object("[1]"), json!({"arguments": [1]}));
        assert_eq!(arguments_object("{oops"), json!({"arguments": "{oops"}));
    }
}

/// Turns as Anthropic, Gemini and Bedrock take them: they refuse two turns of one role in a row, so
/// consecutive turns of one role are merged, and empty ones are left out.
#[derive(Default)]
pub struct RoleTurns(Vec<(&'static str, Vec<Value>)>);

impl RoleTurns {
    /// Adds `blocks` as a turn of `role`, to the last turn if it has the same role.
    pub fn push(&mut self, role: &'static str, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some((r, existing)) if *r == role => existing.extend(blocks),
            _ => self.0.push((role, blocks)),
        }
    }
}

impl IntoIterator for RoleTurns {
    type Item = (&'static str, Vec<Value>);
    type IntoIter = std::vec::IntoIter<Self::Item>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A whole (non-streamed) answer, in no provider's format.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// Provider's id for it.
    pub id: String,
    /// Model that answered.
    pub model: String,
    /// Text.
    pub text: String,
    /// The model's reasoning before its answer (Anthropic's thinking, OpenAI-compatible reasoning
    /// providers' `reasoning_content`), when it shows it.
    pub reasoning: String,
    /// Tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped.
    pub finish: super::stream::Finish,
    /// Tokens.
    pub counts: super::stream::TokenCounts,
}

impl Answer {
    /// OpenAI's `chat.completion` object.
    pub fn to_openai(&self) -> Value {
        let tool_calls: Vec<Value> = self
            .tool_calls
            .iter()
            .map(|c| {
                serde_json::json!({"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect();
        let mut message = serde_json::json!({
            "role": "assistant",
            "content": if self.text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(self.text.clone()) },
            "refusal": null,
        });
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        if !self.reasoning.is_empty() {
            message["reasoning_content"] = self.reasoning.clone().into();
        }
        serde_json::json!({
            "id": self.id,
            "object": "chat.completion",
            "created": crate::clock::now_unix(),
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": self.finish.openai()}],
            "usage": self.counts.openai_json(),
        })
    }

    /// Reads OpenAI's `chat.completion` object.
    pub fn from_openai(v: &Value) -> Option<Answer> {
        let choice = v.get("choices")?.get(0)?;
        let message = choice.get("message")?;
        let tool_calls = message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                let f = c.get("function");
                ToolCall {
                    id: c
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    name: f
                        .and_then(|f| f.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    arguments: f
                        .and_then(|f| f.get("arguments"))
                        .and_then(Value::as_str)
                        .unwrap_or("{}")
                        .to_string(),
                }
            })
            .collect();
        Some(Answer {
            id: v
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            model: v
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            text: text_content(message.get("content").unwrap_or(&Value::Null), "content")
                .unwrap_or_default(),
            reasoning: message
                .get("reasoning_content")
                .or_else(|| message.get("reasoning"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            tool_calls,
            finish: super::stream::Finish::from_openai(
                choice
                    .get("finish_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("stop"),
            ),
            counts: v
                .get("usage")
                .and_then(super::stream::TokenCounts::from_openai)
                .unwrap_or_default(),
        })
    }
}

/// A fresh tool-call id for providers that do not give one.
pub fn new_call_id() -> String {
    format!("call_{:016x}", fastrand::u64(..))
}
