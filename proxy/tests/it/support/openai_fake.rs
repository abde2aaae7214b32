//! A protocol-faithful fake of OpenAI's API, written from the public API reference, that records what
//! arrives: the chat completion object, `chat.completion.chunk` events on `data: ` lines ending with
//! `data: [DONE]`, the embeddings list, and the `{"error":{...}}` shape for failures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::fake_server::{Body, Seen, json_response, paced, serve};

/// How the fake answers.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Put into every answer's content (and `system_fingerprint`) to tell fakes apart.
    pub tag: String,
    /// The only credential accepted, as `Authorization: Bearer <key>`.
    pub key: String,
    /// Answer every call with this status and an OpenAI error body.
    pub fail_with: Option<u16>,
    /// Status of a successful whole chat answer (providers may answer 201 or 203).
    pub success_status: u16,
    /// Delay before the response headers.
    pub latency: Duration,
    /// Content chunks per stream.
    pub stream_chunks: usize,
    /// Delay between stream chunks.
    pub chunk_interval: Duration,
    /// Text the fake quotes in its 400 messages and in an error event that cuts its streams short
    /// after the first word, as a provider quoting the key it was sent would.
    pub quote: Option<String>,
    /// The embedding of an input text, when the test decides it (else `[0.25, -0.5, 0.75]`).
    pub vectors: Vec<(String, Vec<f64>)>,
}

impl Behaviour {
    pub fn new(tag: &str, key: &str) -> Self {
        Self {
            tag: tag.into(),
            key: key.into(),
            fail_with: None,
            success_status: 200,
            latency: Duration::ZERO,
            stream_chunks: 3,
            chunk_interval: Duration::ZERO,
            quote: None,
            vectors: Vec::new(),
        }
    }
}

/// A running fake.
pub struct OpenAiFake {
    addr: std::net::SocketAddr,
    pub behaviour: Arc<Mutex<Behaviour>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Streams whose reader went away before the last chunk.
    pub streams_cut: Arc<AtomicUsize>,
    /// Streams sent to the end.
    pub streams_finished: Arc<AtomicUsize>,
    /// Signalled whenever a stream is cut.
    pub cut_notify: Arc<Notify>,
}

/// What the answering side shares with the test's handle.
#[derive(Clone)]
struct State {
    behaviour: Arc<Mutex<Behaviour>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    streams_cut: Arc<AtomicUsize>,
    streams_finished: Arc<AtomicUsize>,
    cut_notify: Arc<Notify>,
}

impl OpenAiFake {
    /// `http://127.0.0.1:<port>/v1`, what a provider's endpoint is set to.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub async fn start(behaviour: Behaviour) -> Self {
        let state = State {
            behaviour: Arc::new(Mutex::new(behaviour)),
            seen: Arc::default(),
            streams_cut: Arc::default(),
            streams_finished: Arc::default(),
            cut_notify: Arc::default(),
        };
        let serving = state.clone();
        let addr = serve(move |req| answer(serving.clone(), req)).await;
        Self {
            addr,
            behaviour: state.behaviour,
            seen: state.seen,
            streams_cut: state.streams_cut,
            streams_finished: state.streams_finished,
            cut_notify: state.cut_notify,
        }
    }
}

fn error(status: u16, kind: &str, code: Option<&str>, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

async fn answer(state: State, req: Request<Incoming>) -> Response<Body> {
    let b = state.behaviour.lock().unwrap().clone();
    let seen = Seen::read(req).await;
    state.seen.lock().unwrap().push(seen.clone());
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    if let Some(status) = b.fail_with {
        return error(
            status,
            "server_error",
            None,
            "The server had an error while processing your request.",
        );
    }
    if seen.header("authorization") != Some(format!("Bearer {}", b.key).as_str()) {
        return error(
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided: sk-ab***yz.",
        );
    }
    let body = &seen.body;
    let model = body["model"].as_str().unwrap_or("").to_string();
    match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/v1/chat/completions") => {
            if body["messages"].as_array().is_none_or(|m| m.is_empty()) {
                let quoted = b.quote.as_ref().map(|q| format!("; key {q} was used"));
                return error(
                    400,
                    "invalid_request_error",
                    None,
                    &format!(
                        "'messages' is a required property{}",
                        quoted.unwrap_or_default()
                    ),
                );
            }
            if body["stream"] == json!(true) {
                stream(
                    state,
                    b,
                    model,
                    body["stream_options"]["include_usage"] == json!(true),
                )
            } else {
                json_response(b.success_status, &completion(&b, &model))
            }
        }
        ("POST", "/v1/embeddings") => {
            let inputs = match &body["input"] {
                Value::Array(items) => items.clone(),
                one => vec![one.clone()],
            };
            let n = inputs.len();
            let data: Vec<Value> = inputs
                .iter()
                .enumerate()
                .map(|(i, input)| {
                    let vector = b
                        .vectors
                        .iter()
                        .find(|(text, _)| input.as_str() == Some(text))
                        .map_or_else(|| vec![0.25, -0.5, 0.75], |(_, v)| v.clone());
                    json!({"object": "embedding", "index": i, "embedding": vector})
                })
                .collect();
            json_response(
                200,
                &json!({"object": "list", "data": data, "model": model,
                        "usage": {"prompt_tokens": 4 * n, "total_tokens": 4 * n}}),
            )
        }
        (method, path) => error(
            404,
            "invalid_request_error",
            None,
            &format!("Invalid URL ({method} {path})"),
        ),
    }
}

fn words(b: &Behaviour) -> Vec<String> {
    (0..b.stream_chunks.max(1))
        .map(|i| {
            if i == 0 {
                format!("from-{}", b.tag)
            } else {
                format!(" w{i}")
            }
        })
        .collect()
}

fn completion(b: &Behaviour, model: &str) -> Value {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": format!("fp_{}", b.tag),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": words(b).concat(), "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    })
}

fn stream(state: State, b: Behaviour, model: String, include_usage: bool) -> Response<Body> {
    let fingerprint = format!("fp_{}", b.tag);
    let chunk = move |choices: Value, usage: Option<Value>| {
        let mut c = json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "system_fingerprint": fingerprint, "choices": choices
        });
        if include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        Bytes::from(format!("data: {c}\n\n"))
    };
    let mut events = vec![chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
        None,
    )];
    for w in words(&b) {
        events.push(chunk(
            json!([{"index": 0, "delta": {"content": w}, "logprobs": null, "finish_reason": null}]),
            None,
        ));
        if let Some(quote) = &b.quote {
            let error = json!({"error": {"message": format!("Key {quote} is over its quota."),
                "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}});
            events.push(Bytes::from(format!("data: {error}\n\n")));
            return paced(
                "text/event-stream; charset=utf-8",
                events.into_iter().map(Ok).collect(),
                b.chunk_interval,
                || {},
                |_| {},
            );
        }
    }
    events.push(chunk(
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
        None,
    ));
    if include_usage {
        events.push(chunk(
            json!([]),
            Some(json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})),
        ));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    paced(
        "text/event-stream; charset=utf-8",
        events.into_iter().map(Ok).collect(),
        b.chunk_interval,
        || {},
        move |finished| {
            if finished {
                state.streams_finished.fetch_add(1, Ordering::SeqCst);
            } else {
                state.streams_cut.fetch_add(1, Ordering::SeqCst);
                state.cut_notify.notify_waiters();
            }
        },
    )
}
