//! The official `openai` Python package against a standalone `tollgate-proxy` whose subscription is
//! limited: a 429 surfaces as `openai.RateLimitError` with `Retry-After` and the `x-ratelimit-*`
//! headers, and a spent budget as `RateLimitError` with code `budget_exceeded` that the SDK does not
//! retry. Uses the same venv as `python_sdk.rs`; a missing python3 or a failed install fails the test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "tg-limited-key";
const BROKE: &str = "tg-broke-key";

const CONFIG: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: fake, namespace: default}
spec:
  type: Fake
  models: [{name: fake-chat}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: limited, namespace: default}
spec:
  prefix: /limited
  approval: Automatic
  models:
    - name: fake-chat
      backends: [{provider: fake}]
  limits: {requestsPerMinute: 2}
---
apiVersion: v1
kind: Secret
metadata: {name: keys, namespace: default}
stringData: {limited: tg-limited-key, broke: tg-broke-key}
---
apiVersion: tollgate.dev/v1alpha1
kind: Consumer
metadata: {name: limited-app, namespace: default}
spec:
  keys: [{name: primary, secretRef: {name: keys, key: limited}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: Consumer
metadata: {name: broke-app, namespace: default}
spec:
  keys: [{name: primary, secretRef: {name: keys, key: broke}}]
  budget: {monthlyUsd: 0}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata: {name: limited-app, namespace: default}
spec:
  consumer: limited-app
  route: {name: limited}
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata: {name: broke-app, namespace: default}
spec:
  consumer: broke-app
  route: {name: limited}
"#;

/// Kills the proxy if the test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

#[test]
fn openai_python_sdk_sees_rate_limit_errors_with_the_retry_hint() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = Command::new("bash")
        .arg(manifest.join("tests/python/ensure_venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(
        venv.status.success(),
        "could not prepare a Python venv with the openai package (python3 and PyPI are required)"
    );
    let python = String::from_utf8(venv.stdout).unwrap().trim().to_string();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("limited.yaml"), CONFIG).unwrap();
    let access_log = dir.path().join("access.log");
    let (port, admin) = (free_port(), free_port());
    let mut proxy = Running(
        Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
            .arg("standalone")
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .stdout(std::fs::File::create(&access_log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tollgate-proxy"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_status(admin, "/readyz") != Some(200) {
        assert!(
            proxy.0.try_wait().unwrap().is_none(),
            "the proxy exited at startup"
        );
        assert!(
            Instant::now() < deadline,
            "the proxy was not ready within 30s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let status = Command::new(&python)
        .arg(manifest.join("tests/python/test_rate_limit.py"))
        .env(
            "TOLLGATE_BASE_URL",
            format!("http://127.0.0.1:{port}/limited/v1"),
        )
        .env("TOLLGATE_KEY", KEY)
        .env("TOLLGATE_BROKE_KEY", BROKE)
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .status()
        .expect("run python");
    assert!(
        status.success(),
        "the OpenAI SDK checks failed (see output above)"
    );

    // The SDK sent the over-budget call once: `x-should-retry: false` kept it from retrying.
    let _ = proxy.0.kill();
    let _ = proxy.0.wait();
    let log = std::fs::read_to_string(&access_log).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("access-log lines are JSON"))
        .collect();
    let over_budget = lines
        .iter()
        .filter(|l| l["error_class"] == "budget_exceeded")
        .count();
    assert_eq!(over_budget, 1, "{log}");
    let limited = lines
        .iter()
        .filter(|l| l["status"] == 429 && l["error_class"] == "rate_limit_exceeded")
        .count();
    assert_eq!(limited, 1, "{log}");
}
