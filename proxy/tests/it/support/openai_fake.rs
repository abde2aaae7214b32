//! A protocol-faithful fake of OpenAI's API, written from the public API reference, that records what
//! arrives: the chat completion object, `chat.completion.chunk` events on `data: ` lines ending with
//! `data: [DONE]`, the embeddings list, and the `{"error":{...}}` shape for failures.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

/// How the fake answers.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Put into every answer's content (and `system_fingerprint`) to tell fakes apart.
    pub tag: String,
    /// The only credential accepted, as `Authorization: Bearer <key>`.
    pub key: String,
    /// Answer every call with this status and an OpenAI error body.
    pub fail_with: Option<u16>,
    /// Delay before the response headers.
    pub latency: Duration,
    /// Content chunks per stream.
    pub stream_chunks: usize,
    /// Delay between stream chunks.
    pub chunk_interval: Duration,
}

impl Behaviour {
    pub fn new(tag: &str, key: &str) -> Self {
        Self {
            tag: tag.into(),
            key: key.into(),
            fail_with: None,
            latency: Duration::ZERO,
            stream_chunks: 3,
            chunk_interval: Duration::ZERO,
        }
    }
}

/// A running fake.
pub struct OpenAiFake {
    pub addr: SocketAddr,
    pub behaviour: Arc<Mutex<Behaviour>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Streams whose reader went away before the last chunk.
    pub streams_cut: Arc<AtomicUsize>,
    /// Streams sent to the end.
    pub streams_finished: Arc<AtomicUsize>,
    /// Signalled whenever a stream is cut.
    pub cut_notify: Arc<Notify>,
    /// Requests answered.
    pub answered: Arc<AtomicU64>,
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Self {
            addr,
            behaviour: Arc::new(Mutex::new(behaviour)),
            seen: Arc::default(),
            streams_cut: Arc::default(),
            streams_finished: Arc::default(),
            cut_notify: Arc::default(),
            answered: Arc::default(),
        };
        let state = State {
            behaviour: fake.behaviour.clone(),
            seen: fake.seen.clone(),
            streams_cut: fake.streams_cut.clone(),
            streams_finished: fake.streams_finished.clone(),
            cut_notify: fake.cut_notify.clone(),
            answered: fake.answered.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        fake
    }
}

#[derive(Clone)]
struct State {
    behaviour: Arc<Mutex<Behaviour>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    streams_cut: Arc<AtomicUsize>,
    streams_finished: Arc<AtomicUsize>,
    cut_notify: Arc<Notify>,
    answered: Arc<AtomicU64>,
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, value: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response<Body> {
    full(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

async fn answer(state: State, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let b = state.behaviour.lock().unwrap().clone();
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    state.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    state.answered.fetch_add(1, Ordering::Relaxed);
    if !b.latency.is_zero() {
        tokio::time::sleep(b.latency).await;
    }
    if let Some(status) = b.fail_with {
        let status = StatusCode::from_u16(status).unwrap();
        return Ok(error(
            status,
            "server_error",
            None,
            "The server had an error while processing your request.",
        ));
    }
    let authorized = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", b.key));
    if !authorized {
        return Ok(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided: sk-ab***yz.",
        ));
    }
    let model = body["model"].as_str().unwrap_or("").to_string();
    match (parts.method.as_str(), parts.uri.path()) {
        ("POST", "/v1/chat/completions") => {
            if body["messages"].as_array().is_none_or(|m| m.is_empty()) {
                return Ok(error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    None,
                    "'messages' is a required property",
                ));
            }
            if body["stream"] == json!(true) {
                Ok(stream(
                    state,
                    b,
                    model,
                    body["stream_options"]["include_usage"] == json!(true),
                ))
            } else {
                Ok(full(StatusCode::OK, &completion(&b, &model)))
            }
        }
        ("POST", "/v1/embeddings") => {
            let n = match &body["input"] {
                Value::Array(items) => items.len(),
                _ => 1,
            };
            let data: Vec<Value> = (0..n)
                .map(
                    |i| json!({"object": "embedding", "index": i, "embedding": [0.25, -0.5, 0.75]}),
                )
                .collect();
            Ok(full(
                StatusCode::OK,
                &json!({"object": "list", "data": data, "model": model,
                        "usage": {"prompt_tokens": 4 * n, "total_tokens": 4 * n}}),
            ))
        }
        _ => Ok(error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            &format!("Invalid URL ({} {})", parts.method, parts.uri.path()),
        )),
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
    let (tx, rx) = mpsc::channel::<Bytes>(1);
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
    let interval = b.chunk_interval;
    tokio::spawn(async move {
        for (i, e) in events.into_iter().enumerate() {
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            if tx.send(e).await.is_err() {
                state.streams_cut.fetch_add(1, Ordering::SeqCst);
                state.cut_notify.notify_waiters();
                return;
            }
        }
        state.streams_finished.fetch_add(1, Ordering::SeqCst);
    });
    let mut r = Response::new(BodyExt::boxed(ChannelBody(rx)));
    r.headers_mut().insert(
        "content-type",
        "text/event-stream; charset=utf-8".parse().unwrap(),
    );
    r
}

/// A body fed by a channel: each message is one frame. Dropping it (reader gone) closes the channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}
