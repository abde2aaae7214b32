//! Message content in the shape the OpenTelemetry GenAI conventions give it
//! (open-telemetry/semantic-conventions-genai, `model/gen-ai/registry.yaml` and the JSON schemas
//! `gen-ai-input-messages.json`, `gen-ai-output-messages.json`, `gen-ai-system-instructions.json`,
//! as on its main branch at commit 2b902ce):
//! `gen_ai.input.messages`, `gen_ai.system_instructions` and `gen_ai.output.messages`, each a JSON
//! text of at most a given number of bytes. Read from a caller's request and from the answer it was
//! sent, for a route that opted in; only content, never a header or a key.
//!
//! A message is `{"role", "parts": [...]}` (finish reasons are left to `gen_ai.response.finish_reasons`,
//! as the current schema asks, its `finish_reason` member being deprecated); a part is
//! `{"type": "text", "content"}`, `{"type": "tool_call", "id", "name", "arguments"}`,
//! `{"type": "tool_call_response", "id", "response"}`, `{"type": "reasoning", "content"}`, or, for
//! anything else (images, files), `{"type": <the caller's part type>}` without its data.

use serde_json::{Map, Value, json};

/// The format a request or answer is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenAI's Chat Completions (also a prompt API's rendered request).
    Chat,
    /// Anthropic's Messages.
    Messages,
    /// OpenAI's Responses API.
    Responses,
    /// A prompt API's own answer (`{"output": ...}`, streamed as `delta` events).
    Prompt,
}

/// The request's content attributes, each JSON of at most the cap.
#[derive(Debug, Default, PartialEq)]
pub struct Input {
    /// `gen_ai.system_instructions`: the instructions given apart from the chat history.
    pub system_instructions: Option<String>,
    /// `gen_ai.input.messages`.
    pub input_messages: Option<String>,
}

/// Reads a request body's messages; nothing for a body that is not such a request.
pub fn input(format: Format, body: &[u8], max_bytes: usize) -> Input {
    let Ok(doc) = serde_json::from_slice::<Value>(body) else {
        return Input::default();
    };
    let (system, messages) = match format {
        Format::Chat | Format::Prompt => (Vec::new(), chat_messages(&doc["messages"])),
        Format::Messages => (
            blocks(&doc["system"]),
            doc["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| message(role(m), blocks(&m["content"])))
                .collect(),
        ),
        Format::Responses => (blocks(&doc["instructions"]), responses_items(&doc["input"])),
    };
    Input {
        system_instructions: (!system.is_empty()).then(|| capped(Value::Array(system), max_bytes)),
        input_messages: (!messages.is_empty()).then(|| capped(Value::Array(messages), max_bytes)),
    }
}

/// `gen_ai.output.messages` of a streamed answer, from the text of each of its choices or blocks
/// (as `guard::stream_texts` gathers them from the events sent).
pub fn streamed_output(texts: Vec<String>, max_bytes: usize) -> Option<String> {
    if texts.is_empty() {
        return None;
    }
    let parts = texts.into_iter().map(text_part).collect();
    Some(capped(
        Value::Array(vec![message("assistant", parts)]),
        max_bytes,
    ))
}

/// `gen_ai.output.messages` of a whole answer: one message per choice.
pub fn output(format: Format, answer: &[u8], max_bytes: usize) -> Option<String> {
    let doc: Value = serde_json::from_slice(answer).ok()?;
    let messages: Vec<Value> = match format {
        Format::Chat => doc["choices"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let mut parts = Vec::new();
                if let Some(r) = c["message"]["reasoning_content"].as_str() {
                    parts.push(json!({"type": "reasoning", "content": r}));
                }
                parts.extend(chat_parts(&c["message"]));
                message("assistant", parts)
            })
            .collect(),
        Format::Messages => vec![message("assistant", blocks(&doc["content"]))],
        Format::Responses => responses_items(&doc["output"]),
        Format::Prompt => {
            let part = match &doc["output"] {
                Value::String(s) => text_part(s.clone()),
                Value::Null => return None,
                other => text_part(other.to_string()),
            };
            vec![message("assistant", vec![part])]
        }
    };
    (!messages.is_empty()).then(|| capped(Value::Array(messages), max_bytes))
}

fn role(m: &Value) -> &str {
    m["role"].as_str().unwrap_or("user")
}

fn message(role: &str, parts: Vec<Value>) -> Value {
    json!({"role": role, "parts": parts})
}

fn text_part(content: String) -> Value {
    json!({"type": "text", "content": content})
}

/// A part of a type the conventions have no shape for: its type alone, never its data.
fn generic_part(kind: &Value) -> Value {
    json!({"type": kind.as_str().unwrap_or("unknown")})
}

/// A tool call's arguments: the JSON they are, else the text as sent.
fn arguments(raw: &Value) -> Value {
    match raw {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| raw.clone()),
        other => other.clone(),
    }
}

/// Text of a content that may be a string or a list of blocks with `text` (tool results).
fn flat_text(content: &Value) -> Value {
    match content {
        Value::String(_) => content.clone(),
        Value::Array(items) => Value::String(
            items
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
        ),
        Value::Null => Value::String(String::new()),
        other => Value::String(other.to_string()),
    }
}

/// OpenAI chat messages.
fn chat_messages(messages: &Value) -> Vec<Value> {
    messages
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let role = role(m);
            if role == "tool" {
                let part = json!({
                    "type": "tool_call_response",
                    "id": m["tool_call_id"],
                    "response": flat_text(&m["content"]),
                });
                return message(role, vec![part]);
            }
            message(role, chat_parts(m))
        })
        .collect()
}

/// A chat message's content and tool calls as parts.
fn chat_parts(m: &Value) -> Vec<Value> {
    let mut parts = blocks(&m["content"]);
    for call in m["tool_calls"].as_array().into_iter().flatten() {
        parts.push(json!({
            "type": "tool_call",
            "id": call["id"],
            "name": call["function"]["name"],
            "arguments": arguments(&call["function"]["arguments"]),
        }));
    }
    parts
}

/// A content that is a string or a list of blocks (OpenAI's parts, Anthropic's blocks, the
/// Responses API's content items) as parts.
fn blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) => vec![text_part(s.clone())],
        Value::Array(items) => items.iter().map(block).collect(),
        _ => Vec::new(),
    }
}

fn block(b: &Value) -> Value {
    match b["type"].as_str().unwrap_or_default() {
        "text" | "input_text" | "output_text" => {
            text_part(b["text"].as_str().unwrap_or_default().into())
        }
        "thinking" => json!({"type": "reasoning", "content": b["thinking"]}),
        "reasoning_text" => json!({"type": "reasoning", "content": b["text"]}),
        "tool_use" => json!({
            "type": "tool_call",
            "id": b["id"],
            "name": b["name"],
            "arguments": b["input"],
        }),
        "tool_result" => json!({
            "type": "tool_call_response",
            "id": b["tool_use_id"],
            "response": flat_text(&b["content"]),
        }),
        _ => generic_part(&b["type"]),
    }
}

/// A Responses API `input` (or an answer's `output`): a string, or items.
fn responses_items(input: &Value) -> Vec<Value> {
    match input {
        Value::String(s) => vec![message("user", vec![text_part(s.clone())])],
        Value::Array(items) => items
            .iter()
            .map(|item| match item["type"].as_str() {
                Some("function_call") => message(
                    "assistant",
                    vec![json!({
                        "type": "tool_call",
                        "id": item["call_id"],
                        "name": item["name"],
                        "arguments": arguments(&item["arguments"]),
                    })],
                ),
                Some("function_call_output") => message(
                    "tool",
                    vec![json!({
                        "type": "tool_call_response",
                        "id": item["call_id"],
                        "response": flat_text(&item["output"]),
                    })],
                ),
                Some("reasoning") => message(
                    "assistant",
                    item["content"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(block)
                        .collect(),
                ),
                Some("message") | None => message(
                    item["role"].as_str().unwrap_or("user"),
                    blocks(&item["content"]),
                ),
                Some(_) => message("user", vec![generic_part(&item["type"])]),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Keys whose string values are names and ids, kept whole when content is cut.
const KEPT: &[&str] = &["type", "role", "id", "name"];

/// `value` as JSON of at most `max_bytes` bytes: the text of its parts cut from the end until it
/// fits, then whole messages (or parts) left out from the end; `[]` when nothing fits.
pub fn capped(mut value: Value, max_bytes: usize) -> String {
    let mut text = value.to_string();
    if text.len() <= max_bytes {
        return text;
    }
    // Every byte cut from a string takes at least one byte out of its JSON.
    let mut over = text.len() - max_bytes;
    cut_from_end(&mut value, &mut over, false);
    text = value.to_string();
    while text.len() > max_bytes {
        match value.as_array_mut() {
            Some(items) if !items.is_empty() => {
                items.pop();
            }
            _ => return "[]".to_string(),
        }
        text = value.to_string();
    }
    text
}

/// Shortens the content strings under `value`, last first, by `over` bytes in all.
fn cut_from_end(value: &mut Value, over: &mut usize, kept: bool) {
    if *over == 0 {
        return;
    }
    match value {
        Value::String(s) if !kept => {
            let mut keep = s.len().saturating_sub(*over);
            while !s.is_char_boundary(keep) {
                keep -= 1;
            }
            *over = over.saturating_sub(s.len() - keep);
            s.truncate(keep);
        }
        Value::Array(items) => {
            for item in items.iter_mut().rev() {
                cut_from_end(item, over, false);
            }
        }
        Value::Object(members) => cut_members(members, over),
        _ => {}
    }
}

fn cut_members(members: &mut Map<String, Value>, over: &mut usize) {
    for (key, v) in members.iter_mut().rev() {
        cut_from_end(v, over, KEPT.contains(&key.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chat_messages_become_parts_with_tool_calls_and_results() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"42"}]}"#;
        let got = input(Format::Chat, body, 4096);
        assert_eq!(got.system_instructions, None);
        let v: Value = serde_json::from_str(&got.input_messages.unwrap()).unwrap();
        assert_eq!(
            v,
            json!([
                {"role":"system","parts":[{"type":"text","content":"Be brief."}]},
                {"role":"user","parts":[{"type":"text","content":"Hi"},{"type":"image_url"}]},
                {"role":"assistant","parts":[{"type":"tool_call","id":"c1","name":"f","arguments":{"x":1}}]},
                {"role":"tool","parts":[{"type":"tool_call_response","id":"c1","response":"42"}]}
            ])
        );
    }

    #[test]
    fn messages_and_responses_system_text_is_the_system_instructions() {
        let body = br#"{"model":"m","max_tokens":5,"system":"Be brief.","messages":[{"role":"user","content":"Hi"}]}"#;
        let got = input(Format::Messages, body, 4096);
        assert_eq!(
            got.system_instructions.as_deref(),
            Some(r#"[{"content":"Be brief.","type":"text"}]"#)
        );
        let body = br#"{"model":"m","instructions":"Be brief.","input":"Hi"}"#;
        let got = input(Format::Responses, body, 4096);
        assert_eq!(
            got.system_instructions.as_deref(),
            Some(r#"[{"content":"Be brief.","type":"text"}]"#)
        );
        assert_eq!(
            got.input_messages.as_deref(),
            Some(r#"[{"parts":[{"content":"Hi","type":"text"}],"role":"user"}]"#)
        );
    }

    #[test]
    fn whole_and_streamed_answers_become_output_messages() {
        let answer = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}]}"#;
        assert_eq!(
            output(Format::Chat, answer, 4096).as_deref(),
            Some(r#"[{"parts":[{"content":"Hello","type":"text"}],"role":"assistant"}]"#)
        );
        assert_eq!(
            streamed_output(vec!["Hel".into(), "lo".into()], 4096).as_deref(),
            Some(
                r#"[{"parts":[{"content":"Hel","type":"text"},{"content":"lo","type":"text"}],"role":"assistant"}]"#
            )
        );
    }

    #[test]
    fn long_content_is_cut_to_the_cap_and_stays_json() {
        let long = "é".repeat(10_000);
        let body = json!({"messages": [{"role": "user", "content": long}, {"role": "user", "content": "b"}]});
        let got = input(Format::Chat, body.to_string().as_bytes(), 200)
            .input_messages
            .unwrap();
        assert!(got.len() <= 200, "{}", got.len());
        let v: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v[0]["role"], "user");
        assert!(
            v[0]["parts"][0]["content"]
                .as_str()
                .unwrap()
                .starts_with("éé")
        );
    }

    proptest! {
        /// Whatever the body, reading it never panics, and every attribute is JSON within the cap.
        #[test]
        fn content_is_json_within_the_cap(
            body in prop_oneof![
                any::<Vec<u8>>(),
                "[ -~]{0,300}".prop_map(String::into_bytes),
                (".{0,80}", "[a-z_]{1,12}", ".{0,80}").prop_map(|(a, t, b)| json!({
                    "system": a, "instructions": [{"type": t, "text": b}], "input": [{"type": t, "content": a}],
                    "messages": [{"role": t, "content": [{"type": t, "text": b}], "tool_calls": [{"function": {"name": a, "arguments": b}}]}],
                    "choices": [{"message": {"content": a, "reasoning_content": b}}], "output": a,
                }).to_string().into_bytes()),
            ],
            cap in 2usize..400,
        ) {
            for format in [Format::Chat, Format::Messages, Format::Responses, Format::Prompt] {
                let got = input(format, &body, cap);
                for s in [got.system_instructions, got.input_messages].into_iter().flatten()
                    .chain(output(format, &body, cap))
                    .chain(streamed_output(vec![String::from_utf8_lossy(&body).into_owned()], cap))
                {
                    prop_assert!(s.len() <= cap);
                    prop_assert!(serde_json::from_str::<Value>(&s).is_ok());
                }
            }
        }
    }
}
