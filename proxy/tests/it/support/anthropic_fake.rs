//! A fake of Anthropic's Messages API written from its public reference: `x-api-key` and
//! `anthropic-version` required, the request validated (roles, block types, image sources, tool
//! results naming an earlier `tool_use`), answers as `message` objects or the full event sequence
//! (`message_start`, `ping`, `content_block_*`, `message_delta`, `message_stop`), errors in
//! `{"type":"error","error":{...}}`; `/v1/messages/count_tokens` answers `{"input_tokens": n}`.

use bytes::Bytes;
use serde_json::{Value, json};

use super::fake_server::{Answer, Control, FakeServer, Say, Seen, base64_ok, decide, pieces_of};

pub async fn start(key: &str) -> FakeServer {
    FakeServer::start(Control::new(key, "anthropic"), handle).await
}

pub fn error(status: u16, kind: &str, message: &str) -> Answer {
    Answer::json(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

fn invalid(message: &str) -> Answer {
    error(400, "invalid_request_error", message)
}

/// Usage every answer reports: cache reads and writes included.
pub const USAGE: (u64, u64, u64, u64) = (25, 12, 100, 5);

/// What the fake's `count_tokens` answers: ten per message and a hundred per tool.
pub fn counted(body: &Value) -> u64 {
    let n = |k: &str| body[k].as_array().map_or(0, Vec::len) as u64;
    10 * n("messages") + 100 * n("tools")
}

pub fn handle(s: &Seen, c: &Control) -> Answer {
    if s.method == "POST" && s.path == "/v1/messages/count_tokens" {
        if s.header("x-api-key") != Some(c.key.as_str()) {
            return error(401, "authentication_error", "invalid x-api-key");
        }
        if s.header("anthropic-version").is_none() {
            return invalid("anthropic-version: header is required");
        }
        if !s.body["model"].is_string() || !s.body["messages"].is_array() {
            return invalid("model, messages: Field required");
        }
        return Answer::json(200, &json!({"input_tokens": counted(&s.body)}));
    }
    if s.method != "POST" || s.path != "/v1/messages" {
        return error(404, "not_found_error", "Not found");
    }
    if s.header("x-api-key") != Some(c.key.as_str()) {
        return error(401, "authentication_error", "invalid x-api-key");
    }
    if s.header("anthropic-version").is_none() {
        return invalid("anthropic-version: header is required");
    }
    let b = &s.body;
    if !b["model"].is_string() {
        return invalid("model: Field required");
    }
    if b["max_tokens"].as_u64().is_none_or(|n| n == 0) {
        return invalid("max_tokens: Field required");
    }
    let Some(messages) = b["messages"].as_array().filter(|m| !m.is_empty()) else {
        return invalid("messages: at least one message is required");
    };
    if !(b["system"].is_null() || b["system"].is_string() || b["system"].is_array()) {
        return invalid("system: Input should be a valid string or list");
    }
    let mut tool_ids: Vec<String> = Vec::new();
    let mut images = 0;
    let mut last_result = None;
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        if !matches!(role, "user" | "assistant") || (i == 0 && role != "user") {
            return invalid("messages: roles must be user or assistant, starting with user");
        }
        let blocks = match &m["content"] {
            Value::String(t) => vec![json!({"type": "text", "text": t})],
            Value::Array(b) => b.clone(),
            _ => return invalid("messages.content: Input should be a valid string or list"),
        };
        last_result = None;
        for block in &blocks {
            match block["type"].as_str() {
                Some("text") => {
                    if block["text"].as_str().is_none_or(str::is_empty) {
                        return invalid("messages: text content blocks must be non-empty");
                    }
                }
                Some("image") if role == "user" => {
                    let src = &block["source"];
                    let ok = match src["type"].as_str() {
                        Some("base64") => {
                            matches!(
                                src["media_type"].as_str(),
                                Some("image/jpeg" | "image/png" | "image/gif" | "image/webp")
                            ) && src["data"].as_str().is_some_and(base64_ok)
                        }
                        Some("url") => src["url"].as_str().is_some_and(|u| u.starts_with("http")),
                        _ => false,
                    };
                    if !ok {
                        return invalid("messages: invalid image source");
                    }
                    images += 1;
                }
                Some("tool_use") if role == "assistant" => {
                    if !block["input"].is_object() || !block["name"].is_string() {
                        return invalid("messages: tool_use needs name and an object input");
                    }
                    tool_ids.push(block["id"].as_str().unwrap_or("").to_string());
                }
                Some("tool_result") if role == "user" => {
                    let id = block["tool_use_id"].as_str().unwrap_or("");
                    if !tool_ids.iter().any(|t| t == id) {
                        return invalid(
                            "messages: tool_result block(s) provided without a corresponding tool_use",
                        );
                    }
                    last_result = Some(match &block["content"] {
                        Value::String(t) => t.clone(),
                        other => other.to_string(),
                    });
                }
                _ => return invalid("messages: unexpected content block type"),
            }
        }
    }
    let tools = b["tools"].as_array().cloned().unwrap_or_default();
    for t in &tools {
        if !t["name"].is_string() || !t["input_schema"].is_object() {
            return invalid("tools: each tool needs name and input_schema");
        }
    }
    if let Some(kind) = b["tool_choice"]["type"].as_str()
        && !matches!(kind, "auto" | "any" | "tool" | "none")
    {
        return invalid("tool_choice.type: invalid");
    }
    let first_tool = tools.first().and_then(|t| t["name"].as_str());
    let say = decide(last_result.as_deref(), first_tool, images, &c.pieces);
    let model = b["model"].as_str().unwrap_or("");
    let thinking = b["thinking"]["type"] == "enabled";
    if thinking
        && b["thinking"]["budget_tokens"]
            .as_u64()
            .is_none_or(|n| n < 1024 || n >= b["max_tokens"].as_u64().unwrap_or(0))
    {
        return invalid("thinking.budget_tokens: must be at least 1024 and less than max_tokens");
    }
    if b["stream"] == json!(true) {
        return stream(say, model, c, thinking);
    }
    let (mut content, stop) = match &say {
        Say::Text(t) => (json!([{"type": "text", "text": t}]), "end_turn"),
        Say::Call { name, args } => (
            json!([{"type": "text", "text": "Let me check."},
                   {"type": "tool_use", "id": "toolu_01A", "name": name, "input": args}]),
            "tool_use",
        ),
    };
    if thinking {
        content.as_array_mut().unwrap().insert(
            0,
            json!({"type": "thinking", "thinking": THOUGHT, "signature": SIGNATURE}),
        );
    }
    Answer::json(
        200,
        &json!({
            "id": "msg_01XYZ", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": USAGE.0, "output_tokens": USAGE.1,
                      "cache_read_input_tokens": USAGE.2, "cache_creation_input_tokens": USAGE.3}
        }),
    )
}

fn event(name: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// What the model thinks when extended thinking is on, and the signature of that thinking.
pub const THOUGHT: &str = "Let me think.";
pub const SIGNATURE: &str = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds";

fn stream(say: Say, model: &str, c: &Control, thinking: bool) -> Answer {
    let mut frames = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": "msg_01XYZ", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": USAGE.0, "output_tokens": 1,
                          "cache_read_input_tokens": USAGE.2, "cache_creation_input_tokens": USAGE.3}}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    let text_block = |frames: &mut Vec<Bytes>, index: usize, text: &str| {
        frames.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}}),
        ));
        for p in pieces_of(text, &c.pieces) {
            frames.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": p}}),
            ));
        }
        frames.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    };
    if let Some(quote) = &c.quote {
        frames.push(event(
            "error",
            json!({"type": "error", "error": {"type": "overloaded_error",
                "message": format!("Overloaded while serving key {quote}")}}),
        ));
        return Answer::Stream {
            content_type: "text/event-stream; charset=utf-8",
            frames,
        };
    }
    let first = usize::from(thinking);
    if thinking {
        frames.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "thinking", "thinking": ""}}),
        ));
        for delta in [
            json!({"type": "thinking_delta", "thinking": "Let me "}),
            json!({"type": "thinking_delta", "thinking": "think."}),
            json!({"type": "signature_delta", "signature": SIGNATURE}),
        ] {
            frames.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": delta}),
            ));
        }
        frames.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
    }
    let stop = match &say {
        Say::Text(t) => {
            text_block(&mut frames, first, t);
            "end_turn"
        }
        Say::Call { name, args } => {
            text_block(&mut frames, first, "Let me check.");
            frames.push(event("content_block_start", json!({"type": "content_block_start", "index": first + 1,
                "content_block": {"type": "tool_use", "id": "toolu_01A", "name": name, "input": {}}})));
            let text = args.to_string();
            let (a, b) = text.split_at(text.len() / 2);
            for part in ["", a, b] {
                frames.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": first + 1,
                    "delta": {"type": "input_json_delta", "partial_json": part}}),
                ));
            }
            frames.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": first + 1}),
            ));
            "tool_use"
        }
    };
    frames.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
               "usage": {"output_tokens": USAGE.1}}),
    ));
    frames.push(event("message_stop", json!({"type": "message_stop"})));
    Answer::Stream {
        content_type: "text/event-stream; charset=utf-8",
        frames,
    }
}
