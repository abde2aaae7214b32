//! The chart's HorizontalPodAutoscaler against real CPU: load from the host makes it add proxies, and
//! it removes them after the load stops, while callers keep calling and none of their calls fails.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::Value;
use tollgate_e2e::{Cluster, run_with_stdin};

use super::{QUICKSTART_KEY, get_json, kubectl};

/// The route the load calls: the quickstart's Fake model and e-mail guardrail, without its request limit
/// (which a load meant to use CPU would reach) and without its cache (which would answer for free).
const LOAD_ROUTE: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata:
  name: load
  namespace: default
spec:
  prefix: /load
  description: Calls from the cluster test's autoscaling load.
  approval: Automatic
  models:
    - name: fake-chat
      backends:
        - provider: fake
  guardrails:
    - name: pii
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata:
  name: demo-app-load
  namespace: default
spec:
  consumer: demo-app
  route:
    name: load
"#;
/// The path prefixes the test grants the namespace `default`: the quickstart's and [`LOAD_ROUTE`]'s.
pub const PATH_PREFIXES: &str = "/demo,/load";
/// Callers sending large prompts back to back, each on a new connection (so kube-proxy spreads
/// them over every proxy, new ones included). More than the two proxies can answer at once with
/// 70 % of their 250m each, so the CPU the HPA reads is set by the proxies, not by the callers' pace.
const HEAVY_WORKERS: usize = 12;
/// Bytes of prompt text per call: the proxy parses it and the guardrail scans it for addresses.
const PROMPT_BYTES: usize = 48 * 1024;
/// Calls each heavy worker makes at most.
const MAX_CALLS_PER_WORKER: u64 = 50_000;
/// How long the load may run before the HPA must have added a Ready proxy.
const SCALE_UP_WITHIN: Duration = Duration::from_secs(240);
/// How long the HPA may take to come back to its minimum once the load stops.
const SCALE_DOWN_WITHIN: Duration = Duration::from_secs(240);
/// How long the HPA may take to read the proxies' CPU for the first time.
const METRICS_WITHIN: Duration = Duration::from_secs(120);

/// Callers of the load route: each sends a large prompt, waits for the answer, and sends the next.
struct Heavy {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<(u64, Vec<String>)>>,
}

impl Heavy {
    fn start(address: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        // Plain words: the body is assembled without JSON escaping, so the callers spend little CPU.
        let filler = "The quick brown fox jumps over the lazy dog near the river bank. "
            .repeat(PROMPT_BYTES / 64);
        let workers = (0..HEAVY_WORKERS)
            .map(|worker| {
                let stop = stop.clone();
                let filler = filler.clone();
                thread::spawn(move || {
                    let (mut ok, mut failed) = (0, Vec::new());
                    let mut call = 0;
                    while !stop.load(Ordering::Relaxed) && call < MAX_CALLS_PER_WORKER {
                        call += 1;
                        // A different prompt every call, though this route caches nothing.
                        let body = format!(
                            r#"{{"model": "fake-chat", "messages": [{{"role": "user", "content": "{worker}-{call}: {filler}"}}]}}"#
                        );
                        match post(address, "/load/v1/chat/completions", &body) {
                            Ok((200, answer)) if answer.contains("chat.completion") => ok += 1,
                            Ok((code, answer)) => failed.push(format!("{code}: {answer}")),
                            Err(error) => failed.push(error),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        Self { stop, workers }
    }

    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.workers.into_iter().map(|w| w.join().unwrap()).fold(
            (0, Vec::new()),
            |(ok, mut failed), (o, f)| {
                failed.extend(f);
                (ok + o, failed)
            },
        )
    }
}

/// One HTTP/1.1 POST on a new connection, with the quickstart's key: the status and the body.
fn post(address: SocketAddr, path: &str, body: &str) -> Result<(u16, String), String> {
    let call = || -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {QUICKSTART_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body.as_bytes())?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(answer)
    };
    let answer = call().map_err(|e| format!("{address}{path}: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let code = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{address}{path}: not an HTTP answer: {text:.200}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((code, body.to_owned()))
}

/// The HPA's and the Deployment's state at one moment, as the test log shows it.
#[derive(PartialEq)]
struct State {
    /// Replicas the HPA wants.
    desired: u64,
    /// Pods of the Deployment, and how many of them are Ready.
    pods: u64,
    ready: u64,
    /// Average CPU of the proxies as the HPA last read it, in percent of their request.
    cpu: Option<u64>,
}

impl State {
    fn read(cluster: &Cluster) -> Self {
        let hpa = get_json(cluster, &["hpa", "tollgate-proxy", "-n", "tollgate"]);
        let deployment = get_json(cluster, &["deployment", "tollgate-proxy", "-n", "tollgate"]);
        // Terminating pods still count: a scale-down is over when they are gone.
        let pods = get_json(
            cluster,
            &[
                "pods",
                "-n",
                "tollgate",
                "-l",
                "app.kubernetes.io/component=proxy",
            ],
        );
        let cpu = hpa["status"]["currentMetrics"]
            .as_array()
            .and_then(|metrics| {
                metrics
                    .iter()
                    .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
            })
            .and_then(|m| m["resource"]["current"]["averageUtilization"].as_u64());
        State {
            desired: hpa["status"]["desiredReplicas"].as_u64().unwrap_or(0),
            pods: pods["items"].as_array().map_or(0, |p| p.len() as u64),
            ready: deployment["status"]["readyReplicas"].as_u64().unwrap_or(0),
            cpu,
        }
    }

    fn show(&self) -> String {
        format!(
            "HPA wants {}, {} pods, {} ready, cpu {}",
            self.desired,
            self.pods,
            self.ready,
            self.cpu.map_or("unknown".to_owned(), |c| format!("{c}%"))
        )
    }
}

/// What the test saw, change by change, from its start.
struct Timeline {
    begun: Instant,
    lines: Vec<String>,
    last: Option<State>,
    /// The most Ready proxies seen at once.
    peak_ready: u64,
}

impl Timeline {
    /// Samples the state every second until `done` holds or `within` passes; returns whether `done`
    /// held.
    fn watch(
        &mut self,
        cluster: &Cluster,
        within: Duration,
        done: impl Fn(&State) -> bool,
    ) -> bool {
        let begun = Instant::now();
        loop {
            let state = State::read(cluster);
            let finished = done(&state);
            self.peak_ready = self.peak_ready.max(state.ready);
            if self.last.as_ref() != Some(&state) {
                let line = format!(
                    "{:>4.0}s {}",
                    self.begun.elapsed().as_secs_f64(),
                    state.show()
                );
                eprintln!("[hpa] {line}");
                self.lines.push(line);
                self.last = Some(state);
            }
            if finished {
                return true;
            }
            if begun.elapsed() > within {
                return false;
            }
            thread::sleep(Duration::from_secs(1));
        }
    }
}

/// The test: the proxies' HPA (minimum 2, maximum `max_replicas`) scales up under load and back down
/// after it, with `light` (the quickstart's callers) and the load's own calls all answered 200.
pub fn scales_the_proxies(
    cluster: &mut Cluster,
    service: SocketAddr,
    light_url: &str,
    max_replicas: u64,
) {
    let waited = cluster
        .wait_metrics_api(METRICS_WITHIN)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_tails()));
    eprintln!(
        "[hpa] the metrics API answered {:.1}s after the test asked",
        waited.as_secs_f64()
    );
    let mut apply = cluster.kubectl();
    apply.args(["apply", "-f", "-"]);
    run_with_stdin(apply, LOAD_ROUTE).unwrap_or_else(|e| panic!("applying the load route: {e}"));

    let mut timeline = Timeline {
        begun: Instant::now(),
        lines: Vec::new(),
        last: None,
        peak_ready: 0,
    };
    // The HPA reads the proxies' CPU, at rest, before any load.
    let measured = timeline.watch(cluster, METRICS_WITHIN, |s| s.cpu.is_some());
    assert!(
        measured,
        "the HPA read no CPU within {METRICS_WITHIN:?}: {:#?}\n{}",
        timeline.lines,
        kubectl(cluster, &["describe", "hpa", "-n", "tollgate"])
    );
    // The route answers before the load starts (the proxies got its snapshot).
    let probe = serde_json::json!({"model": "fake-chat", "messages": [{"role": "user", "content": "ready?"}]})
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match post(service, "/load/v1/chat/completions", &probe) {
            Ok((200, _)) => break,
            other => assert!(
                Instant::now() < deadline,
                "the load route does not answer: {other:?}"
            ),
        }
        thread::sleep(Duration::from_millis(500));
    }

    let light = super::Load::start(light_url);
    let loaded = Instant::now();
    let heavy = Heavy::start(service);
    let scaled_up = timeline.watch(cluster, SCALE_UP_WITHIN, |s| {
        s.desired > 2 && s.ready >= s.desired
    });
    let scale_up_took = loaded.elapsed();
    let (heavy_ok, heavy_failed) = heavy.stop();
    let unloaded = Instant::now();
    eprintln!(
        "[hpa] load stopped after {:.1}s: {heavy_ok} large calls answered 200, {} failed",
        scale_up_took.as_secs_f64(),
        heavy_failed.len()
    );
    let scaled_down = scaled_up
        && timeline.watch(cluster, SCALE_DOWN_WITHIN, |s| {
            s.desired == 2 && s.pods == 2 && s.ready == 2
        });
    let scale_down_took = unloaded.elapsed();
    // Removed proxies finish draining after they are gone from the API; keep calling through that.
    thread::sleep(Duration::from_secs(5));
    let (light_ok, light_failed) = light.stop();
    let peak = timeline.peak_ready;
    eprintln!(
        "[hpa] replicas over time:\n  {}\n[hpa] up to {peak} ready proxies {:.1}s after the load began, back to 2 {:.1}s after it stopped; \
         {heavy_ok} large and {light_ok} small calls answered 200, {} failed",
        timeline.lines.join("\n  "),
        scale_up_took.as_secs_f64(),
        scale_down_took.as_secs_f64(),
        heavy_failed.len() + light_failed.len()
    );
    assert!(
        scaled_up,
        "the HPA did not add a Ready proxy within {SCALE_UP_WITHIN:?} of load\n{}",
        kubectl(cluster, &["describe", "hpa", "-n", "tollgate"])
    );
    assert!(
        scaled_down,
        "the HPA did not come back to 2 proxies within {SCALE_DOWN_WITHIN:?}\n{}",
        kubectl(cluster, &["describe", "hpa", "-n", "tollgate"])
    );
    assert!(peak <= max_replicas, "{peak} > {max_replicas}");
    assert!(heavy_ok > 0 && light_ok > 0, "the load made no call");
    assert!(
        heavy_failed.is_empty() && light_failed.is_empty(),
        "calls failed while the proxies scaled: {:?}",
        heavy_failed
            .iter()
            .chain(&light_failed)
            .take(20)
            .collect::<Vec<_>>()
    );
}

/// The proxy Service's cluster address.
pub fn service_address(service: &Value) -> SocketAddr {
    let ip = service["spec"]["clusterIP"].as_str().unwrap();
    let port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    format!("{ip}:{port}").parse().unwrap()
}
