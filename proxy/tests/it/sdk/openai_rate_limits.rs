//! The official `openai` Python package against a standalone `tollgate-proxy` whose subscription is
//! limited: a 429 surfaces as `openai.RateLimitError` with `Retry-After` and the `x-ratelimit-*`
//! headers, and a spent budget as `RateLimitError` with code `budget_exceeded` that the SDK does not
//! retry. Uses the same venv as `openai_quickstart`; a missing python3 or a failed install fails the
//! test.

use crate::support::python::run_sdk_script;
use crate::support::standalone_bin::Proxy;

const KEY: &str = "tg-limited-key-0123456789";
const BROKE: &str = "tg-broke-key-0123456789";

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
stringData: {limited: tg-limited-key-0123456789, broke: tg-broke-key-0123456789}
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

#[test]
fn openai_python_sdk_sees_rate_limit_errors_with_the_retry_hint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("limited.yaml"), CONFIG).unwrap();
    let mut proxy = Proxy::start(dir.path());
    let base_url = format!("http://127.0.0.1:{}/limited/v1", proxy.port);

    run_sdk_script(
        "test_rate_limit.py",
        &[
            ("TOLLGATE_BASE_URL", &base_url),
            ("TOLLGATE_KEY", KEY),
            ("TOLLGATE_BROKE_KEY", BROKE),
        ],
    );

    // The SDK sent the over-budget call once: `x-should-retry: false` kept it from retrying.
    // The access log is written in batches (about every 100 ms): wait for the last call's line, and
    // a little more for any retry's, before the proxy is killed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !proxy.log_text().contains("\"budget_exceeded\"") && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = proxy.child.kill();
    let _ = proxy.child.wait();
    let log = proxy.log_text();
    let lines = proxy.log_lines();
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
