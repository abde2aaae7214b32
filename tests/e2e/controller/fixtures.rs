//! What the controller tests share: the resources they apply, and waiting for what they expect.

use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_e2e::eventually;

use crate::{
    http,
    support::{Controller, Proxy, Setup, percentile},
};

pub const KEY: &str = "tg_e2e-static-key-for-the-app-0123456789";
pub const MODEL: &str = "fake-chat";
/// Completion tokens the Fake provider answers with in these tests.
pub const COMPLETION_TOKENS: u64 = 12;
/// Prices of `fake-chat` (USD per million tokens).
pub const INPUT_PRICE: f64 = 1.0;
pub const OUTPUT_PRICE: f64 = 2.0;

/// A Fake provider, a labelled key Secret and a consumer using it.
pub fn base_yaml() -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata:
  name: fake
spec:
  type: Fake
  models:
    - name: {MODEL}
      pricing:
        inputPerMillion: {INPUT_PRICE}
        outputPerMillion: {OUTPUT_PRICE}
  fake:
    completionTokens: {COMPLETION_TOKENS}
---
apiVersion: v1
kind: Secret
metadata:
  name: app-key
  labels:
    tollgate.dev/secret: "true"
stringData:
  apiKey: {KEY}
---
apiVersion: tollgate.dev/v1alpha1
kind: Consumer
metadata:
  name: app
spec:
  keys:
    - name: primary
      secretRef:
        name: app-key
"#
    )
}

/// A route on `prefix` serving `fake-chat`, and the app's subscription to it.
pub fn route_yaml(name: &str, prefix: &str, approval: &str, description: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata:
  name: {name}
spec:
  prefix: {prefix}
  description: "{description}"
  approval: {approval}
  models:
    - name: {MODEL}
      backends:
        - provider: fake
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata:
  name: app-{name}
spec:
  consumer: app
  route:
    name: {name}
"#
    )
}

/// A controller and two ready proxies following it.
pub async fn controller_and_proxies(setup: &Setup) -> (Controller, Proxy, Proxy) {
    let controller = setup.controller("controller").await;
    let mut a = setup
        .proxy("proxy-a", controller.port, &setup.proxy_token)
        .await;
    let mut b = setup
        .proxy("proxy-b", controller.port, &setup.proxy_token)
        .await;
    a.wait_ready().await;
    b.wait_ready().await;
    (controller, a, b)
}

/// Waits until every proxy answers 200 on `prefix`.
pub async fn wait_served(proxies: &[&Proxy], prefix: &str, key: &str, limit: Duration) {
    for proxy in proxies {
        eventually(
            &format!("{prefix} served by {}", proxy.process.name),
            limit,
            || async {
                match proxy.chat(prefix, key, MODEL).await {
                    (200, body) => Ok(body),
                    (status, body) => Err(format!("{status} {body}")),
                }
            },
        )
        .await;
    }
}

pub fn status_of(setup: &Setup, resource: &str) -> Value {
    setup
        .kubectl(&["get", resource, "-o", "json"])
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .unwrap_or(Value::Null)
}

pub fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Waits until `resource` has condition `type_` = `want`, observed at its current generation.
pub async fn wait_condition(setup: &Setup, resource: &str, type_: &str, want: &str) -> Value {
    eventually(
        &format!("{resource} {type_}={want}"),
        Duration::from_secs(20),
        || async {
            let object = status_of(setup, resource);
            let generation = &object["metadata"]["generation"];
            match condition(&object, type_) {
                Some(c) if c["status"] == want && &c["observedGeneration"] == generation => {
                    Ok(object.clone())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

pub fn lease_holder(setup: &Setup) -> String {
    setup.jsonpath("lease/tollgate-controller", "{.spec.holderIdentity}")
}

/// Applies `n` new routes (with subscriptions) one by one and measures, for each, the time from
/// `kubectl apply` returning to the first 200 on every proxy.
pub async fn measure_propagation(
    setup: &Setup,
    proxies: &[&Proxy],
    label: &str,
    n: usize,
) -> Vec<Duration> {
    let client = http::Http::new();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{label}-{i}");
        setup.apply(&route_yaml(
            &name,
            &format!("/{name}"),
            "Automatic",
            "propagation",
        ));
        let applied = Instant::now();
        for proxy in proxies {
            loop {
                if let Ok((200, _)) = client
                    .chat(proxy.port, &format!("/{name}"), KEY, MODEL)
                    .await
                {
                    break;
                }
                assert!(
                    applied.elapsed() < Duration::from_secs(20),
                    "{name} never served"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        samples.push((applied.elapsed(), name));
    }
    samples.sort();
    let slowest: Vec<String> = samples
        .iter()
        .rev()
        .take(3)
        .map(|(took, name)| format!("{name} {:.0}ms", took.as_secs_f64() * 1e3))
        .collect();
    println!("  slowest: {}", slowest.join(", "));
    samples.into_iter().map(|(took, _)| took).collect()
}

pub fn report(what: &str, samples: &[Duration]) -> (Duration, Duration) {
    let (p50, p99) = (percentile(samples, 50.0), percentile(samples, 99.0));
    println!(
        "propagation {what}: n={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
    (p50, p99)
}

/// `program args…` with `input` on its stdin: its stdout, as text.
pub fn piped(program: &str, args: &[&str], input: &[u8]) -> String {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(input)?;
            child.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    String::from_utf8(out.stdout).unwrap()
}

/// The value under `field` of the Secret `name`, decoded (empty when there is none).
pub fn secret_data(setup: &Setup, name: &str, field: &str) -> String {
    let encoded = setup.jsonpath(&format!("secret/{name}"), &format!("{{.data.{field}}}"));
    piped("base64", &["-d"], encoded.as_bytes())
}

/// The SHA-256 of `text` in hex, as the snapshot and a rotated key's Secret hold a key.
pub fn sha256_hex(text: &str) -> String {
    let line = piped("sha256sum", &[], text.as_bytes());
    line.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}
