//! The controller end to end (issue 5): the real `tollgate-controller` and two real `tollgate-proxy`
//! processes against a real kube-apiserver. The Fake provider answers inside the proxy, so no upstream
//! is needed. Tests run one at a time (they measure latency on a 2-core machine) and print their figures.
//!
//! Set `TOLLGATE_E2E_ECHO=1` to see the processes' logs, `TOLLGATE_E2E_PROFILE=release` to measure
//! release builds.

// The proxy tests' real OpenTelemetry Collector, shared rather than copied; this binary reads spans only.
#[allow(dead_code)]
#[path = "../../../proxy/tests/it/support/collector.rs"]
mod collector;
mod fixtures;
mod http;
mod mcp;
mod moderation;
mod portal;
mod rest;
mod support;
mod traces;

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tollgate_e2e::{eventually, repo_root};

use fixtures::{
    INPUT_PRICE, KEY, MODEL, OUTPUT_PRICE, base_yaml, condition, controller_and_proxies,
    lease_holder, measure_propagation, report, route_yaml, secret_data, sha256_hex, status_of,
    wait_condition, wait_served,
};
use support::{LEASE, OTHER_SA, PROXY_SA, Setup};

/// A route with one good prompt and four that only the compiler can find fault with.
const PROMPT_PROBLEMS: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata:
  name: prompts
spec:
  prefix: /prompts-demo
  approval: Automatic
  models:
    - name: fake-chat
      backends: [{provider: fake}]
  prompts:
    - name: ok
      model: fake-chat
      messages: [{role: user, content: "Echo {{text}}"}]
      variables: [{name: text}, {name: spare, required: false}]
    - name: typo
      model: fake-chat
      messages: [{role: user, content: "Echo {{txt}}"}]
      variables: [{name: text}]
    - name: elsewhere
      model: gpt-9
      messages: [{role: user, content: "Hi"}]
    - name: bad-schema
      model: fake-chat
      messages: [{role: user, content: "Hi"}]
      output: {type: JSONSchema, schema: {type: objekt}}
    - name: bad-default
      model: fake-chat
      messages: [{role: user, content: "{{count}}"}]
      variables: [{name: count, type: integer, default: many}]
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata:
  name: demo-app-prompts
spec:
  consumer: demo-app
  route:
    name: prompts
"#;

/// One test at a time: they start several processes and some measure latency.
static SERIAL: Mutex<()> = Mutex::const_new(());

// 1. The quickstart through both proxies; status and printer columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_is_served_by_both_proxies_and_status_is_right() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("ctl-quickstart");
    let (_controller, a, b) = controller_and_proxies(&setup).await;

    let quickstart =
        std::fs::read_to_string(repo_root().join("deploy/examples/quickstart/quickstart.yaml"))
            .unwrap();
    let quickstart = quickstart.replace("namespace: default", &format!("namespace: {}", setup.ns));
    setup.apply(&quickstart);
    wait_served(
        &[&a, &b],
        "/demo",
        "tg-quickstart-demo-key",
        Duration::from_secs(10),
    )
    .await;

    let route = wait_condition(&setup, "airoute/demo", "Ready", "True").await;
    assert_eq!(condition(&route, "Accepted").unwrap()["status"], "True");
    let prompts = condition(&route, "PromptsValid").expect("PromptsValid");
    assert_eq!(prompts["status"], "True", "{prompts}");
    assert!(
        prompts["message"]
            .as_str()
            .unwrap()
            .contains("Serving prompt APIs summarise")
    );
    // The quickstart's prompt API, compiled by the controller, through both proxies.
    for proxy in [&a, &b] {
        let (status, body) = proxy
            .post(
                "/demo/prompts/summarise",
                "tg-quickstart-demo-key",
                &json!({"variables": {"text": "Tollgate publishes prompts as APIs."}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["object"], "prompt.result", "{v}");
        assert!(v["output"].as_str().is_some_and(|o| !o.is_empty()), "{v}");
    }

    // Prompt problems only the compiler sees are reported in PromptsValid; the good prompt is
    // served, the bad ones are not, and the route's other traffic is not affected.
    setup.apply(PROMPT_PROBLEMS);
    let bad = wait_condition(&setup, "airoute/prompts", "PromptsValid", "False").await;
    let message = condition(&bad, "PromptsValid").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    println!("PromptsValid of a route with bad prompts: {message}");
    for expected in [
        "Prompt typo is not served: messages[0] uses {{txt}}, which names no variable",
        "Prompt elsewhere is not served: its model gpt-9 is not one of the route's spec.models",
        "Prompt bad-schema is not served: output.schema is not a valid JSON Schema",
        "Prompt bad-default is not served: variable count: its default \"many\" is not a value of type integer.",
        "Serving prompt APIs ok",
        "Warning: prompt ok: variable spare is used by no placeholder",
    ] {
        assert!(message.contains(expected), "{expected:?} not in {message}");
    }
    assert_eq!(condition(&bad, "Ready").unwrap()["status"], "True");
    let call = |name: &'static str| {
        let a = &a;
        async move {
            a.post(
                &format!("/prompts-demo/prompts/{name}"),
                "tg-quickstart-demo-key",
                &json!({"variables": {"text": "hi"}}),
            )
            .await
        }
    };
    eventually(
        "the good prompt is served",
        Duration::from_secs(10),
        || async {
            let (status, body) = call("ok").await;
            (status == 200)
                .then_some(())
                .ok_or(format!("{status} {body}"))
        },
    )
    .await;
    let (status, body) = call("typo").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("prompt_not_found"), "{body}");
    assert_eq!(route["status"]["endpoint"], "/demo/v1");
    wait_condition(&setup, "modelprovider/fake", "Ready", "True").await;
    let consumer = wait_condition(&setup, "consumer/demo-app", "Ready", "True").await;
    assert_eq!(consumer["status"]["activeKeys"], 1);
    let sub = wait_condition(&setup, "apisubscription/demo-app-demo", "Ready", "True").await;
    assert_eq!(sub["status"]["phase"], "Approved");

    let listing = setup
        .kubectl(&["get", "modelproviders,airoutes,consumers,apisubscriptions"])
        .unwrap();
    println!("kubectl get (quickstart):\n{listing}");
    let line = |kind: &str| {
        listing
            .lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} line in:\n{listing}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let provider = line("modelprovider.tollgate.dev/fake");
    assert_eq!(provider[1], "Fake");
    assert!(provider.contains(&"True"), "{provider:?}");
    let route = line("airoute.tollgate.dev/demo");
    assert_eq!(&route[1..3], ["/demo", "Published"]);
    assert!(route.contains(&"True"), "{route:?}");
    let consumer = line("consumer.tollgate.dev/demo-app");
    assert_eq!(&consumer[1..3], ["1", "True"]);
    let sub = line("apisubscription.tollgate.dev/demo-app-demo");
    assert_eq!(&sub[1..4], ["demo-app", "demo", "Approved"]);
}

// 2. Pending → 403; approved by a holder of `approve` → 200 within 1 s; rejected; revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_decisions_reach_both_proxies() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("ctl-approval");
    let (_controller, a, b) = controller_and_proxies(&setup).await;
    setup.apply(&base_yaml());
    setup.apply(&route_yaml("chat", "/chat", "Manual", "needs approval"));

    for proxy in [&a, &b] {
        eventually("403 pending approval", Duration::from_secs(10), || async {
            match proxy.chat("/chat", KEY, MODEL).await {
                (403, body) if body.contains("pending_approval") => Ok(()),
                (status, body) => Err(format!("{status} {body}")),
            }
        })
        .await;
    }
    let sub = wait_condition(&setup, "apisubscription/app-chat", "Accepted", "True").await;
    assert_eq!(sub["status"]["phase"], "Pending");

    setup
        .ns
        .grant("route-owner", &["approve"], &["airoutes.tollgate.dev"]);
    setup.ns.grant(
        "route-owner",
        &["get", "patch"],
        &["apisubscriptions.tollgate.dev"],
    );
    let decide = |decision: &str| {
        let patch = format!(r#"{{"spec":{{"decision":"{decision}"}}}}"#);
        let mut cmd = setup.cp.kubectl_as("route-owner", &[]);
        cmd.args([
            "-n",
            setup.ns.name(),
            "patch",
            "apisubscription",
            "app-chat",
            "--type=merge",
            "-p",
        ])
        .arg(patch);
        tollgate_e2e::run(cmd)
    };
    // RBAC reaches the API server's authorizer asynchronously: retry until the grant counts.
    eventually(
        "the route owner may approve",
        Duration::from_secs(30),
        || async { decide("Approved") },
    )
    .await;
    let approved_at = Instant::now();
    wait_served(&[&a, &b], "/chat", KEY, Duration::from_secs(1)).await;
    let took = approved_at.elapsed();
    println!("approval → 200 on both proxies: {took:?}");
    assert!(took <= Duration::from_secs(1));
    let sub = wait_condition(&setup, "apisubscription/app-chat", "Ready", "True").await;
    assert_eq!(sub["status"]["phase"], "Approved");

    for (decision, code) in [
        ("Rejected", "subscription_rejected"),
        ("Revoked", "subscription_revoked"),
    ] {
        decide(decision).unwrap_or_else(|e| panic!("{decision}: {e}"));
        for proxy in [&a, &b] {
            eventually(&format!("403 {code}"), Duration::from_secs(5), || async {
                match proxy.chat("/chat", KEY, MODEL).await {
                    (403, body) if body.contains(code) => Ok(()),
                    (status, body) => Err(format!("{status} {body}")),
                }
            })
            .await;
        }
        let sub = wait_condition(&setup, "apisubscription/app-chat", "Ready", "False").await;
        assert_eq!(sub["status"]["phase"], decision);
    }
    // The decisions were announced as Events on the subscription.
    let events = setup
        .kubectl(&[
            "get",
            "events",
            "--field-selector=involvedObject.name=app-chat",
        ])
        .unwrap_or_default();
    println!("events:\n{events}");
    for reason in ["Approved", "Rejected", "Revoked"] {
        assert!(events.contains(reason), "no {reason} event in:\n{events}");
    }
}

// 3. ≥ 100 route changes while both proxies carry continuous load: zero failed requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_changes_under_load_fail_no_request() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("ctl-churn");
    let (_controller, a, b) = controller_and_proxies(&setup).await;
    setup.apply(&base_yaml());
    setup.apply(&route_yaml("hot", "/hot", "Automatic", "rev 0"));
    wait_served(&[&a, &b], "/hot", KEY, Duration::from_secs(10)).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for port in [a.port, b.port, a.port, b.port] {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let client = http::Http::new();
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.chat(port, "/hot", KEY, MODEL).await {
                    Ok((200, _)) => ok += 1,
                    Ok((status, body)) => failed.push(format!("{status} {body}")),
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        }));
    }
    let started = Instant::now();
    let changes = 100;
    for i in 1..=changes {
        // Half the changes edit the loaded route itself, half add or edit others beside it.
        let yaml = if i % 2 == 0 {
            route_yaml("hot", "/hot", "Automatic", &format!("rev {i}"))
        } else {
            route_yaml(
                &format!("churn-{}", i % 10),
                &format!("/churn-{}", i % 10),
                "Automatic",
                &format!("rev {i}"),
            )
        };
        setup.apply(&yaml);
    }
    // Let the last changes propagate under load too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for task in load {
        let (o, f) = task.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    println!(
        "{changes} route changes in {:.1}s under load: {ok} requests succeeded, {} failed",
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    assert!(ok > 100, "the load generator barely ran: {ok}");
    assert!(
        failed.is_empty(),
        "failed requests: {:?}",
        &failed[..failed.len().min(5)]
    );
    wait_served(&[&a, &b], "/churn-9", KEY, Duration::from_secs(5)).await;
}

// 4. Propagation from `kubectl apply` to the first 200 on both proxies: small config, then 5,000 routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_latency_small_and_with_5000_routes() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("ctl-propagation");
    let (controller, a, b) = controller_and_proxies(&setup).await;
    setup.apply(&base_yaml());
    setup.apply(&route_yaml("warm", "/warm", "Automatic", "warm-up"));
    wait_served(&[&a, &b], "/warm", KEY, Duration::from_secs(10)).await;

    let before = CompileClock::read(&controller).await;
    let small = measure_propagation(&setup, &[&a, &b], "small", 100).await;
    let (small_p50, small_p99) = report("(small config, 100 changes)", &small);
    let small_compile = before.mean_since(&controller).await;
    let small_rtt = round_trip(&a, &b).await;

    // Load 5,000 routes straight through the API (kubectl would take minutes), then let status settle.
    let loaded_at = Instant::now();
    let client = setup.cp.client().await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tollgate.dev", "v1alpha1", "AIRoute"),
        "airoutes",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client, setup.ns.name(), &resource);
    let created: Vec<_> = stream::iter(0..5000)
        .map(|i| {
            let api = api.clone();
            async move {
                let route: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "tollgate.dev/v1alpha1",
                    "kind": "AIRoute",
                    "metadata": { "name": format!("bulk-{i}") },
                    "spec": {
                        "prefix": format!("/bulk/{i}"),
                        "approval": "Automatic",
                        "models": [{ "name": MODEL, "backends": [{ "provider": "fake" }] }],
                    },
                }))
                .unwrap();
                api.create(&PostParams::default(), &route).await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(created.iter().all(Result::is_ok), "creating routes failed");
    // The last route is routed (403 not subscribed, rather than 404) once the big snapshot is out.
    for proxy in [&a, &b] {
        eventually(
            "5,000 routes in the proxies",
            Duration::from_secs(120),
            || async {
                match proxy.chat("/bulk/4999", KEY, MODEL).await {
                    (403, _) => Ok(()),
                    (status, body) => Err(format!("{status} {body}")),
                }
            },
        )
        .await;
    }
    // Wait for the leader's 5,000 status writes to finish, so they do not count as propagation.
    let mut last = -1.0;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let writes = controller
            .metric("tollgate_controller_status_writes_total")
            .await;
        if writes == last {
            break;
        }
        last = writes;
        assert!(
            loaded_at.elapsed() < Duration::from_secs(300),
            "status writes never settled"
        );
    }
    println!(
        "5,000 routes loaded, served and their status written in {:.1}s; snapshot {:.0} KiB",
        loaded_at.elapsed().as_secs_f64(),
        controller
            .metric("tollgate_controller_snapshot_bytes")
            .await
            / 1024.0,
    );
    let before = CompileClock::read(&controller).await;
    let large = measure_propagation(&setup, &[&a, &b], "large", 50).await;
    let (large_p50, large_p99) = report("(5,000 routes loaded, 50 changes)", &large);
    let large_compile = before.mean_since(&controller).await;
    let large_rtt = round_trip(&a, &b).await;
    let compiles = controller
        .metric("tollgate_controller_compile_duration_seconds_count")
        .await;
    let compile_sum = controller
        .metric("tollgate_controller_compile_duration_seconds_sum")
        .await;
    println!(
        "controller compiles: {compiles} taking {:.1}ms on average",
        compile_sum / compiles * 1e3
    );
    // The bounds are built from this run, not from a quiet machine: the controller's own compile
    // times in each phase and the time a request takes to come back from both proxies right now.
    // A change waits for the watch to be quiet (25 ms), at most --debounce-max (250 ms) after a
    // burst began; it may find a compile under way and wait for it, then is compiled itself; then the
    // frame is encoded, streamed, decoded and swapped in by both proxies (the budget below, which
    // also covers the test polling every 2 ms). What cannot be excused by a busy machine fails: a
    // debounce that waits longer, a snapshot that is not pushed at once, a proxy that swaps late.
    let bound = |compile: Duration, rtt: Duration, budget_ms: u64| {
        DEBOUNCE_MAX + 2 * compile + 2 * rtt + Duration::from_millis(budget_ms)
    };
    // With 5,000 routes each change also costs a 3 MB frame encoded once and decoded and indexed by
    // each proxy, work of the size of a compile: counted in compiles too. On a 2-core machine shared
    // with other builds one run measured p50 1.6 s and p99 7.8 s (the first changes after the bulk
    // load) with a compile mean of 454 ms: the bounds, 6 and 25 compiles, leave room for that and
    // still fail a proxy or controller that sits on a change for seconds.
    let large_bound = |compiles: u32, budget_ms: u64| {
        DEBOUNCE_MAX + compiles * large_compile + 2 * large_rtt + Duration::from_millis(budget_ms)
    };
    println!(
        "bounds: small p99 {:.0}ms (compile mean {:.1}ms, round trip {:.1}ms), large p50 {:.0}ms p99 {:.0}ms (compile mean {:.1}ms, round trip {:.1}ms)",
        bound(small_compile, small_rtt, 100).as_secs_f64() * 1e3,
        small_compile.as_secs_f64() * 1e3,
        small_rtt.as_secs_f64() * 1e3,
        large_bound(6, 250).as_secs_f64() * 1e3,
        large_bound(25, 1_000).as_secs_f64() * 1e3,
        large_compile.as_secs_f64() * 1e3,
        large_rtt.as_secs_f64() * 1e3,
    );
    // The target, on the median, which a few slow samples on a shared machine do not move.
    assert!(
        small_p50 <= Duration::from_millis(100),
        "p50 {small_p50:?} above the 100 ms target with the small config"
    );
    assert!(
        small_p99 <= bound(small_compile, small_rtt, 100),
        "p99 {small_p99:?} with the small config, above what this run's compile times and round trips allow"
    );
    assert!(
        large_p50 <= large_bound(6, 250),
        "p50 {large_p50:?} with 5,000 routes"
    );
    assert!(
        large_p99 <= large_bound(25, 1_000),
        "p99 {large_p99:?} with 5,000 routes, above what this run's compile times and round trips allow"
    );
    // And the compile itself stays under a second, however busy the machine (454 ms measured busy).
    assert!(
        large_compile <= Duration::from_secs(1),
        "compiling 5,000 routes took {large_compile:?} on average"
    );
}

/// The controller's default `--debounce-max`.
const DEBOUNCE_MAX: Duration = Duration::from_millis(250);

/// The controller's compile histogram at one moment, to average the compiles of one phase.
struct CompileClock {
    count: f64,
    sum: f64,
}

impl CompileClock {
    async fn read(controller: &support::Controller) -> Self {
        Self {
            count: controller
                .metric("tollgate_controller_compile_duration_seconds_count")
                .await,
            sum: controller
                .metric("tollgate_controller_compile_duration_seconds_sum")
                .await,
        }
    }

    /// The mean duration of the compiles since `self`.
    async fn mean_since(&self, controller: &support::Controller) -> Duration {
        let now = Self::read(controller).await;
        let n = (now.count - self.count).max(1.0);
        Duration::from_secs_f64(((now.sum - self.sum) / n).max(0.0))
    }
}

/// The slowest of 20 calls, to each proxy in turn, of a route both already serve: what the machine
/// makes a request cost at the moment.
async fn round_trip(a: &support::Proxy, b: &support::Proxy) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let proxy = if i % 2 == 0 { a } else { b };
        let started = Instant::now();
        let (status, body) = proxy.chat("/warm", KEY, MODEL).await;
        assert_eq!(status, 200, "{body}");
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

// 5. Controller killed → proxies keep serving; controller back → they reconverge without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_survive_a_controller_outage_and_reconverge() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("ctl-outage");
    let (mut controller, a, b) = controller_and_proxies(&setup).await;
    setup.apply(&base_yaml());
    setup.apply(&route_yaml(
        "steady",
        "/steady",
        "Automatic",
        "before the outage",
    ));
    wait_served(&[&a, &b], "/steady", KEY, Duration::from_secs(10)).await;
    let port = controller.port;
    let pids = (a.process.pid(), b.process.pid());

    controller.process.kill();
    let client = http::Http::new();
    let outage = Instant::now();
    let mut served = 0;
    while outage.elapsed() < Duration::from_secs(3) {
        for proxy in [&a, &b] {
            let answer = client.chat(proxy.port, "/steady", KEY, MODEL).await;
            assert!(
                matches!(answer, Ok((200, _))),
                "{} during the outage: {answer:?}",
                proxy.process.name
            );
            served += 1;
        }
        assert!(
            a.ready().await && b.ready().await,
            "a proxy stopped being ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("controller down: {served} requests served from the last snapshot, all 200");

    // A change made while no controller runs is picked up once one is back.
    setup.apply(&route_yaml(
        "later",
        "/later",
        "Automatic",
        "during the outage",
    ));
    let _controller = setup.controller_on("controller-again", port).await;
    let back = Instant::now();
    wait_served(&[&a, &b], "/later", KEY, Duration::from_secs(20)).await;
    println!(
        "reconverged {:?} after the controller was back",
        back.elapsed()
    );
    assert_eq!((a.process.pid(), b.process.pid()), pids);
    for proxy in [&a, &b] {
        assert!(
            proxy.process.log().contains("reconnecting"),
            "{} never reconnected",
            proxy.process.name
        );
    }
}

// 6. Two replicas: exactly one writes status; kill it → the other takes over and writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_writes_status_and_the_other_takes_over() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("ctl-leader");
    let first = setup.controller("ctl-one").await;
    let second = setup.controller("ctl-two").await;
    // One proxy per replica: both replicas serve snapshots, whoever leads.
    let mut a = setup.proxy("proxy-a", first.port, &setup.proxy_token).await;
    let mut b = setup
        .proxy("proxy-b", second.port, &setup.proxy_token)
        .await;
    a.wait_ready().await;
    b.wait_ready().await;
    let holder = eventually("a Lease holder", Duration::from_secs(15), || async {
        match lease_holder(&setup) {
            h if h == "ctl-one" || h == "ctl-two" => Ok(h),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await;
    let (mut leader, follower) = if holder == "ctl-one" {
        (first, second)
    } else {
        (second, first)
    };
    setup.apply(&base_yaml());
    setup.apply(&route_yaml("r1", "/r1", "Automatic", "first"));
    wait_condition(&setup, "airoute/r1", "Ready", "True").await;
    wait_served(&[&a, &b], "/r1", KEY, Duration::from_secs(10)).await;
    let leader_writes = leader
        .metric("tollgate_controller_status_writes_total")
        .await;
    let follower_writes = follower
        .metric("tollgate_controller_status_writes_total")
        .await;
    println!("status writes: leader {holder} {leader_writes}, follower {follower_writes}");
    assert!(leader_writes > 0.0);
    assert_eq!(follower_writes, 0.0, "the follower wrote status");
    assert_eq!(leader.metric("tollgate_controller_leader").await, 1.0);
    assert_eq!(follower.metric("tollgate_controller_leader").await, 0.0);

    leader.process.kill();
    let killed = Instant::now();
    let new_holder = eventually("a new Lease holder", LEASE * 3, || async {
        match lease_holder(&setup) {
            h if h != holder && !h.is_empty() => Ok(h),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await;
    let takeover = killed.elapsed();
    println!("leader killed; {new_holder} took over after {takeover:?} (lease duration {LEASE:?})");
    // Expiry is judged on the survivor's clock from the last renewal it saw, checked once per LEASE/4.
    assert!(takeover <= LEASE + LEASE / 2, "takeover took {takeover:?}");

    setup.apply(&route_yaml("r2", "/r2", "Automatic", "after the takeover"));
    wait_condition(&setup, "airoute/r2", "Ready", "True").await;
    let sub = wait_condition(&setup, "apisubscription/app-r2", "Ready", "True").await;
    assert_eq!(sub["status"]["phase"], "Approved");
    assert!(
        follower
            .metric("tollgate_controller_status_writes_total")
            .await
            > 0.0
    );
    let survivor_proxy = if holder == "ctl-one" { &b } else { &a };
    wait_served(&[survivor_proxy], "/r2", KEY, Duration::from_secs(10)).await;

    // A graceful shutdown gives the Lease up at once rather than letting it expire.
    let mut survivor = follower;
    survivor.process.terminate();
    let holder = lease_holder(&setup);
    assert!(
        holder.is_empty(),
        "the Lease is still held by {holder:?} after SIGTERM"
    );
    assert!(survivor.process.log().contains("released the Lease"));
}

// 7. A proxy without a valid token, or with another ServiceAccount's, receives no snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_without_an_allowed_token_get_no_snapshot() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("ctl-auth");
    let controller = setup.controller("controller").await;
    setup.apply(&base_yaml());
    let other = setup.token_file(OTHER_SA, Some(support::AUDIENCE), "other.token");
    let wrong_audience = setup.token_file(PROXY_SA, None, "wrong-audience.token");
    let garbage = setup.dir.path().join("garbage.token");
    std::fs::write(&garbage, "not-a-token").unwrap();

    let mut good = setup
        .proxy("proxy-allowed", controller.port, &setup.proxy_token)
        .await;
    let intruders = [
        (
            setup.proxy("proxy-other-sa", controller.port, &other).await,
            "403",
        ),
        (
            setup
                .proxy("proxy-wrong-audience", controller.port, &wrong_audience)
                .await,
            "401",
        ),
        (
            setup
                .proxy("proxy-garbage-token", controller.port, &garbage)
                .await,
            "401",
        ),
    ];
    good.wait_ready().await;
    // Long enough for several reconnection attempts each.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (proxy, status) in &intruders {
        assert!(!proxy.ready().await, "{} became ready", proxy.process.name);
        let log = proxy.process.log();
        assert!(
            log.contains(&format!("answered {status}")),
            "{} log:\n{log}",
            proxy.process.name
        );
        assert!(
            !log.contains("received a snapshot"),
            "{} got a snapshot",
            proxy.process.name
        );
    }
    let denied = controller
        .metric("tollgate_controller_auth_denied_total")
        .await;
    println!(
        "refused stream requests: {denied}; the allowed proxy is ready, the other three are not"
    );
    assert!(denied >= 3.0);
}

// 8. A generated key: the Secret appears, the key works, deleting the Secret rotates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_keys_work_and_rotate_when_the_secret_is_deleted() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("ctl-keys");
    let (_controller, a, b) = controller_and_proxies(&setup).await;
    setup.apply(&base_yaml());
    setup.apply(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: Consumer
metadata:
  name: gen
spec:
  keys:
    - name: main
      generate: true
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata:
  name: keyed
spec:
  prefix: /keyed
  approval: Automatic
  models:
    - name: fake-chat
      backends:
        - provider: fake
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata:
  name: gen-keyed
spec:
  consumer: gen
  route:
    name: keyed
"#,
    );
    let read_key = || secret_data(&setup, "gen-main-apikey", "apiKey");
    let first = eventually("the generated Secret", Duration::from_secs(10), || async {
        match read_key() {
            k if k.starts_with("tg_") => Ok(k),
            other => Err(format!("key {other:?}")),
        }
    })
    .await;
    assert!(first.len() >= 3 + 43, "{first}");
    let secret = status_of(&setup, "secret/gen-main-apikey");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "Consumer");
    assert_eq!(secret["metadata"]["labels"]["tollgate.dev/secret"], "true");
    wait_served(&[&a, &b], "/keyed", &first, Duration::from_secs(10)).await;

    setup
        .kubectl(&["delete", "secret", "gen-main-apikey"])
        .unwrap();
    let rotated_at = Instant::now();
    let second = eventually("a new key", Duration::from_secs(20), || async {
        match read_key() {
            k if k.starts_with("tg_") && k != first => Ok(k),
            other => Err(format!("key {other:?}")),
        }
    })
    .await;
    wait_served(&[&a, &b], "/keyed", &second, Duration::from_secs(10)).await;
    for proxy in [&a, &b] {
        eventually("the old key refused", Duration::from_secs(10), || async {
            match proxy.chat("/keyed", &first, MODEL).await {
                (401, _) => Ok(()),
                (status, body) => Err(format!("{status} {body}")),
            }
        })
        .await;
    }
    println!(
        "key rotated: new key served and old key refused {:?} after deleting the Secret",
        rotated_at.elapsed()
    );
}

// 8b. Rotating a generated key (the Secret annotated tollgate.dev/rotate): the controller writes a
// new key and keeps the old one only as its digest with the end of its grace; both proxies accept
// both keys until the grace ends, then refuse the old one as expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_generated_key_keeps_the_old_value_valid_for_its_grace() {
    const GRACE: i64 = 8;
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("ctl-rotate");
    let (_controller, a, b) = controller_and_proxies(&setup).await;
    setup.apply(&base_yaml());
    setup.apply(&format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: Consumer
metadata:
  name: rot
spec:
  keys:
    - name: main
      generate: true
      rotationGraceSeconds: {GRACE}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata:
  name: rotating
spec:
  prefix: /rotating
  approval: Automatic
  models:
    - name: fake-chat
      backends:
        - provider: fake
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata:
  name: rot-rotating
spec:
  consumer: rot
  route:
    name: rotating
"#
    ));
    let data = |field: &str| secret_data(&setup, "rot-main-apikey", field);
    let first = eventually("the generated Secret", Duration::from_secs(10), || async {
        match data("apiKey") {
            k if k.starts_with("tg_") => Ok(k),
            other => Err(format!("key {other:?}")),
        }
    })
    .await;
    wait_served(&[&a, &b], "/rotating", &first, Duration::from_secs(10)).await;

    setup
        .kubectl(&[
            "annotate",
            "secret",
            "rot-main-apikey",
            "tollgate.dev/rotate=now",
        ])
        .unwrap();
    let asked = Instant::now();
    let second = eventually("a rotated key", Duration::from_secs(20), || async {
        match data("apiKey") {
            k if k.starts_with("tg_") && k != first => Ok(k),
            other => Err(format!("key {other:?}")),
        }
    })
    .await;
    println!("rotated {:?} after the annotation", asked.elapsed());
    // The Secret keeps the old key as its SHA-256 only, and the request is cleared.
    let secret = status_of(&setup, "secret/rot-main-apikey");
    assert!(
        !secret.to_string().contains(&first) && !data("previousApiKeySha256").contains(&first),
        "{secret}"
    );
    assert_eq!(data("previousApiKeySha256"), sha256_hex(&first));
    assert!(
        secret["metadata"]["annotations"]
            .get("tollgate.dev/rotate")
            .is_none(),
        "{secret}"
    );
    let until: k8s_openapi::jiff::Timestamp = data("previousApiKeyExpiresAt").parse().unwrap();
    let grace_left = until.as_second() - k8s_openapi::jiff::Timestamp::now().as_second();
    assert!(
        (1..=GRACE).contains(&grace_left),
        "{until}, {grace_left} s left"
    );

    // Both keys on both proxies, while the grace lasts.
    wait_served(&[&a, &b], "/rotating", &second, Duration::from_secs(10)).await;
    for proxy in [&a, &b] {
        let (status, body) = proxy.chat("/rotating", &first, MODEL).await;
        assert!(
            status == 200 || k8s_openapi::jiff::Timestamp::now() >= until,
            "the old key within its grace: {status} {body}"
        );
    }
    eventually(
        "the status names the previous value",
        Duration::from_secs(5),
        || {
            let ready = setup.jsonpath(
                "consumer/rot",
                "{.status.activeKeys} {.status.conditions[?(@.type==\"Ready\")].message}",
            );
            async move {
                if ready.starts_with("1 ")
                    && ready.contains("previous value of key main stays valid until")
                {
                    Ok(())
                } else {
                    Err(ready)
                }
            }
        },
    )
    .await;

    // After the grace the old key is refused as expired, never before its end.
    for proxy in [&a, &b] {
        eventually(
            "the old key refused",
            Duration::from_secs(GRACE as u64 + 10),
            || async {
                match proxy.chat("/rotating", &first, MODEL).await {
                    (401, body) if body.contains("expired") => Ok(()),
                    (status, body) => Err(format!("{status} {body}")),
                }
            },
        )
        .await;
        assert!(k8s_openapi::jiff::Timestamp::now() >= until);
        let (status, body) = proxy.chat("/rotating", &second, MODEL).await;
        assert_eq!(status, 200, "{body}");
    }
    println!("the old key was refused once its grace ended at {until}");
}

// 9. Usage appears in ApiSubscription.status after traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_rolled_up_into_subscription_status() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("ctl-usage");
    let (_controller, a, b) = controller_and_proxies(&setup).await;
    setup.apply(&base_yaml());
    setup.apply(&route_yaml("metered", "/metered", "Automatic", "usage"));
    wait_served(&[&a, &b], "/metered", KEY, Duration::from_secs(10)).await;
    // wait_served made one call on each proxy; 20 more, split between them.
    let (mut requests, mut input, mut output) = (2u64, 0u64, 0u64);
    let mut calls = Vec::new();
    for i in 0..20 {
        let proxy = if i % 2 == 0 { &a } else { &b };
        calls.push(proxy.chat("/metered", KEY, MODEL).await);
    }
    for (status, body) in calls {
        assert_eq!(status, 200, "{body}");
        requests += 1;
        let body: Value = serde_json::from_str(&body).unwrap();
        input += body["usage"]["prompt_tokens"].as_u64().unwrap();
        output += body["usage"]["completion_tokens"].as_u64().unwrap();
    }
    // The two calls of wait_served: same prompt, so the same token counts.
    input += 2 * (input / 20);
    output += 2 * (output / 20);
    let traffic_done = Instant::now();
    let usage = eventually("usage in status", Duration::from_secs(15), || async {
        let sub = status_of(&setup, "apisubscription/app-metered");
        match &sub["status"]["usage"] {
            u if u["requests"].as_u64() == Some(requests) => Ok(u.clone()),
            u => Err(format!("usage {u}")),
        }
    })
    .await;
    println!("usage after {:?}: {usage}", traffic_done.elapsed());
    assert_eq!(usage["inputTokens"].as_u64(), Some(input));
    assert_eq!(usage["outputTokens"].as_u64(), Some(output));
    assert_eq!(usage["totalTokens"].as_u64(), Some(input + output));
    let cost: f64 = usage["costUsd"].as_str().unwrap().parse().unwrap();
    let want = (input as f64 * INPUT_PRICE + output as f64 * OUTPUT_PRICE) / 1e6;
    assert!((cost - want).abs() < 2e-6, "cost {cost} want {want}");
    assert!(
        usage["windowStart"]
            .as_str()
            .unwrap()
            .ends_with("-01T00:00:00Z")
    );
    let columns = setup
        .kubectl(&["get", "apisubscription", "app-metered", "-o", "wide"])
        .unwrap();
    println!("{columns}");
    assert!(columns.contains(&requests.to_string()));

    // The leader counts the two reporting proxies and publishes the count in its Lease, from which
    // every replica compiles it into the snapshot (the proxies' local share of each limit).
    let count = eventually(
        "the proxy count in the Lease",
        Duration::from_secs(45),
        || async {
            let count = setup.jsonpath(
                "lease/tollgate-controller",
                r"{.metadata.annotations.tollgate\.dev/proxy-replicas}",
            );
            if count == "2" {
                Ok(count)
            } else {
                Err(format!("annotation {count:?}"))
            }
        },
    )
    .await;
    println!("proxy count in the Lease: {count}");
}

// 10. Tenancy: a team cannot take another team's path by publishing it first. Namespaces own
// `/<name>` unless a cluster administrator annotates them otherwise, and namespace admins cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_cannot_take_another_teams_path_by_being_first() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("ctl-tenancy");
    // Back to the default for team A (Setup grants every path to its namespace).
    setup
        .cp
        .kubectl()
        .args([
            "annotate",
            "namespace",
            setup.ns.name(),
            "tollgate.dev/path-prefixes-",
        ])
        .output()
        .expect("removing the annotation");
    let team_a = setup.ns.name().to_owned();
    let team_b = setup.cp.namespace("ctl-tenancy-b");
    let b = team_b.name().to_owned();
    let controller = setup.controller_watching("controller", &[&b]).await;
    let mut proxy = setup
        .proxy("proxy", controller.port, &setup.proxy_token)
        .await;
    proxy.wait_ready().await;

    let in_b = |resource: &str| -> Value {
        let mut get = setup.cp.kubectl();
        get.args(["-n", &b, "get", resource, "-o", "json"]);
        tollgate_e2e::run(get)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };

    // A namespace admin of team B cannot grant B a path: Namespaces are not theirs to annotate.
    team_b.grant_cluster_role("bob", "admin");
    let attempt = || {
        let mut cmd = setup.cp.kubectl_as("bob", &[]);
        cmd.args(["annotate", "namespace", &b])
            .arg(format!("tollgate.dev/path-prefixes=/{team_a}"));
        tollgate_e2e::run_combined(cmd)
    };
    let refused = eventually(
        "bob's admin role settles",
        Duration::from_secs(10),
        || async {
            // Proves the role is in force (he may list his pods) before reading the refusal.
            let mut can = setup.cp.kubectl_as("bob", &[]);
            can.args(["auth", "can-i", "delete", "pods", "-n", &b]);
            match tollgate_e2e::run_combined(can) {
                Ok(yes) if yes.trim() == "yes" => {
                    attempt().map_or_else(Ok, |out| Err(format!("allowed: {out}")))
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(refused.contains("forbidden"), "{refused}");

    // Team B publishes team A's path first, with a consumer and key of its own.
    let key_b = "tg_e2e-team-b-key-that-wants-team-a-000";
    let base_b = base_yaml().replace(KEY, key_b);
    let grab = route_yaml("grab", &format!("/{team_a}"), "Automatic", "takeover");
    for yaml in [base_b.as_str(), grab.as_str()] {
        team_b
            .apply_yaml(yaml)
            .unwrap_or_else(|e| panic!("team B's apply: {e}"));
    }
    let route = eventually("grab refused", Duration::from_secs(20), || async {
        let route = in_b("airoute/grab");
        match condition(&route, "Accepted") {
            Some(c) if c["status"] == "False" => Ok(route.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let accepted = condition(&route, "Accepted").unwrap();
    assert_eq!(accepted["reason"], "PrefixNotAllowed", "{accepted}");
    let message = accepted["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("Namespace {b} may claim /{b} and beneath"))
            && message.contains(&format!("not /{team_a}"))
            && message.contains("tollgate.dev/path-prefixes"),
        "{message}"
    );
    println!("team B's route: {message}");
    assert_eq!(
        condition(&route, "Ready").unwrap()["status"],
        "False",
        "{route}"
    );
    // Nothing answers there for team B.
    let (status, body) = proxy.chat(&format!("/{team_a}"), key_b, MODEL).await;
    assert_eq!(status, 404, "{body}");

    // Team A publishes its own path later and gets it; team B's key has no subscription there.
    setup.apply(&base_yaml());
    setup.apply(&route_yaml(
        "chat",
        &format!("/{team_a}"),
        "Automatic",
        "owner",
    ));
    wait_served(
        &[&proxy],
        &format!("/{team_a}"),
        KEY,
        Duration::from_secs(10),
    )
    .await;
    let route = wait_condition(&setup, "airoute/chat", "Accepted", "True").await;
    assert_eq!(route["status"]["endpoint"], format!("/{team_a}/v1"));
    let (status, body) = proxy.chat(&format!("/{team_a}"), key_b, MODEL).await;
    assert_eq!(status, 403, "{body}");
    // Team B still may use its own path.
    team_b
        .apply_yaml(&route_yaml(
            "own",
            &format!("/{b}"),
            "Automatic",
            "own path",
        ))
        .unwrap();
    wait_served(&[&proxy], &format!("/{b}"), key_b, Duration::from_secs(10)).await;
}

/// A guardrail that refuses calls naming an employee id, attached to route `guarded`.
const GUARDRAIL: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIGuardrail
metadata:
  name: no-ids
spec:
  appliesTo: Request
  rules:
    - name: employee-ids
      pattern: "EMP-[0-9]{6}"
      action: Reject
    - name: emails
      detector: Email
      action: Mask
"#;

// 11. Guardrails applied with kubectl: enforced by the proxies; a pattern that does not compile is
// reported in the route's status and its calls refused; field mistakes refused by the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardrails_are_enforced_and_a_bad_pattern_is_reported_in_status() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("ctl-guardrails");
    let (_controller, a, _b) = controller_and_proxies(&setup).await;
    setup.apply(&base_yaml());
    setup.apply(GUARDRAIL);
    let route = route_yaml("guarded", "/guarded", "Automatic", "guarded").replace(
        "  models:\n",
        "  guardrails:\n    - name: no-ids\n  models:\n",
    );
    setup.apply(&route);
    wait_served(&[&a], "/guarded", KEY, Duration::from_secs(10)).await;
    let route = wait_condition(&setup, "airoute/guarded", "GuardrailsValid", "True").await;
    println!(
        "GuardrailsValid: {}",
        condition(&route, "GuardrailsValid").unwrap()["message"]
    );
    // The guardrail's own status: Accepted at its generation, and the rules it compiled.
    let guardrail = wait_condition(&setup, "aiguardrail/no-ids", "Accepted", "True").await;
    assert_eq!(guardrail["status"]["rules"], 2, "{guardrail}");
    assert_eq!(
        guardrail["status"]["observedGeneration"],
        guardrail["metadata"]["generation"]
    );
    let body =
        |text: &str| json!({"model": MODEL, "messages": [{"role": "user", "content": text}]});
    let (status, answer) = a
        .post(
            "/guarded/v1/chat/completions",
            KEY,
            &body("about EMP-123456"),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("content_policy_violation"), "{answer}");
    assert!(
        answer.contains("employee-ids") && !answer.contains("EMP-123456"),
        "{answer}"
    );

    // The API server refuses a rule with both a detector and a pattern (a CEL rule of the CRD).
    let both = GUARDRAIL.replace(
        "      detector: Email\n",
        "      detector: Email\n      pattern: \"x\"\n",
    );
    let applied = setup.ns.apply_yaml(&both);
    let error = applied.expect_err("a rule with detector and pattern is refused");
    assert!(
        error.contains("a rule has exactly one of detector, pattern and moderation"),
        "{error}"
    );

    // A pattern that does not compile: reported on the route, and its calls refused, not unchecked.
    setup.apply(&GUARDRAIL.replace("EMP-[0-9]{6}", "EMP-([0-9]{6}"));
    let route = wait_condition(&setup, "airoute/guarded", "GuardrailsValid", "False").await;
    let message = condition(&route, "GuardrailsValid").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    println!("GuardrailsValid with a bad pattern: {message}");
    assert!(
        message.contains("rule employee-ids: the pattern does not compile"),
        "{message}"
    );
    // …and in the guardrail's own status, where its authors look.
    let guardrail = wait_condition(&setup, "aiguardrail/no-ids", "Accepted", "False").await;
    let accepted = condition(&guardrail, "Accepted").unwrap();
    println!("the guardrail's Accepted with a bad pattern: {accepted}");
    assert_eq!(accepted["reason"], "InvalidRule");
    let message = accepted["message"].as_str().unwrap();
    assert!(
        message.starts_with("Rule employee-ids: the pattern does not compile: "),
        "{message}"
    );
    assert_eq!(guardrail["status"]["rules"], 0, "{guardrail}");
    assert_eq!(
        guardrail["status"]["observedGeneration"],
        guardrail["metadata"]["generation"]
    );
    eventually(
        "calls are refused with guardrail_unavailable",
        Duration::from_secs(10),
        || async {
            let (status, answer) = a
                .post("/guarded/v1/chat/completions", KEY, &body("hi"))
                .await;
            (status == 503 && answer.contains("guardrail_unavailable"))
                .then_some(())
                .ok_or(format!("{status} {answer}"))
        },
    )
    .await;
}
