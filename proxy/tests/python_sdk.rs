//! The official `openai` Python package as the client of the real `tollgate-proxy` binary in standalone
//! mode on the quickstart: chat, streaming, embeddings, models, and the SDK's own exception types for a
//! bad key and an unsubscribed one. The venv lives in `~/.cache/tollgate/venv` and is created on first
//! use; a missing python3 or a failed install fails this test rather than skipping it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "tg-quickstart-demo-key";
const UNSUBSCRIBED: &str = "tg-unsubscribed-key";

/// A consumer with a valid key and no subscription, next to the quickstart.
const EXTRA: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: lonely-app-key
  namespace: default
stringData:
  apiKey: tg-unsubscribed-key
---
apiVersion: tollgate.dev/v1alpha1
kind: Consumer
metadata:
  name: lonely-app
  namespace: default
spec:
  keys:
    - name: primary
      secretRef:
        name: lonely-app-key
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

fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn openai_python_sdk_against_the_standalone_quickstart() {
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
    std::fs::copy(
        manifest.join("../deploy/examples/quickstart/quickstart.yaml"),
        dir.path().join("quickstart.yaml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("unsubscribed.yaml"), EXTRA).unwrap();
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

    let mut sdk = Command::new(&python)
        .arg(manifest.join("tests/python/test_openai_sdk.py"))
        .env(
            "TOLLGATE_BASE_URL",
            format!("http://127.0.0.1:{port}/demo/v1"),
        )
        .env("TOLLGATE_KEY", KEY)
        .env("TOLLGATE_UNSUBSCRIBED", UNSUBSCRIBED)
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .spawn()
        .expect("run python");
    let status = wait_for(&mut sdk, Duration::from_secs(180)).unwrap_or_else(|| {
        let _ = sdk.kill();
        panic!("the SDK test did not finish within 180s");
    });
    assert!(
        status.success(),
        "the OpenAI SDK checks failed (see output above)"
    );

    // SIGTERM: the proxy drains and exits cleanly.
    let pid = proxy.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit =
        wait_for(&mut proxy.0, Duration::from_secs(10)).expect("exits within 10s of SIGTERM");
    assert!(exit.success(), "exit status {exit}");

    let log = std::fs::read_to_string(&access_log).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("access-log lines are JSON"))
        .collect();
    assert!(lines.len() >= 10, "{} access-log lines", lines.len());
    assert!(
        lines
            .iter()
            .any(|l| l["status"] == 403 && l["error_class"] == "not_subscribed")
    );
    assert!(
        !log.contains(KEY) && !log.contains(UNSUBSCRIBED),
        "keys in the access log"
    );
}
