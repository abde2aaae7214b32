//! `generate: true` in standalone mode, with the real binary: the key is generated into a state file
//! of mode 0600 (its path logged, never the key), serves calls, and is the same after a restart.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::support::post;
use crate::support::standalone_bin::Proxy;

const CONFIG: &str = r#"apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {name: fake}
spec:
  type: Fake
  models: [{name: fake-chat}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {name: gen}
spec:
  prefix: /gen
  approval: Automatic
  models: [{name: fake-chat, backends: [{provider: fake}]}]
---
apiVersion: tollgate.dev/v1alpha1
kind: Consumer
metadata: {name: app}
spec:
  keys: [{name: main, generate: true}]
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata: {name: app-gen}
spec: {consumer: app, route: {name: gen}}
"#;

fn key_in(state: &Path) -> String {
    let file: Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    file["keys"]["default/app/main"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn chat(proxy: &Proxy, key: &str) -> u16 {
    let url = format!("http://127.0.0.1:{}/gen/v1/chat/completions", proxy.port);
    let body = json!({"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]});
    post(&url, key, &body).await.status.as_u16()
}

#[tokio::test]
async fn generated_keys_are_kept_in_a_0600_state_file_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("gen.yaml"), CONFIG).unwrap();
    let state = dir.path().join("state/keys.json");
    let state_arg = state.to_str().unwrap();

    let proxy = Proxy::start_logging(&config, "first.log", &["--generated-keys-file", state_arg]);
    let key = key_in(&state);
    assert!(key.starts_with("tg_") && key.len() == 46, "{key}");
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(chat(&proxy, &key).await, 200);
    assert_eq!(chat(&proxy, "tg_not-the-generated-key-000000").await, 401);
    let stderr = proxy.stderr_text();
    assert!(stderr.contains(state_arg), "the path is logged: {stderr}");
    assert!(!stderr.contains(&key), "never the key: {stderr}");
    assert!(!proxy.log_text().contains(&key));
    drop(proxy);

    // A restart reads the same key back and generates none.
    let proxy = Proxy::start_logging(&config, "second.log", &["--generated-keys-file", state_arg]);
    assert_eq!(key_in(&state), key);
    assert_eq!(chat(&proxy, &key).await, 200);
    let stderr = proxy.stderr_text();
    assert!(!stderr.contains("generated a consumer key"), "{stderr}");
    assert!(
        stderr.contains(state_arg) && !stderr.contains(&key),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unwritable_state_file_stops_the_start_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("gen.yaml"), CONFIG).unwrap();
    // A regular file where the state directory should be.
    std::fs::write(dir.path().join("blocked"), "").unwrap();
    let state = dir.path().join("blocked/keys.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
        .arg("standalone")
        .arg(&config)
        .args(["--generated-keys-file", state.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot keep generated consumer keys in")
            && stderr.contains(state.to_str().unwrap()),
        "{stderr}"
    );
}
