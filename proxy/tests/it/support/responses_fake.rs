//! A fake of OpenAI's Responses API (`POST /v1/responses`) written from its public reference:
//! `Authorization: Bearer`, the request validated (model, `input` as a string or items, function tools
//! with names, `function_call_output` naming a call, `text.format`), answers as `response` objects
//! with `message` and `function_call` output items, or the event sequence (`response.created`,
//! `response.in_progress`, `response.output_item.added`, `response.content_part.added`,
//! `response.output_text.delta`, `response.function_call_arguments.delta`, the `….done` events,
//! `response.completed`), each with `type` and `sequence_number`. Errors use `{"error":{...}}`.

use bytes::Bytes;
use serde_json::{Value, json};

use super::fake_server::{Answer, Control, FakeServer, Say, Seen, decide, pieces_of};

/// Usage every answer reports: input, output, cached input.
pub const USAGE: (u64, u64, u64) = (13, 6, 4);

pub async fn start(key: &str) -> FakeServer {
    FakeServer::start(Control::new(key, "openai"), handle).await
}

fn error(status: u16, code: &str, param: Option<&str>, message: &str) -> Answer {
    Answer::json(
        status,
        &json!({"error": {"message": message, "type": "invalid_request_error",
                          "param": param, "code": code}}),
    )
}

fn invalid(param: &str, message: &str) -> Answer {
    error(400, "invalid_value", Some(param), message)
}

fn handle(s: &Seen, c: &Control) -> Answer {
    if s.header("authorization") != Some(format!("Bearer {}", c.key).as_str()) {
        return error(401, "invalid_api_key", None, "Incorrect API key provided.");
    }
    if s.method != "POST" || s.path != "/v1/responses" {
        return error(404, "unknown_url", None, "Invalid URL");
    }
    let b = &s.body;
    let Some(model) = b["model"].as_str() else {
        return error(
            400,
            "missing_required_parameter",
            Some("model"),
            "Missing required parameter: 'model'.",
        );
    };
    if let Some(prev) = b["previous_response_id"].as_str()
        && !prev.starts_with("resp_")
    {
        return error(
            404,
            "previous_response_not_found",
            Some("previous_response_id"),
            "Previous response not found.",
        );
    }
    let items: Vec<Value> = match &b["input"] {
        Value::String(t) => vec![json!({"role": "user", "content": t})],
        Value::Array(items) => items.clone(),
        _ => return invalid("input", "Invalid type for 'input'."),
    };
    let mut calls: Vec<String> = Vec::new();
    let mut last_output = None;
    for item in &items {
        match item["type"].as_str().unwrap_or("message") {
            "message" => {
                if !matches!(
                    item["role"].as_str(),
                    Some("user" | "assistant" | "system" | "developer")
                ) {
                    return invalid("input", "Invalid value for 'role'.");
                }
                last_output = None;
            }
            "function_call" => {
                if !item["call_id"].is_string()
                    || !item["name"].is_string()
                    || !item["arguments"].is_string()
                {
                    return invalid(
                        "input",
                        "A function_call needs call_id, name and arguments.",
                    );
                }
                calls.push(item["call_id"].as_str().unwrap().to_string());
            }
            "function_call_output" => {
                let id = item["call_id"].as_str().unwrap_or("");
                if !calls.iter().any(|c| c == id) {
                    return invalid(
                        "input",
                        &format!("No tool call found for function call output with call_id {id}."),
                    );
                }
                last_output = item["output"].as_str().map(str::to_string);
            }
            "reasoning" => {}
            _ => return invalid("input", "Invalid input item type."),
        }
    }
    let tools = b["tools"].as_array().cloned().unwrap_or_default();
    for t in &tools {
        if t["type"] == "function" && !t["name"].is_string() {
            return error(
                400,
                "missing_required_parameter",
                Some("tools[0].name"),
                "Missing required parameter: 'tools[0].name'.",
            );
        }
    }
    let format = b["text"]["format"]["type"].as_str().unwrap_or("text");
    if format == "json_schema" && !b["text"]["format"]["schema"].is_object() {
        return invalid("text.format.schema", "Missing schema.");
    }
    let first_tool = tools.first().and_then(|t| t["name"].as_str());
    let mut say = decide(last_output.as_deref(), first_tool, 0, &c.pieces);
    if format == "json_schema" && matches!(say, Say::Text(_)) && last_output.is_none() {
        say = Say::Text(json!({"city": "Paris"}).to_string());
    }
    let store = b["store"].as_bool().unwrap_or(true);
    let response = |status: &str, output: Vec<Value>, usage: Value| {
        json!({"id": "resp_fake01", "object": "response", "created_at": 1_741_476_542,
               "status": status, "error": null, "incomplete_details": null,
               "instructions": b["instructions"], "max_output_tokens": b["max_output_tokens"],
               "model": model, "output": output, "parallel_tool_calls": true,
               "previous_response_id": b["previous_response_id"], "store": store,
               "temperature": 1.0, "text": {"format": {"type": format}},
               "tool_choice": b["tool_choice"].as_str().unwrap_or("auto"), "tools": tools,
               "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": null,
               "metadata": {}})
    };
    let usage = json!({"input_tokens": USAGE.0, "input_tokens_details": {"cached_tokens": USAGE.2},
                       "output_tokens": USAGE.1, "output_tokens_details": {"reasoning_tokens": 0},
                       "total_tokens": USAGE.0 + USAGE.1});
    let item = match &say {
        Say::Text(t) => json!({"type": "message", "id": "msg_fake01", "status": "completed",
            "role": "assistant", "content": [{"type": "output_text", "text": t, "annotations": []}]}),
        Say::Call { name, args } => json!({"type": "function_call", "id": "fc_fake01",
            "call_id": "call_fake01", "name": name, "arguments": args.to_string(),
            "status": "completed"}),
    };
    if b["stream"] != json!(true) {
        return Answer::json(200, &response("completed", vec![item], usage));
    }
    let mut seq = 0;
    let mut frames = Vec::new();
    let mut event = |name: &str, mut data: Value| {
        data["type"] = name.into();
        data["sequence_number"] = seq.into();
        seq += 1;
        frames.push(Bytes::from(format!("event: {name}\ndata: {data}\n\n")));
    };
    let started = response("in_progress", vec![], Value::Null);
    event("response.created", json!({"response": started}));
    event("response.in_progress", json!({"response": started}));
    match &say {
        Say::Text(t) => {
            event(
                "response.output_item.added",
                json!({"output_index": 0, "item": {"type": "message", "id": "msg_fake01",
                       "status": "in_progress", "role": "assistant", "content": []}}),
            );
            let at = json!({"item_id": "msg_fake01", "output_index": 0, "content_index": 0});
            let with = |extra: Value| {
                let mut v = at.clone();
                v.as_object_mut()
                    .unwrap()
                    .extend(extra.as_object().unwrap().clone());
                v
            };
            event(
                "response.content_part.added",
                with(json!({"part": {"type": "output_text", "text": "", "annotations": []}})),
            );
            for p in pieces_of(t, &c.pieces) {
                event(
                    "response.output_text.delta",
                    with(json!({"delta": p, "logprobs": []})),
                );
            }
            event(
                "response.output_text.done",
                with(json!({"text": t, "logprobs": []})),
            );
            event(
                "response.content_part.done",
                with(json!({"part": {"type": "output_text", "text": t, "annotations": []}})),
            );
        }
        Say::Call { name, args } => {
            let mut added = item.clone();
            added["arguments"] = "".into();
            added["status"] = "in_progress".into();
            event(
                "response.output_item.added",
                json!({"output_index": 0, "item": added}),
            );
            let text = args.to_string();
            let (a, b) = text.split_at(text.len() / 2);
            for part in [a, b] {
                event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": "fc_fake01", "output_index": 0, "delta": part}),
                );
            }
            event(
                "response.function_call_arguments.done",
                json!({"item_id": "fc_fake01", "output_index": 0, "name": name,
                       "arguments": text}),
            );
        }
    }
    event(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
    );
    event(
        "response.completed",
        json!({"response": response("completed", vec![item.clone()], usage)}),
    );
    Answer::Stream {
        content_type: "text/event-stream; charset=utf-8",
        frames,
    }
}
