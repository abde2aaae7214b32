//! Standalone mode: the quickstart YAML served as is, valid edits swapped in, bad ones refused while the
//! previous snapshot keeps serving.

use std::path::{Path, PathBuf};

use serde_json::json;
use tollgate_proxy::control::standalone::{Change, Watcher, fingerprint, read_files};

use crate::support::*;

const KEY: &str = "tg-quickstart-demo-key";

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/quickstart")
}

fn quickstart_text() -> String {
    std::fs::read_to_string(quickstart().join("quickstart.yaml")).unwrap()
}

async fn model_ids(proxy: &TestProxy) -> Vec<String> {
    let r = get(&proxy.url("/demo/v1/models"), KEY).await;
    assert_eq!(r.status, 200);
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_quickstart_serves_chat_and_embeddings() {
    let proxy = TestProxy::start_with(test_config(), None).await;
    let watcher = Watcher::start(&quickstart(), proxy.store.clone(), None).unwrap();
    assert_eq!(watcher.version(), 1);
    let r = post(
        &proxy.url("/demo/v1/chat/completions"),
        KEY,
        &json!({"model": "fake-chat", "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    r.assert_status(200);
    assert_eq!(r.json()["usage"]["completion_tokens"], 12);
    assert_eq!(r.header("x-tollgate-cache"), Some("miss"));
    // The quickstart caches its route: the same question again is a hit.
    let again = post(
        &proxy.url("/demo/v1/chat/completions"),
        KEY,
        &json!({"model": "fake-chat", "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    again.assert_status(200);
    assert_eq!(again.header("x-tollgate-cache"), Some("hit"));
    assert_eq!(again.body, r.body);
    let r = post(
        &proxy.url("/demo/v1/embeddings"),
        KEY,
        &json!({"model": "fake-embed", "input": "hello"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(model_ids(&proxy).await, ["fake-chat", "fake-embed"]);
    // The quickstart's prompt API, compiled from the same YAML.
    let r = post(
        &proxy.url("/demo/prompts/summarise"),
        KEY,
        &json!({"variables": {"text": "Tollgate publishes prompts.", "words": 5}}),
    )
    .await;
    r.assert_status(200);
    assert_eq!(r.json()["usage"]["output_tokens"], 12);
    let r = get(&proxy.url("/demo/openapi.json"), KEY).await;
    r.assert_status(200);
    assert!(r.json()["paths"]["/prompts/summarise"]["post"].is_object());
    proxy.stop().await;
}

#[tokio::test]
async fn valid_changes_are_swapped_in_and_bad_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quickstart.yaml");
    let original = quickstart_text();
    std::fs::write(&file, &original).unwrap();
    let proxy = TestProxy::start_with(test_config(), None).await;
    let mut watcher = Watcher::start(dir.path(), proxy.store.clone(), None).unwrap();
    assert!(matches!(watcher.check(), Change::Unchanged));
    // Polling streams the files through a hash; it must agree with reading them whole.
    assert_eq!(
        fingerprint(dir.path()).unwrap(),
        read_files(dir.path()).unwrap().fingerprint
    );

    // A third model on the route: applied as version 2.
    let with_model = original.replace(
        "    - name: fake-embed\n      backends:\n        - provider: fake\n",
        "    - name: fake-embed\n      backends:\n        - provider: fake\n    - name: fake-chat-2\n      backends:\n        - provider: fake\n          model: fake-chat\n",
    );
    assert_ne!(
        with_model, original,
        "the quickstart changed shape; update this test"
    );
    std::fs::write(&file, &with_model).unwrap();
    assert!(matches!(watcher.check(), Change::Applied(2)), "model added");
    assert_eq!(proxy.store.version(), Some(2));
    assert_eq!(
        model_ids(&proxy).await,
        ["fake-chat", "fake-chat-2", "fake-embed"]
    );

    // Broken YAML: refused once, the old table keeps serving, and the same breakage is not re-reported.
    std::fs::write(&file, format!("{with_model}\n---\nkind: [unclosed\n")).unwrap();
    assert!(matches!(watcher.check(), Change::Refused(_)));
    assert!(matches!(watcher.check(), Change::Unchanged));
    assert_eq!(proxy.store.version(), Some(2));
    assert_eq!(model_ids(&proxy).await.len(), 3);

    // A document that does not fit its kind's schema is refused too.
    std::fs::write(&file, with_model.replace("prefix: /demo", "prefix: [1, 2]")).unwrap();
    assert!(matches!(watcher.check(), Change::Refused(_)));

    // An edit that would take the accepted route out of service (invalid prefix) is refused.
    std::fs::write(
        &file,
        with_model.replace("prefix: /demo", "prefix: /demo//bad"),
    )
    .unwrap();
    match watcher.check() {
        Change::Refused(why) => assert!(why.contains("AIRoute default/demo"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(proxy.store.version(), Some(2));
    assert_eq!(model_ids(&proxy).await.len(), 3);

    // A new object that is broken does not block the change; it is just left out.
    let extra = "\n---\napiVersion: tollgate.dev/v1alpha1\nkind: AIRoute\nmetadata:\n  name: broken\n  namespace: default\nspec:\n  prefix: /x//y\n  models:\n    - name: m\n      backends:\n        - provider: fake\n";
    std::fs::write(&file, format!("{with_model}{extra}")).unwrap();
    assert!(
        matches!(watcher.check(), Change::SameTable),
        "still the same table"
    );
    assert_eq!(proxy.store.version(), Some(2));

    // Back to the original: version 3, two models again.
    std::fs::write(&file, &original).unwrap();
    assert!(matches!(watcher.check(), Change::Applied(3)));
    assert_eq!(model_ids(&proxy).await, ["fake-chat", "fake-embed"]);
    proxy.stop().await;
}

#[tokio::test]
async fn unreadable_files_fail_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start_with(test_config(), None).await;
    assert!(
        Watcher::start(dir.path(), proxy.store.clone(), None).is_err(),
        "no files"
    );
    std::fs::write(dir.path().join("a.yaml"), "kind: [").unwrap();
    let err = Watcher::start(dir.path(), proxy.store.clone(), None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("a.yaml"), "{err}");
    assert!(!proxy.store.is_ready());
    proxy.stop().await;
}

#[tokio::test]
async fn the_quickstart_masks_emails_in_what_callers_send() {
    let proxy = TestProxy::start_with(test_config(), None).await;
    let _watcher = Watcher::start(&quickstart(), proxy.store.clone(), None).unwrap();
    let r = post(
        &proxy.url("/demo/v1/chat/completions"),
        KEY,
        &json!({"model": "fake-chat", "messages": [{"role": "user", "content": "mail bob@example.com"}]}),
    )
    .await;
    r.assert_status(200);
    let line = proxy.log_line_of(&r.request_id()).await;
    assert_eq!(
        line["guardrails"],
        json!([{"rule": "emails", "action": "mask"}])
    );
    assert!(!line.to_string().contains("bob@example.com"));
}
