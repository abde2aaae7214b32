//! The load generator: one `oha` run, pinned to the load CPU, and the figures read from its JSON.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;

/// What to send, how hard and for how long.
pub struct Load<'a> {
    /// Full URL.
    pub url: &'a str,
    /// File with the request body.
    pub body: &'a Path,
    /// The bearer key sent with every request.
    pub key: &'a str,
    /// Keep-alive connections.
    pub connections: usize,
    /// A fixed request rate (per second), or as fast as the connections go.
    pub rate: Option<u32>,
    /// How long to send for; `None` sends `requests` requests instead.
    pub duration: Option<Duration>,
    /// Number of requests when no duration is given.
    pub requests: usize,
}

/// The figures of one run. Latencies in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    /// Successful (2xx) answers per second of the run.
    pub rps: f64,
    /// Answers with status 2xx.
    pub ok: u64,
    /// Answers with any other status.
    pub not_ok: u64,
    /// Requests that failed without an answer, other than those cut off by the end of the run.
    pub errors: u64,
    /// Requests still in flight when the run ended (oha cancels them; not counted anywhere else).
    pub cut_at_deadline: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Time to the first byte of the answer (for streams, the first chunk).
    pub first_byte_p50_ms: f64,
    pub first_byte_p99_ms: f64,
    /// Seconds the run took, as oha measured it.
    pub seconds: f64,
}

/// Runs oha once and reads its JSON summary.
pub fn run(oha: &Path, cpu: &str, load: &Load<'_>) -> anyhow::Result<Outcome> {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpu).arg(oha);
    cmd.args(["--no-tui", "--output-format", "json", "-m", "POST"]);
    cmd.args(["-H", &format!("authorization: Bearer {}", load.key)]);
    cmd.args(["-H", "content-type: application/json"]);
    cmd.arg("-D").arg(load.body);
    cmd.args(["-c", &load.connections.to_string()]);
    match load.duration {
        Some(d) => cmd.args(["-z", &format!("{}ms", d.as_millis())]),
        None => cmd.args(["-n", &load.requests.to_string()]),
    };
    if let Some(rate) = load.rate {
        // Latencies from the intended send time, so a stall is not hidden (no coordinated omission).
        cmd.args(["-q", &rate.to_string(), "--latency-correction"]);
    }
    cmd.arg(load.url);
    let output = cmd
        .output()
        .with_context(|| format!("running {}", oha.display()))?;
    if !output.status.success() {
        bail!(
            "oha failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let json: Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "oha printed no JSON: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    parse(&json)
}

/// Reads oha's `--output-format json` document.
fn parse(json: &Value) -> anyhow::Result<Outcome> {
    let secs = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let summary = json.get("summary").context("oha JSON without summary")?;
    let percentiles = json
        .get("latencyPercentiles")
        .context("oha JSON without latencyPercentiles")?;
    let mut ok = 0;
    let mut not_ok = 0;
    if let Some(codes) = json
        .get("statusCodeDistribution")
        .and_then(Value::as_object)
    {
        for (code, count) in codes {
            let count = count.as_u64().unwrap_or(0);
            if code.starts_with('2') {
                ok += count;
            } else {
                not_ok += count;
            }
        }
    }
    let mut errors = 0;
    let mut cut_at_deadline = 0;
    if let Some(kinds) = json.get("errorDistribution").and_then(Value::as_object) {
        for (kind, count) in kinds {
            let count = count.as_u64().unwrap_or(0);
            if kind.contains("deadline") {
                cut_at_deadline += count;
            } else {
                errors += count;
            }
        }
    }
    let seconds = secs(&summary["total"]);
    let ms = |key: &str| secs(&percentiles[key]) * 1e3;
    Ok(Outcome {
        rps: ok as f64 / seconds,
        ok,
        not_ok,
        errors,
        cut_at_deadline,
        mean_ms: secs(&summary["average"]) * 1e3,
        p50_ms: ms("p50"),
        p90_ms: ms("p90"),
        p99_ms: ms("p99"),
        p999_ms: ms("p99.9"),
        max_ms: secs(&summary["slowest"]) * 1e3,
        first_byte_p50_ms: secs(&json["firstBytePercentiles"]["p50"]) * 1e3,
        first_byte_p99_ms: secs(&json["firstBytePercentiles"]["p99"]) * 1e3,
        seconds,
    })
}

/// `oha --version`, for the record.
pub fn version(oha: &PathBuf) -> String {
    Command::new(oha)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
