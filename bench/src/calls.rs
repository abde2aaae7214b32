//! The calls a scenario makes: bodies, paths on each target, and the check that a path answers them right.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use crate::procs;
use crate::snapshot;
use crate::targets::{Kind, Proxy};
use tollgate_bench::payload;

/// Which API a scenario calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Call {
    Chat,
    Stream,
    Embeddings,
}

/// Whether a path gives the right answers before it is loaded.
#[derive(Clone, Debug, Serialize)]
pub struct Sanity {
    pub target: Kind,
    pub call: Call,
    pub status: u16,
    pub ok: bool,
    pub note: String,
}

/// Request bodies on disk, for oha.
pub struct Bodies {
    pub chat: PathBuf,
    pub stream: PathBuf,
    pub embeddings: PathBuf,
    pub hold: PathBuf,
}

pub fn write_bodies(work: &Path) -> anyhow::Result<Bodies> {
    let bodies = Bodies {
        chat: work.join("chat.json"),
        stream: work.join("stream.json"),
        embeddings: work.join("embeddings.json"),
        hold: work.join("hold.json"),
    };
    fs::write(&bodies.chat, payload::chat_request("bench-chat", false))?;
    fs::write(&bodies.stream, payload::chat_request("bench-chat", true))?;
    fs::write(
        &bodies.embeddings,
        payload::embeddings_request("bench-embed"),
    )?;
    fs::write(&bodies.hold, payload::chat_request("bench-hold", true))?;
    Ok(bodies)
}

/// The path under a target's address for a call; `hold` asks the upstream to keep the stream open.
pub fn path(kind: Kind, call: Call, hold: bool) -> String {
    let api = match call {
        Call::Chat | Call::Stream => "/v1/chat/completions",
        Call::Embeddings => "/v1/embeddings",
    };
    match (kind, hold) {
        (Kind::Tollgate, _) => format!("{}{api}", snapshot::bench_identity().prefix),
        (_, true) => format!("/hold{api}"),
        (_, false) => api.to_owned(),
    }
}

pub fn body_for(bodies: &Bodies, call: Call) -> &Path {
    match call {
        Call::Chat => &bodies.chat,
        Call::Stream => &bodies.stream,
        Call::Embeddings => &bodies.embeddings,
    }
}

/// One call and a check of its answer's shape.
pub fn sanity(kind: Kind, call: Call, bodies: &Bodies) -> Sanity {
    let key = snapshot::bench_identity().key;
    let auth = format!("Bearer {key}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let body = fs::read(body_for(bodies, call)).unwrap_or_default();
    match procs::http_call(
        kind.addr(),
        "POST",
        &path(kind, call, false),
        &headers,
        &body,
    ) {
        Err(e) => Sanity {
            target: kind,
            call,
            status: 0,
            ok: false,
            note: format!("{e:#}"),
        },
        Ok((status, answer)) => {
            let text = String::from_utf8_lossy(&answer);
            let (ok, note) = match call {
                Call::Chat => (
                    text.contains("\"chat.completion\""),
                    format!("{} bytes", answer.len()),
                ),
                Call::Embeddings => (
                    text.contains("\"embedding\""),
                    format!("{} bytes", answer.len()),
                ),
                Call::Stream => {
                    let events = text.matches("data:").count();
                    (
                        text.contains("[DONE]") && events > payload::STREAM_CHUNKS,
                        format!("{events} SSE events, {} bytes", answer.len()),
                    )
                }
            };
            let note = if ok {
                note
            } else {
                format!("{note}: {}", text.chars().take(300).collect::<String>())
            };
            Sanity {
                target: kind,
                call,
                status,
                ok: ok && status == 200,
                note,
            }
        }
    }
}

/// Waits until a path answers a chat call with 200 (Tollgate compiles its snapshot first).
pub fn wait_ready(
    proxy: &mut Proxy,
    bodies: &Bodies,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        proxy.check_alive()?;
        let check = sanity(proxy.kind, Call::Chat, bodies);
        if check.ok {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!(
                "{} never answered correctly: status {} {}",
                proxy.kind.name(),
                check.status,
                check.note
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}
