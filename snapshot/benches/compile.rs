//! Compiles a large cluster's worth of resources and reports time, peak memory and encoded size.
//!
//! `cargo bench -p tollgate-snapshot` — a benchmark, not a test: it prints figures and asserts nothing.
//! Scale: 5,000 routes, 10,000 consumers, 20,000 subscriptions, 50 providers (and their Secrets).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tollgate_snapshot::{Inputs, Snapshot, compile};

const PROVIDERS: usize = 50;
const ROUTES: usize = 5_000;
const CONSUMERS: usize = 10_000;
const SUBSCRIPTIONS: usize = 20_000;
const TEAMS: usize = 100;
const RUNS: usize = 9;

const MODELS: &[&str] = &[
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-5-mini",
    "text-embedding-3-small",
    "in-house-llm",
];

fn object<T: DeserializeOwned>(kind: &str, ns: &str, name: &str, spec: Value) -> T {
    serde_json::from_value(json!({
        "apiVersion": "tollgate.dev/v1alpha1", "kind": kind,
        "metadata": { "namespace": ns, "name": name, "generation": 3,
            "creationTimestamp": format!("2026-{:02}-01T00:00:00Z", 1 + name.len() % 12) },
        "spec": spec,
    }))
    .expect("valid fixture")
}

fn secret(ns: &str, name: &str, value: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "namespace": ns, "name": name },
        "data": { "apiKey": base64(value.as_bytes()) },
    }))
    .expect("valid secret")
}

/// Standard base64, enough for fixtures (Secrets' `data` is base64 on the wire).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        out.push_str(&"=".repeat(3 - chunk.len()));
    }
    out
}

fn team(i: usize) -> String {
    format!("team-{:03}", i % TEAMS)
}

fn inputs() -> Inputs {
    let mut inputs = Inputs {
        now_unix: 1_793_491_200,
        ..Inputs::default()
    };
    for p in 0..PROVIDERS {
        let ns = team(p * 2);
        let models: Vec<Value> = MODELS.iter().map(|m| json!({ "name": m })).collect();
        let refs: Vec<Value> = (0..2)
            .map(|k| json!({ "name": format!("prov-{p}-key{k}") }))
            .collect();
        let spec = json!({ "type": if p % 10 == 0 { "Groq" } else { "OpenAI" },
            "credentials": { "secretRefs": refs }, "models": models,
            "allowedNamespaces": if p % 2 == 0 { json!(["*"]) } else { json!([]) },
            "timeouts": { "firstByte": "30s", "total": "5m" } });
        inputs
            .providers
            .push(object("ModelProvider", &ns, &format!("prov-{p}"), spec));
        for k in 0..2 {
            inputs.secrets.push(secret(
                &ns,
                &format!("prov-{p}-key{k}"),
                &format!("sk-upstream-{p}-{k}"),
            ));
        }
    }
    for r in 0..ROUTES {
        let ns = team(r);
        // Shared providers (even index) are reachable from every team.
        let backend = |k: usize| {
            let p = (r + k * 7) % PROVIDERS / 2 * 2;
            json!({ "provider": format!("prov-{p}"), "namespace": team(p * 2), "weight": 1 + k })
        };
        let models: Vec<Value> = (0..3)
            .map(|m| {
                json!({ "name": MODELS[(r + m) % MODELS.len()],
                "backends": [backend(m), backend(m + 1)], "fallbacks": [backend(m + 2)] })
            })
            .collect();
        let spec = json!({ "prefix": format!("/{ns}/api-{r}"), "models": models,
            "approval": if r % 3 == 0 { "Automatic" } else { "Manual" },
            "stage": if r % 50 == 0 { "Draft" } else { "Published" },
            "limits": { "requestsPerMinute": 600, "tokensPerMinute": 200_000 } });
        inputs
            .routes
            .push(object("AIRoute", &ns, &format!("route-{r}"), spec));
    }
    for c in 0..CONSUMERS {
        let ns = team(c);
        let spec = json!({ "keys": [{ "name": "primary", "secretRef": { "name": format!("app-{c}-key") } }] });
        inputs
            .consumers
            .push(object("Consumer", &ns, &format!("app-{c}"), spec));
        inputs.secrets.push(secret(
            &ns,
            &format!("app-{c}-key"),
            &format!("tg-consumer-key-{c:08}"),
        ));
    }
    for s in 0..SUBSCRIPTIONS {
        let c = s % CONSUMERS;
        // A consumer subscribes to two different routes.
        let r = (s * 7919 + s / CONSUMERS * 13) % ROUTES;
        let spec = json!({ "consumer": format!("app-{c}"),
            "route": { "name": format!("route-{r}"), "namespace": team(r) },
            "decision": if s % 5 == 0 { Value::Null } else { json!("Approved") },
            "limits": { "requestsPerMinute": 1_000 } });
        inputs.subscriptions.push(object(
            "ApiSubscription",
            &team(c),
            &format!("sub-{s}"),
            spec,
        ));
    }
    inputs
}

/// Peak resident set size of this process so far, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time this process (all its threads) has used, from the kernel's clock ticks: unlike wall time,
/// it does not grow while other processes (parallel builds on a shared machine) hold the cores.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th of those.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports these in USER_HZ, which is 100 on every platform it supports.
    Some(Duration::from_millis(ticks * 10))
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let built = Instant::now();
    let inputs = inputs();
    let setup = built.elapsed();
    let rss_inputs = peak_rss_kib();

    // Baseline from the same run: serialising the inputs once as JSON, a pass over the same data.
    let baseline = median(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                let n = serde_json::to_vec(&inputs.routes).unwrap().len()
                    + serde_json::to_vec(&inputs.consumers).unwrap().len()
                    + serde_json::to_vec(&inputs.subscriptions).unwrap().len();
                std::hint::black_box(n);
                t.elapsed()
            })
            .collect(),
    );

    let mut times = Vec::with_capacity(RUNS);
    let mut cpu_total = Some(Duration::ZERO);
    let mut compiled = None;
    for run in 0..=RUNS {
        let cpu = process_cpu();
        let t = Instant::now();
        let c = compile(&inputs, run as u64);
        let elapsed = t.elapsed();
        // Run 0 warms caches and parses the price list. Dropping the previous table is not compile work,
        // so the clocks are read before it.
        if run > 0 {
            times.push(elapsed);
            cpu_total = match (cpu_total, cpu, process_cpu()) {
                (Some(total), Some(before), Some(after)) => Some(total + (after - before)),
                _ => None,
            };
        }
        compiled = Some(std::hint::black_box(c));
    }
    let compiled = compiled.expect("compiled at least once");
    let rss_compiled = peak_rss_kib();

    let t = Instant::now();
    let encoded = compiled.snapshot.encode();
    let encode_time = t.elapsed();
    let t = Instant::now();
    let decoded = Snapshot::decode(&encoded).expect("round trip");
    let decode_time = t.elapsed();
    assert_eq!(decoded.hash, compiled.snapshot.hash);

    let content = &compiled.snapshot.content;
    let compile_median = median(times.clone());
    println!(
        "inputs: {} providers, {} routes, {} consumers, {} subscriptions, {} secrets (built in {:.0} ms)",
        inputs.providers.len(),
        inputs.routes.len(),
        inputs.consumers.len(),
        inputs.subscriptions.len(),
        inputs.secrets.len(),
        ms(setup)
    );
    println!(
        "table:  {} providers, {} routes, {} consumers, {} subscriptions; {} verdicts",
        content.providers.len(),
        content.routes.len(),
        content.consumers.len(),
        content.subscriptions.len(),
        compiled.verdicts.len()
    );
    println!(
        "compile: median {:.1} ms over {RUNS} runs (min {:.1}, max {:.1}); target <= 50 ms",
        ms(compile_median),
        ms(*times.iter().min().unwrap()),
        ms(*times.iter().max().unwrap())
    );
    if let Some(total) = cpu_total {
        println!(
            "compile CPU time (both threads): {:.1} ms per run on average (10 ms clock ticks); wall time also counts waiting for a core on a busy machine",
            ms(total / RUNS as u32)
        );
    }
    println!(
        "baseline: serde_json of the routes, consumers and subscriptions {:.1} ms; compile/baseline = {:.2}",
        ms(baseline),
        compile_median.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "encoded snapshot: {} bytes ({:.1} MiB); encode {:.1} ms, decode {:.1} ms",
        encoded.len(),
        encoded.len() as f64 / 1_048_576.0,
        ms(encode_time),
        ms(decode_time)
    );
    match (rss_inputs, rss_compiled) {
        (Some(before), Some(after)) => println!(
            "peak memory (VmHWM): {:.0} MiB with inputs built, {:.0} MiB after compiling (+{:.0} MiB)",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            after.saturating_sub(before) as f64 / 1024.0
        ),
        _ => println!("peak memory: /proc/self/status not readable here"),
    }
}
