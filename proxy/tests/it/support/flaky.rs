//! An OpenAI-shaped upstream that misbehaves on command: answers with a status, hangs, breaks its
//! answer after the first byte, or refuses some API keys. Every request is numbered in one sequence
//! shared by all flaky upstreams of a test, so the order of attempts across backends can be asserted.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::json;

use super::fake_server::{Body, Seen, json_response, paced, serve};

/// What the upstream does with the next requests.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// A normal answer (JSON, or SSE when `stream` is true).
    Ok,
    /// An OpenAI error body with this status.
    Status(u16),
    /// Never answers (until the test ends).
    Hang,
    /// Sends the headers and the first chunk, then breaks the connection.
    BreakAfterFirstByte,
}

/// A running flaky upstream.
pub struct Flaky {
    pub tag: String,
    addr: std::net::SocketAddr,
    state: State,
}

/// The order in which requests reached any flaky upstream of a test.
#[derive(Clone, Default)]
pub struct Sequence(Arc<AtomicU64>);

/// What the answering side shares with the test's handle.
#[derive(Clone)]
struct State {
    tag: String,
    mode: Arc<Mutex<Mode>>,
    /// Keys answered with this status instead (e.g. 401, 429).
    refused_keys: Arc<Mutex<HashMap<String, u16>>>,
    /// `(sequence number, presented key)` of every request received.
    hits: Arc<Mutex<Vec<(u64, String)>>>,
    sequence: Sequence,
}

impl Flaky {
    pub async fn start(tag: &str, sequence: &Sequence) -> Self {
        let state = State {
            tag: tag.to_string(),
            mode: Arc::new(Mutex::new(Mode::Ok)),
            refused_keys: Arc::default(),
            hits: Arc::default(),
            sequence: sequence.clone(),
        };
        let serving = state.clone();
        let addr = serve(move |req| answer(serving.clone(), req)).await;
        Self {
            tag: tag.to_string(),
            addr,
            state,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn refuse_key(&self, key: &str, status: u16) {
        self.state
            .refused_keys
            .lock()
            .unwrap()
            .insert(key.into(), status);
    }

    pub fn hits(&self) -> usize {
        self.state.hits.lock().unwrap().len()
    }

    /// Sequence numbers of the requests this upstream received.
    pub fn sequence_numbers(&self) -> Vec<u64> {
        let hits = self.state.hits.lock().unwrap();
        hits.iter().map(|(n, _)| *n).collect()
    }

    /// Keys presented, in order.
    pub fn keys(&self) -> Vec<String> {
        let hits = self.state.hits.lock().unwrap();
        hits.iter().map(|(_, k)| k.clone()).collect()
    }
}

fn error(status: u16) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {"message": format!("flaky upstream says {status}"),
            "type": "server_error", "param": null, "code": null}}),
    )
}

/// Frames 100 ms apart, so each one is on the wire before the next.
const FRAME_GAP: Duration = Duration::from_millis(100);

async fn answer(state: State, req: Request<Incoming>) -> Response<Body> {
    let key = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_start_matches("Bearer ")
        .to_string();
    // Numbered on arrival, before the body is read, so the order is the order of attempts.
    let n = state.sequence.0.fetch_add(1, Ordering::SeqCst);
    state.hits.lock().unwrap().push((n, key.clone()));
    let body = Seen::read(req).await.body;
    if let Some(&status) = state.refused_keys.lock().unwrap().get(&key) {
        return error(status);
    }
    let mode = state.mode.lock().unwrap().clone();
    let stream = body["stream"] == json!(true);
    let model = body["model"].as_str().unwrap_or("").to_string();
    let completion = json!({
        "id": "chatcmpl-flaky", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("from-{}", state.tag)},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    });
    let chunk = |content: &str| {
        let c = json!({"id": "chatcmpl-flaky", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
        Bytes::from(format!("data: {c}\n\n"))
    };
    let broke = || Err(io::Error::other("upstream broke"));
    let frames = |content_type: &str, frames| paced(content_type, frames, FRAME_GAP, || {}, |_| {});
    match mode {
        Mode::Status(status) => error(status),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            error(504)
        }
        Mode::Ok if stream => frames(
            "text/event-stream",
            vec![
                Ok(chunk(&format!("from-{}", state.tag))),
                Ok(Bytes::from_static(b"data: [DONE]\n\n")),
            ],
        ),
        Mode::Ok => json_response(200, &completion),
        Mode::BreakAfterFirstByte if stream => {
            frames("text/event-stream", vec![Ok(chunk("first")), broke()])
        }
        Mode::BreakAfterFirstByte => {
            let text = completion.to_string();
            let half = Bytes::from(text[..text.len() / 2].to_string());
            frames("application/json", vec![Ok(half), broke()])
        }
    }
}
