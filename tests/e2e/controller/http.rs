//! A small HTTP/1.1 client for talking to proxies and admin ports on loopback.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, header};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// A pooled client; make one per task that sends many requests.
#[derive(Clone)]
pub struct Http(Client<HttpConnector, Full<Bytes>>);

const TIMEOUT: Duration = Duration::from_secs(10);

impl Http {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self(Client::builder(TokioExecutor::new()).build(connector))
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<(u16, String), String> {
        let response = tokio::time::timeout(TIMEOUT, self.0.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = tokio::time::timeout(TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| "body timed out".to_owned())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    pub async fn get(&self, url: &str) -> Result<(u16, String), String> {
        let request = Request::get(url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        self.send(request).await
    }

    /// A JSON `POST` to `path` on a proxy, with `key`.
    pub async fn post(
        &self,
        port: u16,
        path: &str,
        key: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, String), String> {
        let request = Request::post(format!("http://127.0.0.1:{port}{path}"))
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        self.send(request).await
    }

    /// `POST <prefix>/v1/chat/completions` on a proxy.
    pub async fn chat(
        &self,
        port: u16,
        prefix: &str,
        key: &str,
        model: &str,
    ) -> Result<(u16, String), String> {
        let body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say hello."}],
        });
        let request = Request::post(format!(
            "http://127.0.0.1:{port}{prefix}/v1/chat/completions"
        ))
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
        self.send(request).await
    }
}

/// A one-off GET.
pub async fn get(url: &str) -> Result<(u16, String), String> {
    Http::new().get(url).await
}

/// A one-off chat completion.
pub async fn chat(
    port: u16,
    prefix: &str,
    key: &str,
    model: &str,
) -> Result<(u16, String), String> {
    Http::new().chat(port, prefix, key, model).await
}
