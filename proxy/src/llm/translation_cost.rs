//! What translating a Responses call for Anthropic costs next to translating a chat call, measured in
//! one process: the request read and written in Anthropic's format, and Anthropic's answer read and
//! written back in the caller's. Everything else on the path (admission, the connection, the upstream)
//! is the same for both, so this is the most the Responses format can add.
//!
//! Run with `cargo test -p tollgate-proxy --release --lib translation_cost -- --ignored --nocapture`.

use std::hint::black_box;
use std::time::Instant;

use serde_json::{Value, json};

use super::anthropic;
use super::chat::ChatRequest;
use super::openai::RequestDoc;
use super::responses::{self, Echo};

const ROUNDS: u32 = 20_000;

fn tools() -> Value {
    json!([{"name": "get_weather", "description": "Current weather in a city",
            "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}])
}

/// A chat call and the same call in the Responses format: a system prompt, three turns, one tool.
fn bodies() -> (Vec<u8>, Vec<u8>) {
    let t = &tools()[0];
    let chat = json!({"model": "claude", "max_tokens": 256, "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "What is the weather like in Paris today, and should I take an umbrella?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [{"id": "toolu_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Light rain, 14 degrees."}],
        "tools": [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                    "parameters": t["schema"]}}]});
    let responses = json!({"model": "claude", "max_output_tokens": 256,
        "instructions": "You are a helpful assistant. Answer briefly.",
        "input": [
            {"role": "user", "content": "What is the weather like in Paris today, and should I take an umbrella?"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
            {"type": "function_call", "call_id": "toolu_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "toolu_1", "output": "Light rain, 14 degrees."}],
        "tools": [{"type": "function", "name": t["name"], "description": t["description"],
                   "parameters": t["schema"]}]});
    (
        chat.to_string().into_bytes(),
        responses.to_string().into_bytes(),
    )
}

fn answer() -> Vec<u8> {
    json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude",
           "content": [{"type": "text", "text": "Light rain in Paris today, 14 degrees: take an umbrella."}],
           "stop_reason": "end_turn", "stop_sequence": null,
           "usage": {"input_tokens": 120, "output_tokens": 18}})
    .to_string()
    .into_bytes()
}

/// Nanoseconds per call of `f`, best of three runs.
fn time(mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ROUNDS {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(ROUNDS)
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
#[ignore = "a measurement: run it in release with --ignored --nocapture"]
fn translation_cost() {
    let (chat, responses_body) = bodies();
    let upstream = answer();
    // Both callers' bodies are first read by the gateway's top-level scan (`RequestDoc`).
    let chat_request = time(|| {
        let _doc = RequestDoc::parse(black_box(&chat)).unwrap();
        let v: Value = serde_json::from_slice(&chat).unwrap();
        let req = ChatRequest::from_openai(&v).unwrap();
        black_box(serde_json::to_vec(&anthropic::build_request(&req, "claude", false)).unwrap());
    });
    let chat_answer = time(|| {
        let a: Value = serde_json::from_slice(black_box(&upstream)).unwrap();
        let answer = anthropic::read_response(&a, "claude").unwrap();
        black_box(answer.to_openai().to_string());
    });
    let responses_request = time(|| {
        let _doc = RequestDoc::parse(black_box(&responses_body)).unwrap();
        let v: Value = serde_json::from_slice(&responses_body).unwrap();
        let req = responses::to_chat_request(&v).unwrap();
        black_box(serde_json::to_vec(&anthropic::build_request(&req, "claude", false)).unwrap());
    });
    let doc = RequestDoc::parse(&responses_body).unwrap();
    let responses_answer = time(|| {
        let a: Value = serde_json::from_slice(black_box(&upstream)).unwrap();
        let answer = anthropic::read_response(&a, "claude").unwrap();
        let echo = Echo::read(&doc);
        black_box(responses::answer_to_response(&answer, &echo));
    });
    let chat_ns = chat_request + chat_answer;
    let responses_ns = responses_request + responses_answer;
    println!(
        "translation for Anthropic per call (ns): chat {chat_ns:.0} (request {chat_request:.0}, answer \
         {chat_answer:.0}); responses {responses_ns:.0} (request {responses_request:.0}, answer \
         {responses_answer:.0}); ratio {:.2}",
        responses_ns / chat_ns
    );
}
