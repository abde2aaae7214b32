//! Callers that speak Anthropic's Messages API (`POST <prefix>/v1/messages`): their requests read into
//! the OpenAI shape every backend path starts from, answers and streams written back in Anthropic's
//! shape, and errors in Anthropic's error envelope so the Anthropic SDKs raise the right exception.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::llm::Usage;
use crate::llm::anthropic::{AnthropicDecoder, effort_of_budget};
use crate::llm::chat::{Answer, arguments_object};
use crate::llm::scrub::{self, LazySecrets};
use crate::llm::stream::{Decode, Encode, Finish, Piece, TokenCounts, Transcode, write_sse};

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_value", message.into())
}

/// Reads an Anthropic Messages request as an OpenAI chat request (same `model`).
pub fn to_openai_request(body: &Value, stream: bool) -> Result<Value, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("invalid_json", "the body must be a JSON object"))?;
    let mut messages = Vec::new();
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text: Vec<&str> = blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            messages.push(json!({"role": "system", "content": text.join("\n\n")}));
        }
        Some(_) => return Err(bad("system: must be a string or an array of text blocks")),
    }
    let turns = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("messages: Field required"))?;
    for m in turns {
        read_message(m, &mut messages)?;
    }
    let max_tokens = obj
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("max_tokens: Field required"))?;
    let mut out = Map::new();
    out.insert(
        "model".into(),
        obj.get("model").cloned().unwrap_or(Value::Null),
    );
    out.insert("messages".into(), messages.into());
    out.insert("max_tokens".into(), max_tokens.into());
    for key in ["temperature", "top_p"] {
        if let Some(v) = obj.get(key).filter(|v| v.is_number()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(stop) = obj.get("stop_sequences").and_then(Value::as_array)
        && !stop.is_empty()
    {
        out.insert("stop".into(), Value::Array(stop.clone()));
    }
    if let Some(user) = obj
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".into(), user.into());
    }
    if let Some(tools) = obj.get("tools").and_then(Value::as_array) {
        let mut list = Vec::new();
        for t in tools {
            if let Some(kind) = t.get("type").and_then(Value::as_str)
                && kind != "custom"
            {
                return Err(bad(format!(
                    "tools: server tools ({}) are served only by Anthropic backends",
                    kind.chars().take(40).collect::<String>()
                )));
            }
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tools: every tool needs a name"))?;
            let mut function = json!({
                "name": name,
                "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
            });
            if let Some(d) = t.get("description").and_then(Value::as_str) {
                function["description"] = d.into();
            }
            list.push(json!({"type": "function", "function": function}));
        }
        if !list.is_empty() {
            out.insert("tools".into(), list.into());
        }
    }
    if let Some(thinking) = obj.get("thinking")
        && thinking.get("type").and_then(Value::as_str) == Some("enabled")
    {
        let budget = thinking
            .get("budget_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        out.insert("reasoning_effort".into(), effort_of_budget(budget).into());
    }
    if let Some(choice) = obj.get("tool_choice").filter(|c| c.is_object()) {
        let mapped = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                let name = choice
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("tool_choice: a `tool` choice needs `name`"))?;
                json!({"type": "function", "function": {"name": name}})
            }
            _ => return Err(bad("tool_choice.type: must be auto, any, tool or none")),
        };
        if out.contains_key("tools") {
            out.insert("tool_choice".into(), mapped);
            if choice
                .get("disable_parallel_tool_use")
                .and_then(Value::as_bool)
                == Some(true)
            {
                out.insert("parallel_tool_calls".into(), false.into());
            }
        }
    }
    if stream {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(out))
}

fn read_message(m: &Value, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
    let blocks: Vec<Value> = match m.get("content") {
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(b)) => b.clone(),
        _ => return Err(bad("messages: every message needs `content`")),
    };
    match role {
        "user" => {
            let mut parts = Vec::new();
            for b in &blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => parts.push(json!({"type": "text",
                        "text": b.get("text").and_then(Value::as_str).unwrap_or("")})),
                    Some("image") => {
                        parts.push(json!({"type": "image_url",
                        "image_url": {"url": image_url(b.get("source").unwrap_or(&Value::Null))?}}))
                    }
                    Some("tool_result") => {
                        let id = b
                            .get("tool_use_id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad("messages: tool_result needs tool_use_id"))?;
                        let mut text = match b.get("content") {
                            Some(Value::String(s)) => s.clone(),
                            Some(Value::Array(inner)) => inner
                                .iter()
                                .filter_map(|i| i.get("text").and_then(Value::as_str))
                                .collect::<Vec<_>>()
                                .join("\n"),
                            _ => String::new(),
                        };
                        if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                            text = format!("Error: {text}");
                        }
                        // Tool answers come first, right after the assistant's calls.
                        out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
                    }
                    Some(other) => {
                        return Err(bad(format!(
                            "messages: content blocks of type {:?} are served only by Anthropic backends",
                            other.chars().take(40).collect::<String>()
                        )));
                    }
                    None => return Err(bad("messages: every content block needs a type")),
                }
            }
            if !parts.is_empty() {
                out.push(json!({"role": "user", "content": parts}));
            }
        }
        "assistant" => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for b in &blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                    Some("tool_use") => calls.push(json!({
                        "id": b.get("id").and_then(Value::as_str).unwrap_or_default(),
                        "type": "function",
                        "function": {
                            "name": b.get("name").and_then(Value::as_str).unwrap_or_default(),
                            "arguments": b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                        }
                    })),
                    // Thinking is the model's own scratchpad: other providers cannot use it.
                    _ => {}
                }
            }
            let mut msg = json!({"role": "assistant", "content": text});
            if !calls.is_empty() {
                msg["tool_calls"] = calls.into();
            }
            out.push(msg);
        }
        _ => return Err(bad("messages: role must be user or assistant")),
    }
    Ok(())
}

fn image_url(source: &Value) -> Result<String, ApiError> {
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png");
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("messages: a base64 image needs data"))?;
            Ok(format!("data:{media};base64,{data}"))
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad("messages: a url image needs url")),
        _ => Err(bad("messages: image source must be base64 or url")),
    }
}

/// Tokens an image costs when its size is not known: Anthropic's count for the largest image it
/// takes without scaling (about 1,600).
const IMAGE_TOKENS: u64 = 1_600;

/// An estimate of the input tokens of a Messages (or `count_tokens`) request, for backends that
/// cannot count them: one token per four characters of its text (system prompt, messages, tool
/// definitions, tool inputs and results), 1,600 per image and a few per message for the framing.
pub fn estimate_input_tokens(body: &Value) -> u64 {
    fn walk(v: &Value, chars: &mut u64, images: &mut u64) {
        match v {
            Value::String(s) => *chars += s.chars().count() as u64,
            Value::Array(items) => items.iter().for_each(|i| walk(i, chars, images)),
            Value::Object(o) => {
                if o.get("type").and_then(Value::as_str) == Some("image") {
                    *images += 1;
                    return;
                }
                for (k, v) in o {
                    if k != "type" && k != "cache_control" {
                        walk(v, chars, images);
                    }
                }
            }
            Value::Number(n) => *chars += n.to_string().len() as u64,
            Value::Null | Value::Bool(_) => {}
        }
    }
    let (mut chars, mut images) = (0, 0);
    for key in ["system", "messages", "tools"] {
        if let Some(v) = body.get(key) {
            walk(v, &mut chars, &mut images);
        }
    }
    let framing = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, |m| m.len() as u64 * 4);
    chars.div_ceil(4) + images.saturating_mul(IMAGE_TOKENS) + framing
}

fn usage_json(c: &TokenCounts) -> Value {
    let read = c.cache_read.unwrap_or(0);
    let write = c.cache_write.unwrap_or(0);
    json!({
        "input_tokens": c.input.unwrap_or(0).saturating_sub(read + write),
        "output_tokens": c.output.unwrap_or(0),
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write,
    })
}

fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_string()
    } else {
        format!("msg_{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..))
    }
}

/// An answer as an Anthropic `message` object.
pub fn answer_to_message(a: &Answer) -> Value {
    let mut content = Vec::new();
    if !a.reasoning.is_empty() {
        // Translated reasoning has no Anthropic signature to give back.
        content.push(json!({"type": "thinking", "thinking": a.reasoning, "signature": ""}));
    }
    if !a.text.is_empty() {
        content.push(json!({"type": "text", "text": a.text}));
    }
    for c in &a.tool_calls {
        content.push(json!({"type": "tool_use", "id": c.id, "name": c.name,
                            "input": arguments_object(&c.arguments)}));
    }
    json!({
        "id": message_id(&a.id),
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": content,
        "stop_reason": a.finish.anthropic(),
        "stop_sequence": null,
        "usage": usage_json(&a.counts),
    })
}

/// Anthropic's error `type` for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// An error's body in Anthropic's envelope (`{"type":"error","error":{"type","message"}}`).
pub fn error_body(e: &ApiError) -> Bytes {
    let body = json!({"type": "error", "error": {"type": error_type(e.status.as_u16()), "message": e.message}});
    Bytes::from(body.to_string())
}

enum Open {
    Text(usize),
    Thinking(usize),
    Tool { tool: usize, block: usize },
}

/// Anthropic stream events written from pieces.
pub struct AnthropicEncoder {
    id: String,
    model: String,
    started: bool,
    open: Option<Open>,
    next_block: usize,
    closed_tools: Vec<usize>,
    finish: Option<Finish>,
    counts: TokenCounts,
    ended: bool,
}

impl AnthropicEncoder {
    /// An encoder for `model`.
    pub fn new(model: &str) -> Self {
        Self {
            id: message_id(""),
            model: model.to_string(),
            started: false,
            open: None,
            next_block: 0,
            closed_tools: Vec::new(),
            finish: None,
            counts: TokenCounts::default(),
            ended: false,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        // The same split of input tokens as the closing usage: Anthropic's `input_tokens` leaves out
        // what was read from or written to the prompt cache.
        let mut usage = usage_json(&self.counts);
        usage["output_tokens"] = json!(0);
        let data = json!({"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage
        }});
        write_sse(out, Some("message_start"), &data);
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        let block = match self.open.take() {
            None => return,
            Some(Open::Text(b) | Open::Thinking(b)) => b,
            Some(Open::Tool { tool, block }) => {
                self.closed_tools.push(tool);
                block
            }
        };
        write_sse(
            out,
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": block}),
        );
    }

    fn open_block(&mut self, block: Value, out: &mut Vec<u8>) -> usize {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        write_sse(
            out,
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    fn delta(&self, index: usize, delta: Value, out: &mut Vec<u8>) {
        write_sse(
            out,
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }
}

impl Encode for AnthropicEncoder {
    fn piece(&mut self, piece: Piece, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match piece {
            Piece::Meta { model, .. } => {
                if !self.started
                    && let Some(m) = model.filter(|m| !m.is_empty())
                {
                    self.model = m;
                }
                self.start(out);
            }
            Piece::Text(t) => {
                if t.is_empty() {
                    return;
                }
                self.start(out);
                let index = match self.open {
                    Some(Open::Text(i)) => i,
                    _ => {
                        let i = self.open_block(json!({"type": "text", "text": ""}), out);
                        self.open = Some(Open::Text(i));
                        i
                    }
                };
                self.delta(index, json!({"type": "text_delta", "text": t}), out);
            }
            Piece::Reasoning(t) => {
                if t.is_empty() {
                    return;
                }
                self.start(out);
                let index = match self.open {
                    Some(Open::Thinking(i)) => i,
                    _ => {
                        let i = self.open_block(
                            json!({"type": "thinking", "thinking": "", "signature": ""}),
                            out,
                        );
                        self.open = Some(Open::Thinking(i));
                        i
                    }
                };
                self.delta(index, json!({"type": "thinking_delta", "thinking": t}), out);
            }
            Piece::ToolStart { index, id, name } => {
                self.start(out);
                let block = self.open_block(
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    out,
                );
                self.open = Some(Open::Tool { tool: index, block });
            }
            Piece::ToolArgs { index, fragment } => {
                self.start(out);
                let block = match self.open {
                    Some(Open::Tool { tool, block }) if tool == index => block,
                    // Arguments for a call whose block already closed cannot be delivered in order.
                    _ if self.closed_tools.contains(&index) => return,
                    _ => {
                        let block = self.open_block(
                            json!({"type": "tool_use", "id": crate::llm::chat::new_call_id(),
                                   "name": "", "input": {}}),
                            out,
                        );
                        self.open = Some(Open::Tool { tool: index, block });
                        block
                    }
                };
                if !fragment.is_empty() {
                    self.delta(
                        block,
                        json!({"type": "input_json_delta", "partial_json": fragment}),
                        out,
                    );
                }
            }
            Piece::Finish(f) => {
                self.start(out);
                self.close(out);
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
        self.start(out);
        self.close(out);
        self.ended = true;
        write_sse(
            out,
            Some("message_delta"),
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": finish.anthropic(), "stop_sequence": null},
                    "usage": usage_json(&self.counts)}),
        );
        write_sse(out, Some("message_stop"), &json!({"type": "message_stop"}));
    }

    fn fail(&mut self, status: u16, message: &str, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        write_sse(
            out,
            Some("error"),
            &json!({"type": "error", "error": {"type": error_type(status), "message": message}}),
        );
    }
}

/// Longest event a passthrough holds while waiting for its end; past it the bytes pass as they are.
const PASSTHROUGH_EVENT_CAP: usize = 1024 * 1024;

/// An Anthropic stream relayed to an Anthropic caller as it comes, read on the side for usage, its
/// error events scrubbed of the provider's credentials. Bytes are passed on a whole event at a time
/// (a partial one waits for its end), so no part of an error event leaves before it is scrubbed.
pub struct AnthropicPassthrough {
    decoder: AnthropicDecoder,
    pieces: Vec<Piece>,
    counts: Option<TokenCounts>,
    secrets: Box<dyn LazySecrets>,
    pending: Vec<u8>,
}

impl AnthropicPassthrough {
    /// A passthrough at the start of a stream; `secrets` are asked for only when an error event comes.
    pub fn new(secrets: Box<dyn LazySecrets>) -> Self {
        Self {
            decoder: AnthropicDecoder::new(),
            pieces: Vec::new(),
            counts: None,
            secrets,
            pending: Vec::new(),
        }
    }
}

/// An error event scrubbed, or `None` when it is passed as it is; other events cost one search.
fn scrub_event(event: &[u8], secrets: &mut dyn LazySecrets) -> Option<Vec<u8>> {
    if !scrub::is_error_event(event) {
        return None;
    }
    let unreadable = json!({"type": "error", "error": {"type": "api_error",
        "message": "the provider sent an error this gateway cannot read"}});
    let unreadable = serde_json::to_vec(&unreadable).expect("JSON values serialise");
    scrub::scrub_error_event(event, secrets.get(), &unreadable)
}

impl Transcode for AnthropicPassthrough {
    fn feed(&mut self, bytes: &[u8]) -> Bytes {
        self.decoder.feed(bytes, &mut self.pieces);
        for p in self.pieces.drain(..) {
            if let Piece::Usage(c) = p {
                self.counts.get_or_insert_default().merge(c);
            }
        }
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(len) = scrub::event_end(&self.pending[start..]) {
            let event = &self.pending[start..start + len];
            match scrub_event(event, self.secrets.as_mut()) {
                Some(clean) => out.extend_from_slice(&clean),
                None => out.extend_from_slice(event),
            }
            start += len;
        }
        self.pending.drain(..start);
        if self.pending.len() > PASSTHROUGH_EVENT_CAP {
            // Not SSE as we know it: stop waiting for an event's end.
            out.append(&mut self.pending);
        }
        Bytes::from(out)
    }

    fn finish(&mut self) -> Bytes {
        let rest = std::mem::take(&mut self.pending);
        match scrub_event(&rest, self.secrets.as_mut()) {
            Some(clean) => Bytes::from(clean),
            None => Bytes::from(rest),
        }
    }

    fn fail(&mut self, _code: &str, message: &str) -> Bytes {
        let mut out = Vec::new();
        write_sse(
            &mut out,
            Some("error"),
            &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        );
        Bytes::from(out)
    }

    fn usage(&self) -> Option<Usage> {
        self.counts.map(|c| c.usage())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::chat::ChatRequest;

    #[test]
    fn reads_messages_with_tools_images_and_results() {
        let v = to_openai_request(
            &json!({
                "model": "claude-x",
                "max_tokens": 300,
                "system": [{"type": "text", "text": "be brief"}],
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "what is it?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "checking"},
                        {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"x": 1}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"},
                        {"type": "text", "text": "and?"}
                    ]}
                ],
                "tools": [{"name": "look", "description": "d", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                "stop_sequences": ["END"]
            }),
            true,
        )
        .unwrap();
        let req = ChatRequest::from_openai(&v).unwrap();
        assert_eq!(req.system, vec!["be brief"]);
        assert_eq!(req.turns.len(), 4);
        assert_eq!(v["messages"][3]["role"], "tool");
        assert_eq!(v["messages"][4]["role"], "user");
        assert_eq!(v["tool_choice"], "required");
        assert_eq!(v["parallel_tool_calls"], false);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(
            v["messages"][1]["content"][1]["image_url"]["url"],
            "data:image/jpeg;base64,/9j/"
        );
    }

    #[test]
    fn passthrough_scrubs_error_events_wherever_the_frames_split_them() {
        let ok = b"event: ping\ndata: {\"type\":\"ping\"}\n\n";
        let error = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"key sk-ant-SECRETSE*** overloaded\"}}\n\n";
        let all = [&ok[..], &error[..]].concat();
        let want = [
            &ok[..],
            b"event: error\ndata: {\"error\":{\"message\":\"key [redacted] overloaded\",\"type\":\"overloaded_error\"},\"type\":\"error\"}\n\n",
        ]
        .concat();
        for cut in 0..=all.len() {
            let mut p =
                AnthropicPassthrough::new(Box::new(vec!["sk-ant-SECRETSECRET".to_string()]));
            let mut out = p.feed(&all[..cut]).to_vec();
            out.extend_from_slice(&p.feed(&all[cut..]));
            out.extend_from_slice(&p.finish());
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&want),
                "cut at {cut}"
            );
        }
        // A stream without errors passes unchanged, its last event kept even without its blank line.
        let mut p = AnthropicPassthrough::new(Box::new(Vec::new()));
        let mut out = p.feed(&ok[..ok.len() - 1]).to_vec();
        out.extend_from_slice(&p.finish());
        assert_eq!(out, &ok[..ok.len() - 1]);
    }

    #[test]
    fn estimates_tokens_from_text_images_and_tools() {
        let n = estimate_input_tokens(&json!({"model": "m", "system": "x".repeat(40),
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "y".repeat(80)},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A".repeat(4000)}}]}],
            "tools": [{"name": "abcd", "input_schema": {}}]}));
        // 40 + 80 + 4 ("user") + 4 ("abcd") characters, one image, one message.
        assert_eq!(n, 128 / 4 + 1_600 + 4);
        assert_eq!(estimate_input_tokens(&json!(null)), 0);
    }

    #[test]
    fn requires_max_tokens_like_anthropic() {
        let e = to_openai_request(&json!({"model": "m", "messages": []}), false).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn encodes_the_full_event_sequence() {
        let mut e = AnthropicEncoder::new("m");
        let mut out = Vec::new();
        for p in [
            Piece::Meta {
                id: None,
                model: Some("up".into()),
            },
            Piece::Text("Hi".into()),
            Piece::ToolStart {
                index: 0,
                id: "call_1".into(),
                name: "f".into(),
            },
            Piece::ToolArgs {
                index: 0,
                fragment: "{}".into(),
            },
            Piece::Finish(Finish::ToolCalls),
            Piece::Usage(TokenCounts {
                input: Some(10),
                output: Some(3),
                ..Default::default()
            }),
            Piece::Done,
        ] {
            e.piece(p, &mut out);
        }
        let text = String::from_utf8(out).unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(text.contains(r#""stop_reason":"tool_use""#));
        assert!(text.contains(r#""output_tokens":3"#));
    }

    /// Usage known before the first text (upstreams that report the prompt first) opens the stream
    /// with the same split as the closing usage: cache reads and writes are not input tokens.
    #[test]
    fn the_opening_usage_splits_cached_input_tokens_as_the_closing_one_does() {
        let mut e = AnthropicEncoder::new("m");
        let mut out = Vec::new();
        for p in [
            Piece::Usage(TokenCounts {
                input: Some(100),
                cache_read: Some(60),
                cache_write: Some(15),
                ..Default::default()
            }),
            Piece::Text("Hi".into()),
            Piece::Usage(TokenCounts {
                output: Some(2),
                ..Default::default()
            }),
            Piece::Finish(Finish::Stop),
            Piece::Done,
        ] {
            e.piece(p, &mut out);
        }
        let text = String::from_utf8(out).unwrap();
        let data = |event: &str| -> Value {
            let at = text.find(&format!("event: {event}\n")).unwrap();
            let line = text[at..].lines().nth(1).unwrap();
            serde_json::from_str(line.strip_prefix("data: ").unwrap()).unwrap()
        };
        let opening = &data("message_start")["message"]["usage"];
        assert_eq!(opening["input_tokens"], 25, "{opening}");
        assert_eq!(opening["cache_read_input_tokens"], 60);
        assert_eq!(opening["cache_creation_input_tokens"], 15);
        assert_eq!(opening["output_tokens"], 0);
        let closing = &data("message_delta")["usage"];
        assert_eq!(closing["input_tokens"], 25, "{closing}");
        assert_eq!(closing["output_tokens"], 2);
    }
}
