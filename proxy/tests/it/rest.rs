//! REST passthrough: `<prefix>/api/<path>` forwarded to a real HTTP service on 127.0.0.1 for the
//! operations its OpenAPI document declares, with the service's credential instead of the caller's key.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tollgate_snapshot::{
    Content, Credential, Limits, Phase, RestCredential, RestOperation, RestService, Timeouts,
};

use crate::support::fake_server::{self, Seen};
use crate::support::*;

const KEY: &str = "tg-caller-key-0123456789";
const SERVICE_TOKEN: &str = "svc-token-abcdef";
/// Size of the large chunked answer.
const BIG: usize = 50 * 1024 * 1024;
const PIECE: usize = 64 * 1024;

fn op(method: &str, path: &str, id: Option<&str>) -> RestOperation {
    RestOperation {
        method: method.into(),
        path: path.into(),
        operation_id: id.map(String::from),
        spec: json!({}),
    }
}

fn service(base_url: &str) -> RestService {
    RestService {
        base_url: base_url.into(),
        timeouts: Timeouts {
            first_byte_ms: 2_000,
            ..Timeouts::default()
        },
        ca_pem: None,
        credential: Some(RestCredential {
            header: "authorization".into(),
            value: Credential(format!("Bearer {SERVICE_TOKEN}")),
        }),
        max_request_bytes: 1024,
        operations: vec![
            op("GET", "/items", Some("listItems")),
            op("POST", "/items", Some("createItem")),
            op("GET", "/items/{id}", Some("getItem")),
            op("GET", "/items/mine", Some("myItems")),
            op("GET", "/items/{id}/parts/{part}.json", None),
            op("GET", "/big", Some("big")),
            op("GET", "/slow", Some("slow")),
            op("GET", "/denied", Some("denied")),
        ],
        components: None,
    }
}

/// One route `/orders` with `rest`, one consumer with an approved subscription limited to `rpm`.
fn content(rest: Option<RestService>, rpm: Option<u32>) -> Content {
    let mut r = route(NS, "orders", "/orders", vec![]);
    r.rest = rest;
    let mut sub = subscription("app-orders", 0, 0, Phase::Approved);
    sub.limits = Limits {
        requests_per_minute: rpm,
        tokens_per_minute: Some(1),
    };
    Content {
        providers: vec![],
        routes: vec![r],
        consumers: vec![consumer(NS, "app", KEY)],
        subscriptions: vec![sub],
        proxy_replicas: 0,
    }
}

/// The service: records what arrives, echoes it as JSON, and serves a 50 MiB chunked body on `/big`.
async fn start_service() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let addr = fake_server::serve(move |req: Request<hyper::body::Incoming>| {
        let record = record.clone();
        async move {
            let seen = Seen::read(req).await;
            record.lock().unwrap().push(seen.clone());
            match seen.path.as_str() {
                "/v2/big" => {
                    // One piece shared by every frame: the service itself holds 64 KiB.
                    let piece = Bytes::from(vec![b'x'; PIECE]);
                    let frames: Vec<io::Result<Bytes>> =
                        (0..BIG / PIECE).map(|_| Ok(piece.clone())).collect();
                    fake_server::paced(
                        "application/octet-stream",
                        frames,
                        Duration::ZERO,
                        || {},
                        |_| {},
                    )
                }
                "/v2/denied" => fake_server::json_response(
                    401,
                    &json!({"error": format!("token {SERVICE_TOKEN} refused")}),
                ),
                "/v2/slow" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    fake_server::whole(200, "late")
                }
                _ => {
                    let mut answer = fake_server::json_response(
                        if seen.method == "POST" { 201 } else { 200 },
                        &json!({
                            "method": seen.method,
                            "path": seen.path,
                            "query": seen.query,
                            "body": String::from_utf8_lossy(&seen.raw),
                        }),
                    );
                    answer
                        .headers_mut()
                        .insert("x-service", "orders".parse().unwrap());
                    answer
                }
            }
        }
    })
    .await;
    (format!("http://{addr}/v2"), seen)
}

async fn call(
    proxy: &TestProxy,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Reply {
    send(method, &proxy.url(&format!("/orders{path}")), headers, body).await
}

fn bearer() -> String {
    format!("Bearer {KEY}")
}

#[tokio::test]
async fn the_services_credential_goes_upstream_and_the_callers_key_never_does() {
    let (base, seen) = start_service().await;
    let proxy = TestProxy::start(content(Some(service(&base)), None)).await;
    let auth = bearer();
    let r = call(
        &proxy,
        Method::GET,
        "/api/items?limit=2&q=a%20b",
        &[("authorization", &auth), ("x-custom", "kept")],
        None,
    )
    .await;
    r.assert_status(200);
    assert_eq!(
        r.header("x-service"),
        Some("orders"),
        "the service's headers come back"
    );
    assert_eq!(r.json()["path"], "/v2/items");
    assert_eq!(
        r.json()["query"],
        "limit=2&q=a%20b",
        "the query passes through"
    );
    let first = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        first.header("authorization"),
        Some(format!("Bearer {SERVICE_TOKEN}").as_str())
    );
    assert_eq!(first.header("x-custom"), Some("kept"));
    assert!(first.header("x-request-id").is_some());
    assert!(
        first
            .header("host")
            .is_some_and(|h| h.starts_with("127.0.0.1:")),
        "{:?}",
        first.header("host")
    );

    // The key in x-api-key or api-key is removed too; the body passes unchanged.
    let r = call(
        &proxy,
        Method::POST,
        "/api/items",
        &[("x-api-key", KEY), ("api-key", KEY)],
        Some(&json!({"name": "widget"})),
    )
    .await;
    r.assert_status(201);
    assert_eq!(r.json()["body"], "{\"name\":\"widget\"}");
    for s in seen.lock().unwrap().iter() {
        for (name, value) in &s.headers {
            assert!(
                !value
                    .as_bytes()
                    .windows(KEY.len())
                    .any(|w| w == KEY.as_bytes()),
                "the caller's key went upstream in {name}"
            );
        }
    }

    // The access log names the API and the operation.
    let line = proxy.log_line_of(&r.request_id()).await;
    assert_eq!(line["api"], "rest");
    assert_eq!(line["operation"], "createItem");
    assert_eq!(line["status"], 201);
    assert_eq!(line["tokens_in"], 0);
    proxy.stop().await;
}

#[tokio::test]
async fn only_declared_operations_are_forwarded_and_templates_match_one_segment() {
    let (base, seen) = start_service().await;
    let proxy = TestProxy::start(content(Some(service(&base)), None)).await;
    let auth = bearer();
    let h = [("authorization", auth.as_str())];
    for (method, path, upstream) in [
        (Method::GET, "/api/items/42", "/v2/items/42"),
        (Method::GET, "/api/items/mine", "/v2/items/mine"),
        (Method::GET, "/api/items/a%2Fb", "/v2/items/a%2Fb"),
        (
            Method::GET,
            "/api/items/7/parts/wheel.json",
            "/v2/items/7/parts/wheel.json",
        ),
    ] {
        let r = call(&proxy, method, path, &h, None).await;
        r.assert_status(200);
        assert_eq!(r.json()["path"], upstream, "{path}");
    }
    let before = seen.lock().unwrap().len();
    for (method, path) in [
        (Method::PUT, "/api/items/42"),
        (Method::DELETE, "/api/items"),
        (Method::GET, "/api/items/42/extra"),
        (Method::GET, "/api/items/"),
        (Method::GET, "/api/items/42/parts/wheel.xml"),
        (Method::GET, "/api/admin"),
        (Method::GET, "/api/items/.."),
        (Method::GET, "/api/items/%2e%2e"),
        (Method::GET, "/api"),
    ] {
        let r = call(&proxy, method.clone(), path, &h, None).await;
        r.assert_status(404);
        assert_eq!(r.error_code(), "unknown_operation", "{method} {path}");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "nothing undeclared reached the service"
    );
    // The operation is found before the key is checked only for admitted callers: no key, 401.
    let r = call(&proxy, Method::GET, "/api/items", &[], None).await;
    r.assert_status(401);
    proxy.stop().await;
}

#[tokio::test]
async fn a_route_without_a_rest_service_has_no_operations() {
    let proxy = TestProxy::start(content(None, None)).await;
    let auth = bearer();
    let r = call(
        &proxy,
        Method::GET,
        "/api/items",
        &[("authorization", &auth)],
        None,
    )
    .await;
    r.assert_status(404);
    assert_eq!(r.error_code(), "unknown_operation");
    proxy.stop().await;
}

#[tokio::test]
async fn rest_calls_count_against_request_limits_and_bodies_against_the_service_limit() {
    let (base, _) = start_service().await;
    // A token limit of 1 would refuse any model call: REST calls are not charged tokens.
    let proxy = TestProxy::start(content(Some(service(&base)), Some(2))).await;
    let auth = bearer();
    let h = [("authorization", auth.as_str())];
    call(&proxy, Method::GET, "/api/items", &h, None)
        .await
        .assert_status(200);
    // Unknown operations are not charged.
    call(&proxy, Method::GET, "/api/nope", &h, None)
        .await
        .assert_status(404);
    let r = call(&proxy, Method::GET, "/api/items/1", &h, None).await;
    r.assert_status(200);
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("2"));
    let r = call(&proxy, Method::GET, "/api/items/2", &h, None).await;
    r.assert_status(429);
    assert_eq!(r.error_code(), "rate_limit_exceeded");

    let proxy = TestProxy::start(content(Some(service(&base)), None)).await;
    let big = json!({"text": "x".repeat(2048)});
    let r = call(&proxy, Method::POST, "/api/items", &h, Some(&big)).await;
    r.assert_status(413);
    proxy.stop().await;
}

/// Peak resident memory of this process (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[tokio::test]
async fn a_50_mib_chunked_answer_is_relayed_with_bounded_memory() {
    let (base, _) = start_service().await;
    let proxy = TestProxy::start(content(Some(service(&base)), None)).await;
    let before = peak_rss_kib();
    let request = Request::get(proxy.url("/orders/api/big"))
        .header("authorization", bearer())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("content-length").is_none(),
        "relayed chunked, as it came"
    );
    let mut body = response.into_body();
    let (mut total, mut frames) = (0usize, 0usize);
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("the body flows to its end");
            if let Ok(data) = frame.into_data() {
                assert!(data.iter().all(|&b| b == b'x'));
                total += data.len();
                frames += 1;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("50 MiB within 120 s");
    assert_eq!(total, BIG);
    let grew_kib = peak_rss_kib().saturating_sub(before);
    println!(
        "relayed {} MiB in {frames} frames; peak RSS grew by {grew_kib} KiB (before: {before} KiB)",
        total >> 20
    );
    // The proxy, the service and this reader share the process: holding the answer whole anywhere
    // would add 50 MiB.
    assert!(
        grew_kib < 16 * 1024,
        "peak RSS grew by {grew_kib} KiB while relaying 50 MiB"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn an_unreachable_or_slow_service_is_a_gateway_error_without_credentials() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = format!("http://{}/v2", closed.local_addr().unwrap());
    drop(closed);
    let proxy = TestProxy::start(content(Some(service(&down)), None)).await;
    let auth = bearer();
    let r = call(
        &proxy,
        Method::GET,
        "/api/items",
        &[("authorization", &auth)],
        None,
    )
    .await;
    r.assert_status(502);
    assert_eq!(r.error_code(), "upstream_unreachable");
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(
        !text.contains(SERVICE_TOKEN) && !text.contains(KEY),
        "{text}"
    );
    assert!(text.contains("team-a/orders"), "{text}");
    let line = proxy.log_line_of(&r.request_id()).await;
    assert_eq!(line["error_class"], "upstream_unreachable");
    assert_eq!(line["operation"], "listItems");
    proxy.stop().await;

    // Connect and first byte together allow 700 ms; the service answers after 5 s.
    let (base, _) = start_service().await;
    let mut slow = service(&base);
    slow.timeouts.connect_ms = 200;
    slow.timeouts.first_byte_ms = 500;
    let proxy = TestProxy::start(content(Some(slow), None)).await;
    let r = call(
        &proxy,
        Method::GET,
        "/api/slow",
        &[("authorization", &auth)],
        None,
    )
    .await;
    r.assert_status(504);
    assert_eq!(r.error_code(), "upstream_timeout");
    proxy.stop().await;
}

#[tokio::test]
async fn a_refused_service_credential_is_the_gateways_502_and_never_quoted() {
    let (base, _) = start_service().await;
    let proxy = TestProxy::start(content(Some(service(&base)), None)).await;
    let auth = bearer();
    let r = call(
        &proxy,
        Method::GET,
        "/api/denied",
        &[("authorization", &auth)],
        None,
    )
    .await;
    r.assert_status(502);
    assert_eq!(r.error_code(), "upstream_auth_failed");
    assert!(!String::from_utf8_lossy(&r.body).contains(SERVICE_TOKEN));
    proxy.stop().await;
}

/// An https service on localhost with a self-signed certificate; returns its port.
async fn tls_service(certified: &rcgen::CertifiedKey<rcgen::KeyPair>) -> u16 {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        Ok::<_, std::convert::Infallible>(fake_server::json_response(
                            200,
                            &json!({"path": path}),
                        ))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn an_https_service_is_trusted_through_its_own_ca_only() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let port = tls_service(&certified).await;
    let base = format!("https://localhost:{port}/v2");
    let auth = bearer();
    let h = [("authorization", auth.as_str())];

    let mut trusted = service(&base);
    trusted.ca_pem = Some(certified.cert.pem());
    let proxy = TestProxy::start(content(Some(trusted), None)).await;
    let r = call(&proxy, Method::GET, "/api/items/1", &h, None).await;
    r.assert_status(200);
    assert_eq!(r.json()["path"], "/v2/items/1");
    proxy.stop().await;

    // Another CA, or the public roots: the certificate is refused and nothing is sent.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let mut wrong = service(&base);
    wrong.ca_pem = Some(other.cert.pem());
    for rest in [wrong, service(&base)] {
        let proxy = TestProxy::start(content(Some(rest), None)).await;
        let r = call(&proxy, Method::GET, "/api/items/1", &h, None).await;
        r.assert_status(502);
        assert_eq!(r.error_code(), "upstream_unreachable");
        proxy.stop().await;
    }
}
