//! A fake of Google's Gemini API written from its public reference: `x-goog-api-key` (a bad key is a
//! 400 with reason `API_KEY_INVALID`, as Google answers), `models/{model}:generateContent`,
//! `:streamGenerateContent?alt=sse` (events separated by CRLF CRLF), `:embedContent` and
//! `:batchEmbedContents`; contents/parts validated, function responses must name an earlier call.

use bytes::Bytes;
use serde_json::{Value, json};

use super::fake_server::{Answer, Control, FakeServer, Say, Seen, base64_ok, decide, pieces_of};

pub async fn start(key: &str) -> FakeServer {
    FakeServer::start(Control::new(key, "gemini"), handle).await
}

pub fn error(code: u16, status: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": status}})
}

fn invalid(message: &str) -> Answer {
    Answer::json(400, &error(400, "INVALID_ARGUMENT", message))
}

pub const USAGE: (u64, u64, u64) = (20, 7, 4);

pub fn handle(s: &Seen, c: &Control) -> Answer {
    if s.header("x-goog-api-key") != Some(c.key.as_str()) {
        let mut e = error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
        );
        e["error"]["details"] = json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                        "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]);
        return Answer::json(400, &e);
    }
    let Some(rest) = s.path.strip_prefix("/v1beta/models/") else {
        return Answer::json(404, &error(404, "NOT_FOUND", "not found"));
    };
    let Some((model, method)) = rest.split_once(':') else {
        return Answer::json(404, &error(404, "NOT_FOUND", "not found"));
    };
    match method {
        "generateContent" => generate(s, c, model, false),
        "streamGenerateContent" if s.query == "alt=sse" => generate(s, c, model, true),
        "embedContent" => embed(s, model, false),
        "batchEmbedContents" => embed(s, model, true),
        _ => Answer::json(404, &error(404, "NOT_FOUND", "method not found")),
    }
}

fn embed(s: &Seen, model: &str, batch: bool) -> Answer {
    let requests: Vec<Value> = if batch {
        s.body["requests"].as_array().cloned().unwrap_or_default()
    } else {
        vec![s.body.clone()]
    };
    if requests.is_empty() {
        return invalid("requests must not be empty");
    }
    let mut out = Vec::new();
    for r in &requests {
        if r["model"] != format!("models/{model}") {
            return invalid("each request's model must match the URL");
        }
        let Some(text) = r["content"]["parts"][0]["text"].as_str() else {
            return invalid("content.parts[].text is required");
        };
        let dims = r["outputDimensionality"].as_u64().unwrap_or(4) as usize;
        let values: Vec<f64> = (0..dims).map(|i| (text.len() + i) as f64 / 100.0).collect();
        out.push(json!({"values": values}));
    }
    Answer::json(
        200,
        &if batch {
            json!({"embeddings": out})
        } else {
            json!({"embedding": out[0]})
        },
    )
}

fn generate(s: &Seen, c: &Control, model: &str, stream: bool) -> Answer {
    let b = &s.body;
    let Some(contents) = b["contents"].as_array().filter(|c| !c.is_empty()) else {
        return invalid("* GenerateContentRequest.contents: contents is not specified");
    };
    if !b["systemInstruction"].is_null() && !b["systemInstruction"]["parts"].is_array() {
        return invalid("systemInstruction.parts is required");
    }
    let mut called: Vec<String> = Vec::new();
    let mut images = 0;
    let mut last_result = None;
    for content in contents {
        let role = content["role"].as_str().unwrap_or("");
        if !matches!(role, "user" | "model") {
            return invalid("Please use a valid role: user, model.");
        }
        let Some(parts) = content["parts"].as_array().filter(|p| !p.is_empty()) else {
            return invalid("contents.parts must not be empty");
        };
        last_result = None;
        for p in parts {
            let fields: Vec<&String> = p
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            if fields.len() != 1 {
                return invalid("each part must set exactly one data field");
            }
            match fields[0].as_str() {
                "text" => {}
                "inlineData" => {
                    if !p["inlineData"]["mimeType"].is_string()
                        || !p["inlineData"]["data"].as_str().is_some_and(base64_ok)
                    {
                        return invalid("inlineData needs mimeType and base64 data");
                    }
                    images += 1;
                }
                "fileData" => {
                    if !p["fileData"]["mimeType"].is_string()
                        || !p["fileData"]["fileUri"].is_string()
                    {
                        return invalid("fileData needs mimeType and fileUri");
                    }
                    images += 1;
                }
                "functionCall" if role == "model" => {
                    called.push(p["functionCall"]["name"].as_str().unwrap_or("").into());
                }
                "functionResponse" if role == "user" => {
                    let name = p["functionResponse"]["name"].as_str().unwrap_or("");
                    if !called.iter().any(|c| c == name)
                        || !p["functionResponse"]["response"].is_object()
                    {
                        return invalid(
                            "functionResponse must answer an earlier functionCall with an object",
                        );
                    }
                    last_result = Some(p["functionResponse"]["response"].to_string());
                }
                other => return invalid(&format!("unknown part field {other}")),
            }
        }
    }
    let declarations = b["tools"][0]["functionDeclarations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for d in &declarations {
        if !d["name"].is_string() || d["parameters"].get("additionalProperties").is_some() {
            return invalid("function declaration: invalid schema");
        }
    }
    let first_tool = declarations.first().and_then(|d| d["name"].as_str());
    let say = decide(last_result.as_deref(), first_tool, images, &c.pieces);
    let usage = |final_: bool| {
        json!({"promptTokenCount": USAGE.0,
               "candidatesTokenCount": if final_ { USAGE.1 } else { 1 },
               "totalTokenCount": USAGE.0 + if final_ { USAGE.1 } else { 1 },
               "cachedContentTokenCount": USAGE.2})
    };
    let response = |parts: Value, finish: Option<&str>, final_: bool| {
        let mut cand = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if let Some(f) = finish {
            cand["finishReason"] = f.into();
        }
        json!({"candidates": [cand], "usageMetadata": usage(final_),
               "modelVersion": model, "responseId": "resp-gem-1"})
    };
    let parts = match &say {
        Say::Text(t) => json!([{"text": t}]),
        Say::Call { name, args } => json!([{"functionCall": {"name": name, "args": args}}]),
    };
    if !stream {
        return Answer::json(200, &response(parts, Some("STOP"), true));
    }
    let mut events: Vec<Value> = Vec::new();
    match &say {
        Say::Text(t) => {
            let pieces = pieces_of(t, &c.pieces);
            let n = pieces.len();
            for (i, p) in pieces.into_iter().enumerate() {
                let last = i + 1 == n;
                events.push(response(json!([{"text": p}]), last.then_some("STOP"), last));
            }
        }
        Say::Call { .. } => events.push(response(parts, Some("STOP"), true)),
    }
    Answer::Stream {
        content_type: "text/event-stream",
        frames: events
            .into_iter()
            .map(|e| Bytes::from(format!("data: {e}\r\n\r\n")))
            .collect(),
    }
}
