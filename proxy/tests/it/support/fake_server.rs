//! A small HTTP server for the provider fakes: records what arrives, answers whole or streamed bodies
//! (frames paced by an interval, each frame's send time noted), and can be told to fail.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One request as a fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub raw: Bytes,
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a fake answers.
pub enum Answer {
    Whole {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    Stream {
        content_type: &'static str,
        frames: Vec<Bytes>,
    },
}

impl Answer {
    pub fn json(status: u16, body: &Value) -> Self {
        Answer::Whole {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(body.to_string()),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Answer::Whole { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }
}

/// A canned failure: status, JSON body and extra headers.
pub type Failure = (u16, Value, Vec<(String, String)>);

/// How a fake behaves; tests change it between calls.
#[derive(Clone, Debug)]
pub struct Control {
    /// The credential accepted.
    pub key: String,
    /// Answer every call with this (status, body, headers) instead.
    pub fail: Option<Failure>,
    /// Delay between stream frames.
    pub interval: Duration,
    /// Text the answers are made of, split into stream pieces.
    pub pieces: Vec<String>,
}

impl Control {
    pub fn new(key: &str, tag: &str) -> Self {
        Self {
            key: key.into(),
            fail: None,
            interval: Duration::ZERO,
            pieces: vec!["Hello".into(), " from".into(), format!(" {tag}")],
        }
    }
}

pub type Handler = fn(&Seen, &Control) -> Answer;

/// A running fake.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub control: Arc<Mutex<Control>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// When each stream frame was handed to the connection.
    pub frame_times: Arc<Mutex<Vec<Instant>>>,
}

impl FakeServer {
    pub async fn start(control: Control, handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            addr: listener.local_addr().unwrap(),
            control: Arc::new(Mutex::new(control)),
            seen: Arc::default(),
            frame_times: Arc::default(),
        };
        let (control, seen, times) = (
            server.control.clone(),
            server.seen.clone(),
            server.frame_times.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (control, seen, times) = (control.clone(), seen.clone(), times.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        answer(req, control.clone(), seen.clone(), times.clone(), handler)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the fake saw a request")
    }

    pub fn set(&self, f: impl FnOnce(&mut Control)) {
        f(&mut self.control.lock().unwrap());
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    control: Arc<Mutex<Control>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    times: Arc<Mutex<Vec<Instant>>>,
    handler: Handler,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let raw = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let s = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw,
    };
    seen.lock().unwrap().push(s.clone());
    let c = control.lock().unwrap().clone();
    let a = match &c.fail {
        Some((status, body, headers)) => {
            let mut a = Answer::json(*status, body);
            for (k, v) in headers {
                a = a.with_header(k, v);
            }
            a
        }
        None => handler(&s, &c),
    };
    Ok(match a {
        Answer::Whole {
            status,
            headers,
            body,
        } => {
            let mut r = Response::new(Full::new(body).boxed());
            *r.status_mut() = StatusCode::from_u16(status).unwrap();
            for (k, v) in headers {
                r.headers_mut().insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            r
        }
        Answer::Stream {
            content_type,
            frames,
        } => {
            let (tx, rx) = mpsc::channel::<Bytes>(1);
            let interval = c.interval;
            tokio::spawn(async move {
                for (i, f) in frames.into_iter().enumerate() {
                    if i > 0 && !interval.is_zero() {
                        tokio::time::sleep(interval).await;
                    }
                    if tx.send(f).await.is_err() {
                        return;
                    }
                    times.lock().unwrap().push(Instant::now());
                }
            });
            let mut r = Response::new(BodyExt::boxed(ChannelBody(rx)));
            r.headers_mut()
                .insert("content-type", content_type.parse().unwrap());
            r
        }
    })
}

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

/// What every fake decides to say, from the conversation it was given (so tool round trips work):
/// after a tool result, quote it; with tools offered, call the first; with images, count them.
#[derive(Debug, PartialEq)]
pub enum Say {
    Text(String),
    Call { name: String, args: Value },
}

pub fn decide(
    tool_result: Option<&str>,
    first_tool: Option<&str>,
    images: usize,
    pieces: &[String],
) -> Say {
    if let Some(r) = tool_result {
        Say::Text(format!("The tool said: {r}"))
    } else if let Some(name) = first_tool {
        Say::Call {
            name: name.into(),
            args: json!({"city": "Paris"}),
        }
    } else if images > 0 {
        Say::Text(format!("I see {images} image(s)"))
    } else {
        Say::Text(pieces.concat())
    }
}

/// Splits an answer text into stream pieces (the configured ones when it is the default text).
pub fn pieces_of(text: &str, pieces: &[String]) -> Vec<String> {
    if text == pieces.concat() {
        pieces.to_vec()
    } else {
        text.split_inclusive(' ').map(str::to_string).collect()
    }
}

pub fn base64_ok(s: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}
