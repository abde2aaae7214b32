//! A translated stream adds no more than one chunk of delay: slow fakes send one text piece every
//! 200 ms, and each translated chunk must reach the client well before the next piece is sent —
//! shown by comparing, per piece, when the fake sent it and when the client received it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tollgate_snapshot::ProviderType;

use crate::support::chat_route::*;
use crate::support::fake_server::FakeServer;
use crate::support::{TestProxy, anthropic_fake, bedrock_fake, client, gemini_fake};

const KEY: &str = "latency-test-key";
const INTERVAL: Duration = Duration::from_millis(200);
/// Well under one interval: a translated chunk must not wait for the next upstream event.
const MAX_LAG: Duration = Duration::from_millis(100);

fn pieces() -> Vec<String> {
    ["one", " two", " three", " four", " five", " six"]
        .map(String::from)
        .to_vec()
}

/// Streams `body` from `path`, returning each text delta with the instant it arrived.
async fn timed_text(
    proxy: &TestProxy,
    path: &str,
    body: Value,
    anthropic: bool,
) -> Vec<(String, Instant)> {
    let request = Request::post(proxy.url(path))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut buf = String::new();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let at = Instant::now();
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        buf.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for line in event.lines() {
                let Some(d) = line.strip_prefix("data: ") else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(d) else {
                    continue;
                };
                let text = if anthropic {
                    v["delta"]["text"].as_str()
                } else {
                    v["choices"][0]["delta"]["content"].as_str()
                };
                if let Some(t) = text.filter(|t| !t.is_empty()) {
                    out.push((t.to_string(), at));
                }
            }
        }
    }
    out
}

/// Checks each piece against the instant the fake sent it (`first` = index of the first text frame).
fn assert_prompt(fake: &FakeServer, first: usize, got: &[(String, Instant)], what: &str) {
    let sent = fake.frame_times.lock().unwrap().clone();
    assert_eq!(
        got.iter().map(|(t, _)| t.as_str()).collect::<String>(),
        pieces().concat(),
        "{what}"
    );
    let mut lags = Vec::new();
    for (k, (_, arrived)) in got.iter().enumerate() {
        let at = sent[first + k];
        assert!(
            *arrived >= at,
            "{what}: piece {k} arrived before it was sent?"
        );
        lags.push(*arrived - at);
    }
    println!("{what}: per-chunk lag {lags:?}");
    assert!(lags.iter().all(|l| *l < MAX_LAG), "{what}: lags {lags:?}");
    let spread = got.last().unwrap().1 - got[0].1;
    assert!(
        spread >= INTERVAL * (got.len() as u32 - 1) * 8 / 10,
        "{what}: the pieces arrived together ({spread:?}): the stream was buffered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translated_streams_forward_each_chunk_promptly() {
    let ask = json!({"model": "front-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let slow = |fake: &FakeServer| {
        fake.set(|c| {
            c.interval = INTERVAL;
            c.pieces = pieces();
        })
    };

    let fake = anthropic_fake::start(KEY).await;
    slow(&fake);
    let proxy = proxy_to(typed(ProviderType::Anthropic, &fake.url(), KEY, "c")).await;
    // message_start, ping, content_block_start, then the text deltas.
    let got = timed_text(&proxy, CHAT, ask.clone(), false).await;
    assert_prompt(&fake, 3, &got, "Anthropic -> OpenAI chunks");

    let fake = gemini_fake::start(KEY).await;
    slow(&fake);
    let proxy = proxy_to(typed(ProviderType::Gemini, &fake.url(), KEY, "g")).await;
    let got = timed_text(&proxy, CHAT, ask.clone(), false).await;
    assert_prompt(&fake, 0, &got, "Gemini -> OpenAI chunks");

    let keys = format!("{}:latency-secret", bedrock_fake::ACCESS_KEY_ID);
    let fake = bedrock_fake::start(&keys).await;
    slow(&fake);
    let proxy = proxy_to(bedrock(&fake.url(), &keys, "b")).await;
    let got = timed_text(&proxy, CHAT, ask.clone(), false).await;
    assert_prompt(&fake, 1, &got, "Bedrock event stream -> OpenAI chunks");

    // An Anthropic caller of a Gemini backend: two translations, still one event at a time.
    let fake = gemini_fake::start(KEY).await;
    slow(&fake);
    let proxy = proxy_to(typed(ProviderType::Gemini, &fake.url(), KEY, "g")).await;
    let mut ask = ask;
    ask["max_tokens"] = 50.into();
    let got = timed_text(&proxy, MESSAGES, ask, true).await;
    assert_prompt(&fake, 0, &got, "Gemini -> Anthropic events");
}
