//! The upstream fake: an OpenAI-shaped server answering from precomputed bodies, as cheaply as hyper allows.
//!
//! `POST …/chat/completions` answers a ~1 KB completion, or 20 SSE chunks when the body says `"stream": true`;
//! `POST …/embeddings` answers one 1,536-float vector; `POST …/v1/messages` the same answer as a whole
//! Anthropic message. Under a path starting with `/hold/` a stream stops
//! after its first chunk for `--hold-ms`, so a load generator can keep many streams open at once;
//! `GET /held` tells how many are held right now.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::time::Sleep;
use tollgate_bench::payload;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18080")]
    listen: SocketAddr,
    /// How long a stream under `/hold/` pauses after its first chunk.
    #[arg(long, default_value_t = 15_000)]
    hold_ms: u64,
    /// Worker threads; 1 runs everything on the current thread (the fake gets one pinned CPU).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// What the answers say (`digits`: the digit-rich text of the guardrails bench).
    #[arg(long, value_enum, default_value_t = payload::Text::Prose)]
    text: payload::Text,
}

struct Fake {
    chat: Bytes,
    messages: Bytes,
    stream: Arc<[Bytes]>,
    embeddings: Bytes,
    hold: Duration,
    held: Arc<AtomicUsize>,
}

/// A streamed answer: precomputed SSE events, optionally paused after the first one.
struct Events {
    events: Arc<[Bytes]>,
    next: usize,
    pause: Option<Pin<Box<Sleep>>>,
    held: Option<Arc<AtomicUsize>>,
}

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.next == 1
            && let Some(pause) = this.pause.as_mut()
        {
            ready!(pause.as_mut().poll(cx));
            this.pause = None;
            if let Some(held) = this.held.take() {
                held.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let Some(event) = this.events.get(this.next) else {
            return Poll::Ready(None);
        };
        this.next += 1;
        Poll::Ready(Some(Ok(Frame::data(event.clone()))))
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // A client that gives up mid-hold must not leave the gauge counting it.
        if let Some(held) = self.held.take() {
            held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

type Answer = Response<Either<Full<Bytes>, Events>>;

fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Answer {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Either::Left(Full::new(body)))
        .expect("static parts are valid")
}

async fn answer(fake: Arc<Fake>, req: Request<Incoming>) -> Result<Answer, hyper::Error> {
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET && path == "/held" {
        let held = fake.held.load(Ordering::Relaxed).to_string();
        return Ok(full(StatusCode::OK, "text/plain", Bytes::from(held)));
    }
    if req.method() != Method::POST {
        return Ok(full(StatusCode::NOT_FOUND, "text/plain", Bytes::new()));
    }
    let body = req.into_body().collect().await?.to_bytes();
    if path.ends_with("/embeddings") {
        return Ok(full(
            StatusCode::OK,
            "application/json",
            fake.embeddings.clone(),
        ));
    }
    if path.ends_with("/v1/messages") {
        return Ok(full(
            StatusCode::OK,
            "application/json",
            fake.messages.clone(),
        ));
    }
    if !path.ends_with("/chat/completions") {
        return Ok(full(StatusCode::NOT_FOUND, "text/plain", Bytes::new()));
    }
    if !payload::wants_stream(&body) {
        return Ok(full(StatusCode::OK, "application/json", fake.chat.clone()));
    }
    let (pause, held) = if path.starts_with("/hold/") {
        fake.held.fetch_add(1, Ordering::Relaxed);
        (
            Some(Box::pin(tokio::time::sleep(fake.hold))),
            Some(fake.held.clone()),
        )
    } else {
        (None, None)
    };
    let events = Events {
        events: fake.stream.clone(),
        next: 0,
        pause,
        held,
    };
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Either::Right(events))
        .expect("static parts are valid"))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let fake = Arc::new(Fake {
        chat: payload::chat_response(args.text),
        messages: payload::messages_response(args.text),
        stream: payload::chat_stream_events(args.text).into(),
        embeddings: payload::embeddings_response(),
        hold: Duration::from_millis(args.hold_ms),
        held: Arc::new(AtomicUsize::new(0)),
    });
    let listener = tollgate_bench::listener(args.listen)?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let fake = fake.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(fake.clone(), req));
            // Clients hanging up mid-stream is normal here; nothing to report.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(args))
}
