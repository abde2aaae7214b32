//! Google's Gemini API (`models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
//! `:embedContent`, `:batchEmbedContents`), from its public API reference.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::chat::{
    Answer, ChatRequest, Image, Part, RoleTurns, ToolCall, ToolChoice, Turn, new_call_id,
};
use super::stream::{Finish, Piece, SseDecode, SseEvents, TokenCounts};
use crate::error::ApiError;
use crate::llm::Usage;

/// The request body (the model goes in the URL).
pub fn build_request(req: &ChatRequest) -> Value {
    let mut contents = RoleTurns::default();
    let mut push = |role: &'static str, parts: Vec<Value>| contents.push(role, parts);
    for turn in &req.turns {
        match turn {
            Turn::User(parts) => push("user", parts.iter().filter_map(user_part).collect()),
            Turn::Assistant { text, tool_calls } => {
                let mut parts = Vec::new();
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for c in tool_calls {
                    parts.push(json!({"functionCall": {
                        "name": c.name,
                        "args": super::chat::arguments_object(&c.arguments)
                    }}));
                }
                push("model", parts);
            }
            Turn::ToolResult { call_id, content } => {
                let name = req.tool_name_of(call_id).unwrap_or(call_id);
                let response = match serde_json::from_str::<Value>(content) {
                    Ok(Value::Object(o)) => Value::Object(o),
                    Ok(other) => json!({"result": other}),
                    Err(_) => json!({"result": content}),
                };
                push(
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
        }
    }
    let mut body = Map::new();
    body.insert(
        "contents".into(),
        contents
            .into_iter()
            .map(|(role, parts)| json!({"role": role, "parts": parts}))
            .collect(),
    );
    let system: Vec<&str> = req
        .system
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if !system.is_empty() {
        body.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system.join("\n\n")}]}),
        );
    }
    if !req.tools.is_empty() {
        let declarations: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.name, "parameters": gemini_schema(&t.parameters)});
                if let Some(desc) = &t.description {
                    d["description"] = desc.clone().into();
                }
                d
            })
            .collect();
        body.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
        if let Some(choice) = &req.tool_choice {
            let config = match choice {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Required => json!({"mode": "ANY"}),
                ToolChoice::Named(n) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
            };
            body.insert(
                "toolConfig".into(),
                json!({"functionCallingConfig": config}),
            );
        }
    }
    let mut generation = Map::new();
    if let Some(n) = req.max_tokens {
        generation.insert("maxOutputTokens".into(), n.into());
    }
    for (key, value) in [
        ("temperature", req.temperature),
        ("topP", req.top_p),
        ("presencePenalty", req.presence_penalty),
        ("frequencyPenalty", req.frequency_penalty),
    ] {
        if let Some(v) = value {
            generation.insert(key.into(), json!(v));
        }
    }
    if let Some(seed) = req.seed {
        generation.insert("seed".into(), seed.into());
    }
    if !req.stop.is_empty() {
        generation.insert("stopSequences".into(), json!(req.stop));
    }
    if req.json_output {
        generation.insert("responseMimeType".into(), "application/json".into());
    }
    // A schema constrains the answer itself (`responseSchema`, Gemini's OpenAPI subset of JSON
    // Schema), as OpenAI's structured output does, rather than asking for it in words.
    if let Some(schema) = &req.json_schema {
        generation.insert("responseSchema".into(), gemini_schema(&schema.schema));
    }
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    Value::Object(body)
}

fn user_part(part: &Part) -> Option<Value> {
    Some(match part {
        Part::Text(t) if t.is_empty() => return None,
        Part::Text(t) => json!({"text": t}),
        Part::Image(Image::Inline { media_type, data }) => {
            json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        Part::Image(Image::Url(url)) => {
            json!({"fileData": {"mimeType": media_type_of(url), "fileUri": url}})
        }
    })
}

/// A media type guessed from a URL's extension (Gemini's `fileData` requires one).
fn media_type_of(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("pdf") => "application/pdf",
        _ => "image/jpeg",
    }
}

/// Gemini's schema is an OpenAPI subset: JSON Schema keywords it rejects are dropped.
fn gemini_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "$schema" | "additionalProperties" | "strict")
                })
                .map(|(k, v)| (k.clone(), gemini_schema(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(gemini_schema).collect()),
        other => other.clone(),
    }
}

/// `finishReason` → finish (`tools` says whether the candidate called any).
pub fn finish(reason: &str, tools: bool) -> Finish {
    match reason {
        "MAX_TOKENS" => Finish::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            Finish::ContentFilter
        }
        _ if tools => Finish::ToolCalls,
        _ => Finish::Stop,
    }
}

/// `usageMetadata` → counts (thinking tokens are billed as output).
pub fn counts(u: &Value) -> TokenCounts {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let output = match (n("candidatesTokenCount"), n("thoughtsTokenCount")) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    };
    TokenCounts {
        input: n("promptTokenCount"),
        output,
        cache_read: n("cachedContentTokenCount"),
        cache_write: None,
    }
}

fn function_call(fc: &Value) -> ToolCall {
    ToolCall {
        id: fc
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(new_call_id),
        name: fc
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        arguments: fc
            .get("args")
            .map(Value::to_string)
            .unwrap_or_else(|| "{}".into()),
    }
}

/// Reads a `generateContent` response.
pub fn read_response(v: &Value, fallback_model: &str) -> Option<Answer> {
    let obj = v.as_object()?;
    let candidate = obj.get("candidates").and_then(|c| c.get(0));
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for part in candidate
        .and_then(|c| c.get("content"))
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(fc) = part.get("functionCall") {
            tool_calls.push(function_call(fc));
        }
    }
    let finish = match candidate
        .and_then(|c| c.get("finishReason"))
        .and_then(Value::as_str)
    {
        Some(r) => finish(r, !tool_calls.is_empty()),
        None if candidate.is_none() => Finish::ContentFilter, // the prompt itself was blocked
        None => Finish::Stop,
    };
    Some(Answer {
        id: obj
            .get("responseId")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("chatcmpl-{:016x}", fastrand::u64(..))),
        model: obj
            .get("modelVersion")
            .and_then(Value::as_str)
            .unwrap_or(fallback_model)
            .to_string(),
        text,
        reasoning: String::new(),
        tool_calls,
        finish,
        counts: counts(obj.get("usageMetadata").unwrap_or(&Value::Null)),
    })
}

/// The message of a Google error body, and whether it says the API key is bad (Gemini answers a bad
/// key with 400, not 401).
pub fn error_message(v: &Value) -> Option<(String, bool)> {
    let e = v.get("error")?;
    let message = e.get("message")?.as_str()?.to_string();
    let bad_key = e
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"));
    Some((message, bad_key))
}

/// Reads `streamGenerateContent?alt=sse`: every event is a partial `GenerateContentResponse`.
#[derive(Default)]
pub struct GeminiEvents {
    started: bool,
    tools: usize,
    finished: bool,
}

impl GeminiEvents {
    fn read_event(&mut self, data: &str, out: &mut Vec<Piece>) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if let Some(e) = v.get("error") {
            out.push(Piece::Error {
                status: e
                    .get("code")
                    .and_then(Value::as_u64)
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(500),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the provider reported an error")
                    .to_string(),
            });
            return;
        }
        if !v.is_object() {
            return;
        }
        if !self.started {
            self.started = true;
            out.push(Piece::Meta {
                id: v
                    .get("responseId")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                model: v
                    .get("modelVersion")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
        }
        let candidate = v.get("candidates").and_then(|c| c.get(0));
        for part in candidate
            .and_then(|c| c.get("content"))
            .and_then(|c| c.get("parts"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(t) = part.get("text").and_then(Value::as_str) {
                out.push(Piece::Text(t.to_string()));
            }
            if let Some(fc) = part.get("functionCall") {
                let call = function_call(fc);
                let index = self.tools;
                self.tools += 1;
                out.push(Piece::ToolStart {
                    index,
                    id: call.id,
                    name: call.name,
                });
                out.push(Piece::ToolArgs {
                    index,
                    fragment: call.arguments,
                });
            }
        }
        if let Some(u) = v.get("usageMetadata") {
            out.push(Piece::Usage(counts(u)));
        }
        let reason = candidate
            .and_then(|c| c.get("finishReason"))
            .and_then(Value::as_str);
        let blocked = candidate.is_none()
            && v.get("promptFeedback")
                .and_then(|f| f.get("blockReason"))
                .is_some();
        if !self.finished && (reason.is_some() || blocked) {
            self.finished = true;
            out.push(Piece::Finish(match reason {
                Some(r) => finish(r, self.tools > 0),
                None => Finish::ContentFilter,
            }));
        }
    }
}

impl SseEvents for GeminiEvents {
    fn event(&mut self, data: &str, out: &mut Vec<Piece>) {
        self.read_event(data, out);
    }

    fn end(&mut self, out: &mut Vec<Piece>) {
        // Gemini has no end event: the body ending is the end.
        out.push(Piece::Done);
    }
}

/// A decoder of Gemini's stream.
pub type GeminiDecoder = SseDecode<GeminiEvents>;

/// An OpenAI embeddings request read for Gemini.
pub struct EmbedAsk {
    /// Texts to embed.
    pub inputs: Vec<String>,
    /// Whether one string was given (answered with `:embedContent`).
    pub single: bool,
    /// `dimensions`.
    pub dimensions: Option<u64>,
    /// `encoding_format: base64`.
    pub base64: bool,
}

impl EmbedAsk {
    /// Reads an OpenAI embeddings body.
    pub fn from_openai(body: &Value) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::bad_request(
                "invalid_value",
                "`input` must be a non-empty string or array of strings for this provider",
            )
            .with_param("input")
        };
        let (inputs, single) = match body.get("input") {
            Some(Value::String(s)) => (vec![s.clone()], true),
            Some(Value::Array(items)) if !items.is_empty() => (
                items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string).ok_or_else(bad))
                    .collect::<Result<_, _>>()?,
                false,
            ),
            _ => return Err(bad()),
        };
        Ok(Self {
            inputs,
            single,
            dimensions: body.get("dimensions").and_then(Value::as_u64),
            base64: body.get("encoding_format").and_then(Value::as_str) == Some("base64"),
        })
    }

    /// The method (`embedContent` or `batchEmbedContents`) and body for `model`.
    pub fn build(&self, model: &str) -> (&'static str, Value) {
        let request = |text: &str| {
            let mut r =
                json!({"model": format!("models/{model}"), "content": {"parts": [{"text": text}]}});
            if let Some(d) = self.dimensions {
                r["outputDimensionality"] = d.into();
            }
            r
        };
        if self.single {
            ("embedContent", request(&self.inputs[0]))
        } else {
            let requests: Vec<Value> = self.inputs.iter().map(|t| request(t)).collect();
            ("batchEmbedContents", json!({"requests": requests}))
        }
    }

    /// Gemini's answer as OpenAI's embeddings list. Gemini reports no token counts for embeddings, so
    /// they are estimated at one token per four characters.
    pub fn read(&self, v: &Value, model: &str) -> Option<(Value, Usage)> {
        let vectors: Vec<&Vec<Value>> = if self.single {
            vec![v.get("embedding")?.get("values")?.as_array()?]
        } else {
            v.get("embeddings")?
                .as_array()?
                .iter()
                .map(|e| e.get("values").and_then(Value::as_array))
                .collect::<Option<_>>()?
        };
        let data: Vec<Value> = vectors
            .iter()
            .enumerate()
            .map(|(i, values)| {
                let embedding = if self.base64 {
                    let mut raw = Vec::with_capacity(values.len() * 4);
                    for x in values.iter() {
                        raw.extend_from_slice(&(x.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
                    }
                    Value::String(base64::engine::general_purpose::STANDARD.encode(raw))
                } else {
                    Value::Array((*values).clone())
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        let tokens: u64 = self
            .inputs
            .iter()
            .map(|t| (t.chars().count() as u64).div_ceil(4).max(1))
            .sum();
        Some((
            json!({"object": "list", "data": data, "model": model,
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
            Usage {
                input: tokens,
                output: 0,
                ..Usage::default()
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::stream::decode_all;

    #[test]
    fn stream_with_text_a_function_call_and_usage() {
        let text = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":1,\"totalTokenCount\":10},\"modelVersion\":\"gemini-2.0-flash\",\"responseId\":\"r1\"}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"weather\",\"args\":{\"city\":\"Paris\"}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":5,\"totalTokenCount\":14}}\r\n\r\n",
        );
        let pieces = decode_all(&mut GeminiDecoder::new(), text.as_bytes());
        assert_eq!(
            pieces[0],
            Piece::Meta {
                id: Some("r1".into()),
                model: Some("gemini-2.0-flash".into())
            }
        );
        assert_eq!(pieces[1], Piece::Text("Hel".into()));
        assert!(matches!(&pieces[3], Piece::ToolStart { index: 0, name, .. } if name == "weather"));
        assert_eq!(
            pieces[4],
            Piece::ToolArgs {
                index: 0,
                fragment: "{\"city\":\"Paris\"}".into()
            }
        );
        assert_eq!(pieces[6], Piece::Finish(Finish::ToolCalls));
        assert_eq!(pieces.last(), Some(&Piece::Done));
    }

    #[test]
    fn a_json_schema_constrains_the_answer_through_response_schema() {
        let req = ChatRequest::from_openai(&json!({"model": "m",
            "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "greeting", "strict": true,
                "schema": {"type": "object", "additionalProperties": false,
                           "properties": {"text": {"type": "string"}}, "required": ["text"]}}}}))
        .unwrap();
        let body = build_request(&req);
        assert_eq!(
            body["generationConfig"],
            json!({"responseMimeType": "application/json",
                   "responseSchema": {"type": "object", "properties": {"text": {"type": "string"}},
                                      "required": ["text"]}})
        );
        // No instruction in words next to it.
        assert_eq!(
            body["systemInstruction"],
            json!({"parts": [{"text": "Be terse."}]})
        );
    }

    #[test]
    fn schemas_lose_keywords_gemini_rejects() {
        let s = gemini_schema(&json!({"type": "object", "additionalProperties": false,
            "$schema": "x", "properties": {"a": {"type": "object", "additionalProperties": {}}}}));
        assert_eq!(
            s,
            json!({"type": "object", "properties": {"a": {"type": "object"}}})
        );
    }
}
