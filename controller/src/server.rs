//! The HTTPS endpoint proxies talk to: `GET /v1/snapshots` (a stream of frames) and `POST /v1/usage`.
//!
//! Frames, heartbeats and the usage report are defined once, for both sides, in `tollgate_snapshot::wire`:
//! a heartbeat lets a proxy tell a quiet controller from a dead connection. Every request needs
//! `Authorization: Bearer <ServiceAccount token>` of an allowed proxy: none or invalid → 401, someone
//! else's → 403.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;
use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Frame, Incoming},
    header,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::TlsAcceptor;
use tollgate_snapshot::wire::{HEARTBEAT, SNAPSHOTS_PATH, USAGE_PATH, UsageReport};

use crate::{
    auth::{Authenticator, Decision},
    metrics::Metrics,
    publish::Published,
    usage::Ledger,
};

/// Largest usage report accepted.
const MAX_REPORT_BYTES: usize = 4 << 20;

type Body = BoxBody<Bytes, Infallible>;

/// What request handlers share.
pub struct Shared {
    /// Checks proxies' tokens.
    pub auth: Authenticator,
    /// The current snapshot.
    pub snapshots: watch::Receiver<Option<Arc<Published>>>,
    /// Whether this replica leads (only the leader accepts usage).
    pub leader: watch::Receiver<bool>,
    /// Accepted usage deltas.
    pub ledger: Arc<Ledger>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Gap between heartbeats on a quiet stream.
    pub heartbeat: Duration,
    /// Turns true when the process is shutting down: streams end so proxies move to another replica.
    pub shutdown: watch::Receiver<bool>,
}

/// Loads the serving certificate and key.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("the certificate does not match the key")?;
    Ok(Arc::new(config))
}

/// Accepts TLS connections until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::shutdown::stopping(&mut shutdown) => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = service_fn(move |req| handle(shared.clone(), peer, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tls), service);
            if let Err(error) = conn.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let route = (req.method().clone(), req.uri().path().to_owned());
    let known = matches!(
        (&route.0, route.1.as_str()),
        (&Method::GET, SNAPSHOTS_PATH) | (&Method::POST, USAGE_PATH)
    );
    if !known {
        return Ok(json_error(StatusCode::NOT_FOUND, "no such endpoint"));
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let who = match shared.auth.check(authorization).await {
        Decision::Allowed(who) => who,
        Decision::Forbidden(who) => {
            shared.metrics.auth_denied.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, user = %who, "refused a proxy whose ServiceAccount is not allowed");
            return Ok(json_error(
                StatusCode::FORBIDDEN,
                &format!("{who} is not an allowed proxy ServiceAccount"),
            ));
        }
        Decision::Unauthenticated => {
            shared.metrics.auth_denied.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, "refused a request without a valid token");
            let mut response = json_error(
                StatusCode::UNAUTHORIZED,
                "a valid ServiceAccount token for this controller's audience is required",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("valid header"),
            );
            return Ok(response);
        }
    };
    if route.0 == Method::GET {
        tracing::info!(%peer, proxy = %who, "proxy connected");
        return Ok(snapshot_stream(&shared));
    }
    Ok(accept_usage(&shared, req).await)
}

fn snapshot_stream(shared: &Arc<Shared>) -> Response<Body> {
    let frames = frames(
        shared.snapshots.clone(),
        shared.shutdown.clone(),
        shared.heartbeat,
        Connected::new(shared.metrics.clone()),
    )
    .map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            "application/vnd.tollgate.snapshot-stream",
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("valid response")
}

/// Counts an open stream for as long as it lives.
struct Connected(Arc<Metrics>);

impl Connected {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.connected_proxies.fetch_add(1, Ordering::Relaxed);
        Self(metrics)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.connected_proxies.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The frames one proxy receives: the current snapshot, each later one, heartbeats in between.
fn frames(
    snapshots: watch::Receiver<Option<Arc<Published>>>,
    shutdown: watch::Receiver<bool>,
    heartbeat: Duration,
    guard: Connected,
) -> impl Stream<Item = Bytes> + Send {
    struct State {
        snapshots: watch::Receiver<Option<Arc<Published>>>,
        shutdown: watch::Receiver<bool>,
        sent: Option<String>,
        _guard: Connected,
    }
    let mut state = State {
        snapshots,
        shutdown,
        sent: None,
        _guard: guard,
    };
    // The first frame is due at once, whatever the receiver has seen before.
    state.snapshots.mark_changed();
    stream::unfold(state, move |mut s| async move {
        loop {
            let wake = tokio::select! {
                changed = s.snapshots.changed() => changed.is_ok(),
                _ = tokio::time::sleep(heartbeat) => {
                    return Some((Bytes::from_static(&HEARTBEAT), s));
                }
                _ = crate::shutdown::stopping(&mut s.shutdown) => false,
            };
            if !wake {
                return None;
            }
            let current = s.snapshots.borrow_and_update().clone();
            if let Some(published) = current
                && s.sent.as_deref() != Some(published.snapshot.hash.as_str())
            {
                s.sent = Some(published.snapshot.hash.clone());
                return Some((published.frame.clone(), s));
            }
        }
    })
}

async fn accept_usage(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    if !*shared.leader.borrow() {
        // The proxy keeps its deltas and tries again, reaching the leader on a later connection.
        let mut response = json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this controller replica is not the leader; send the report again",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, "1".parse().expect("valid header"));
        return response;
    }
    let body = match Limited::new(req.into_body(), MAX_REPORT_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("unreadable body: {error}"),
            );
        }
    };
    let report = match UsageReport::decode(&body) {
        Ok(report) => report,
        Err(error) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("not a usage report: {error}"),
            );
        }
    };
    shared.ledger.add(&report);
    shared.metrics.usage_reports.fetch_add(1, Ordering::Relaxed);
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .body(Full::new(Bytes::new()).boxed())
        .expect("valid response")
}

fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": { "message": message } }).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use tollgate_snapshot::{Snapshot, wire};

    use super::*;

    fn published(version: u64, content_marker: &str) -> Arc<Published> {
        // Different markers give different content, hence different hashes.
        let consumer = serde_json::from_value(serde_json::json!({
            "apiVersion": "tollgate.dev/v1alpha1",
            "kind": "Consumer",
            "metadata": {"name": content_marker, "namespace": "t"},
            "spec": {"keys": [{"name": "k", "secretRef": {"name": "s"}}]},
        }))
        .unwrap();
        let inputs = tollgate_snapshot::Inputs {
            consumers: vec![consumer],
            ..Default::default()
        };
        let snapshot = tollgate_snapshot::compile(&inputs, version).snapshot;
        Arc::new(Published {
            frame: Bytes::from(wire::encode_frame(&snapshot)),
            snapshot,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_sends_the_current_snapshot_then_changes_then_heartbeats() {
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = watch::channel(Some(published(1, "a")));
        let (_stop, shutdown) = watch::channel(false);
        let mut s = Box::pin(frames(
            rx,
            shutdown,
            Duration::from_secs(10),
            Connected::new(metrics.clone()),
        ));
        assert_eq!(metrics.connected_proxies.load(Ordering::Relaxed), 1);
        let first = s.next().await.unwrap();
        assert_eq!(
            Snapshot::decode(&first[wire::FRAME_HEADER_LEN..])
                .unwrap()
                .version,
            1
        );
        // Same content, new version: not sent again.
        tx.send_replace(Some(published(2, "a")));
        tx.send_replace(Some(published(3, "b")));
        let next = s.next().await.unwrap();
        assert_eq!(
            Snapshot::decode(&next[wire::FRAME_HEADER_LEN..])
                .unwrap()
                .version,
            3
        );
        let beat = s.next().await.unwrap();
        assert_eq!(&beat[..], &HEARTBEAT);
        drop(s);
        assert_eq!(metrics.connected_proxies.load(Ordering::Relaxed), 0);
    }
}
