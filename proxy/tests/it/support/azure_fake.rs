//! A fake of Azure OpenAI written from its public reference: `api-key` header,
//! `/openai/deployments/{deployment}/chat/completions|embeddings?api-version=…`, OpenAI's shapes.
//! The same chat answers (tool calls included) are also served OpenAI-style at `/v1/chat/completions`
//! with `Authorization: Bearer`, for OpenAI-compatible backends of Anthropic-format callers.

use bytes::Bytes;
use serde_json::{Value, json};

use super::fake_server::{Answer, Control, FakeServer, Say, Seen, decide, pieces_of};

pub async fn start(key: &str) -> FakeServer {
    FakeServer::start(Control::new(key, "azure"), handle).await
}

pub async fn start_openai(key: &str) -> FakeServer {
    FakeServer::start(Control::new(key, "openai"), handle_openai).await
}

fn handle_openai(s: &Seen, c: &Control) -> Answer {
    if s.header("authorization") != Some(format!("Bearer {}", c.key).as_str()) {
        return error(401, "invalid_api_key", "Incorrect API key provided.");
    }
    if s.path != "/v1/chat/completions" {
        return error(404, "unknown_url", "Invalid URL");
    }
    let model = s.body["model"].as_str().unwrap_or("").to_string();
    chat(s, c, &model)
}

fn error(status: u16, code: &str, message: &str) -> Answer {
    Answer::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn handle(s: &Seen, c: &Control) -> Answer {
    if s.header("api-key") != Some(c.key.as_str()) {
        return error(
            401,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint.",
        );
    }
    let Some(version) = s.query.strip_prefix("api-version=") else {
        return error(404, "404", "Resource not found");
    };
    let Some(rest) = s.path.strip_prefix("/openai/deployments/") else {
        return error(404, "404", "Resource not found");
    };
    let (deployment, op) = rest.split_once('/').unwrap_or((rest, ""));
    let model = format!("{deployment}@{version}");
    match op {
        "chat/completions" => chat(s, c, &model),
        "embeddings" => {
            let n = s.body["input"].as_array().map_or(1, Vec::len);
            let data: Vec<Value> = (0..n)
                .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.5, -0.5]}))
                .collect();
            Answer::json(
                200,
                &json!({"object": "list", "data": data, "model": model,
                        "usage": {"prompt_tokens": 3 * n, "total_tokens": 3 * n}}),
            )
        }
        _ => error(404, "404", "Resource not found"),
    }
}

fn chat(s: &Seen, c: &Control, model: &str) -> Answer {
    let messages = s.body["messages"].as_array().cloned().unwrap_or_default();
    if messages.is_empty() {
        return error(400, "BadRequest", "'messages' is a required property");
    }
    let last_result = messages
        .last()
        .filter(|m| m["role"] == "tool")
        .and_then(|m| m["content"].as_str());
    let first_tool = s.body["tools"][0]["function"]["name"].as_str();
    let say = decide(last_result, first_tool, 0, &c.pieces);
    let usage = json!({"prompt_tokens": 13, "completion_tokens": 6, "total_tokens": 19});
    // Reasoning models of OpenAI-compatible providers (DeepSeek, vLLM…) show their reasoning apart.
    let reasoning = s.body["reasoning_effort"].is_string();
    let (mut message, finish) = match &say {
        Say::Text(t) => (json!({"role": "assistant", "content": t}), "stop"),
        Say::Call { name, args } => (
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_az1", "type": "function", "function": {"name": name, "arguments": args.to_string()}}]}),
            "tool_calls",
        ),
    };
    if reasoning {
        message["reasoning_content"] = c.thought.concat().into();
    }
    if s.body["stream"] != json!(true) {
        return Answer::json(
            200,
            &json!({"id": "chatcmpl-az", "object": "chat.completion", "created": 1, "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage}),
        );
    }
    let include_usage = s.body["stream_options"]["include_usage"] == json!(true);
    let chunk = |choices: Value, u: Option<&Value>| {
        let mut v = json!({"id": "chatcmpl-az", "object": "chat.completion.chunk", "created": 1,
                           "model": model, "choices": choices});
        if include_usage {
            v["usage"] = u.cloned().unwrap_or(Value::Null);
        }
        Bytes::from(format!("data: {v}\n\n"))
    };
    let mut frames = vec![chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}}]),
        None,
    )];
    if reasoning {
        for p in &c.thought {
            frames.push(chunk(
                json!([{"index": 0, "delta": {"reasoning_content": p}}]),
                None,
            ));
        }
    }
    if let Say::Text(t) = &say {
        for p in pieces_of(t, &c.pieces) {
            frames.push(chunk(json!([{"index": 0, "delta": {"content": p}}]), None));
        }
    } else {
        let mut call = message["tool_calls"][0].clone();
        call["index"] = 0.into();
        frames.push(chunk(
            json!([{"index": 0, "delta": {"tool_calls": [call]}}]),
            None,
        ));
    }
    frames.push(chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
        None,
    ));
    if include_usage {
        frames.push(chunk(json!([]), Some(&usage)));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    Answer::Stream {
        content_type: "text/event-stream",
        frames,
    }
}
