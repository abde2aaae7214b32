//! AWS Bedrock's Converse API (`POST /model/{modelId}/converse` and `/converse-stream`), from its
//! public API reference: requests, answers, the event-stream of ConverseStream, and credentials.

use serde_json::{Map, Value, json};

use super::chat::{
    Answer, ChatRequest, Image, Part, RoleTurns, ToolCall, ToolChoice, Turn, arguments_object,
};
use super::eventstream::{FrameDecoder, FrameError, Message};
use super::sigv4::{AwsKeys, uri_encode};
use super::stream::{Decode, Finish, Piece, TokenCounts};
use crate::error::ApiError;

/// How a Bedrock credential from the provider's Secret authenticates.
#[derive(Clone, Copy)]
pub enum BedrockAuth<'a> {
    /// `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`: requests are signed with SigV4.
    Keys(AwsKeys<'a>),
    /// Anything without `:` is a Bedrock API key, sent as a bearer token.
    ApiKey(&'a str),
}

/// Reads a credential. Access key ids, secret keys, session tokens and Bedrock API keys never contain
/// `:`, so the separator is unambiguous.
pub fn auth(credential: &str) -> BedrockAuth<'_> {
    let mut parts = credential.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(id), Some(secret), token) if !id.is_empty() && !secret.is_empty() => {
            BedrockAuth::Keys(AwsKeys {
                access_key_id: id,
                secret_access_key: secret,
                session_token: token.filter(|t| !t.is_empty()),
            })
        }
        _ => BedrockAuth::ApiKey(credential),
    }
}

/// The request path for `model`, with the model id encoded as one path segment.
pub fn path(model: &str, stream: bool) -> String {
    format!(
        "/model/{}/{}",
        uri_encode(model.as_bytes()),
        if stream {
            "converse-stream"
        } else {
            "converse"
        }
    )
}

/// The request body (the model goes in the URL).
/// The tool that carries a JSON Schema answer (see `json_answer`) for a Claude model on Bedrock, whose
/// Converse API can force one tool; other models, some of which cannot, are asked in words.
pub fn json_tool(req: &ChatRequest, model: &str) -> Option<(String, Value)> {
    let claude = model.contains("anthropic.") || model.contains("claude");
    claude.then(|| super::json_answer::tool_for(req)).flatten()
}

/// A Converse request; `json_tool` (from [`json_tool`]) is the tool the model must call to answer.
pub fn build_request(
    req: &ChatRequest,
    json_tool: Option<&(String, Value)>,
) -> Result<Value, ApiError> {
    let mut messages = RoleTurns::default();
    let mut push = |role: &'static str, blocks: Vec<Value>| messages.push(role, blocks);
    for turn in &req.turns {
        match turn {
            Turn::User(parts) => {
                let mut blocks = Vec::new();
                for p in parts {
                    match p {
                        Part::Text(t) if t.is_empty() => {}
                        Part::Text(t) => blocks.push(json!({"text": t})),
                        Part::Image(Image::Inline { media_type, data }) => {
                            let format = image_format(media_type).ok_or_else(|| {
                                ApiError::bad_request(
                                    "unsupported_image",
                                    "Bedrock accepts png, jpeg, gif and webp images",
                                )
                                .with_param("messages")
                            })?;
                            blocks.push(
                                json!({"image": {"format": format, "source": {"bytes": data}}}),
                            );
                        }
                        Part::Image(Image::Url(_)) => {
                            return Err(ApiError::bad_request(
                                "unsupported_image",
                                "Bedrock accepts images only as base64 data URLs, not by http(s) URL",
                            )
                            .with_param("messages"));
                        }
                    }
                }
                push("user", blocks);
            }
            Turn::Assistant { text, tool_calls } => {
                let mut blocks = Vec::new();
                if !text.is_empty() {
                    blocks.push(json!({"text": text}));
                }
                for c in tool_calls {
                    blocks.push(json!({"toolUse": {"toolUseId": c.id, "name": c.name,
                                                   "input": arguments_object(&c.arguments)}}));
                }
                push("assistant", blocks);
            }
            Turn::ToolResult { call_id, content } => push(
                "user",
                vec![json!({"toolResult": {"toolUseId": call_id,
                                           "content": [{"text": content}], "status": "success"}})],
            ),
        }
    }
    let mut body = Map::new();
    body.insert(
        "messages".into(),
        messages
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect(),
    );
    // A JSON Schema answer comes as the forced tool's input: no instruction needed then.
    let instruction = req.json_instruction().filter(|_| json_tool.is_none());
    let system: Vec<Value> = req
        .system
        .iter()
        .chain(instruction.as_ref())
        .filter(|s| !s.is_empty())
        .map(|s| json!({"text": s}))
        .collect();
    if !system.is_empty() {
        body.insert("system".into(), system.into());
    }
    let mut inference = Map::new();
    if let Some(n) = req.max_tokens {
        inference.insert("maxTokens".into(), n.into());
    }
    if let Some(t) = req.temperature {
        inference.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = req.top_p {
        inference.insert("topP".into(), json!(p));
    }
    if !req.stop.is_empty() {
        inference.insert("stopSequences".into(), json!(req.stop));
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut spec = json!({"name": t.name, "inputSchema": {"json": t.parameters}});
                if let Some(d) = &t.description {
                    spec["description"] = d.clone().into();
                }
                json!({"toolSpec": spec})
            })
            .collect();
        let mut config = json!({"tools": tools});
        // Converse has no "none": leaving the choice out lets the model decide.
        match &req.tool_choice {
            Some(ToolChoice::Auto) => config["toolChoice"] = json!({"auto": {}}),
            Some(ToolChoice::Required) => config["toolChoice"] = json!({"any": {}}),
            Some(ToolChoice::Named(n)) => config["toolChoice"] = json!({"tool": {"name": n}}),
            Some(ToolChoice::None) | None => {}
        }
        body.insert("toolConfig".into(), config);
    } else if let Some((name, schema)) = json_tool {
        body.insert(
            "toolConfig".into(),
            json!({"tools": [{"toolSpec": {"name": name, "description": "Give the answer.",
                                           "inputSchema": {"json": schema}}}],
                   "toolChoice": {"tool": {"name": name}}}),
        );
    }
    Ok(Value::Object(body))
}

fn image_format(media_type: &str) -> Option<&'static str> {
    match media_type {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

/// `stopReason` → finish.
pub fn finish(reason: &str) -> Finish {
    match reason {
        "tool_use" => Finish::ToolCalls,
        "max_tokens" | "model_context_window_exceeded" => Finish::Length,
        "stop_sequence" => Finish::StopSequence,
        "guardrail_intervened" | "content_filtered" => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

/// Converse `usage` → counts (`inputTokens` leave out cache reads and writes).
pub fn counts(u: &Value) -> TokenCounts {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let (read, write) = (n("cacheReadInputTokens"), n("cacheWriteInputTokens"));
    TokenCounts {
        input: n("inputTokens").map(|i| i + read.unwrap_or(0) + write.unwrap_or(0)),
        output: n("outputTokens"),
        cache_read: read,
        cache_write: write,
    }
}

/// Reads a Converse response.
pub fn read_response(v: &Value, model: &str) -> Option<Answer> {
    let content = v
        .get("output")?
        .get("message")?
        .get("content")?
        .as_array()?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in content {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(tu) = block.get("toolUse") {
            tool_calls.push(ToolCall {
                id: tu
                    .get("toolUseId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: tu
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                arguments: tu
                    .get("input")
                    .map(Value::to_string)
                    .unwrap_or_else(|| "{}".into()),
            });
        }
    }
    Some(Answer {
        id: format!("chatcmpl-{:016x}", fastrand::u64(..)),
        model: model.to_string(),
        text,
        reasoning: String::new(),
        tool_calls,
        finish: finish(
            v.get("stopReason")
                .and_then(Value::as_str)
                .unwrap_or("end_turn"),
        ),
        counts: counts(v.get("usage").unwrap_or(&Value::Null)),
    })
}

/// The message of a Bedrock error body (`{"message": …}`).
pub fn error_message(v: &Value) -> Option<String> {
    v.get("message")
        .or_else(|| v.get("Message"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Status for an exception named in a stream.
fn exception_status(kind: &str) -> u16 {
    match kind {
        "throttlingException" => 429,
        "validationException" => 400,
        "serviceUnavailableException" => 503,
        _ => 500,
    }
}

/// Reads ConverseStream's binary event stream.
#[derive(Default)]
pub struct BedrockDecoder {
    frames: FrameDecoder,
    messages: Vec<Result<Message, FrameError>>,
    /// Content-block index → tool-call index.
    tools: Vec<(u64, usize)>,
    failed: bool,
}

impl BedrockDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    fn message(&mut self, m: &Message, out: &mut Vec<Piece>) {
        let payload: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
        match m.header_str(":message-type") {
            Some("event") | None => {}
            Some("exception") => {
                let kind = m.header_str(":exception-type").unwrap_or("");
                out.push(Piece::Error {
                    status: exception_status(kind),
                    message: error_message(&payload)
                        .unwrap_or_else(|| format!("the provider reported {kind}")),
                });
                return;
            }
            Some(_) => {
                out.push(Piece::Error {
                    status: 500,
                    message: m
                        .header_str(":error-message")
                        .unwrap_or("the provider reported an error")
                        .to_string(),
                });
                return;
            }
        }
        let index = payload
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match m.header_str(":event-type").unwrap_or_default() {
            "messageStart" => out.push(Piece::Meta {
                id: None,
                model: None,
            }),
            "contentBlockStart" => {
                if let Some(tu) = payload.get("start").and_then(|s| s.get("toolUse")) {
                    let tool = self.tools.len();
                    self.tools.push((index, tool));
                    out.push(Piece::ToolStart {
                        index: tool,
                        id: tu
                            .get("toolUseId")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        name: tu
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    });
                }
            }
            "contentBlockDelta" => {
                let delta = payload.get("delta").unwrap_or(&Value::Null);
                if let Some(t) = delta.get("text").and_then(Value::as_str) {
                    out.push(Piece::Text(t.to_string()));
                }
                if let Some(input) = delta
                    .get("toolUse")
                    .and_then(|t| t.get("input"))
                    .and_then(Value::as_str)
                    && let Some(&(_, tool)) = self.tools.iter().find(|(b, _)| *b == index)
                {
                    out.push(Piece::ToolArgs {
                        index: tool,
                        fragment: input.to_string(),
                    });
                }
            }
            "messageStop" => out.push(Piece::Finish(finish(
                payload
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn"),
            ))),
            "metadata" => {
                if let Some(u) = payload.get("usage") {
                    out.push(Piece::Usage(counts(u)));
                }
            }
            _ => {}
        }
    }
}

impl Decode for BedrockDecoder {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Piece>) {
        self.frames.feed(bytes, &mut self.messages);
        for m in std::mem::take(&mut self.messages) {
            match m {
                Ok(m) => self.message(&m, out),
                Err(e) if !self.failed => {
                    self.failed = true;
                    out.push(Piece::Error {
                        status: 502,
                        message: format!("the provider's stream could not be read: {e}"),
                    });
                }
                Err(_) => {}
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<Piece>) {
        // ConverseStream ends after `metadata`: the body ending is the end.
        out.push(Piece::Done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::eventstream::encode;
    use crate::llm::stream::decode_all;

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    #[test]
    fn a_json_schema_is_a_forced_tool_for_claude_and_an_instruction_for_others() {
        let req = ChatRequest::from_openai(&json!({"model": "m",
            "messages": [{"role": "user", "content": "Weather?"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "weather",
                "schema": {"type": "object", "properties": {"city": {"type": "string"}}}}}}))
        .unwrap();
        let tool = json_tool(&req, "us.anthropic.claude-sonnet-4-5-20250929-v1:0");
        let body = build_request(&req, tool.as_ref()).unwrap();
        assert_eq!(
            body["toolConfig"]["toolChoice"],
            json!({"tool": {"name": "weather"}})
        );
        assert_eq!(
            body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["properties"]["city"],
            json!({"type": "string"})
        );
        assert!(body.get("system").is_none(), "{body}");
        // A model that may not take a forced tool is asked in words.
        assert_eq!(json_tool(&req, "amazon.nova-pro-v1:0"), None);
        let body = build_request(&req, None).unwrap();
        assert!(body.get("toolConfig").is_none());
        assert!(
            body["system"][0]["text"]
                .as_str()
                .unwrap()
                .contains("JSON Schema")
        );
    }

    #[test]
    fn credentials_are_keys_or_api_keys() {
        assert!(
            matches!(auth("AKIA1:secret/+x"), BedrockAuth::Keys(k) if k.session_token.is_none())
        );
        assert!(
            matches!(auth("ASIA1:secret:tok=="), BedrockAuth::Keys(k) if k.session_token == Some("tok=="))
        );
        assert!(matches!(
            auth("ABSKQmVkcm9ja0FQSUtleQ=="),
            BedrockAuth::ApiKey(_)
        ));
        assert_eq!(
            path("anthropic.claude-v2:1", true),
            "/model/anthropic.claude-v2%3A1/converse-stream"
        );
    }

    #[test]
    fn stream_with_a_tool_call_usage_and_an_exception() {
        let mut s = event("messageStart", r#"{"role":"assistant","p":"abc"}"#);
        s.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Checking"}}"#,
        ));
        s.extend(event("contentBlockStop", r#"{"contentBlockIndex":0}"#));
        s.extend(event("contentBlockStart", r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_1","name":"weather"}}}"#));
        s.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":\"Paris\"}"}}}"#,
        ));
        s.extend(event("messageStop", r#"{"stopReason":"tool_use"}"#));
        s.extend(event("metadata", r#"{"usage":{"inputTokens":20,"outputTokens":8,"totalTokens":28},"metrics":{"latencyMs":100}}"#));
        let pieces = decode_all(&mut BedrockDecoder::new(), &s);
        assert_eq!(pieces.len(), 7);
        assert_eq!(pieces[1], Piece::Text("Checking".into()));
        assert_eq!(
            pieces[3],
            Piece::ToolArgs {
                index: 0,
                fragment: "{\"city\":\"Paris\"}".into()
            }
        );
        assert_eq!(pieces[4], Piece::Finish(Finish::ToolCalls));
        assert_eq!(
            pieces[5],
            Piece::Usage(TokenCounts {
                input: Some(20),
                output: Some(8),
                ..Default::default()
            })
        );

        let exception = encode(
            &[
                (":exception-type", "throttlingException"),
                (":message-type", "exception"),
            ],
            br#"{"message":"Too many requests"}"#,
        );
        let pieces = decode_all(&mut BedrockDecoder::new(), &exception);
        assert_eq!(
            pieces[0],
            Piece::Error {
                status: 429,
                message: "Too many requests".into()
            }
        );
    }
}
