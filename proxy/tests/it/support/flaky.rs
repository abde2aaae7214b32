//! An OpenAI-shaped upstream that misbehaves on command: answers with a status, hangs, breaks its
//! answer after the first byte, or refuses some API keys. Every request is numbered in one sequence
//! shared by all flaky upstreams of a test, so the order of attempts across backends can be asserted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

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
    pub addr: SocketAddr,
    pub tag: String,
    mode: Arc<Mutex<Mode>>,
    /// Keys answered with this status instead (e.g. 401, 429).
    refused_keys: Arc<Mutex<HashMap<String, u16>>>,
    /// `(sequence number, presented key)` of every request received.
    hits: Arc<Mutex<Vec<(u64, String)>>>,
}

/// The order in which requests reached any flaky upstream of a test.
#[derive(Clone, Default)]
pub struct Sequence(Arc<AtomicU64>);

#[derive(Clone)]
struct State {
    tag: String,
    mode: Arc<Mutex<Mode>>,
    refused_keys: Arc<Mutex<HashMap<String, u16>>>,
    hits: Arc<Mutex<Vec<(u64, String)>>>,
    sequence: Sequence,
}

type Body = BoxBody<Bytes, std::io::Error>;

impl Flaky {
    pub async fn start(tag: &str, sequence: &Sequence) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let flaky = Self {
            addr: listener.local_addr().unwrap(),
            tag: tag.to_string(),
            mode: Arc::new(Mutex::new(Mode::Ok)),
            refused_keys: Arc::default(),
            hits: Arc::default(),
        };
        let state = State {
            tag: tag.to_string(),
            mode: flaky.mode.clone(),
            refused_keys: flaky.refused_keys.clone(),
            hits: flaky.hits.clone(),
            sequence: sequence.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        flaky
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn refuse_key(&self, key: &str, status: u16) {
        self.refused_keys.lock().unwrap().insert(key.into(), status);
    }

    pub fn hits(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    /// Sequence numbers of the requests this upstream received.
    pub fn sequence_numbers(&self) -> Vec<u64> {
        self.hits.lock().unwrap().iter().map(|(n, _)| *n).collect()
    }

    /// Keys presented, in order.
    pub fn keys(&self) -> Vec<String> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .map(|(_, k)| k.clone())
            .collect()
    }
}

fn error(status: u16) -> Response<Body> {
    let body = json!({"error": {"message": format!("flaky upstream says {status}"),
        "type": "server_error", "param": null, "code": null}});
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

async fn answer(state: State, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let key = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_start_matches("Bearer ")
        .to_string();
    let n = state.sequence.0.fetch_add(1, Ordering::SeqCst);
    state.hits.lock().unwrap().push((n, key.clone()));
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if let Some(&status) = state.refused_keys.lock().unwrap().get(&key) {
        return Ok(error(status));
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
    match mode {
        Mode::Status(status) => Ok(error(status)),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(error(504))
        }
        Mode::Ok if stream => {
            let frames = vec![
                Ok(chunk(&format!("from-{}", state.tag))),
                Ok(Bytes::from_static(b"data: [DONE]\n\n")),
            ];
            Ok(sse(frames))
        }
        Mode::Ok => {
            let mut r = Response::new(full(completion.to_string()));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Ok(r)
        }
        Mode::BreakAfterFirstByte if stream => Ok(sse(vec![
            Ok(chunk("first")),
            Err(std::io::Error::other("upstream broke")),
        ])),
        Mode::BreakAfterFirstByte => {
            let text = completion.to_string();
            let half = Bytes::from(text[..text.len() / 2].to_string());
            let mut r = Response::new(
                Frames::from(vec![Ok(half), Err(std::io::Error::other("upstream broke"))]).boxed(),
            );
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Ok(r)
        }
    }
}

fn sse(frames: Vec<Result<Bytes, std::io::Error>>) -> Response<Body> {
    let mut r = Response::new(Frames::from(frames).boxed());
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

/// A body of given frames, 100 ms apart so each one is on the wire before the next; an `Err` frame
/// breaks the connection.
struct Frames(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl From<Vec<Result<Bytes, std::io::Error>>> for Frames {
    fn from(frames: Vec<Result<Bytes, std::io::Error>>) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for (i, frame) in frames.into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        });
        Self(rx)
    }
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|f| f.map(|f| f.map(Frame::data)))
    }
}
