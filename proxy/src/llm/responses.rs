//! Callers that speak OpenAI's Responses API (`POST <prefix>/v1/responses`), used statelessly: their
//! requests read into the OpenAI chat shape every translated path starts from, and answers written back
//! as `response` objects. Streams are written by [`super::responses_stream`].
//!
//! Stored state (`store: true`, `previous_response_id`, `conversation`, item references) lives on
//! OpenAI's side, so only backends the request is passed through to can serve it; a translation
//! refuses it with a 400 that says so.

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::llm::chat::Answer;
use crate::llm::stream::{Finish, TokenCounts};

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

/// Reads a Responses request as an OpenAI chat request (same `model`); `stream` asks for usage at
/// the end of the stream. State kept by OpenAI cannot be translated and is refused with 400.
pub fn to_openai_request(body: &Value, stream: bool) -> Result<Value, ApiError> {
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
    let mut messages = Vec::new();
    match get("instructions") {
        Value::Null => {}
        Value::String(s) => messages.push(json!({"role": "system", "content": s})),
        _ => return Err(bad("instructions", "`instructions` must be a string")),
    }
    match get("input") {
        Value::String(s) => messages.push(json!({"role": "user", "content": s})),
        Value::Array(items) => {
            for item in items {
                read_item(item, &mut messages)?;
            }
        }
        Value::Null => {
            return Err(
                ApiError::bad_request("missing_required_parameter", "`input` is required")
                    .with_param("input"),
            );
        }
        _ => {
            return Err(bad(
                "input",
                "`input` must be a string or an array of items",
            ));
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), get("model").clone());
    out.insert("messages".into(), messages.into());
    match get("max_output_tokens") {
        Value::Null => {}
        v => {
            let n = v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                bad(
                    "max_output_tokens",
                    "`max_output_tokens` must be a positive integer",
                )
            })?;
            out.insert("max_tokens".into(), n.into());
        }
    }
    for key in ["temperature", "top_p"] {
        match get(key) {
            Value::Null => {}
            v @ Value::Number(_) => {
                out.insert(key.into(), v.clone());
            }
            _ => return Err(bad(key, format!("`{key}` must be a number"))),
        }
    }
    if let Some(b) = get("parallel_tool_calls").as_bool() {
        out.insert("parallel_tool_calls".into(), b.into());
    }
    if let Some(u) = get("user").as_str() {
        out.insert("user".into(), u.into());
    }
    if let Some(effort) = get("reasoning").get("effort").and_then(Value::as_str) {
        out.insert("reasoning_effort".into(), effort.into());
    }
    if let Some(tools) = get("tools").as_array() {
        let list = tools.iter().map(read_tool).collect::<Result<Vec<_>, _>>()?;
        if !list.is_empty() {
            out.insert("tools".into(), list.into());
        }
    } else if !get("tools").is_null() {
        return Err(bad("tools", "`tools` must be an array"));
    }
    match get("tool_choice") {
        Value::Null => {}
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
            out.insert("tool_choice".into(), s.clone().into());
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice", "a `function` tool choice needs `name`"))?;
            out.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": name}}),
            );
        }
        _ => {
            return Err(unsupported(
                "tool_choice",
                "only `auto`, `none`, `required` and a named function are translated to this provider",
            ));
        }
    }
    if let Some(format) = get("text").get("format").filter(|f| !f.is_null()) {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                out.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some("json_schema") => {
                let name = format.get("name").and_then(Value::as_str).ok_or_else(|| {
                    bad("text.format.name", "a `json_schema` format needs `name`")
                })?;
                let schema = format
                    .get("schema")
                    .filter(|s| s.is_object())
                    .ok_or_else(|| {
                        bad(
                            "text.format.schema",
                            "a `json_schema` format needs `schema`",
                        )
                    })?;
                let mut spec = json!({"name": name, "schema": schema});
                for key in ["strict", "description"] {
                    if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                        spec[key] = v.clone();
                    }
                }
                out.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": spec}),
                );
            }
            _ => {
                return Err(bad(
                    "text.format.type",
                    "`text.format.type` must be text, json_object or json_schema",
                ));
            }
        }
    }
    if stream {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(out))
}

/// One input item, appended to `out` as chat messages.
fn read_item(item: &Value, out: &mut Vec<Value>) -> Result<(), ApiError> {
    if let Value::String(s) = item {
        out.push(json!({"role": "user", "content": s}));
        return Ok(());
    }
    match item.get("type").and_then(Value::as_str) {
        None | Some("message") => read_message(item, out),
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
            let call = json!({"id": call_id, "type": "function",
                              "function": {"name": name, "arguments": arguments}});
            // Calls right after an assistant message (or other calls) belong to the same turn.
            match out.last_mut() {
                Some(last) if last["role"] == "assistant" => match last.get_mut("tool_calls") {
                    Some(Value::Array(calls)) => calls.push(call),
                    _ => last["tool_calls"] = json!([call]),
                },
                _ => out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
            Ok(())
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
            out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            Ok(())
        }
        // The model's earlier reasoning is its own (often encrypted); another provider cannot use it.
        Some("reasoning") => Ok(()),
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

fn read_message(item: &Value, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let role = item
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("input", "every message item needs a `role`"))?;
    let parts: Vec<Value> = match item.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role_of(role)?, "content": s}));
            return Ok(());
        }
        Some(Value::Array(parts)) => parts.iter().map(read_part).collect::<Result<_, _>>()?,
        _ => return Err(bad("input", "every message item needs `content`")),
    };
    let role = role_of(role)?;
    if role == "user" {
        out.push(json!({"role": role, "content": parts}));
        return Ok(());
    }
    let mut text = String::new();
    for p in &parts {
        match p.get("text").and_then(Value::as_str) {
            Some(t) => text.push_str(t),
            None => {
                return Err(bad("input", format!("{role} messages may hold text only")));
            }
        }
    }
    out.push(json!({"role": role, "content": text}));
    Ok(())
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

/// One content part, as a chat content part.
fn read_part(p: &Value) -> Result<Value, ApiError> {
    let text = |key: &str| {
        p.get(key)
            .and_then(Value::as_str)
            .map(|t| json!({"type": "text", "text": t}))
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
            let mut image = json!({"url": url});
            if let Some(d) = p.get("detail").and_then(Value::as_str) {
                image["detail"] = d.into();
            }
            Ok(json!({"type": "image_url", "image_url": image}))
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

fn read_tool(t: &Value) -> Result<Value, ApiError> {
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
    let mut function = json!({"name": name});
    for key in ["description", "parameters", "strict"] {
        if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
            function[key] = v.clone();
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

/// The request's settings a `response` object repeats back, with OpenAI's defaults for the absent.
#[derive(Clone, Debug, Default)]
pub struct Echo(Map<String, Value>);

/// Keys echoed, and their defaults.
const ECHOED: [&str; 12] = [
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "reasoning",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
];

impl Echo {
    /// Reads the echoed settings with `get` (a member of the request, parsed).
    pub fn read(get: impl Fn(&str) -> Option<Value>) -> Self {
        let mut map = Map::new();
        for key in ECHOED {
            let value = get(key)
                .filter(|v| !v.is_null())
                .unwrap_or_else(|| match key {
                    "metadata" => json!({}),
                    "parallel_tool_calls" => true.into(),
                    "reasoning" => json!({"effort": null, "summary": null}),
                    "temperature" | "top_p" => json!(1.0),
                    "text" => json!({"format": {"type": "text"}}),
                    "tool_choice" => "auto".into(),
                    "tools" => json!([]),
                    "truncation" => "disabled".into(),
                    _ => Value::Null,
                });
            map.insert(key.into(), value);
        }
        Self(map)
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

/// The Responses API's `usage` object.
pub fn usage_json(c: &TokenCounts) -> Value {
    let (i, o) = (c.input.unwrap_or(0), c.output.unwrap_or(0));
    json!({
        "input_tokens": i,
        "input_tokens_details": {"cached_tokens": c.cache_read.unwrap_or(0)},
        "output_tokens": o,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": i + o,
    })
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

/// `status` and `incomplete_details` of a response that stopped for `finish`.
pub fn status_of(finish: Finish) -> (&'static str, Value) {
    match finish {
        Finish::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
        Finish::ContentFilter => ("incomplete", json!({"reason": "content_filter"})),
        Finish::Stop | Finish::StopSequence | Finish::ToolCalls => ("completed", Value::Null),
    }
}

/// A `response` object: `id`, `model`, `status` and `output` with the echoed settings.
pub fn response_object(
    id: &str,
    created_at: i64,
    model: &str,
    status: &str,
    output: Vec<Value>,
    echo: &Echo,
) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), id.into());
    o.insert("object".into(), "response".into());
    o.insert("created_at".into(), created_at.into());
    o.insert("status".into(), status.into());
    o.insert("background".into(), false.into());
    o.insert("error".into(), Value::Null);
    o.insert("incomplete_details".into(), Value::Null);
    o.insert("model".into(), model.into());
    o.insert("output".into(), output.into());
    o.insert("previous_response_id".into(), Value::Null);
    o.insert("store".into(), false.into());
    o.insert("usage".into(), Value::Null);
    for (k, v) in &echo.0 {
        o.insert(k.clone(), v.clone());
    }
    Value::Object(o)
}

/// A completed `message` output item holding `text`.
pub fn message_item(id: &str, text: &str) -> Value {
    json!({"type": "message", "id": id, "status": "completed", "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

/// A completed `function_call` output item.
pub fn call_item(id: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
           "arguments": arguments, "status": "completed"})
}

/// A completed `reasoning` output item: the model's reasoning as it showed it (Anthropic's thinking,
/// `reasoning_content`), as `reasoning_text` content, the form OpenAI gives for models whose
/// reasoning is open; no summary is made up.
pub fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [],
           "content": [{"type": "reasoning_text", "text": text}]})
}

/// A whole answer as a `response` object.
pub fn answer_to_response(a: &Answer, echo: &Echo) -> Value {
    let mut output = Vec::new();
    if !a.reasoning.is_empty() {
        output.push(reasoning_item(&new_id("rs"), &a.reasoning));
    }
    if !a.text.is_empty() || a.tool_calls.is_empty() {
        output.push(message_item(&new_id("msg"), &a.text));
    }
    for c in &a.tool_calls {
        output.push(call_item(&new_id("fc"), &c.id, &c.name, &c.arguments));
    }
    let (status, incomplete) = status_of(a.finish);
    let mut v = response_object(
        &new_id("resp"),
        crate::clock::now_unix(),
        &a.model,
        status,
        output,
        echo,
    );
    v["incomplete_details"] = incomplete;
    v["usage"] = usage_json(&a.counts);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::chat::{ChatRequest, Part, ToolCall, ToolChoice, Turn};

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
        let echo = Echo::read(|k| (k == "instructions").then(|| json!("be brief")));
        let v = answer_to_response(&a, &echo);
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["instructions"], "be brief");
        assert_eq!(v["tool_choice"], "auto");
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
        let v = answer_to_response(&cut, &echo);
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
        // Reasoning the model showed comes first, as a reasoning item.
        let thought = Answer {
            reasoning: "The user wants weather.".into(),
            ..cut
        };
        let v = answer_to_response(&thought, &echo);
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
