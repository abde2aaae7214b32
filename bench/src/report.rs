//! Turning runs into figures: medians with spread, ratios against the baselines of the same run, the four
//! targets of issue 9, a JSON document and a short Markdown table.

use std::fmt::Write as _;

use serde::Serialize;

use crate::run::{Measured, RunRecord, by_scenario};
use crate::targets::Kind;

/// Median and range of one figure over the repetitions.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

fn stat(mut values: Vec<f64>) -> Option<Stat> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: values[0],
        max: values[n - 1],
    })
}

/// One scenario on one path, over its measured repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub scenario: String,
    pub target: &'static str,
    pub reps: usize,
    pub rps: Option<Stat>,
    pub p50_ms: Option<Stat>,
    pub p99_ms: Option<Stat>,
    pub p999_ms: Option<Stat>,
    pub proxy_cores: Option<Stat>,
    /// Throughput per CPU the proxy burned: compares proxies even when the load side limits throughput.
    pub rps_per_proxy_core: Option<Stat>,
    pub proxy_rss_peak_kib: Option<u64>,
    /// Answers other than 2xx plus failed requests, over all repetitions.
    pub failures: u64,
}

fn cell(scenario: &str, target: &'static str, runs: &[&RunRecord]) -> Cell {
    let of =
        |f: &dyn Fn(&RunRecord) -> Option<f64>| stat(runs.iter().filter_map(|r| f(r)).collect());
    Cell {
        scenario: scenario.to_owned(),
        target,
        reps: runs.len(),
        rps: of(&|r| Some(r.outcome.rps)),
        p50_ms: of(&|r| Some(r.outcome.p50_ms)),
        p99_ms: of(&|r| Some(r.outcome.p99_ms)),
        p999_ms: of(&|r| Some(r.outcome.p999_ms)),
        proxy_cores: of(&|r| r.proxy_cores),
        rps_per_proxy_core: of(&|r| {
            r.proxy_cores
                .filter(|c| *c > 0.0)
                .map(|c| r.outcome.rps / c)
        }),
        proxy_rss_peak_kib: runs.iter().filter_map(|r| r.proxy_rss_peak_kib).max(),
        failures: runs
            .iter()
            .map(|r| r.outcome.not_ok + r.outcome.errors)
            .sum(),
    }
}

/// Ratios within one scenario, from medians.
#[derive(Clone, Debug, Serialize)]
pub struct Ratios {
    pub scenario: String,
    /// Throughput of a path divided by another's, keyed `a/b`.
    pub throughput: Vec<(String, f64)>,
    /// Throughput per proxy CPU, Tollgate's median divided by the forwarder's.
    pub tollgate_per_core_vs_forwarder: Option<f64>,
    /// The same ratio taken within each repetition (the two paths run back to back), then its median
    /// and spread: the machine's speed drifts over minutes, and pairs cancel what they share.
    pub tollgate_per_core_paired: Option<Stat>,
    /// Median p50 of a proxy minus the direct path's, ms.
    pub added_p50_ms: Vec<(String, f64)>,
    /// Median p99 of a proxy minus the direct path's, ms.
    pub added_p99_ms: Vec<(String, f64)>,
}

/// One target of the issue and how this run met it.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub target: String,
    pub goal: String,
    pub figure: Option<f64>,
    pub shown: String,
    pub pass: Option<bool>,
}

/// Facts about the machine and the software measured.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub memory_mib: u64,
    pub kernel: String,
    pub load_before: String,
    pub load_after: String,
    pub pinning: String,
    pub oha: String,
    pub nginx: String,
    pub rustc: String,
    pub commit: String,
}

/// The whole result: the JSON document.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub label: String,
    pub machine: Machine,
    pub reps: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub verdicts: Vec<Verdict>,
    pub ratios: Vec<Ratios>,
    pub cells: Vec<Cell>,
    pub measured: Measured,
}

/// RSS limit of the issue: 30 MB, in KiB.
const RSS_LIMIT_KIB: f64 = 30e6 / 1024.0;

impl Report {
    /// Computes cells, ratios and verdicts from what was measured.
    pub fn new(
        label: String,
        machine: Machine,
        reps: usize,
        duration_s: f64,
        warmup_s: f64,
        measured: Measured,
    ) -> Self {
        let grouped = by_scenario(&measured.runs);
        let mut cells = Vec::new();
        for scenario in &measured.scenarios {
            for kind in Kind::ALL {
                if let Some(runs) = grouped.get(&(scenario.name.clone(), kind.name())) {
                    cells.push(cell(&scenario.name, kind.name(), runs));
                }
            }
        }
        let find = |scenario: &str, target: &str| {
            cells
                .iter()
                .find(|c| c.scenario == scenario && c.target == target)
        };
        let median = |s: Option<Stat>| s.map(|s| s.median);
        let mut ratios = Vec::new();
        for scenario in &measured.scenarios {
            let s = scenario.name.as_str();
            let rps = |t: &str| find(s, t).and_then(|c| median(c.rps));
            let mut throughput = Vec::new();
            for (a, b) in [
                ("tollgate", "forwarder"),
                ("tollgate", "nginx"),
                ("tollgate", "direct"),
                ("forwarder", "direct"),
                ("nginx", "direct"),
            ] {
                if let (Some(x), Some(y)) = (rps(a), rps(b)) {
                    throughput.push((format!("{a}/{b}"), x / y));
                }
            }
            let added = |pick: fn(&Cell) -> Option<Stat>| {
                let direct = find(s, "direct").and_then(|c| median(pick(c)));
                ["forwarder", "nginx", "tollgate"]
                    .iter()
                    .filter_map(|t| Some((t.to_string(), median(pick(find(s, t)?))? - direct?)))
                    .collect::<Vec<_>>()
            };
            let per_core = |t: &str| find(s, t).and_then(|c| median(c.rps_per_proxy_core));
            let rep_per_core = |kind: Kind, rep: usize| {
                measured
                    .runs
                    .iter()
                    .find(|r| r.scenario == s && r.target == kind && r.rep == rep)
                    .and_then(|r| Some(r.outcome.rps / r.proxy_cores.filter(|c| *c > 0.0)?))
            };
            let paired = stat(
                (1..=reps)
                    .filter_map(|rep| {
                        Some(
                            rep_per_core(Kind::Tollgate, rep)?
                                / rep_per_core(Kind::Forwarder, rep)?,
                        )
                    })
                    .collect(),
            );
            ratios.push(Ratios {
                scenario: s.to_owned(),
                throughput,
                tollgate_per_core_vs_forwarder: per_core("tollgate")
                    .zip(per_core("forwarder"))
                    .map(|(a, b)| a / b),
                tollgate_per_core_paired: paired,
                added_p50_ms: added(|c| c.p50_ms),
                added_p99_ms: added(|c| c.p99_ms),
            });
        }
        let verdicts = verdicts(&measured, &cells, &ratios);
        Report {
            label,
            machine,
            reps,
            duration_s,
            warmup_s,
            verdicts,
            ratios,
            cells,
            measured,
        }
    }

    /// The short Markdown table: targets, ratios, then absolute figures.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "# Tollgate proxy benchmark — {}\n", self.label);
        let _ = writeln!(
            w,
            "Machine: {}, {} CPUs, {} MiB, Linux {}. {}. Load average before / after: {} / {}.",
            m.cpu, m.cpus, m.memory_mib, m.kernel, m.pinning, m.load_before, m.load_after
        );
        let _ = writeln!(
            w,
            "Each figure: median of {} runs of {:.0} s (fixed-rate runs: at least 10 s), [min–max] in brackets, after a {:.0} s warm-up per path. \
             Load generator {}; nginx {}; commit {}. Tollgate ran the full pipeline with the {} snapshot, \
             access log on (its stdout into a file).\n",
            self.reps,
            self.duration_s,
            self.warmup_s,
            m.oha,
            m.nginx,
            m.commit,
            self.measured.snapshot
        );
        let _ = writeln!(
            w,
            "## Targets\n\n| target | goal | this run | verdict |\n|---|---|---|---|"
        );
        for v in &self.verdicts {
            let verdict = match v.pass {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} |",
                v.target, v.goal, v.shown, verdict
            );
        }
        let _ = writeln!(
            w,
            "\n## Ratios (same run)\n\n| scenario | Tollgate / forwarder | Tollgate / nginx | forwarder / direct | \
             Tollgate per proxy CPU / forwarder's | added p50 ms (fwd, nginx, Tollgate) | added p99 ms (fwd, nginx, Tollgate) |\n\
             |---|---|---|---|---|---|---|"
        );
        for r in &self.ratios {
            let ratio = |k: &str| {
                r.throughput
                    .iter()
                    .find(|(n, _)| n == k)
                    .map_or("—".into(), |(_, v)| format!("{:.1}%", v * 100.0))
            };
            let added = |list: &[(String, f64)]| {
                ["forwarder", "nginx", "tollgate"]
                    .iter()
                    .map(|t| {
                        list.iter()
                            .find(|(n, _)| n == t)
                            .map_or("—".into(), |(_, v)| format!("{v:+.3}"))
                    })
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let per_core = match (r.tollgate_per_core_vs_forwarder, r.tollgate_per_core_paired) {
                (Some(v), Some(p)) => format!(
                    "{:.1}% (paired {:.1}% [{:.1}–{:.1}%])",
                    v * 100.0,
                    p.median * 100.0,
                    p.min * 100.0,
                    p.max * 100.0
                ),
                (Some(v), None) => format!("{:.1}%", v * 100.0),
                _ => "—".into(),
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.scenario,
                ratio("tollgate/forwarder"),
                ratio("tollgate/nginx"),
                ratio("forwarder/direct"),
                per_core,
                added(&r.added_p50_ms),
                added(&r.added_p99_ms)
            );
        }
        let _ = writeln!(
            w,
            "\nA proxy using less than one CPU was not what limited its run: oha and the upstream on the other CPU \
             were. Raw throughput ratios then compare load generators, not proxies; requests per second per proxy \
             CPU compare the proxies' cost per call. The forwarder and Tollgate run back to back in each repetition; \
             \"paired\" is the median of those repetitions' ratios, which cancels the machine's drift over minutes \
             (the ratio of the two medians does not). Added latency is the path's median minus the direct path's."
        );
        let _ = writeln!(
            w,
            "\n## Absolute figures\n\n| scenario | path | requests/s | p50 ms | p99 ms | p99.9 ms | proxy CPUs | \
             requests/s per proxy CPU | peak RSS MiB | failures |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        let fmt = |s: Option<Stat>, digits: usize| {
            s.map_or("—".into(), |s| {
                format!("{:.d$} [{:.d$}–{:.d$}]", s.median, s.min, s.max, d = digits)
            })
        };
        for c in &self.cells {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.scenario,
                c.target,
                fmt(c.rps, 0),
                fmt(c.p50_ms, 3),
                fmt(c.p99_ms, 3),
                fmt(c.p999_ms, 3),
                c.proxy_cores
                    .map_or("—".into(), |s| format!("{:.2}", s.median)),
                c.rps_per_proxy_core
                    .map_or("—".into(), |s| format!("{:.0}", s.median)),
                c.proxy_rss_peak_kib
                    .map_or("—".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
                c.failures
            );
        }
        let idle = &self.measured.idle;
        let mib = |k: Option<u64>| k.map_or("—".into(), |k| format!("{:.1}", k as f64 / 1024.0));
        let _ = writeln!(
            w,
            "\n## Memory\n\nIdle RSS MiB: Tollgate with 1 route / 1 consumer {}, with the large snapshot {} \
             (ready {} after start); forwarder {}; nginx (master + worker) {}.\n",
            mib(idle.tollgate_small_kib),
            mib(idle.tollgate_large_kib),
            idle.tollgate_large_ready_s
                .map_or("—".into(), |s| format!("{s:.1} s")),
            mib(idle.forwarder_kib),
            mib(idle.nginx_kib)
        );
        if let Some(rest) = &idle.tollgate_default_flags {
            let _ = writeln!(
                w,
                "Tollgate with default flags (`{}`), large snapshot, no calls for {:.0} s: {:.2} CPUs busy, \
                 RSS {:.1} MiB at the end, {:.1} MiB at the highest. The load runs above used `--poll-interval 1h`.\n",
                rest.args,
                rest.seconds,
                rest.cores,
                rest.rss_end_kib as f64 / 1024.0,
                rest.rss_peak_kib as f64 / 1024.0
            );
        }
        let _ = writeln!(
            w,
            "| path | streams open | RSS before MiB | RSS with streams MiB | KiB per stream |\n|---|---|---|---|---|"
        );
        for s in &self.measured.streams {
            let _ = writeln!(
                w,
                "| {} | {} | {:.1} | {:.1} | {:.1} |",
                s.target.name(),
                s.open_streams,
                s.before_kib as f64 / 1024.0,
                s.during_kib as f64 / 1024.0,
                s.per_stream_kib
            );
        }
        if let Some(log) = &self.measured.access_log {
            let _ = writeln!(
                w,
                "\nTollgate access log: {} lines for {} answered calls and {} that oha cut off at the end of a run.",
                log.lines, log.calls, log.cut_at_deadline
            );
        }
        if !self.measured.missing.is_empty() {
            let _ = writeln!(w, "\n## Not measured or wrong\n");
            for m in &self.measured.missing {
                let _ = writeln!(w, "- {m}");
            }
        }
        out
    }
}

fn verdicts(measured: &Measured, cells: &[Cell], ratios: &[Ratios]) -> Vec<Verdict> {
    let mut out = Vec::new();
    // On two CPUs the load generator and the upstream share one, and a light proxy cannot be driven to its
    // limit: its raw throughput is the load side's. Requests per second per CPU the proxy burned is its
    // capacity, comparable between proxies whatever limited the run; the verdict rests on that figure.
    let c32 = ratios.iter().find(|r| r.scenario == "chat-c32");
    let raw = c32.and_then(|r| {
        r.throughput
            .iter()
            .find(|(n, _)| n == "tollgate/forwarder")
            .map(|(_, v)| *v)
    });
    let of_medians = c32.and_then(|r| r.tollgate_per_core_vs_forwarder);
    let paired = c32.and_then(|r| r.tollgate_per_core_paired);
    let pct = |v: Option<f64>| v.map_or("—".into(), |v| format!("{:.1}%", v * 100.0));
    out.push(Verdict {
        target: "throughput at 32 connections, Tollgate / minimal forwarder per proxy CPU: median of the \
                 repetitions' ratios [spread]; ratio of the medians; raw throughput"
            .into(),
        goal: "≥ 85%".into(),
        figure: paired.map(|p| p.median),
        shown: format!(
            "{} [{}–{}]; {}; {} raw",
            pct(paired.map(|p| p.median)),
            pct(paired.map(|p| p.min)),
            pct(paired.map(|p| p.max)),
            pct(of_medians),
            pct(raw)
        ),
        pass: paired.map(|p| p.median >= 0.85),
    });
    let rate = measured.scenarios.iter().find(|s| s.rate.is_some());
    let added = rate.and_then(|s| {
        ratios.iter().find(|r| r.scenario == s.name).and_then(|r| {
            r.added_p99_ms
                .iter()
                .find(|(n, _)| n == "tollgate")
                .map(|(_, v)| *v)
        })
    });
    let rate_name = rate.map_or("a fixed rate".into(), |s| {
        format!("{} rps", s.rate.unwrap_or_default())
    });
    out.push(Verdict {
        target: format!("added p99 latency at {rate_name}, Tollgate − direct"),
        goal: "≤ 0.5 ms".into(),
        figure: added,
        shown: added.map_or("—".into(), |v| format!("{v:.3} ms")),
        pass: added.map(|v| v <= 0.5),
    });
    let idle = measured.idle.tollgate_large_kib;
    let peak_cell = cells
        .iter()
        .filter(|c| c.target == "tollgate" && c.proxy_rss_peak_kib.is_some())
        .max_by_key(|c| c.proxy_rss_peak_kib);
    let loaded = peak_cell.and_then(|c| c.proxy_rss_peak_kib);
    let worst = idle.into_iter().chain(loaded).max();
    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    // Where the peak was, and what the forwarder held there: connections cost memory in any proxy.
    let peak_where = peak_cell.map_or(String::new(), |p| {
        let forwarder = cells
            .iter()
            .find(|c| c.scenario == p.scenario && c.target == "forwarder")
            .and_then(|c| c.proxy_rss_peak_kib);
        format!(
            " ({}; forwarder {})",
            p.scenario,
            forwarder.map_or("—".into(), mib)
        )
    });
    out.push(Verdict {
        target: "RSS with 1,000 routes / 10,000 consumers, idle and peak under load".into(),
        goal: "≤ 30 MB (28.6 MiB)".into(),
        figure: worst.map(|k| k as f64),
        shown: format!(
            "{} idle, {} peak{peak_where}",
            idle.map_or("—".into(), mib),
            loaded.map_or("—".into(), mib)
        ),
        pass: worst.map(|k| (k as f64) <= RSS_LIMIT_KIB),
    });
    let per_stream = measured.streams.iter().find(|s| s.target == Kind::Tollgate);
    out.push(Verdict {
        target: "memory per open stream, Tollgate".into(),
        goal: "≤ 64 KiB".into(),
        figure: per_stream.map(|s| s.per_stream_kib),
        shown: per_stream.map_or("—".into(), |s| {
            format!("{:.1} KiB ({} streams)", s.per_stream_kib, s.open_streams)
        }),
        pass: per_stream.map(|s| s.per_stream_kib <= 64.0),
    });
    out.push(Verdict {
        target: "snapshot propagation with 5,000 routes, p50/p99".into(),
        goal: "report".into(),
        figure: None,
        shown: "not part of this harness (the controller's)".into(),
        pass: None,
    });
    out
}
