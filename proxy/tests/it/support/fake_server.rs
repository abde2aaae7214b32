//! The core every upstream fake is built on: a loopback HTTP/1 and HTTP/2 server, the request as it
//! arrived (recorded), JSON answers, and bodies whose frames are paced and can break the connection.
//! On top of it, `FakeServer` is the scripted fake of the translated providers: it records what
//! arrives, asks a handler what to answer (whole or streamed, each frame's send time noted), and can
//! be told to fail.

use std::convert::Infallible;
use std::future::Future;
use std::io;
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

/// The body every fake answers with; an error breaks the connection.
pub type Body = BoxBody<Bytes, io::Error>;

/// Serves each connection to a fresh loopback port with `answer` until the test ends; returns the
/// address.
pub async fn serve<F, Fut>(answer: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            // Stream frames are timed by the tests: none may wait for Nagle.
            let _ = stream.set_nodelay(true);
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

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
    /// Reads the whole request; a body that is not JSON is `Null` in `body`.
    pub async fn read(req: Request<Incoming>) -> Self {
        let (parts, body) = req.into_parts();
        let raw = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Self {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            headers: parts.headers,
            body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
            raw,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An answer of `status` with a whole `body` and no headers yet.
pub fn whole(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let body = Full::new(body.into())
        .map_err(|never| match never {})
        .boxed();
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

/// A whole JSON answer.
pub fn json_response(status: u16, body: &Value) -> Response<Body> {
    let mut r = whole(status, body.to_string());
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// A streamed answer of `frames`, `interval` apart (none before the first). `sent` runs as each frame
/// is handed to the connection; `ended` runs last, with `true` if the reader took every frame and
/// `false` if it went away first. An `Err` frame breaks the connection.
pub fn paced(
    content_type: &str,
    frames: Vec<io::Result<Bytes>>,
    interval: Duration,
    mut sent: impl FnMut() + Send + 'static,
    ended: impl FnOnce(bool) + Send + 'static,
) -> Response<Body> {
    // Room for one frame only, so a frame counts as sent when the connection has taken it.
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for (i, frame) in frames.into_iter().enumerate() {
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            if tx.send(frame).await.is_err() {
                return ended(false);
            }
            sent();
        }
        ended(true);
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    r
}

/// A body fed by a channel: each message is one frame. Dropping it (reader gone) closes the channel.
struct ChannelBody(mpsc::Receiver<io::Result<Bytes>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.0.poll_recv(cx).map(|f| f.map(|f| f.map(Frame::data)))
    }
}

/// What a scripted fake answers.
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

/// How a scripted fake behaves; tests change it between calls.
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
    /// Text the Anthropic fake quotes in an `event: error` that ends its streams early (as Anthropic
    /// does when it overloads mid-answer), to check that nothing of the key reaches the caller.
    pub quote: Option<String>,
    /// The reasoning an OpenAI-compatible fake shows (`reasoning_content`) when asked for
    /// `reasoning_effort`, split into stream pieces.
    pub thought: Vec<String>,
}

impl Control {
    pub fn new(key: &str, tag: &str) -> Self {
        Self {
            key: key.into(),
            fail: None,
            interval: Duration::ZERO,
            pieces: vec!["Hello".into(), " from".into(), format!(" {tag}")],
            quote: None,
            thought: vec!["Let me ".into(), "think.".into()],
        }
    }
}

/// Decides a scripted fake's answer to one request.
pub type Handler = fn(&Seen, &Control) -> Answer;

/// A running scripted fake.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub control: Arc<Mutex<Control>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// When each stream frame was handed to the connection.
    pub frame_times: Arc<Mutex<Vec<Instant>>>,
}

impl FakeServer {
    pub async fn start(control: Control, handler: Handler) -> Self {
        let control = Arc::new(Mutex::new(control));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let frame_times: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let state = (control.clone(), seen.clone(), frame_times.clone());
        let addr = serve(move |req| {
            let (control, seen, times) = state.clone();
            async move {
                let s = Seen::read(req).await;
                seen.lock().unwrap().push(s.clone());
                let c = control.lock().unwrap().clone();
                let a = match &c.fail {
                    Some((status, body, headers)) => headers
                        .iter()
                        .fold(Answer::json(*status, body), |a, (k, v)| a.with_header(k, v)),
                    None => handler(&s, &c),
                };
                respond(a, c.interval, times)
            }
        })
        .await;
        Self {
            addr,
            control,
            seen,
            frame_times,
        }
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

fn respond(a: Answer, interval: Duration, times: Arc<Mutex<Vec<Instant>>>) -> Response<Body> {
    match a {
        Answer::Whole {
            status,
            headers,
            body,
        } => {
            let mut r = whole(status, body);
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
        } => paced(
            content_type,
            frames.into_iter().map(Ok).collect(),
            interval,
            move || times.lock().unwrap().push(Instant::now()),
            |_| {},
        ),
    }
}

/// What every scripted fake decides to say, from the conversation it was given (so tool round trips
/// work): after a tool result, quote it; with tools offered, call the first; with images, count them.
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
