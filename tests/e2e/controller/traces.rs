//! The controller's traces (issue 22) in a real OpenTelemetry Collector: the compile, push and
//! status-write spans of a route applied through the real API server, with no Secret value in
//! anything exported; a collector that dies does not slow reconciling, and export resumes when it
//! is back; both wires over TLS.

use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_e2e::eventually;

use crate::collector::{Collector, attr};
use crate::fixtures::{KEY, base_yaml, route_yaml, sha256_hex, wait_condition, wait_served};
use crate::support::Setup;

/// A provider credential the snapshot carries in plaintext (the proxy must send it): it must reach
/// no span.
const PROVIDER_SECRET: &str = "sk-e2e-provider-credential-never-traced-4242";

fn provider_yaml() -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: upstream-key
  labels:
    tollgate.dev/secret: "true"
stringData:
  apiKey: {PROVIDER_SECRET}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata:
  name: upstream
spec:
  type: OpenAI
  endpoint: http://127.0.0.1:9/v1
  credentials:
    secretRefs:
      - name: upstream-key
  models:
    - name: gpt-4o-mini
"#
    )
}

/// The controller's spans named `name` written so far.
fn spans_named(collector: &Collector, name: &str) -> Vec<Value> {
    collector
        .spans()
        .into_iter()
        .filter(|s| s["name"] == name)
        .collect()
}

/// A resource attribute of a span as `Collector::spans` returns it.
fn resource_attr(span: &Value, key: &str) -> Option<Value> {
    attr(&span["resource"], key)
}

/// Waits for a span named `name` that `test` accepts; returns it.
async fn wait_span(collector: &Collector, name: &str, test: impl Fn(&Value) -> bool) -> Value {
    eventually(
        &format!("a {name} span as expected"),
        Duration::from_secs(20),
        || async {
            let spans = spans_named(collector, name);
            spans
                .iter()
                .find(|s| test(s))
                .cloned()
                .ok_or_else(|| format!("{} {name} spans, none as expected", spans.len()))
        },
    )
    .await
}

fn int(span: &Value, key: &str) -> i64 {
    attr(span, key).and_then(|v| v.as_i64()).unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_push_and_status_spans_reach_a_real_collector_and_a_dead_one_slows_nothing() {
    let _serial = crate::SERIAL.lock().await;
    let mut collector = Collector::start();
    let setup = Setup::new("ctl-traces");
    setup.apply(&base_yaml());
    setup.apply(&provider_yaml());
    let controller = setup
        .controller_with_args(
            "controller",
            &[
                format!("--otlp-endpoint={}", collector.http_endpoint()),
                "--otel-resource-attributes=deployment.environment.name=e2e".into(),
            ],
        )
        .await;
    let mut proxy = setup
        .proxy("proxy-a", controller.port, &setup.proxy_token)
        .await;
    proxy.wait_ready().await;

    setup.apply(&route_yaml(
        "traced",
        "/traced",
        "Automatic",
        "a traced route",
    ));
    // A second route on the same path, younger (or, created in the same second, after it by name):
    // the compiler refuses it, which the compile span reports.
    setup.apply(&route_yaml(
        "zz-shadow",
        "/traced",
        "Automatic",
        "a conflicting route",
    ));
    wait_served(&[&proxy], "/traced", KEY, Duration::from_secs(20)).await;

    // The compile that published the route, and its push to the connected proxy beneath it.
    let compile = wait_span(&collector, "tollgate.compile", |s| {
        int(s, "tollgate.snapshot.routes") == 1
            && attr(s, "tollgate.compile.result") == Some("published".into())
    })
    .await;
    println!("compile span: {compile}");
    assert_eq!(
        resource_attr(&compile, "service.name"),
        Some("tollgate-controller".into())
    );
    assert_eq!(
        resource_attr(&compile, "service.instance.id"),
        Some("controller".into())
    );
    assert_eq!(
        resource_attr(&compile, "deployment.environment.name"),
        Some("e2e".into())
    );
    assert_eq!(compile["scope"]["name"], "tollgate-controller");
    // Two routes, two providers, a consumer, a subscription per route, two Secrets at least.
    // Two providers, a consumer, a route and its subscription, two Secrets at least.
    assert!(int(&compile, "tollgate.compile.objects") >= 7, "{compile}");
    let hash = attr(&compile, "tollgate.snapshot.hash").expect("the snapshot's hash");
    assert_eq!(hash.as_str().map(str::len), Some(64), "{hash}");
    assert!(int(&compile, "tollgate.snapshot.version") > 0);

    let push = wait_span(&collector, "tollgate.snapshot.push", |s| {
        s["traceId"] == compile["traceId"]
    })
    .await;
    println!("push span: {push}");
    assert_eq!(push["parentSpanId"], compile["spanId"]);
    assert_eq!(attr(&push, "tollgate.snapshot.hash"), Some(hash.clone()));
    assert_eq!(
        int(&push, "tollgate.snapshot.version"),
        int(&compile, "tollgate.snapshot.version")
    );
    assert_eq!(int(&push, "tollgate.proxies.connected"), 1, "{push}");
    assert!(int(&push, "tollgate.snapshot.bytes") > 0);

    // The compile that saw the conflicting route (and its subscription, Invalid for want of a
    // served route): an error status naming the route and its reason.
    let refusing = wait_span(&collector, "tollgate.compile", |s| {
        int(s, "tollgate.compile.rejected") == 2
    })
    .await;
    println!("compile span with refused objects: {refusing}");
    assert_eq!(
        attr(&refusing, "error.type"),
        Some("objects_not_accepted".into())
    );
    assert_eq!(refusing["status"]["code"], 2, "an error status: {refusing}");
    let message = refusing["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("AIRoute")
            && message.contains("zz-shadow")
            && message.contains("PathConflict"),
        "{message}"
    );

    // The leader's status writes: the routes' conditions among them.
    wait_condition(&setup, "airoute/traced", "Ready", "True").await;
    let status = wait_span(&collector, "tollgate.status.write", |s| {
        int(s, "tollgate.status.patches") >= 1
    })
    .await;
    println!("status span: {status}");
    assert_eq!(int(&status, "tollgate.status.failed"), 0);
    assert_eq!(
        resource_attr(&status, "service.name"),
        Some("tollgate-controller".into())
    );

    // Nothing exported holds a Secret's value or a key's digest.
    let everything = collector.raw();
    for secret in [KEY, PROVIDER_SECRET, &sha256_hex(KEY)] {
        assert!(
            !everything.contains(secret),
            "a Secret value reached the collector: {secret}"
        );
    }

    // The collector dies: reconciling goes on at its usual pace, the spans are dropped and counted.
    collector.kill();
    let started = Instant::now();
    setup.apply(&route_yaml(
        "after",
        "/after",
        "Automatic",
        "applied while the collector is down",
    ));
    wait_served(&[&proxy], "/after", KEY, Duration::from_secs(10)).await;
    wait_condition(&setup, "airoute/after", "Ready", "True").await;
    let took = started.elapsed();
    println!("a route applied with the collector dead was served and Ready in {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let dropped = r#"tollgate_controller_trace_spans_dropped_total{reason="export_failed"}"#;
    eventually(
        "failed exports counted",
        Duration::from_secs(15),
        || async {
            match controller.metric(dropped).await {
                n if n > 0.0 => Ok(n),
                _ => Err("none yet"),
            }
        },
    )
    .await;

    // Back on the same port: the next compile's spans arrive.
    collector.restart();
    setup.apply(&route_yaml(
        "later",
        "/later",
        "Automatic",
        "applied once it is back",
    ));
    wait_span(&collector, "tollgate.compile", |s| {
        int(s, "tollgate.snapshot.routes") == 3
    })
    .await;
    assert!(
        controller
            .metric("tollgate_controller_trace_spans_exported_total")
            .await
            > 0.0
    );
    let everything = collector.raw();
    for secret in [KEY, PROVIDER_SECRET, &sha256_hex(KEY)] {
        assert!(
            !everything.contains(secret),
            "{secret} reached the collector"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_wires_reach_a_collector_that_speaks_only_tls() {
    let _serial = crate::SERIAL.lock().await;
    let (collector, ca_pem) = Collector::start_tls();
    let setup = Setup::new("ctl-traces-tls");
    let ca = setup.dir.path().join("collector-ca.crt");
    std::fs::write(&ca, ca_pem).unwrap();
    setup.apply(&base_yaml());
    let mut controllers = Vec::new();
    for (name, protocol, endpoint) in [
        ("over-http", "http/protobuf", collector.https_endpoint()),
        ("over-grpc", "grpc", collector.grpcs_endpoint()),
    ] {
        controllers.push(
            setup
                .controller_with_args(
                    name,
                    &[
                        format!("--otlp-endpoint={endpoint}"),
                        format!("--otlp-protocol={protocol}"),
                        format!("--otlp-certificate={}", ca.display()),
                        "--otlp-headers=x-tenant=e2e".into(),
                    ],
                )
                .await,
        );
    }
    setup.apply(&route_yaml("tls", "/tls", "Automatic", "traced over TLS"));
    for name in ["over-http", "over-grpc"] {
        wait_span(&collector, "tollgate.compile", |s| {
            resource_attr(s, "service.instance.id") == Some(name.into())
                && int(s, "tollgate.snapshot.routes") == 1
        })
        .await;
    }
    assert!(!collector.raw().contains(KEY));
}
