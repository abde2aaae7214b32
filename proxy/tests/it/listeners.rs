//! The listener: h2c, TLS with ALPN, graceful drain on shutdown, the drain deadline, header limit,
//! idle timeout and slow request heads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_proxy::{ConnectionLimits, ProxyConfig, TlsFiles};
use tollgate_snapshot::{Content, FakeBehaviour, Phase};

use crate::support::*;

const KEY: &str = "k-server";

fn table(behaviour: FakeBehaviour) -> Content {
    Content {
        providers: vec![fake_provider("fake", behaviour)],
        routes: vec![route(
            NS,
            "chat",
            "/s",
            vec![model("fake-chat", vec![backend(0, "fake-chat")], vec![])],
        )],
        consumers: vec![consumer(NS, "app", KEY)],
        subscriptions: vec![subscription("app-chat", 0, 0, Phase::Approved)],
        proxy_replicas: 0,
    }
}

fn slow_stream(chunks: u32, interval_ms: u64) -> FakeBehaviour {
    FakeBehaviour {
        completion_tokens: chunks,
        stream_chunks: chunks,
        chunk_interval_ms: interval_ms,
        ..FakeBehaviour::default()
    }
}

fn stream_request() -> String {
    let body = json!({"model": "fake-chat", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    format!(
        "POST /s/v1/chat/completions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// An HTTP/2 connection with prior knowledge (h2c) to `addr`.
async fn h2c(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// `GET /s/v1/models` with the test key.
fn models_request(addr: std::net::SocketAddr) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}/s/v1/models"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let proxy = TestProxy::start(table(FakeBehaviour::default())).await;
    let mut sender = h2c(proxy.addr).await;
    let response = sender
        .send_request(models_request(proxy.addr))
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("fake-chat"));
    proxy.stop().await;
}

#[tokio::test]
async fn tls_with_alpn_h2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let config = ProxyConfig {
        tls: Some(TlsFiles { cert, key }),
        ..test_config()
    };
    let proxy = TestProxy::start_with(config, Some(table(FakeBehaviour::default()))).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    for h2 in [true, false] {
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_only();
        let connector = if h2 {
            builder.enable_http2().build()
        } else {
            builder.enable_http1().build()
        };
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build::<_, Full<Bytes>>(connector);
        let url = format!(
            "https://localhost:{}/s/v1/chat/completions",
            proxy.addr.port()
        );
        let request = Request::post(url)
            .header("authorization", format!("Bearer {KEY}"))
            .body(Full::new(Bytes::from(
                json!({"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            )))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
            .await
            .unwrap()
            .unwrap();
        let expected = if h2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(response.version(), expected);
        assert_eq!(response.status(), 200);
    }
    // Plain HTTP on the TLS port does not get an answer.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /s/v1/models HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    proxy.stop().await;
}

/// A raw HTTP/1 connection with a streamed answer under way: its first event has arrived (and is in
/// the bytes returned with it).
async fn stream_in_flight(proxy: &TestProxy) -> (tokio::net::TcpStream, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(stream_request().as_bytes()).await.unwrap();
    let mut got = Vec::new();
    assert!(read_until(&mut s, &mut got, b"data: ", Duration::from_secs(5)).await);
    (s, got)
}

/// Reads from a raw HTTP/1 connection until `needle` shows up (or the connection closes).
async fn read_until(
    s: &mut tokio::net::TcpStream,
    got: &mut Vec<u8>,
    needle: &[u8],
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while !got.windows(needle.len()).any(|w| w == needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drains_in_flight_streams() {
    let mut proxy = TestProxy::start(table(slow_stream(20, 50))).await;
    let (mut s, mut got) = stream_in_flight(&proxy).await;

    let started = Instant::now();
    let serving = proxy.begin_stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Not ready any more, and no new connections are taken.
    let ready = send(http::Method::GET, &proxy.admin_url("/readyz"), &[], None).await;
    assert_eq!(ready.status, 503);
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "still accepting"
    );
    // The in-flight stream runs to its end.
    assert!(read_until(&mut s, &mut got, b"data: [DONE]", Duration::from_secs(5)).await);
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "did not wait for the stream"
    );
    let lines = proxy.log_lines();
    assert_eq!(lines.len(), 1);
    assert!(lines[0]["error_class"].is_null(), "{}", lines[0]);
    assert_eq!(lines[0]["tokens_out"], 20);
}

#[tokio::test]
async fn the_drain_deadline_bounds_shutdown() {
    let config = ProxyConfig {
        drain_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let mut proxy = TestProxy::start_with(config, Some(table(slow_stream(100, 100)))).await;
    // Held open to the end: the stream must still be in flight when the drain deadline passes.
    let (_connection, _) = stream_in_flight(&proxy).await;
    let started = Instant::now();
    let serving = proxy.begin_stop();
    tokio::time::timeout(Duration::from_secs(3), serving)
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn oversized_headers_get_431_and_idle_connections_close() {
    let config = ProxyConfig {
        connection: ConnectionLimits {
            max_header_bytes: 16 * 1024,
            idle_timeout: Duration::from_millis(400),
        },
        ..test_config()
    };
    let proxy = TestProxy::start_with(config, Some(table(FakeBehaviour::default()))).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let big = "x".repeat(32 * 1024);
    s.write_all(format!("GET /s/v1/models HTTP/1.1\r\nhost: t\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // A keep-alive connection left idle is closed by the proxy.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        format!("GET /s/v1/models HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {KEY}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    assert!(read_until(&mut s, &mut got, b"fake-chat", Duration::from_secs(5)).await);
    let started = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "idle connection still open after 5s"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    proxy.stop().await;
}

/// Waits for the proxy to close `s`: true if it did within `limit`.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn slow_request_heads_are_cut_and_long_answers_are_not() {
    let idle = Duration::from_millis(300);
    let config = ProxyConfig {
        connection: ConnectionLimits {
            max_header_bytes: 16 * 1024,
            idle_timeout: idle,
        },
        ..test_config()
    };
    // 12 chunks 100 ms apart: the answer lasts four idle periods.
    let proxy = TestProxy::start_with(config, Some(table(slow_stream(12, 100)))).await;

    // A head trickled a byte every 50 ms never completes: the proxy cuts it within two idle periods,
    // although bytes keep coming.
    let s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut reader, mut writer) = s.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let head = format!(
            "GET /s/v1/models HTTP/1.1\r\nhost: t\r\nx-slow: {}",
            "a".repeat(200)
        );
        for b in head.bytes() {
            if writer.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut got)).await;
    let cut_after = started.elapsed();
    trickle.abort();
    assert!(read.is_ok(), "a trickled head was still open after 5 s");
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(
        cut_after >= idle - Duration::from_millis(50)
            && cut_after < idle * 2 + Duration::from_millis(700),
        "cut after {cut_after:?}"
    );

    // An answer longer than two idle periods is not cut; the connection closes once idle after it.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    s.write_all(stream_request().as_bytes()).await.unwrap();
    let mut got = Vec::new();
    assert!(
        read_until(&mut s, &mut got, b"data: [DONE]", Duration::from_secs(5)).await,
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(started.elapsed() >= Duration::from_millis(1000));
    let chunks = String::from_utf8_lossy(&got).matches("\"delta\"").count();
    assert!(chunks >= 12, "{chunks} chunks");
    let done = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "idle connection still open"
    );
    assert!(
        done.elapsed() >= idle - Duration::from_millis(50),
        "closed {:?} after the answer",
        done.elapsed()
    );
    let lines = proxy.log_lines();
    assert!(
        lines.iter().all(|l| l["error_class"].is_null()),
        "{lines:?}"
    );

    // HTTP/2 keeps its connections open while idle (it has pings and GOAWAY of its own).
    let mut sender = h2c(proxy.addr).await;
    for round in 0..2 {
        let response = sender
            .send_request(models_request(proxy.addr))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "round {round}");
        tokio::time::sleep(idle * 3).await;
    }
    proxy.stop().await;
}
