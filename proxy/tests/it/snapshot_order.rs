//! The real proxy binary following a controller that is really two replicas behind one address: a
//! fake controller on TLS answers each new snapshot stream with what the test gives it, so that after a
//! reconnection the proxy meets a replica whose snapshot is older than the one it serves. It refuses
//! that one, keeps serving the newer, and takes the next newer one.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc};
use tollgate_snapshot::{Content, FakeBehaviour, Snapshot, wire};

use crate::support::standalone_bin::{free_port, http_get, wait_for};
use crate::support::*;

/// What one snapshot stream sends: frames, then the end of the stream or silence kept open.
struct Stream {
    frames: Vec<u8>,
    end: bool,
}

/// One route under `prefix`.
fn table(prefix: &str) -> Content {
    Content {
        providers: vec![fake_provider("fake", FakeBehaviour::default())],
        routes: vec![route(
            NS,
            &prefix[1..],
            prefix,
            vec![model("m", vec![backend(0, "m")], vec![])],
        )],
        ..Content::default()
    }
}

fn stream(version: u64, prefix: &str, end: bool) -> Stream {
    Stream {
        frames: wire::encode_frame(&Snapshot::from_content(version, table(prefix))),
        end,
    }
}

/// A TLS server that answers every `GET /v1/snapshots` with the next [`Stream`] from `plans` (waiting
/// for it) and anything else (usage reports) with `204`; counts the snapshot streams opened.
async fn fake_controller(
    certified: &rcgen::CertifiedKey<rcgen::KeyPair>,
    plans: mpsc::UnboundedReceiver<Stream>,
    opened: Arc<AtomicUsize>,
) -> u16 {
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
    let plans = Arc::new(Mutex::new(plans));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, plans, opened) = (acceptor.clone(), plans.clone(), opened.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tls.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                if !head.starts_with(b"GET /v1/snapshots ") {
                    let _ = tls
                        .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
                opened.fetch_add(1, Ordering::SeqCst);
                let Some(plan) = plans.lock().await.recv().await else {
                    return;
                };
                let mut out = Vec::new();
                out.extend_from_slice(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n",
                );
                write!(out, "{:x}\r\n", plan.frames.len()).unwrap();
                out.extend_from_slice(&plan.frames);
                out.extend_from_slice(b"\r\n");
                if plan.end {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                if tls.write_all(&out).await.is_err() || tls.flush().await.is_err() {
                    return;
                }
                if plan.end {
                    let _ = tls.shutdown().await;
                } else {
                    // Heartbeats until the proxy goes away.
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let beat = b"4\r\n\0\0\0\0\r\n";
                        if tls.write_all(beat).await.is_err() || tls.flush().await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// The proxy process, killed when the test ends, failed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = wait_for(&mut self.0, Duration::from_secs(5));
    }
}

/// Waits up to 15 s for `check` to hold.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(admin: u16, name: &str) -> Option<f64> {
    let (_, text) = http_get(admin, "/metrics")?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_refuses_an_older_snapshot_from_a_lagging_controller_replica() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "a-service-account-token").unwrap();
    let (plans, planned) = mpsc::unbounded_channel();
    let opened = Arc::new(AtomicUsize::new(0));
    let controller = fake_controller(&certified, planned, opened.clone()).await;

    let (port, admin) = (free_port(), free_port());
    let stderr = dir.path().join("proxy.stderr");
    let _proxy = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
            .args(["--controller", &format!("https://localhost:{controller}")])
            .arg("--controller-ca")
            .arg(&ca)
            .arg("--token-file")
            .arg(&token)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--access-log", "off"])
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap(),
    );
    let status = |path: &str| http_get(port, path).map(|(s, _)| s);
    let version = || metric(admin, "tollgate_snapshot_version");

    // Replica A, up to date: version 2000 with /new. Its stream ends (A restarts, say).
    plans.send(stream(2_000, "/new", true)).unwrap();
    eventually("the proxy took version 2000", || version() == Some(2_000.0)).await;
    assert_eq!(status("/new/v1/models"), Some(401));

    // Replica B answers the reconnection; its watch lags: version 1000, still without /new.
    plans.send(stream(1_000, "/old", true)).unwrap();
    // The proxy reads a stream to its end before it opens the next: once a third is open, B's
    // snapshot has been judged.
    eventually("the proxy reconnected after B", || {
        opened.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert_eq!(version(), Some(2_000.0), "went back to B's older snapshot");
    assert_eq!(status("/new/v1/models"), Some(401));
    assert_eq!(status("/old/v1/models"), Some(404));
    let log = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        log.contains("refusing a snapshot older than the one served"),
        "{log}"
    );

    // B catches up and compiles a newer change: taken.
    plans.send(stream(3_000, "/newest", false)).unwrap();
    eventually("the proxy took version 3000", || version() == Some(3_000.0)).await;
    assert_eq!(status("/newest/v1/models"), Some(401));
    assert_eq!(status("/new/v1/models"), Some(404));
}
