//! A Responses API caller's request (`POST <prefix>/v1/responses`, used statelessly), read for a
//! backend it is translated for: straight into the neutral chat request ([`to_chat_request`]), or into
//! OpenAI's chat shape for OpenAI-compatible backends ([`to_openai_request`]). Both readings come
//! from one reading of the request's settings, so they refuse the same mistakes the same way.
//!
//! Stored state (`store: true`, `previous_response_id`, `conversation`, item references) lives on
//! OpenAI's side, so only backends the request is passed through to can serve it; a translation
//! refuses it with a 400 that says so.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::llm::chat::{self, ChatRequest, JsonSchema, Part, Tool, ToolCall, ToolChoice, Turn};

fn bad(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_value", message.into()).with_param(param)
}

fn unsupported(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("unsupported_parameter", message.into()).with_param(param)
}

/// At most 40 characters of a caller's value, for error messages.
fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A Responses request's top-level settings, read and checked once for both of its readings (the
/// neutral chat request, and OpenAI's chat shape for OpenAI-compatible backends).
struct Settings<'a> {
    instructions: Option<&'a str>,
    items: Vec<InputItem<'a>>,
    max_tokens: Option<u64>,
    temperature: Option<&'a Value>,
    top_p: Option<&'a Value>,
    parallel_tool_calls: Option<bool>,
    user: Option<&'a str>,
    reasoning_effort: Option<&'a str>,
    tools: Vec<ToolRef<'a>>,
    tool_choice: Option<ToolChoice>,
    format: Option<Format<'a>>,
}

/// One input item, read: the chat message it becomes, or nothing.
enum InputItem<'a> {
    /// A message whose content is one text (a string, or the text parts of a non-user message joined).
    Text {
        role: &'static str,
        text: Cow<'a, str>,
    },
    /// A user message given as parts.
    UserParts(Vec<PartRef<'a>>),
    /// A call the assistant made.
    Call(ToolCall),
    /// A tool's answer to a call.
    Output { call_id: &'a str, output: String },
}

/// One content part of a message item.
enum PartRef<'a> {
    Text(&'a str),
    Image {
        url: &'a str,
        detail: Option<&'a str>,
    },
}

/// One function tool.
struct ToolRef<'a> {
    name: &'a str,
    description: Option<&'a Value>,
    parameters: Option<&'a Value>,
    strict: Option<&'a Value>,
}

/// `text.format`, where it asks for JSON.
enum Format<'a> {
    JsonObject,
    JsonSchema {
        name: &'a str,
        schema: &'a Value,
        strict: Option<&'a Value>,
        description: Option<&'a Value>,
    },
}

/// A member that is present and not null.
fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

impl<'a> Settings<'a> {
    /// Reads a Responses request, refusing with 400 what a translation cannot serve (state kept by
    /// OpenAI included).
    fn read(body: &'a Value) -> Result<Self, ApiError> {
        let obj = body.as_object().ok_or_else(|| {
            ApiError::bad_request("invalid_json", "the request body must be a JSON object")
        })?;
        let get = |k: &str| obj.get(k).unwrap_or(&Value::Null);
        if get("store") == &Value::Bool(true) {
            return Err(unsupported(
                "store",
                "`store: true` keeps the response on the provider, which only OpenAI backends do; this \
                 model is served by a translated backend. Send `store: false` or leave it out.",
            ));
        }
        for key in ["previous_response_id", "conversation"] {
            if !get(key).is_null() {
                return Err(ApiError::bad_request(
                    "unsupported_parameter",
                    format!(
                        "`{key}` refers to state stored by OpenAI, which only OpenAI backends have; this \
                         model is served by a translated backend. Send the whole conversation in `input`."
                    ),
                )
                .with_param(if key == "conversation" {
                    "conversation"
                } else {
                    "previous_response_id"
                }));
            }
        }
        if get("background") == &Value::Bool(true) {
            return Err(unsupported(
                "background",
                "background responses are served only by OpenAI backends",
            ));
        }
        let instructions = match get("instructions") {
            Value::Null => None,
            Value::String(s) => Some(s.as_str()),
            _ => return Err(bad("instructions", "`instructions` must be a string")),
        };
        let items = match get("input") {
            Value::String(s) => vec![InputItem::Text {
                role: "user",
                text: Cow::Borrowed(s),
            }],
            Value::Array(items) => {
                let mut read = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(item) = read_item(item)? {
                        read.push(item);
                    }
                }
                read
            }
            Value::Null => {
                return Err(ApiError::bad_request(
                    "missing_required_parameter",
                    "`input` is required",
                )
                .with_param("input"));
            }
            _ => {
                return Err(bad(
                    "input",
                    "`input` must be a string or an array of items",
                ));
            }
        };
        let max_tokens = match get("max_output_tokens") {
            Value::Null => None,
            v => Some(v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                bad(
                    "max_output_tokens",
                    "`max_output_tokens` must be a positive integer",
                )
            })?),
        };
        let number = |key: &'static str| match get(key) {
            Value::Null => Ok(None),
            v @ Value::Number(_) => Ok(Some(v)),
            _ => Err(bad(key, format!("`{key}` must be a number"))),
        };
        let temperature = number("temperature")?;
        let top_p = number("top_p")?;
        let tools = match get("tools") {
            Value::Array(tools) => tools.iter().map(read_tool).collect::<Result<_, _>>()?,
            Value::Null => Vec::new(),
            _ => return Err(bad("tools", "`tools` must be an array")),
        };
        let tool_choice = match get("tool_choice") {
            Value::Null => None,
            Value::String(s) if s == "auto" => Some(ToolChoice::Auto),
            Value::String(s) if s == "none" => Some(ToolChoice::None),
            Value::String(s) if s == "required" => Some(ToolChoice::Required),
            Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
                let name = o
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("tool_choice", "a `function` tool choice needs `name`"))?;
                Some(ToolChoice::Named(name.to_string()))
            }
            _ => {
                return Err(unsupported(
                    "tool_choice",
                    "only `auto`, `none`, `required` and a named function are translated to this provider",
                ));
            }
        };
        let format = match present(get("text").get("format")) {
            None => None,
            Some(format) => match format.get("type").and_then(Value::as_str) {
                Some("text") => None,
                Some("json_object") => Some(Format::JsonObject),
                Some("json_schema") => Some(Format::JsonSchema {
                    name: format.get("name").and_then(Value::as_str).ok_or_else(|| {
                        bad("text.format.name", "a `json_schema` format needs `name`")
                    })?,
                    schema: format
                        .get("schema")
                        .filter(|s| s.is_object())
                        .ok_or_else(|| {
                            bad(
                                "text.format.schema",
                                "a `json_schema` format needs `schema`",
                            )
                        })?,
                    strict: present(format.get("strict")),
                    description: present(format.get("description")),
                }),
                _ => {
                    return Err(bad(
                        "text.format.type",
                        "`text.format.type` must be text, json_object or json_schema",
                    ));
                }
            },
        };
        Ok(Self {
            instructions,
            items,
            max_tokens,
            temperature,
            top_p,
            parallel_tool_calls: get("parallel_tool_calls").as_bool(),
            user: get("user").as_str(),
            reasoning_effort: get("reasoning").get("effort").and_then(Value::as_str),
            tools,
            tool_choice,
            format,
        })
    }
}

/// Reads a Responses request as an OpenAI chat request (same `model`), for OpenAI-compatible
/// backends; `stream` asks for usage at the end of the stream. State kept by OpenAI cannot be
/// translated and is refused with 400.
pub fn to_openai_request(body: &Value, stream: bool) -> Result<Value, ApiError> {
    let s = Settings::read(body)?;
    let mut messages: Vec<Value> = Vec::with_capacity(s.items.len() + 1);
    if let Some(i) = s.instructions {
        messages.push(json!({"role": "system", "content": i}));
    }
    for item in s.items {
        match item {
            InputItem::Text { role, text } => {
                messages.push(json!({"role": role, "content": text}));
            }
            InputItem::UserParts(parts) => {
                let parts: Vec<Value> = parts
                    .into_iter()
                    .map(|p| match p {
                        PartRef::Text(t) => json!({"type": "text", "text": t}),
                        PartRef::Image { url, detail } => {
                            let mut image = json!({"url": url});
                            if let Some(d) = detail {
                                image["detail"] = d.into();
                            }
                            json!({"type": "image_url", "image_url": image})
                        }
                    })
                    .collect();
                messages.push(json!({"role": "user", "content": parts}));
            }
            InputItem::Call(c) => {
                let call = json!({"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments}});
                // Calls right after an assistant message (or other calls) belong to the same turn.
                match messages.last_mut() {
                    Some(last) if last["role"] == "assistant" => match last.get_mut("tool_calls") {
                        Some(Value::Array(calls)) => calls.push(call),
                        _ => last["tool_calls"] = json!([call]),
                    },
                    _ => messages
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            InputItem::Output { call_id, output } => {
                messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
        }
    }
    let mut out = Map::new();
    out.insert(
        "model".into(),
        body.get("model").cloned().unwrap_or(Value::Null),
    );
    out.insert("messages".into(), messages.into());
    if let Some(n) = s.max_tokens {
        out.insert("max_tokens".into(), n.into());
    }
    for (key, v) in [("temperature", s.temperature), ("top_p", s.top_p)] {
        if let Some(v) = v {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(b) = s.parallel_tool_calls {
        out.insert("parallel_tool_calls".into(), b.into());
    }
    if let Some(u) = s.user {
        out.insert("user".into(), u.into());
    }
    if let Some(effort) = s.reasoning_effort {
        out.insert("reasoning_effort".into(), effort.into());
    }
    if !s.tools.is_empty() {
        let tools: Vec<Value> = s
            .tools
            .iter()
            .map(|t| {
                let mut function = json!({"name": t.name});
                for (key, v) in [
                    ("description", t.description),
                    ("parameters", t.parameters),
                    ("strict", t.strict),
                ] {
                    if let Some(v) = v {
                        function[key] = v.clone();
                    }
                }
                json!({"type": "function", "function": function})
            })
            .collect();
        out.insert("tools".into(), tools.into());
    }
    if let Some(choice) = s.tool_choice {
        let choice = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Named(name) => json!({"type": "function", "function": {"name": name}}),
        };
        out.insert("tool_choice".into(), choice);
    }
    match s.format {
        None => {}
        Some(Format::JsonObject) => {
            out.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(Format::JsonSchema {
            name,
            schema,
            strict,
            description,
        }) => {
            let mut spec = json!({"name": name, "schema": schema});
            for (key, v) in [("strict", strict), ("description", description)] {
                if let Some(v) = v {
                    spec[key] = v.clone();
                }
            }
            out.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": spec}),
            );
        }
    }
    if stream {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(out))
}

/// Reads a Responses request straight into the neutral chat request every translation to another
/// format starts from: the same request, and the same refusals, as [`to_openai_request`] read by
/// [`ChatRequest::from_openai`], without the chat-shaped JSON value between them.
pub fn to_chat_request(body: &Value) -> Result<ChatRequest, ApiError> {
    let s = Settings::read(body)?;
    let mut req = ChatRequest::default();
    // What the chat reader would refuse comes after everything the Responses reader refuses.
    let mut late: Option<ApiError> = None;
    if let Some(i) = s.instructions {
        req.system.push(i.to_string());
    }
    // Whether the last message was the assistant's, which the calls after it join.
    let mut after_assistant = false;
    for item in s.items {
        after_assistant = match item {
            InputItem::Text { role, text } => {
                let text = text.into_owned();
                match role {
                    "user" => req.turns.push(Turn::User(vec![Part::Text(text)])),
                    "assistant" => req.turns.push(Turn::Assistant {
                        text,
                        tool_calls: Vec::new(),
                    }),
                    _ => req.system.push(text),
                }
                role == "assistant"
            }
            InputItem::UserParts(parts) => {
                let mut read = Vec::with_capacity(parts.len());
                for p in parts {
                    match p {
                        PartRef::Text(t) => read.push(Part::Text(t.to_string())),
                        PartRef::Image { url, .. } => match chat::read_image_url(url) {
                            Ok(image) => read.push(Part::Image(image)),
                            Err(e) => {
                                late.get_or_insert(e);
                            }
                        },
                    }
                }
                req.turns.push(Turn::User(read));
                false
            }
            InputItem::Call(call) => {
                match req.turns.last_mut() {
                    Some(Turn::Assistant { tool_calls, .. }) if after_assistant => {
                        tool_calls.push(call);
                    }
                    _ => req.turns.push(Turn::Assistant {
                        text: String::new(),
                        tool_calls: vec![call],
                    }),
                }
                true
            }
            InputItem::Output { call_id, output } => {
                req.turns.push(Turn::ToolResult {
                    call_id: call_id.to_string(),
                    content: output,
                });
                false
            }
        };
    }
    if req.system.is_empty() && req.turns.is_empty() {
        return Err(bad("messages", "`messages` must not be empty"));
    }
    if let Some(e) = late {
        return Err(e);
    }
    req.max_tokens = s.max_tokens;
    req.temperature = s.temperature.and_then(Value::as_f64);
    req.top_p = s.top_p.and_then(Value::as_f64);
    req.parallel_tool_calls = s.parallel_tool_calls;
    req.user = s.user.map(str::to_string);
    req.reasoning_effort = s.reasoning_effort.map(str::to_string);
    req.tools = s
        .tools
        .iter()
        .map(|t| Tool {
            name: t.name.to_string(),
            description: t.description.and_then(Value::as_str).map(str::to_string),
            parameters: chat::tool_parameters(t.parameters),
        })
        .collect();
    req.tool_choice = s.tool_choice;
    match s.format {
        None => {}
        Some(Format::JsonObject) => req.json_output = true,
        Some(Format::JsonSchema { name, schema, .. }) => {
            req.json_output = true;
            req.json_schema = Some(JsonSchema {
                name: name.to_string(),
                schema: schema.clone(),
            });
        }
    }
    Ok(req)
}

/// One input item; `None` for the model's earlier reasoning, which another provider cannot use (it
/// is the model's own, often encrypted).
fn read_item(item: &Value) -> Result<Option<InputItem<'_>>, ApiError> {
    if let Value::String(s) = item {
        return Ok(Some(InputItem::Text {
            role: "user",
            text: Cow::Borrowed(s),
        }));
    }
    match item.get("type").and_then(Value::as_str) {
        None | Some("message") => read_message(item).map(Some),
        Some("function_call") => {
            let call_id = item
                .get("call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("input", "a `function_call` item needs `call_id`"))?;
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("input", "a `function_call` item needs `name`"))?;
            let arguments = match item.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => "{}".into(),
                Some(other) => other.to_string(),
            };
            Ok(Some(InputItem::Call(ToolCall {
                id: call_id.to_string(),
                name: name.to_string(),
                arguments,
            })))
        }
        Some("function_call_output") => {
            let call_id = item
                .get("call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("input", "a `function_call_output` item needs `call_id`"))?;
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                _ => {
                    return Err(bad("input", "a `function_call_output` item needs `output`"));
                }
            };
            Ok(Some(InputItem::Output { call_id, output }))
        }
        Some("reasoning") => Ok(None),
        Some("item_reference") => Err(unsupported(
            "input",
            "`item_reference` items refer to state stored by OpenAI, which only OpenAI backends have",
        )),
        Some(other) => Err(unsupported(
            "input",
            format!(
                "input items of type {:?} are served only by OpenAI backends",
                short(other)
            ),
        )),
    }
}

fn read_message(item: &Value) -> Result<InputItem<'_>, ApiError> {
    let role = item
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("input", "every message item needs a `role`"))?;
    let parts: Vec<PartRef<'_>> = match item.get("content") {
        Some(Value::String(s)) => {
            return Ok(InputItem::Text {
                role: role_of(role)?,
                text: Cow::Borrowed(s),
            });
        }
        Some(Value::Array(parts)) => parts.iter().map(read_part).collect::<Result<_, _>>()?,
        _ => return Err(bad("input", "every message item needs `content`")),
    };
    let role = role_of(role)?;
    if role == "user" {
        return Ok(InputItem::UserParts(parts));
    }
    let mut text = String::new();
    for p in &parts {
        match p {
            PartRef::Text(t) => text.push_str(t),
            PartRef::Image { .. } => {
                return Err(bad("input", format!("{role} messages may hold text only")));
            }
        }
    }
    Ok(InputItem::Text {
        role,
        text: Cow::Owned(text),
    })
}

fn role_of(role: &str) -> Result<&'static str, ApiError> {
    Ok(match role {
        "user" => "user",
        "assistant" => "assistant",
        "system" => "system",
        "developer" => "developer",
        other => {
            return Err(bad(
                "input",
                format!("unknown message role {:?}", short(other)),
            ));
        }
    })
}

/// One content part.
fn read_part(p: &Value) -> Result<PartRef<'_>, ApiError> {
    let text = |key: &str| {
        p.get(key)
            .and_then(Value::as_str)
            .map(PartRef::Text)
            .ok_or_else(|| bad("input", format!("a text part needs `{key}`")))
    };
    match p.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => text("text"),
        Some("refusal") => text("refusal"),
        Some("input_image") => {
            let url = p.get("image_url").and_then(Value::as_str).ok_or_else(|| {
                unsupported(
                    "input",
                    "images are translated from `image_url` only (file ids live on OpenAI)",
                )
            })?;
            Ok(PartRef::Image {
                url,
                detail: p.get("detail").and_then(Value::as_str),
            })
        }
        Some(other) => Err(unsupported(
            "input",
            format!(
                "content parts of type {:?} are served only by OpenAI backends",
                short(other)
            ),
        )),
        None => Err(bad("input", "every content part needs a `type`")),
    }
}

fn read_tool(t: &Value) -> Result<ToolRef<'_>, ApiError> {
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(unsupported(
                "tools",
                format!(
                    "tools of type {:?} are served only by OpenAI backends; function tools are translated",
                    short(other)
                ),
            ));
        }
        None => return Err(bad("tools", "every tool needs a `type`")),
    }
    let name = t
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("tools", "a function tool needs `name`"))?;
    Ok(ToolRef {
        name,
        description: present(t.get("description")),
        parameters: present(t.get("parameters")),
        strict: present(t.get("strict")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_items_tools_and_formats_into_a_chat_request() {
        let v = to_openai_request(
            &json!({
                "model": "m",
                "instructions": "be brief",
                "input": [
                    {"role": "user", "content": [
                        {"type": "input_text", "text": "weather?"},
                        {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}
                    ]},
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "checking"}]},
                    {"type": "reasoning", "id": "rs_1", "summary": []},
                    {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                    {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
                ],
                "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": true}],
                "tool_choice": {"type": "function", "name": "weather"},
                "max_output_tokens": 50,
                "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
                "reasoning": {"effort": "low"},
                "store": false
            }),
            true,
        )
        .unwrap();
        assert_eq!(v["response_format"]["json_schema"]["name"], "w");
        assert_eq!(v["reasoning_effort"], "low");
        assert_eq!(v["stream_options"]["include_usage"], true);
        let req = ChatRequest::from_openai(&v).unwrap();
        assert_eq!(req.system, vec!["be brief"]);
        assert!(req.json_output);
        assert_eq!(req.max_tokens, Some(50));
        assert_eq!(req.tool_choice, Some(ToolChoice::Named("weather".into())));
        assert_eq!(req.tools[0].name, "weather");
        assert_eq!(req.turns.len(), 3);
        assert!(
            matches!(&req.turns[0], Turn::User(p) if p.len() == 2 && p[0] == Part::Text("weather?".into()))
        );
        assert_eq!(
            req.turns[1],
            Turn::Assistant {
                text: "checking".into(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into()
                }]
            }
        );
        assert_eq!(
            req.turns[2],
            Turn::ToolResult {
                call_id: "call_1".into(),
                content: "sunny".into()
            }
        );
    }

    /// Both readings, compared: the same request, or the same refusal.
    fn read_alike(body: &Value) -> Result<ChatRequest, ApiError> {
        let straight = to_chat_request(body);
        let through = to_openai_request(body, false).and_then(|v| ChatRequest::from_openai(&v));
        match (&straight, &through) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => {
                assert_eq!((&a.param, &a.message), (&b.param, &b.message));
                assert_eq!((a.status, a.code), (b.status, b.code));
            }
            _ => panic!("straight {straight:?}, through {through:?}"),
        }
        straight
    }

    #[test]
    fn reads_straight_into_the_neutral_request_as_through_the_chat_shape() {
        let req = read_alike(&json!({
            "model": "m",
            "instructions": "be brief",
            "input": [
                {"role": "developer", "content": [{"type": "input_text", "text": "no "}, {"type": "refusal", "refusal": "jokes"}]},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "weather?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
                ]},
                {"type": "message", "role": "assistant", "content": "checking"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": {"city": "Paris"}},
                {"type": "function_call", "call_id": "call_2", "name": "time"},
                {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "sunny"}, {"type": "input_text", "text": "20C"}]},
                {"type": "function_call", "call_id": "call_3", "name": "time"},
                "thanks"
            ],
            "tools": [{"type": "function", "name": "weather", "description": 7, "parameters": "none"}],
            "tool_choice": "required",
            "temperature": 0.5,
            "top_p": 1,
            "parallel_tool_calls": false,
            "user": "u-1",
            "text": {"format": {"type": "json_object"}}
        }))
        .unwrap();
        assert_eq!(req.system, ["be brief", "no jokes"]);
        assert_eq!(req.turns.len(), 5);
        assert!(
            matches!(&req.turns[1], Turn::Assistant { text, tool_calls } if text == "checking" && tool_calls.len() == 2)
        );
        assert!(
            matches!(&req.turns[3], Turn::Assistant { text, tool_calls } if text.is_empty() && tool_calls[0].id == "call_3")
        );
        assert_eq!(req.tools[0].description, None);
        assert!(req.json_output && req.json_schema.is_none());
        assert_eq!(req.tool_choice, Some(ToolChoice::Required));
        // What only the chat reader refuses is refused after the Responses reader's own refusals.
        for (body, param) in [
            (json!({"model": "m", "input": []}), "messages"),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [
                {"type": "input_image", "image_url": "ftp://x/y.png"}]}]}),
                "messages",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [
                {"type": "input_image", "image_url": "ftp://x/y.png"}]}],
                "tools": [{"type": "web_search"}]}),
                "tools",
            ),
            (
                json!({"model": "m", "input": [{"role": "assistant", "content": [
                {"type": "input_image", "image_url": "ftp://x/y.png"}]}]}),
                "input",
            ),
        ] {
            let e = read_alike(&body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
    }

    #[test]
    fn a_plain_string_input_is_one_user_message() {
        let v = to_openai_request(&json!({"model": "m", "input": "hi"}), false).unwrap();
        assert_eq!(v["messages"], json!([{"role": "user", "content": "hi"}]));
        assert!(v.get("stream").is_none());
    }

    #[test]
    fn refuses_stored_state_and_hosted_tools_with_400() {
        for (body, param) in [
            (json!({"model": "m", "input": "x", "store": true}), "store"),
            (
                json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}),
                "input",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
                "tools",
            ),
            (json!({"model": "m"}), "input"),
            (
                json!({"model": "m", "input": "x", "max_output_tokens": 0}),
                "max_output_tokens",
            ),
        ] {
            let e = to_openai_request(&body, false).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}");
        }
    }
}
