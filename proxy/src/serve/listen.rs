//! The data-plane listener: HTTP/1.1 and h2c, or TLS with ALPN, with graceful draining.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::idle::{Activity, Held, IdleIo, IdleWatch};
use crate::call::Shared;
use crate::gateway;

/// Connection-level limits of the data plane.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Largest request head (request line plus headers).
    pub max_header_bytes: usize,
    /// How long an idle keep-alive connection is kept: it is closed between one and two times this
    /// after its last answer (or its opening), and so is one whose request head is still incomplete.
    pub idle_timeout: Duration,
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
            let shared = shared.clone();
            // The call's future is made inside this one, not moved into it: it is several KB, and
            // each move is a copy of all of it on every request.
            async move {
                let response = gateway::handle(shared, req).await?;
                Ok::<_, std::convert::Infallible>(response.map(|body| Held::new(body, busy)))
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
    S: hyper::service::Service<Request<Incoming>, Response = Response<Held>>
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
