//! The run: start everything, check every path answers correctly, then the load scenarios with
//! warm-ups and interleaved repetitions, then memory with many open streams.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::calls::{self, Bodies, Call, Sanity};
use crate::oha::{self, Load, Outcome};
use crate::procs;
use crate::snapshot::{self, Shape};
use crate::streams::{self, StreamMemory};
use crate::targets::{self, Kind, Launch, Proxy};

/// How long and how hard.
pub struct Settings {
    /// Measured repetitions of each scenario on each path.
    pub reps: usize,
    /// Length of one measured repetition.
    pub duration: Duration,
    /// Length of the warm-up before a scenario's first repetition on each path.
    pub warmup: Duration,
    /// The fixed rate of the latency scenario, requests per second.
    pub rate: u32,
    /// Least length of one repetition of the fixed-rate scenario.
    pub rate_duration: Duration,
    /// Streams held open at once in the memory scenario.
    pub streams: usize,
    /// How long the upstream holds each of those streams.
    pub hold: Duration,
    /// CPU list for the load generator and the upstream fake.
    pub load_cpu: String,
    /// The oha binary.
    pub oha: PathBuf,
    /// Only these scenarios (all when empty).
    pub only: Vec<String>,
}

/// One load shape.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    pub name: String,
    pub call: Call,
    pub connections: usize,
    /// Fixed rate, or `None` for as fast as the connections go.
    pub rate: Option<u32>,
}

/// The scenarios of issue 9.
pub fn scenarios(rate: u32) -> Vec<Scenario> {
    let s = |name: &str, call, connections, rate| Scenario {
        name: name.into(),
        call,
        connections,
        rate,
    };
    vec![
        s("chat-c1", Call::Chat, 1, None),
        s("chat-c32", Call::Chat, 32, None),
        s("chat-c256", Call::Chat, 256, None),
        s("stream-c32", Call::Stream, 32, None),
        s("embeddings-c32", Call::Embeddings, 32, None),
        s(&format!("chat-{rate}rps"), Call::Chat, 32, Some(rate)),
    ]
}

/// One oha run against one path.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    pub scenario: String,
    pub target: Kind,
    /// 0 for the warm-up, 1… for measured repetitions.
    pub rep: usize,
    pub outcome: Outcome,
    /// CPU the proxy used, in cores (1.0 = one CPU busy all the time); none for the direct path.
    pub proxy_cores: Option<f64>,
    /// Peak resident memory of the proxy during the run, KiB.
    pub proxy_rss_peak_kib: Option<u64>,
    /// How busy each CPU was during the run, all processes included (0…1), in CPU order.
    pub cpu_busy: Vec<f64>,
    /// Share of the proxy's CPU that other processes took meanwhile (0…1): builds elsewhere on the machine
    /// show up here, and a figure with much of it is suspect.
    pub foreign_on_proxy_cpu: Option<f64>,
}

/// Resident memory at rest.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IdleMemory {
    /// Tollgate with a 1-route, 1-consumer snapshot, KiB.
    pub tollgate_small_kib: Option<u64>,
    /// Tollgate with the large snapshot, KiB.
    pub tollgate_large_kib: Option<u64>,
    /// Seconds from starting Tollgate with the large snapshot to its first correct answer.
    pub tollgate_large_ready_s: Option<f64>,
    pub forwarder_kib: Option<u64>,
    pub nginx_kib: Option<u64>,
    /// Tollgate with the large snapshot and default flags (files re-read every second), left alone.
    pub tollgate_default_flags: Option<AtRest>,
}

/// A process watched while nothing calls it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AtRest {
    /// The arguments it ran with.
    pub args: String,
    /// How long it was watched.
    pub seconds: f64,
    /// CPU it used meanwhile, in cores.
    pub cores: f64,
    /// Resident memory at the end and at its highest, KiB.
    pub rss_end_kib: u64,
    pub rss_peak_kib: u64,
}

/// Watches a started proxy at rest for `seconds`.
fn at_rest(proxy: &Proxy, args: &str, seconds: f64) -> AtRest {
    let pids = proxy.pids();
    let cpu_before = procs::cpu_seconds(&pids);
    let started = Instant::now();
    let mut peak = 0;
    while started.elapsed().as_secs_f64() < seconds {
        peak = peak.max(procs::rss_kib(&pids));
        thread::sleep(Duration::from_millis(50));
    }
    let wall = started.elapsed().as_secs_f64();
    let end = procs::rss_kib(&pids);
    AtRest {
        args: args.to_owned(),
        seconds: wall,
        cores: (procs::cpu_seconds(&pids) - cpu_before) / wall,
        rss_end_kib: end,
        rss_peak_kib: peak.max(end),
    }
}

/// What Tollgate wrote on stdout while the scenarios ran.
#[derive(Clone, Debug, Serialize)]
pub struct AccessLogRecord {
    /// Lines seen (one per call expected).
    pub lines: u64,
    /// Calls Tollgate answered in the runs (ok + not ok + sanity calls), to compare.
    pub calls: u64,
    /// Calls the load generator gave up on at the end of a run: Tollgate logs them too (as cut short).
    pub cut_at_deadline: u64,
    pub sample: Option<String>,
}

/// Everything measured in one run.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    pub scenarios: Vec<Scenario>,
    pub sanity: Vec<Sanity>,
    pub runs: Vec<RunRecord>,
    pub idle: IdleMemory,
    pub streams: Vec<StreamMemory>,
    pub access_log: Option<AccessLogRecord>,
    /// Bytes of Tollgate's /metrics after the scenarios, or why it could not be read.
    pub metrics: Option<String>,
    /// The snapshot shape Tollgate ran with.
    pub snapshot: String,
    /// What could not be measured, and why.
    pub missing: Vec<String>,
}

/// Per-CPU (busy, total) jiffies from /proc/stat.
fn cpu_jiffies() -> Vec<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            let total: u64 = v.iter().take(8).sum();
            (total - idle, total)
        })
        .collect()
}

/// A load run with what the proxy and the CPUs did meanwhile.
struct Watched {
    outcome: Outcome,
    proxy_cores: Option<f64>,
    proxy_rss_peak_kib: Option<u64>,
    cpu_busy: Vec<f64>,
}

/// Runs one load against one path, watching the proxy's CPU and memory meanwhile.
fn measure(settings: &Settings, proxy: Option<&Proxy>, load: &Load<'_>) -> anyhow::Result<Watched> {
    let pids = proxy.map(Proxy::pids).unwrap_or_default();
    let cpu_before = procs::cpu_seconds(&pids);
    let jiffies_before = cpu_jiffies();
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let peak = AtomicU64::new(0);
    let outcome = thread::scope(|scope| {
        if !pids.is_empty() {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(procs::rss_kib(&pids), Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(100));
                }
            });
        }
        let outcome = oha::run(&settings.oha, &settings.load_cpu, load);
        stop.store(true, Ordering::Relaxed);
        outcome
    })?;
    let wall = started.elapsed().as_secs_f64();
    let busy = cpu_jiffies()
        .iter()
        .zip(jiffies_before)
        .map(|((b1, t1), (b0, t0))| {
            if t1 > &t0 {
                (b1 - b0) as f64 / (t1 - t0) as f64
            } else {
                0.0
            }
        })
        .collect();
    Ok(Watched {
        outcome,
        proxy_cores: proxy.map(|_| (procs::cpu_seconds(&pids) - cpu_before) / wall),
        proxy_rss_peak_kib: proxy.map(|_| peak.load(Ordering::Relaxed)),
        cpu_busy: busy,
    })
}

/// Runs every phase. Processes are stopped on the way out, also after an error.
pub fn run(settings: &Settings, launch: &Launch) -> anyhow::Result<Measured> {
    for kind in Kind::ALL {
        if std::net::TcpStream::connect(kind.addr()).is_ok() {
            anyhow::bail!(
                "something already listens on {} (left from an earlier run?)",
                kind.addr()
            );
        }
    }
    targets::prepare_work(&launch.work)?;
    // The shared target dir may be rebuilt while the benchmark runs: measure one fixed copy.
    let mut launch_copy;
    let launch = match &launch.tollgate {
        Some(bin) => {
            let copy = launch.work.join("tollgate-proxy");
            fs::copy(bin, &copy).with_context(|| format!("copying {}", bin.display()))?;
            launch_copy = launch.clone();
            launch_copy.tollgate = Some(copy);
            &launch_copy
        }
        None => launch,
    };
    let bodies = calls::write_bodies(&launch.work)?;
    let upstream_addr = targets::upstream_addr().to_string();
    let large = launch.work.join("snapshot-large.yaml");
    let small = launch.work.join("snapshot-small.yaml");
    fs::write(&large, snapshot::generate(Shape::LARGE, &upstream_addr))?;
    fs::write(&small, snapshot::generate(Shape::SMALL, &upstream_addr))?;

    let upstream = targets::start_upstream(launch, &settings.load_cpu, settings.hold)?;
    let mut proxies: Vec<Proxy> = Vec::new();
    let result = run_phases(settings, launch, &bodies, &large, &small, &mut proxies);
    for proxy in proxies {
        proxy.stop();
    }
    upstream.stop();
    result
}

fn run_phases(
    settings: &Settings,
    launch: &Launch,
    bodies: &Bodies,
    large: &Path,
    small: &Path,
    proxies: &mut Vec<Proxy>,
) -> anyhow::Result<Measured> {
    let mut missing = Vec::new();
    let mut idle = IdleMemory::default();
    let settle = Duration::from_secs(1);

    let mut kinds = Kind::ALL[..3].to_vec();
    if launch.tollgate.is_some() {
        eprintln!("tollgate-bench: Tollgate with the small snapshot, for the memory floor");
        let mut proxy = targets::start_proxy(launch, Kind::Tollgate, small)?;
        calls::wait_ready(&mut proxy, bodies, Duration::from_secs(60))?;
        thread::sleep(settle);
        idle.tollgate_small_kib = Some(procs::rss_kib(&proxy.pids()));
        proxy.stop();
        eprintln!("tollgate-bench: Tollgate with the large snapshot and default flags, at rest");
        let args = &launch.tollgate_default_args;
        let mut proxy = targets::start_tollgate_with(launch, args, large)?;
        calls::wait_ready(&mut proxy, bodies, Duration::from_secs(180))?;
        thread::sleep(settle);
        idle.tollgate_default_flags = Some(at_rest(&proxy, args, 10.0));
        proxy.stop();
        kinds.push(Kind::Tollgate);
    } else {
        missing.push(
            "Tollgate: no proxy binary (target/release/tollgate-proxy); only the baselines ran"
                .into(),
        );
    }

    for &kind in &kinds[1..] {
        eprintln!("tollgate-bench: starting {}", kind.name());
        let spawned = Instant::now();
        let mut proxy = targets::start_proxy(launch, kind, large)?;
        calls::wait_ready(&mut proxy, bodies, Duration::from_secs(180))?;
        let ready = spawned.elapsed();
        thread::sleep(settle);
        let rss = Some(procs::rss_kib(&proxy.pids()));
        match kind {
            Kind::Forwarder => idle.forwarder_kib = rss,
            Kind::Nginx => idle.nginx_kib = rss,
            Kind::Tollgate => {
                idle.tollgate_large_kib = rss;
                idle.tollgate_large_ready_s = Some(ready.as_secs_f64());
            }
            Kind::Direct => {}
        }
        proxies.push(proxy);
    }

    let mut checks = Vec::new();
    for &kind in &kinds {
        for call in [Call::Chat, Call::Stream, Call::Embeddings] {
            checks.push(calls::sanity(kind, call, bodies));
        }
    }
    for bad in checks.iter().filter(|c| !c.ok) {
        missing.push(format!(
            "{} {:?} answered wrongly (status {}): {}",
            bad.target.name(),
            bad.call,
            bad.status,
            bad.note
        ));
    }

    let key = snapshot::bench_identity().key;
    let scenarios: Vec<Scenario> = scenarios(settings.rate)
        .into_iter()
        .filter(|s| settings.only.is_empty() || settings.only.contains(&s.name))
        .collect();
    let mut runs = Vec::new();
    // Other processes on the proxy's CPU are told apart only when it is a single CPU.
    let proxy_cpu: Option<usize> = launch.proxy_cpu.parse().ok();
    for scenario in &scenarios {
        // Paths whose answers were wrong for this call are not loaded: their figures would mean nothing.
        let good: Vec<Kind> = kinds
            .iter()
            .copied()
            .filter(|k| {
                checks
                    .iter()
                    .any(|c| c.target == *k && c.call == scenario.call && c.ok)
            })
            .collect();
        for rep in 0..=settings.reps {
            for &kind in &good {
                let duration = match (rep, scenario.rate) {
                    (0, _) => settings.warmup,
                    // A p99 needs samples: at a fixed rate, length is the only way to get them.
                    (_, Some(_)) => settings.duration.max(settings.rate_duration),
                    (_, None) => settings.duration,
                };
                if duration.is_zero() {
                    continue;
                }
                let url = format!(
                    "http://{}{}",
                    kind.addr(),
                    calls::path(kind, scenario.call, false)
                );
                let load = Load {
                    url: &url,
                    body: calls::body_for(bodies, scenario.call),
                    key: &key,
                    connections: scenario.connections,
                    rate: scenario.rate,
                    duration: Some(duration),
                    requests: 0,
                };
                let proxy = proxies.iter_mut().find(|p| p.kind == kind);
                if let Some(p) = proxy {
                    p.check_alive()?;
                }
                let proxy = proxies.iter().find(|p| p.kind == kind);
                let Watched {
                    outcome,
                    proxy_cores,
                    proxy_rss_peak_kib,
                    cpu_busy,
                } = measure(settings, proxy, &load)
                    .with_context(|| format!("{} on {}", scenario.name, kind.name()))?;
                eprintln!(
                    "tollgate-bench: {:<16} {:<9} rep {} {:>9.0} rps  p50 {:.3} ms  p99 {:.3} ms  proxy {:.2} cores  errors {}",
                    scenario.name,
                    kind.name(),
                    rep,
                    outcome.rps,
                    outcome.p50_ms,
                    outcome.p99_ms,
                    proxy_cores.unwrap_or(0.0),
                    outcome.not_ok + outcome.errors
                );
                let foreign_on_proxy_cpu = proxy_cores
                    .zip(proxy_cpu.and_then(|i| cpu_busy.get(i)))
                    .map(|(own, busy)| (busy - own).max(0.0));
                runs.push(RunRecord {
                    scenario: scenario.name.clone(),
                    target: kind,
                    rep,
                    outcome,
                    proxy_cores,
                    proxy_rss_peak_kib,
                    cpu_busy,
                    foreign_on_proxy_cpu,
                });
            }
        }
    }

    let mut access_log = None;
    let mut metrics = None;
    if let Some(tollgate) = proxies.iter().find(|p| p.kind == Kind::Tollgate) {
        let log = tollgate
            .access_log
            .as_ref()
            .context("tollgate without access log")?;
        thread::sleep(Duration::from_millis(300));
        let (lines, sample) = targets::count_log_lines(log)?;
        // About half a gigabyte after a full run; the count is all that is kept.
        let _ = fs::remove_file(log);
        let answered: u64 = runs
            .iter()
            .filter(|r| r.target == Kind::Tollgate)
            .map(|r| r.outcome.ok + r.outcome.not_ok)
            .sum();
        let sanity_calls = checks.iter().filter(|c| c.target == Kind::Tollgate).count() as u64;
        access_log = Some(AccessLogRecord {
            lines,
            calls: answered + sanity_calls,
            cut_at_deadline: runs
                .iter()
                .filter(|r| r.target == Kind::Tollgate)
                .map(|r| r.outcome.cut_at_deadline)
                .sum(),
            sample,
        });
        metrics = Some(
            match procs::http_call(targets::admin_addr(), "GET", "/metrics", &[], b"") {
                Ok((200, body)) => format!("{} bytes", body.len()),
                Ok((status, _)) => format!("status {status}"),
                Err(e) => format!("unreachable: {e:#}"),
            },
        );
    }
    for proxy in proxies.drain(..) {
        proxy.stop();
    }

    let streams = if settings.only.is_empty() || settings.only.iter().any(|s| s == "streams") {
        streams::stream_memory(settings, launch, bodies, large, &kinds[1..], &mut missing)?
    } else {
        Vec::new()
    };

    Ok(Measured {
        scenarios,
        sanity: checks,
        runs,
        idle,
        streams,
        access_log,
        metrics,
        snapshot: format!(
            "{} routes / {} consumers / {} subscriptions in {} namespaces",
            Shape::LARGE.routes,
            Shape::LARGE.consumers,
            Shape::LARGE.consumers * Shape::LARGE.subscriptions_per_consumer,
            Shape::LARGE.teams
        ),
        missing,
    })
}

/// Medians and spreads by scenario and path, measured repetitions only.
pub fn by_scenario(runs: &[RunRecord]) -> BTreeMap<(String, &'static str), Vec<&RunRecord>> {
    let mut map: BTreeMap<(String, &'static str), Vec<&RunRecord>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.rep > 0) {
        map.entry((r.scenario.clone(), r.target.name()))
            .or_default()
            .push(r);
    }
    map
}
