//! Memory per open stream: each proxy fresh and warmed up, then many streams held open at once by the
//! upstream while the proxy's resident memory is read.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::calls::{self, Bodies, Call};
use crate::oha::{self, Load};
use crate::procs;
use crate::run::Settings;
use crate::snapshot;
use crate::targets::{self, Kind, Launch};

/// Memory of one proxy with many streams open at once.
#[derive(Clone, Debug, Serialize)]
pub struct StreamMemory {
    pub target: Kind,
    /// RSS after a warm-up, before the streams, KiB.
    pub before_kib: u64,
    /// RSS with the streams held open, KiB.
    pub during_kib: u64,
    /// Streams the upstream held at the moment of measuring.
    pub open_streams: usize,
    /// (during − before) / open streams, KiB.
    pub per_stream_kib: f64,
    /// Status counts of the streams once released.
    pub completed_ok: u64,
}

/// Number of streams the upstream holds open right now.
fn held_streams() -> usize {
    procs::http_call(targets::upstream_addr(), "GET", "/held", &[], b"")
        .ok()
        .and_then(|(_, body)| String::from_utf8_lossy(&body).trim().parse().ok())
        .unwrap_or(0)
}

/// Memory per open stream: each proxy fresh, warmed up, then `settings.streams` streams held at once.
pub fn stream_memory(
    settings: &Settings,
    launch: &Launch,
    bodies: &Bodies,
    large: &Path,
    kinds: &[Kind],
    missing: &mut Vec<String>,
) -> anyhow::Result<Vec<StreamMemory>> {
    let key = snapshot::bench_identity().key;
    let mut out = Vec::new();
    for &kind in kinds {
        eprintln!(
            "tollgate-bench: {} open streams through {}",
            settings.streams,
            kind.name()
        );
        let mut proxy = targets::start_proxy(launch, kind, large)?;
        calls::wait_ready(&mut proxy, bodies, Duration::from_secs(180))?;
        let warm_url = format!(
            "http://{}{}",
            kind.addr(),
            calls::path(kind, Call::Stream, false)
        );
        let warm = Load {
            url: &warm_url,
            body: &bodies.stream,
            key: &key,
            connections: 32,
            rate: None,
            duration: Some(Duration::from_secs(1)),
            requests: 0,
        };
        oha::run(&settings.oha, &settings.load_cpu, &warm)?;
        thread::sleep(Duration::from_secs(1));
        let pids = proxy.pids();
        let before_kib = procs::rss_kib(&pids);
        let hold_url = format!(
            "http://{}{}",
            kind.addr(),
            calls::path(kind, Call::Stream, true)
        );
        let hold = Load {
            url: &hold_url,
            body: &bodies.hold,
            key: &key,
            connections: settings.streams,
            rate: None,
            duration: None,
            requests: settings.streams,
        };
        let (open_streams, during_kib, outcome) = thread::scope(|scope| {
            let load = scope.spawn(|| oha::run(&settings.oha, &settings.load_cpu, &hold));
            let deadline = Instant::now() + settings.hold.saturating_sub(Duration::from_secs(2));
            let mut held = held_streams();
            while held < settings.streams && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(200));
                held = held_streams();
            }
            // Give the proxy a moment to finish allocating for the last streams it accepted.
            thread::sleep(Duration::from_millis(500));
            let during = procs::rss_kib(&pids);
            let held = held_streams();
            (held, during, load.join().expect("oha thread"))
        });
        let outcome = outcome?;
        if open_streams < settings.streams {
            missing.push(format!(
                "{}: only {open_streams} of {} streams were open at once",
                kind.name(),
                settings.streams
            ));
        }
        let per_stream_kib =
            during_kib.saturating_sub(before_kib) as f64 / open_streams.max(1) as f64;
        out.push(StreamMemory {
            target: kind,
            before_kib,
            during_kib,
            open_streams,
            per_stream_kib,
            completed_ok: outcome.ok,
        });
        proxy.stop();
    }
    Ok(out)
}
