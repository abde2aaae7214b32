//! The four ways a call reaches the upstream fake: directly, through the minimal hyper forwarder,
//! through nginx, through Tollgate. Each proxy runs pinned to the proxy CPU.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::nginx;
use crate::procs::{self, Started};

/// Numbers Tollgate's access-log files, one per start.
static LOG_FILES: AtomicU64 = AtomicU64::new(0);

/// Ports, fixed so a run is easy to reproduce by hand.
pub const UPSTREAM_PORT: u16 = 18080;
const FORWARDER_PORT: u16 = 18081;
const NGINX_PORT: u16 = 18082;
const TOLLGATE_PORT: u16 = 18083;
const TOLLGATE_ADMIN_PORT: u16 = 18093;

/// Which path a call takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Direct,
    Forwarder,
    Nginx,
    Tollgate,
}

impl Kind {
    /// All of them, in the order runs rotate through: the forwarder right before Tollgate, so that
    /// the two runs compared for the throughput target see the machine in the same state.
    pub const ALL: [Kind; 4] = [Kind::Direct, Kind::Nginx, Kind::Forwarder, Kind::Tollgate];

    /// Name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Forwarder => "forwarder",
            Kind::Nginx => "nginx",
            Kind::Tollgate => "tollgate",
        }
    }

    /// Where this path listens.
    pub fn addr(self) -> SocketAddr {
        let port = match self {
            Kind::Direct => UPSTREAM_PORT,
            Kind::Forwarder => FORWARDER_PORT,
            Kind::Nginx => NGINX_PORT,
            Kind::Tollgate => TOLLGATE_PORT,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

/// What the harness needs to start the processes.
#[derive(Clone)]
pub struct Launch {
    /// Folder with `bench-upstream` and `bench-forwarder`.
    pub bin_dir: PathBuf,
    /// The nginx binary.
    pub nginx: PathBuf,
    /// The Tollgate proxy binary, when it exists.
    pub tollgate: Option<PathBuf>,
    /// Tollgate's arguments; `{snapshot}`, `{listen}` and `{admin}` are filled in.
    pub tollgate_args: String,
    /// Tollgate's arguments as a user would give them (defaults everywhere), to measure it at rest.
    pub tollgate_default_args: String,
    /// Scratch folder for configs, logs and bodies.
    pub work: PathBuf,
    /// CPU list for proxies under test.
    pub proxy_cpu: String,
}

/// Lines in Tollgate's access-log file, and the first one as a sample.
pub fn count_log_lines(path: &Path) -> anyhow::Result<(u64, Option<String>)> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut lines = u64::from(first.ends_with('\n'));
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let n = buf.len();
        reader.consume(n);
    }
    let first = first.trim_end();
    Ok((lines, (!first.is_empty()).then(|| first.to_owned())))
}

/// A running proxy under test (the direct path has none).
pub struct Proxy {
    /// Which one.
    pub kind: Kind,
    process: Started,
    /// Tollgate's access-log file, when this is Tollgate.
    pub access_log: Option<PathBuf>,
}

impl Proxy {
    /// The pids whose memory and CPU count as this proxy's.
    pub fn pids(&self) -> Vec<u32> {
        self.process.family()
    }

    /// Fails if it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.process.check_alive()
    }

    /// Stops it.
    pub fn stop(self) {
        self.process.stop();
    }
}

/// Starts the upstream fake on the load CPU.
pub fn start_upstream(launch: &Launch, cpu: &str, hold: Duration) -> anyhow::Result<Started> {
    let args = vec![
        "--listen".to_owned(),
        Kind::Direct.addr().to_string(),
        "--hold-ms".to_owned(),
        hold.as_millis().to_string(),
    ];
    let upstream = Started::spawn(
        "upstream",
        cpu,
        &launch.bin_dir.join("bench-upstream"),
        &args,
        Stdio::null(),
    )?;
    procs::wait_for_port(Kind::Direct.addr(), Duration::from_secs(10))?;
    Ok(upstream)
}

/// Starts one proxy under test and waits until it accepts connections; Tollgate is given `snapshot`.
pub fn start_proxy(launch: &Launch, kind: Kind, snapshot: &Path) -> anyhow::Result<Proxy> {
    start(launch, kind, snapshot, &launch.tollgate_args)
}

/// Starts Tollgate with other arguments than the benchmark's (same placeholders).
pub fn start_tollgate_with(launch: &Launch, args: &str, snapshot: &Path) -> anyhow::Result<Proxy> {
    start(launch, Kind::Tollgate, snapshot, args)
}

fn start(
    launch: &Launch,
    kind: Kind,
    snapshot: &Path,
    tollgate_args: &str,
) -> anyhow::Result<Proxy> {
    let upstream = Kind::Direct.addr().to_string();
    let (process, access_log) = match kind {
        Kind::Direct => bail!("the direct path has no proxy"),
        Kind::Forwarder => {
            let args = vec![
                "--listen".into(),
                kind.addr().to_string(),
                "--upstream".into(),
                upstream,
            ];
            let bin = launch.bin_dir.join("bench-forwarder");
            (
                Started::spawn("forwarder", &launch.proxy_cpu, &bin, &args, Stdio::null())?,
                None,
            )
        }
        Kind::Nginx => {
            let dir = launch.work.join("nginx");
            fs::create_dir_all(&dir)?;
            let conf = dir.join("nginx.conf");
            fs::write(&conf, nginx::config(&dir, kind.addr().port(), &upstream))?;
            let args = vec![
                "-e".into(),
                dir.join("nginx-error.log").display().to_string(),
                "-c".into(),
                conf.display().to_string(),
            ];
            (
                Started::spawn(
                    "nginx",
                    &launch.proxy_cpu,
                    &launch.nginx,
                    &args,
                    Stdio::null(),
                )?,
                None,
            )
        }
        Kind::Tollgate => {
            let bin = launch
                .tollgate
                .as_ref()
                .context("no Tollgate proxy binary")?;
            let args: Vec<String> = tollgate_args
                .split_whitespace()
                .map(|a| {
                    a.replace("{snapshot}", &snapshot.display().to_string())
                        .replace("{listen}", &kind.addr().to_string())
                        .replace("{admin}", &admin_addr().to_string())
                })
                .collect();
            // A file, not a pipe: a reader that falls behind would back the lines up inside the proxy
            // and show up as its memory. Every line still costs the proxy its write(2).
            let log = launch.work.join(format!(
                "tollgate-{}.log",
                LOG_FILES.fetch_add(1, Ordering::Relaxed)
            ));
            let file = File::create(&log).with_context(|| log.display().to_string())?;
            let process =
                Started::spawn("tollgate", &launch.proxy_cpu, bin, &args, Stdio::from(file))?;
            (process, Some(log))
        }
    };
    let mut proxy = Proxy {
        kind,
        process,
        access_log,
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        proxy.check_alive()?;
        if procs::wait_for_port(kind.addr(), Duration::from_millis(200)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("{} did not open its port in time", kind.name());
        }
    }
    Ok(proxy)
}

/// Tollgate's admin address (metrics).
pub fn admin_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], TOLLGATE_ADMIN_PORT))
}

/// Empties the scratch folder, refusing to touch one this harness did not create.
pub fn prepare_work(work: &Path) -> anyhow::Result<()> {
    if work.exists() {
        if !work.join(".tollgate-bench").exists() && fs::read_dir(work)?.next().is_some() {
            bail!(
                "{} exists and was not made by tollgate-bench; pick another --work",
                work.display()
            );
        }
        fs::remove_dir_all(work).with_context(|| format!("clearing {}", work.display()))?;
    }
    fs::create_dir_all(work)?;
    File::create(work.join(".tollgate-bench"))?;
    Ok(())
}

/// Where the upstream fake listens.
pub fn upstream_addr() -> SocketAddr {
    Kind::Direct.addr()
}
