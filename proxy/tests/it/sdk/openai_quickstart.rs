//! The official `openai` Python package as the client of the real `tollgate-proxy` binary in standalone
//! mode on the quickstart: chat, streaming, embeddings, models, and the SDK's own exception types for a
//! bad key and an unsubscribed one. The venv lives in `~/.cache/tollgate/venv` and is created on first
//! use; a missing python3 or a failed install fails this test rather than skipping it.

use std::process::Command;
use std::time::Duration;

use crate::support::python::run_sdk_script;
use crate::support::standalone_bin::{Proxy, manifest, wait_for};

const KEY: &str = "tg-quickstart-demo-key";
const UNSUBSCRIBED: &str = "tg-unsubscribed-key-0123456789";

/// A consumer with a valid key and no subscription, next to the quickstart.
const EXTRA: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: lonely-app-key
  namespace: default
stringData:
  apiKey: tg-unsubscribed-key-0123456789
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

#[test]
fn openai_python_sdk_against_the_standalone_quickstart() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        manifest().join("../deploy/examples/quickstart/quickstart.yaml"),
        dir.path().join("quickstart.yaml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("unsubscribed.yaml"), EXTRA).unwrap();
    let mut proxy = Proxy::start(dir.path());
    let base_url = format!("http://127.0.0.1:{}/demo/v1", proxy.port);

    run_sdk_script(
        "test_openai_sdk.py",
        &[
            ("TOLLGATE_BASE_URL", &base_url),
            ("TOLLGATE_KEY", KEY),
            ("TOLLGATE_UNSUBSCRIBED", UNSUBSCRIBED),
        ],
    );

    // SIGTERM: the proxy drains and exits cleanly.
    let pid = proxy.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit =
        wait_for(&mut proxy.child, Duration::from_secs(10)).expect("exits within 10s of SIGTERM");
    assert!(exit.success(), "exit status {exit}");

    let log = proxy.log_text();
    let lines = proxy.log_lines();
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
