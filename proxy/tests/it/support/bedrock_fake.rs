//! A fake of AWS Bedrock's Converse API written from its public reference: every request's SigV4
//! signature is verified (or a Bedrock API key accepted as a bearer token), `/model/{id}/converse`
//! answers JSON, `/model/{id}/converse-stream` answers the binary event stream, framed here with an
//! encoder of its own (prelude, CRC-32s, string headers); errors are `{"message"}` with
//! `x-amzn-ErrorType`.

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tollgate_proxy::sigv4;

use super::fake_server::{Answer, Control, FakeServer, Say, Seen, base64_ok, decide, pieces_of};

pub const ACCESS_KEY_ID: &str = "AKIDFAKEBEDROCK01";
pub const REGION: &str = "eu-west-3";

/// `control.key` is `ACCESS_KEY_ID:SECRET[:TOKEN]` or a Bedrock API key.
pub async fn start(key: &str) -> FakeServer {
    FakeServer::start(Control::new(key, "bedrock"), handle).await
}

fn error(status: u16, kind: &str, message: &str) -> Answer {
    Answer::json(status, &json!({"message": message})).with_header("x-amzn-errortype", kind)
}

fn invalid(message: &str) -> Answer {
    error(400, "ValidationException", message)
}

/// Checks the request's signature by recomputing it from the signed headers.
fn verify(s: &Seen, credential: &str) -> Result<(), String> {
    let parts: Vec<&str> = credential.split(':').collect();
    if parts.len() < 2 {
        // A Bedrock API key: a bearer token.
        return match s.header("authorization") {
            Some(v) if v == format!("Bearer {credential}") => Ok(()),
            _ => Err("bad bearer token".into()),
        };
    }
    let (id, secret, token) = (parts[0], parts[1], parts.get(2).copied());
    let auth = s.header("authorization").ok_or("no Authorization")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let mut fields = rest.split(", ");
    let scope = fields.next().ok_or("no scope")?;
    let signed = fields
        .next()
        .and_then(|f| f.strip_prefix("SignedHeaders="))
        .ok_or("no SignedHeaders")?;
    let signature = fields
        .next()
        .and_then(|f| f.strip_prefix("Signature="))
        .ok_or("no Signature")?;
    let scope_parts: Vec<&str> = scope.split('/').collect();
    if scope_parts.len() != 5
        || scope_parts[0] != id
        || scope_parts[2] != REGION
        || scope_parts[3] != "bedrock"
        || scope_parts[4] != "aws4_request"
    {
        return Err(format!("bad credential scope {scope}"));
    }
    let amz_date = s.header("x-amz-date").ok_or("no x-amz-date")?;
    if !amz_date.starts_with(scope_parts[1]) {
        return Err("date does not match scope".into());
    }
    for required in ["host", "x-amz-date", "content-type"] {
        if !signed.split(';').any(|h| h == required) {
            return Err(format!("{required} is not signed"));
        }
    }
    if let Some(t) = token
        && (s.header("x-amz-security-token") != Some(t)
            || !signed.split(';').any(|h| h == "x-amz-security-token"))
    {
        return Err("session token missing or unsigned".into());
    }
    let headers: Vec<(String, String)> = signed
        .split(';')
        .map(|h| (h.to_string(), s.header(h).unwrap_or("").to_string()))
        .collect();
    let payload = hex::encode(Sha256::digest(&s.raw));
    let (canonical, _) = sigv4::canonical_request(&s.method, &s.path, &s.query, &headers, &payload);
    let credential_scope = scope_parts[1..].join("/");
    let to_sign = sigv4::string_to_sign(amz_date, &credential_scope, &canonical);
    let key = sigv4::signing_key(secret, scope_parts[1], REGION, "bedrock");
    let want = hex::encode(sigv4::hmac_sha256(&key, to_sign.as_bytes()));
    if want != signature {
        return Err(
            "The request signature we calculated does not match the signature you provided.".into(),
        );
    }
    Ok(())
}

fn handle(s: &Seen, c: &Control) -> Answer {
    if let Err(why) = verify(s, &c.key) {
        return error(403, "InvalidSignatureException", &why);
    }
    let Some(rest) = s.path.strip_prefix("/model/") else {
        return error(404, "UnknownOperationException", "unknown operation");
    };
    let (model, op) = rest.split_once('/').unwrap_or((rest, ""));
    let stream = match op {
        "converse" => false,
        "converse-stream" => true,
        _ => return error(404, "UnknownOperationException", "unknown operation"),
    };
    let model = model.replace("%3A", ":");
    let b = &s.body;
    let Some(messages) = b["messages"].as_array().filter(|m| !m.is_empty()) else {
        return invalid("messages must not be empty");
    };
    let mut tool_ids: Vec<String> = Vec::new();
    let mut images = 0;
    let mut last_result = None;
    for m in messages {
        let role = m["role"].as_str().unwrap_or("");
        if !matches!(role, "user" | "assistant") {
            return invalid("role must be user or assistant");
        }
        let Some(content) = m["content"].as_array().filter(|c| !c.is_empty()) else {
            return invalid("content must not be empty");
        };
        last_result = None;
        for block in content {
            let keys: Vec<&String> = block
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            if keys.len() != 1 {
                return invalid("a content block has exactly one member");
            }
            match keys[0].as_str() {
                "text" => {}
                "image" => {
                    let img = &block["image"];
                    if !matches!(
                        img["format"].as_str(),
                        Some("png" | "jpeg" | "gif" | "webp")
                    ) || !img["source"]["bytes"].as_str().is_some_and(base64_ok)
                    {
                        return invalid("image needs a format and base64 source.bytes");
                    }
                    images += 1;
                }
                "toolUse" if role == "assistant" => {
                    if !block["toolUse"]["input"].is_object() {
                        return invalid("toolUse.input must be an object");
                    }
                    tool_ids.push(block["toolUse"]["toolUseId"].as_str().unwrap_or("").into());
                }
                "toolResult" if role == "user" => {
                    let id = block["toolResult"]["toolUseId"].as_str().unwrap_or("");
                    if !tool_ids.iter().any(|t| t == id) {
                        return invalid("toolResult does not match a toolUse");
                    }
                    last_result = block["toolResult"]["content"][0]["text"]
                        .as_str()
                        .map(str::to_string);
                }
                other => return invalid(&format!("unexpected content block {other}")),
            }
        }
    }
    let tools = b["toolConfig"]["tools"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for t in &tools {
        if !t["toolSpec"]["name"].is_string() || !t["toolSpec"]["inputSchema"]["json"].is_object() {
            return invalid("toolSpec needs name and inputSchema.json");
        }
    }
    let first_tool = tools.first().and_then(|t| t["toolSpec"]["name"].as_str());
    let say = decide(last_result.as_deref(), first_tool, images, &c.pieces);
    let usage = json!({"inputTokens": 30, "outputTokens": 9, "totalTokens": 39});
    let _ = model;
    if !stream {
        let (content, stop) = match &say {
            Say::Text(t) => (json!([{"text": t}]), "end_turn"),
            Say::Call { name, args } => (
                json!([{"toolUse": {"toolUseId": "tooluse_B1", "name": name, "input": args}}]),
                "tool_use",
            ),
        };
        return Answer::json(
            200,
            &json!({"output": {"message": {"role": "assistant", "content": content}},
                    "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 12}}),
        );
    }
    let mut frames = vec![event("messageStart", json!({"role": "assistant"}))];
    let stop = match &say {
        Say::Text(t) => {
            for p in pieces_of(t, &c.pieces) {
                frames.push(event(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"text": p}}),
                ));
            }
            frames.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
            "end_turn"
        }
        Say::Call { name, args } => {
            frames.push(event(
                "contentBlockStart",
                json!({"contentBlockIndex": 0,
                "start": {"toolUse": {"toolUseId": "tooluse_B1", "name": name}}}),
            ));
            let text = args.to_string();
            let (a, b) = text.split_at(text.len() / 2);
            for part in [a, b] {
                frames.push(event(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0,
                    "delta": {"toolUse": {"input": part}}}),
                ));
            }
            frames.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
            "tool_use"
        }
    };
    frames.push(event("messageStop", json!({"stopReason": stop})));
    frames.push(event(
        "metadata",
        json!({"usage": usage, "metrics": {"latencyMs": 12}}),
    ));
    Answer::Stream {
        content_type: "application/vnd.amazon.eventstream",
        frames,
    }
}

/// One event-stream message with the three string headers ConverseStream sends.
pub fn event(kind: &str, mut payload: Value) -> Bytes {
    // ConverseStream pads events with a `p` field; clients must ignore it.
    payload["p"] = "abcdefgh".into();
    frame(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

/// An exception message in the stream.
pub fn exception(kind: &str, message: &str) -> Bytes {
    frame(
        &[
            (":exception-type", kind),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        json!({"message": message}).to_string().as_bytes(),
    )
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 16 + h.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude = crc32(&out);
    out.extend_from_slice(&prelude.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}
