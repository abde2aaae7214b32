//! Listeners: the data plane (HTTP/1.1 and h2c, or TLS with ALPN) with graceful draining, and the admin port.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::body::ResponseBody;
use crate::metrics;
use crate::pipeline;
use crate::state::Shared;

/// Connection-level limits of the data plane.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Largest request head (request line plus headers).
    pub max_header_bytes: usize,
    /// How long an idle keep-alive connection is kept: it is closed between one and two times this
    /// after its last answer (or its opening), and so is one whose request head is still incomplete.
    pub idle_timeout: Duration,
}

/// PEM files of the data plane's certificate chain and private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Builds the TLS acceptor (ALPN: h2, then HTTP/1.1).
pub fn tls_acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading certificates from {}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the private key from {}", files.key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("certificate and key do not form a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn data_plane_builder(limits: ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Idle connections and slow request heads are closed by `IdleIo`, with one timer per
        // connection; hyper's own timeout would arm a new one for every request.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(limits.idle_timeout))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Serves the OpenAI-compatible API until `shutdown` resolves, then stops accepting and lets in-flight
/// calls finish for at most `drain`.
pub async fn serve_data_plane(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let builder = Arc::new(data_plane_builder(limits));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let activity = Arc::new(Activity::default());
        let idle = IdleWatch::new(activity.clone(), limits.idle_timeout);
        let service = service_fn(move |req| {
            let busy = activity.begin();
            let call = pipeline::handle(shared.clone(), req);
            async move {
                let mut response = call.await?;
                response.body_mut().hold(busy);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        match tls.clone() {
            None => {
                tokio::spawn(serve_connection(
                    builder,
                    TokioIo::new(IdleIo::new(stream, idle)),
                    service,
                    watcher,
                ));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let io = TokioIo::new(IdleIo::new(stream, idle));
                            serve_connection(builder, io, service, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!(connections = graceful.count(), "draining");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(drain) => tracing::warn!("drain deadline passed; closing remaining connections"),
    }
}

async fn serve_connection<I, S>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    io: TokioIo<I>,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<ResponseBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = builder.serve_connection(io, service).into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What tells an idle connection from a busy one: how many calls began or ended on it, and how many
/// answers are still being produced or sent.
#[derive(Default)]
struct Activity {
    events: AtomicU64,
    open: AtomicU32,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.events.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// Held by a call's answer until it is sent or dropped: its connection is not idle meanwhile.
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// One connection's idle timer, looked at lazily: it fires once per idle period, and the connection
/// ends only if no call began or ended during that period and none is open. A connection is thus
/// closed between one and two periods after its last answer, and a client that trickles a request
/// head, whatever it sends, has it cut within two periods.
struct IdleWatch {
    activity: Arc<Activity>,
    period: Duration,
    timer: Pin<Box<Sleep>>,
    seen: u64,
    /// Whether the timer holds this task's waker for its current deadline: until it fires, a look
    /// is then one load instead of a poll (reads happen several times per call).
    armed: bool,
}

impl IdleWatch {
    fn new(activity: Arc<Activity>, period: Duration) -> Self {
        Self {
            activity,
            period,
            timer: Box::pin(tokio::time::sleep(period)),
            seen: 0,
            armed: false,
        }
    }

    /// Whether the connection has been idle for a whole period; registers for the next look if not.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.armed && !self.timer.is_elapsed() {
            return false;
        }
        // Outside tokio's cooperative budget: a poll refused for budget would not register the waker.
        while Pin::new(&mut tokio::task::unconstrained(self.timer.as_mut()))
            .poll(cx)
            .is_ready()
        {
            let events = self.activity.events.load(Ordering::Relaxed);
            if events == self.seen && self.activity.open.load(Ordering::Relaxed) == 0 {
                return true;
            }
            self.seen = events;
            self.timer.as_mut().reset(Instant::now() + self.period);
        }
        self.armed = true;
        false
    }
}

/// A client connection whose reads end, as if the client had closed it, once [`IdleWatch`] says it
/// is idle. hyper then ends the connection as it would on the client's close: at once when it waits
/// for a request head, including one half received. HTTP/2 connections are not watched: they have
/// their own liveness checks (pings) and end with GOAWAY.
struct IdleIo<I> {
    io: I,
    idle: Option<IdleWatch>,
    sniffed: bool,
    ended: bool,
}

impl<I> IdleIo<I> {
    fn new(io: I, idle: IdleWatch) -> Self {
        Self {
            io,
            idle: Some(idle),
            sniffed: false,
            ended: false,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.ended || this.idle.as_mut().is_some_and(|idle| idle.expired(cx)) {
            this.ended = true;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if !this.sniffed && buf.filled().len() > before {
            this.sniffed = true;
            // The HTTP/2 connection preface ("PRI * HTTP/2.0…"), in clear or inside TLS.
            if buf.filled()[before..].starts_with(b"PRI *") {
                this.idle = None;
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` until `shutdown` resolves.
pub async fn serve_admin(
    listener: TcpListener,
    shared: Arc<Shared>,
    draining: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let shared = shared.clone();
        let draining = draining.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let answer = admin_answer(&shared, &draining, &req);
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn admin_answer(
    shared: &Shared,
    draining: &AtomicBool,
    req: &Request<Incoming>,
) -> Response<ResponseBody> {
    let text = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(ResponseBody::full(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if draining.load(Ordering::Relaxed) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        "/readyz" if shared.store.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "no snapshot yet\n"),
        "/metrics" => {
            let body = shared.recorder.metrics.encode(&shared.store);
            let mut r = Response::new(ResponseBody::full(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
