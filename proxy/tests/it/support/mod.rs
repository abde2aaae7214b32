//! Test support: an in-process proxy on 127.0.0.1, snapshot builders, and a small HTTP client (here);
//! one chat route in front of any provider (`chat_route`); the upstream fakes, built on one core
//! (`fake_server`, then `openai_fake`, `flaky`, `anthropic_fake`, `azure_fake`, `gemini_fake`,
//! `bedrock_fake`, `responses_fake`); the real binary as a process (`standalone_bin`); the Python SDK runner
//! (`python`).

pub mod anthropic_fake;
pub mod azure_fake;
pub mod bedrock_fake;
pub mod chat_route;
pub mod collector;
pub mod fake_server;
pub mod flaky;
pub mod gemini_fake;
pub mod openai_fake;
pub mod python;
pub mod redis;
pub mod responses_fake;
pub mod standalone_bin;
pub mod vertex_fake;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate_proxy::{AccessLog, Proxy, ProxyConfig, SnapshotStore};
use tollgate_snapshot::{
    Approval, AuthScheme, Backend, Budget, Consumer, ConsumerKey, Content, Credential,
    FakeBehaviour, HealthPolicy, KeyDigest, Limits, ObjectRef, Phase, Price, Provider,
    ProviderModel, ProviderType, RetryBudget, Route, RouteModel, Snapshot, Stage, Subscription,
    Timeouts,
};

/// A proxy serving in this process.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub store: Arc<SnapshotStore>,
    pub log: Arc<Mutex<Vec<String>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Loopback addresses with free ports.
pub fn test_config() -> ProxyConfig {
    ProxyConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        drain_timeout: Duration::from_secs(5),
        ..ProxyConfig::default()
    }
}

impl TestProxy {
    /// Serves `content` as snapshot version 1.
    pub async fn start(content: Content) -> Self {
        Self::start_with(test_config(), Some(content)).await
    }

    pub async fn start_with(config: ProxyConfig, content: Option<Content>) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let proxy = Proxy::new(config, AccessLog::Collect(log.clone()));
        if let Some(content) = content {
            proxy
                .store()
                .store(Arc::new(Snapshot::from_content(1, content)));
        }
        let bound = proxy.bind().await.expect("bind proxy");
        let (stop, stopped) = oneshot::channel::<()>();
        let addr = bound.local_addr();
        let admin = bound.admin_addr();
        let store = bound.store();
        let task = tokio::spawn(bound.serve(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            admin,
            store,
            log,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn swap(&self, content: Content, version: u64) {
        self.store
            .store(Arc::new(Snapshot::from_content(version, content)));
    }

    /// Access-log lines written so far, parsed.
    pub fn log_lines(&self) -> Vec<Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).expect("log line is JSON"))
            .collect()
    }

    /// Waits (briefly) for the log line of a request id: it is written when the response body is done.
    pub async fn log_line_of(&self, request_id: &str) -> Value {
        for _ in 0..200 {
            if let Some(line) = self
                .log_lines()
                .into_iter()
                .find(|l| l["request_id"] == request_id)
            {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no access-log line for request {request_id}");
    }

    /// Begins shutdown and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("proxy stops")
                .unwrap();
        }
    }

    /// Sends the shutdown signal without waiting; returns the serving task.
    pub fn begin_stop(&mut self) -> JoinHandle<()> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap()
    }
}

pub const NS: &str = "team-a";

pub fn price() -> Price {
    Price {
        input_per_million: 2.0,
        output_per_million: 8.0,
        cache_write_per_million: None,
        cached_input_per_million: None,
    }
}

/// An OpenAI(-compatible) provider.
pub fn provider(name: &str, provider_type: ProviderType, endpoint: &str, key: &str) -> Provider {
    Provider {
        id: ObjectRef::new(NS, name),
        provider_type,
        endpoint: endpoint.to_string(),
        auth: AuthScheme {
            header: "authorization".into(),
            prefix: "Bearer ".into(),
        },
        credentials: vec![Credential(key.to_string())],
        models: vec![ProviderModel {
            name: "gpt-4o-mini".into(),
            deployment: None,
            price: price(),
        }],
        timeouts: Timeouts::default(),
        azure_api_version: None,
        bedrock_region: None,
        vertex: None,
        fake: None,
        health: HealthPolicy::default(),
    }
}

pub fn fake_provider(name: &str, behaviour: FakeBehaviour) -> Provider {
    Provider {
        id: ObjectRef::new(NS, name),
        provider_type: ProviderType::Fake,
        endpoint: "fake://".into(),
        auth: AuthScheme {
            header: "authorization".into(),
            prefix: "Bearer ".into(),
        },
        credentials: vec![],
        models: vec![],
        timeouts: Timeouts::default(),
        azure_api_version: None,
        bedrock_region: None,
        vertex: None,
        fake: Some(behaviour),
        health: HealthPolicy::default(),
    }
}

pub fn backend(provider: u32, upstream_model: &str) -> Backend {
    Backend {
        provider,
        upstream_model: upstream_model.into(),
        weight: 1,
        price: price(),
    }
}

pub fn model(name: &str, backends: Vec<Backend>, fallbacks: Vec<Backend>) -> RouteModel {
    RouteModel {
        name: name.into(),
        backends,
        fallbacks,
        context_window: None,
        cache: Default::default(),
    }
}

pub fn route(namespace: &str, name: &str, prefix: &str, models: Vec<RouteModel>) -> Route {
    Route {
        id: ObjectRef::new(namespace, name),
        uid: String::new(),
        prefix: prefix.into(),
        hostnames: vec![],
        stage: Stage::Published,
        sunset_unix: None,
        deprecation_unix: None,
        models,
        limits: Limits::default(),
        total_limits: Limits::default(),
        approval: Approval::Automatic,
        budget: Budget::default(),
        retry_budget: RetryBudget::default(),
        description: None,
        prompts: Vec::new(),
        cache: None,
        rest: None,
        guardrails: Vec::new(),
        mcp_servers: Vec::new(),
        capture_content: None,
    }
}

pub fn consumer(namespace: &str, name: &str, key: &str) -> Consumer {
    Consumer {
        id: ObjectRef::new(namespace, name),
        uid: String::new(),
        keys: vec![ConsumerKey {
            name: "primary".into(),
            digest: KeyDigest::of(key.as_bytes()),
            expires_unix: None,
        }],
        limits: Limits::default(),
        budget: Budget::default(),
        guardrails: Vec::new(),
    }
}

pub fn subscription(name: &str, consumer: u32, route: u32, phase: Phase) -> Subscription {
    Subscription {
        id: ObjectRef::new(NS, name),
        uid: String::new(),
        consumer,
        route,
        phase,
        limits: Limits::default(),
        budget: Budget::default(),
    }
}

/// An answer, fully read.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, showing the body when it is another.
    #[track_caller]
    pub fn assert_status(&self, want: u16) {
        assert_eq!(self.status, want, "{}", String::from_utf8_lossy(&self.body));
    }

    pub fn request_id(&self) -> String {
        self.header("x-request-id")
            .expect("x-request-id")
            .to_string()
    }

    /// The `error.code` of an OpenAI error body (asserting the shape).
    pub fn error_code(&self) -> String {
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].is_string(), "error.message in {v}");
        assert!(e["type"].is_string(), "error.type in {v}");
        assert!(e.get("param").is_some(), "error.param in {v}");
        e["code"].as_str().unwrap_or_default().to_string()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One request with a bounded wait.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Reply {
    let mut builder = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let request = builder
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let work = async {
        let response = client().request(request).await.expect("request sent");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body read").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .expect("answer within 20s")
}

pub async fn post(url: &str, key: &str, body: &Value) -> Reply {
    let auth = format!("Bearer {key}");
    send(Method::POST, url, &[("authorization", &auth)], Some(body)).await
}

pub async fn get(url: &str, key: &str) -> Reply {
    let auth = format!("Bearer {key}");
    send(Method::GET, url, &[("authorization", &auth)], None).await
}

/// A POST whose body goes out in 500-byte pieces with no `content-length` (chunked).
pub async fn post_chunked(url: &str, key: &str, body: &Value) -> Reply {
    let pieces = Bytes::from(body.to_string());
    let pieces = (0..pieces.len())
        .step_by(500)
        .map(|at| pieces.slice(at..pieces.len().min(at + 500)))
        .collect();
    let request = Request::post(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Pieces(pieces))
        .unwrap();
    let work = async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Pieces>();
        let response = client.request(request).await.expect("request sent");
        assert!(response.status() != StatusCode::LENGTH_REQUIRED);
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body read").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .expect("answer within 20s")
}

/// A request body of pieces whose length is not told in advance.
struct Pieces(std::collections::VecDeque<Bytes>);

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
pub fn sse_payloads(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event without data: {e:?}"))
                .to_string()
        })
        .collect()
}
