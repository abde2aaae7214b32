//! The plain-HTTP admin endpoint: `/healthz`, `/readyz` and `/metrics` (Prometheus text).

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

use crate::{metrics::Metrics, publish::Published};

/// What the admin endpoint reads.
pub struct Admin {
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// Ready once a snapshot exists (the watches have synced and compiled).
    pub snapshots: watch::Receiver<Option<Arc<Published>>>,
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
            _ = crate::shutdown::stopping(&mut shutdown) => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(answer(&admin, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn answer(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" if admin.snapshots.borrow().is_some() => {
            (StatusCode::OK, "text/plain", "ok\n".to_owned())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "waiting for the first complete list of resources\n".to_owned(),
        ),
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            admin.metrics.render(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}
