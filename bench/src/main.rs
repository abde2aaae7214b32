//! `tollgate-bench`: generates the large snapshot, and runs the benchmark of issue 9 (`bash bench/run.sh`).

mod calls;
mod nginx;
mod oha;
mod procs;
mod report;
mod run;
mod snapshot;
mod streams;
mod targets;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::report::{Machine, Report};
use crate::run::Settings;
use crate::snapshot::Shape;
use crate::targets::Launch;

#[derive(Parser)]
#[command(
    about = "What the Tollgate proxy costs, next to a direct call, a minimal hyper hop and nginx"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a snapshot as CR YAML (1,000 routes and 10,000 consumers unless --small).
    Snapshot {
        /// The upstream the providers point at, host:port.
        #[arg(long, default_value = "127.0.0.1:18080")]
        upstream: String,
        /// One route and one consumer instead.
        #[arg(long)]
        small: bool,
    },
    /// Print the ~1 KB chat request body the fake answers (what bench/guardrails.sh sends).
    Body {
        /// What the user's message says.
        #[arg(long, value_enum, default_value_t = tollgate_bench::payload::Text::Prose)]
        text: tollgate_bench::payload::Text,
        /// Ask for a streamed answer.
        #[arg(long)]
        stream: bool,
    },
    /// Run every scenario and write JSON and Markdown results.
    Run(Box<RunArgs>),
}

#[derive(Parser)]
struct RunArgs {
    /// Measured repetitions per scenario and path.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Seconds per measured repetition.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of warm-up per scenario and path.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Requests per second of the fixed-rate latency scenario.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Least seconds per repetition of the fixed-rate scenario (its p99 needs the samples).
    #[arg(long, default_value_t = 10.0)]
    rate_duration: f64,
    /// Streams held open at once for the memory-per-stream figure.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Seconds the upstream holds each of those streams.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// Only these scenarios (comma-separated names, `streams` for the memory one).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// CPU list for the load generator and the upstream fake.
    #[arg(long, default_value = "0")]
    load_cpu: String,
    /// CPU list for the proxy under test.
    #[arg(long, default_value = "1")]
    proxy_cpu: String,
    /// The oha binary.
    #[arg(long, default_value = "oha")]
    oha: PathBuf,
    /// The nginx binary.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// Folder with bench-upstream and bench-forwarder.
    #[arg(long)]
    bin_dir: PathBuf,
    /// The Tollgate proxy binary; the baselines alone run if it does not exist.
    #[arg(long)]
    tollgate: Option<PathBuf>,
    /// Tollgate's arguments; {snapshot}, {listen} and {admin} are filled in.
    /// The files are re-read only once an hour: in a cluster snapshots come from the controller, and
    /// standalone mode's polling is measured apart (see --tollgate-default-args).
    #[arg(
        long,
        default_value = "standalone {snapshot} --poll-interval 1h --listen {listen} --admin-listen {admin}"
    )]
    tollgate_args: String,
    /// Tollgate's arguments as a user gives them, for the at-rest figure.
    #[arg(
        long,
        default_value = "standalone {snapshot} --listen {listen} --admin-listen {admin}"
    )]
    tollgate_default_args: String,
    /// Scratch folder (emptied first).
    #[arg(long, default_value = "/tmp/tollgate-bench")]
    work: PathBuf,
    /// Where results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Name of this result (file names and title), e.g. a UTC timestamp.
    #[arg(long)]
    label: String,
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_owned()
        })
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// This process's scheduling policy and niceness, which every process it starts inherits.
fn scheduling() -> String {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name: nice is the 17th, policy the 39th (see proc(5)).
    let fields: Vec<&str> = stat
        .rfind(')')
        .map(|i| stat[i + 2..].split_whitespace().collect())
        .unwrap_or_default();
    let nice = fields.get(16).copied().unwrap_or("?");
    match fields.get(38).copied() {
        Some("1") => "real-time FIFO".into(),
        Some("2") => "real-time round-robin".into(),
        _ => format!("normal, nice {nice}"),
    }
}

fn machine(args: &RunArgs) -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        cpu: cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(|s| s.trim().to_owned())
            })
            .unwrap_or_default(),
        // Not available_parallelism: the harness itself runs pinned to the load CPU.
        cpus: cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count(),
        memory_mib: meminfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
            / 1024,
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        load_before: loadavg(),
        load_after: String::new(),
        pinning: format!(
            "taskset: oha and the upstream fake on CPU {}, the proxy under test alone on CPU {}; scheduling {}",
            args.load_cpu,
            args.proxy_cpu,
            scheduling()
        ),
        oha: oha::version(&args.oha),
        nginx: command_output(&args.nginx.display().to_string(), &["-v"]),
        rustc: command_output("rustc", &["--version"]),
        commit: {
            let head = command_output("git", &["rev-parse", "--short", "HEAD"]);
            let dirty = command_output(
                "git",
                &["status", "--porcelain", "--", "proxy", "snapshot", "crds"],
            );
            match dirty.lines().filter(|l| !l.trim().is_empty()).count() {
                0 => head,
                n => format!("{head} with {n} uncommitted files in proxy/, snapshot/ or crds/"),
            }
        },
    }
}

fn run_all(args: RunArgs) -> anyhow::Result<()> {
    let mut machine = machine(&args);
    let tollgate = args.tollgate.clone().filter(|p| p.exists());
    let settings = Settings {
        reps: args.reps,
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        rate: args.rate,
        rate_duration: Duration::from_secs_f64(args.rate_duration),
        streams: args.streams,
        hold: Duration::from_secs_f64(args.hold),
        load_cpu: args.load_cpu.clone(),
        oha: args.oha.clone(),
        only: args.only.clone(),
    };
    let launch = Launch {
        bin_dir: args.bin_dir.clone(),
        nginx: args.nginx.clone(),
        tollgate,
        tollgate_args: args.tollgate_args.clone(),
        tollgate_default_args: args.tollgate_default_args.clone(),
        work: args.work.clone(),
        proxy_cpu: args.proxy_cpu.clone(),
    };
    let measured = run::run(&settings, &launch)?;
    machine.load_after = loadavg();
    let report = Report::new(
        args.label.clone(),
        machine,
        args.reps,
        args.duration,
        args.warmup,
        measured,
    );
    fs::create_dir_all(&args.out)?;
    let json = args.out.join(format!("{}.json", args.label));
    let md = args.out.join(format!("{}.md", args.label));
    fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| json.display().to_string())?;
    let markdown = report.markdown();
    fs::write(&md, &markdown).with_context(|| md.display().to_string())?;
    println!("{markdown}");
    eprintln!(
        "tollgate-bench: wrote {} and {}",
        json.display(),
        md.display()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Snapshot { upstream, small } => {
            let shape = if small { Shape::SMALL } else { Shape::LARGE };
            print!("{}", snapshot::generate(shape, &upstream));
            let id = snapshot::bench_identity();
            eprintln!("benchmark route prefix {}, key {}", id.prefix, id.key);
            Ok(())
        }
        Cmd::Body { text, stream } => {
            let body = tollgate_bench::payload::chat_request_saying("bench-chat", stream, text);
            println!("{}", String::from_utf8(body)?);
            Ok(())
        }
        Cmd::Run(args) => run_all(*args),
    }
}
