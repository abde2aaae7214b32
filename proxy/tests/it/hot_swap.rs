//! Hot swap under load: 32 keep-alive connections send at least 20,000 requests while the snapshot is
//! swapped at least 200 times between two tables that route the same model to two different upstreams.
//! Zero requests may fail, and each must be answered by the backend of the snapshot it was served from,
//! a snapshot that was current at some point during the request's life.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tollgate_snapshot::{Content, Phase, ProviderType};

use crate::support::openai_fake::{Behaviour, OpenAiFake};
use crate::support::*;

const CONNECTIONS: usize = 32;
const MIN_REQUESTS: u64 = 20_000;
const MIN_SWAPS: u64 = 200;
const KEY: &str = "tg-load-key";

/// Version `v` routes to upstream A when odd, B when even.
fn tag_of(version: u64) -> &'static str {
    if version % 2 == 1 { "a" } else { "b" }
}

fn table(upstream: &OpenAiFake, tag: &str) -> Content {
    Content {
        providers: vec![provider(
            &format!("up-{tag}"),
            ProviderType::OpenAI,
            &upstream.endpoint(),
            &format!("sk-{tag}"),
        )],
        routes: vec![route(
            NS,
            "chat",
            "/load",
            vec![model(
                "m",
                vec![backend(0, &format!("model-{tag}"))],
                vec![],
            )],
        )],
        consumers: vec![consumer(NS, "load", KEY)],
        subscriptions: vec![subscription("load-chat", 0, 0, Phase::Approved)],
        proxy_replicas: 0,
    }
}

struct Outcome {
    request_id: String,
    tag: String,
    v_start: u64,
    v_end: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load_drop_nothing_and_route_by_the_request_s_snapshot() {
    let a = OpenAiFake::start(Behaviour::new("a", "sk-a")).await;
    let b = OpenAiFake::start(Behaviour::new("b", "sk-b")).await;
    let tables = Arc::new([
        tollgate_snapshot::Snapshot::from_content(0, table(&a, "a")),
        tollgate_snapshot::Snapshot::from_content(0, table(&b, "b")),
    ]);
    let proxy = TestProxy::start(tables[0].content.clone()).await;
    let store = proxy.store.clone();

    let issued = Arc::new(AtomicU64::new(0));
    let swaps = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    // The swapper: a new version every millisecond or so, until the clients are done.
    let swapper = {
        let (store, swaps, done, tables) =
            (store.clone(), swaps.clone(), done.clone(), tables.clone());
        tokio::spawn(async move {
            let mut version = 1;
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(1)).await;
                version += 1;
                let mut next = tables[usize::from(tag_of(version) == "b")].clone();
                next.version = version;
                store.store(Arc::new(next));
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let body = Bytes::from(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    );
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        let (issued, swaps, store, body) =
            (issued.clone(), swaps.clone(), store.clone(), body.clone());
        let addr = proxy.addr;
        clients.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut outcomes = Vec::new();
            let mut failures = Vec::new();
            while issued.fetch_add(1, Ordering::Relaxed) < MIN_REQUESTS
                || swaps.load(Ordering::Relaxed) < MIN_SWAPS
            {
                let request = Request::post("/load/v1/chat/completions")
                    .header("host", "proxy")
                    .header("authorization", format!("Bearer {KEY}"))
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let v_start = store.version().unwrap();
                let result = async {
                    sender.ready().await.map_err(|e| e.to_string())?;
                    let response = sender
                        .send_request(request)
                        .await
                        .map_err(|e| e.to_string())?;
                    let status = response.status();
                    let id = response.headers()["x-request-id"]
                        .to_str()
                        .unwrap()
                        .to_string();
                    let bytes = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?
                        .to_bytes();
                    if status != 200 {
                        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
                    }
                    let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                    let content = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
                    let tag = content
                        .strip_prefix("from-")
                        .and_then(|c| c.split(' ').next())
                        .unwrap_or("?");
                    Ok((id, tag.to_string()))
                }
                .await;
                let v_end = store.version().unwrap();
                match result {
                    Ok((request_id, tag)) => outcomes.push(Outcome {
                        request_id,
                        tag,
                        v_start,
                        v_end,
                    }),
                    Err(e) => failures.push(e),
                }
            }
            (outcomes, failures)
        }));
    }

    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    let all = async {
        for c in clients {
            let (o, f) = c.await.unwrap();
            outcomes.extend(o);
            failures.extend(f);
        }
    };
    tokio::time::timeout(Duration::from_secs(240), all)
        .await
        .expect("the load finishes within 240s");
    done.store(true, Ordering::Relaxed);
    swapper.await.unwrap();
    let elapsed = started.elapsed();

    let swaps = swaps.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        outcomes.len() as u64 >= MIN_REQUESTS,
        "only {} requests",
        outcomes.len()
    );
    assert!(swaps >= MIN_SWAPS, "only {swaps} swaps");

    // Match each answer with the snapshot version its access-log line says it was served from.
    let lines: std::collections::HashMap<String, u64> = proxy
        .log_lines()
        .into_iter()
        .map(|l| {
            (
                l["request_id"].as_str().unwrap().to_string(),
                l["snapshot_version"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut spanning = 0;
    let mut served_by = [0u64; 2];
    for o in &outcomes {
        let served = *lines.get(&o.request_id).expect("one log line per request");
        assert!(
            (o.v_start..=o.v_end).contains(&served),
            "request {} served from version {served}, outside its life [{}, {}]",
            o.request_id,
            o.v_start,
            o.v_end
        );
        assert_eq!(
            o.tag,
            tag_of(served),
            "request {} answered by the wrong backend",
            o.request_id
        );
        if o.v_end > o.v_start {
            spanning += 1;
        }
        served_by[usize::from(o.tag == "b")] += 1;
    }
    assert_eq!(
        lines.len(),
        outcomes.len(),
        "exactly one access-log line per request"
    );
    assert!(
        served_by[0] > 0 && served_by[1] > 0,
        "both backends served: {served_by:?}"
    );
    eprintln!(
        "hot swap: {} requests over {CONNECTIONS} connections, {swaps} swaps, 0 failures, {} requests \
         spanned a swap, served by A/B {}/{}, {:.1}s ({:.0} req/s)",
        outcomes.len(),
        spanning,
        served_by[0],
        served_by[1],
        elapsed.as_secs_f64(),
        outcomes.len() as f64 / elapsed.as_secs_f64()
    );
    proxy.stop().await;
}
