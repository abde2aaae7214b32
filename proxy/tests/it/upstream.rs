//! The proxy against a protocol-faithful OpenAI fake on 127.0.0.1: what arrives upstream, streaming,
//! fallbacks, upstream failures, and cancelling the upstream call when the client leaves.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_snapshot::{ProviderType, Timeouts};

use crate::support::chat_route::{CHAT, CLIENT_KEY, proxy_to, table};
use crate::support::openai_fake::{Behaviour, OpenAiFake};
use crate::support::*;

const UPSTREAM_KEY: &str = "sk-upstream-secret-a";

async fn setup(behaviour: Behaviour) -> (OpenAiFake, TestProxy) {
    let fake = OpenAiFake::start(behaviour).await;
    let proxy = proxy_to(provider(
        "openai-a",
        ProviderType::OpenAI,
        &fake.endpoint(),
        UPSTREAM_KEY,
    ))
    .await;
    (fake, proxy)
}

fn all_header_text(headers: &http::HeaderMap) -> String {
    headers
        .iter()
        .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
        .collect()
}

#[tokio::test]
async fn a_relayed_answer_keeps_the_providers_success_status() {
    let mut behaviour = Behaviour::new("a", UPSTREAM_KEY);
    behaviour.success_status = 203;
    let (_fake, proxy) = setup(behaviour).await;
    let request = json!({"model": "front-model", "messages": [{"role": "user", "content": "hi"}]});
    let auth = format!("Bearer {CLIENT_KEY}");
    let reply = send(
        Method::POST,
        &proxy.url(CHAT),
        &[("authorization", auth.as_str())],
        Some(&request),
    )
    .await;
    reply.assert_status(203);
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "from-a w1 w2"
    );
}

#[tokio::test]
async fn upstream_gets_injected_credential_rewritten_model_and_intact_body() {
    let (fake, proxy) = setup(Behaviour::new("a", UPSTREAM_KEY)).await;
    let request = json!({
        "model": "front-model",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "héllo \"quoted\""}],
        "temperature": 0.2,
        "max_completion_tokens": 50,
        "metadata": {"trace": "x-1"},
        "user": "u-42"
    });
    // The client key in each of the three accepted headers.
    let auth = format!("Bearer {CLIENT_KEY}");
    let mut replies = Vec::new();
    for header in [
        ("authorization", auth.as_str()),
        ("x-api-key", CLIENT_KEY),
        ("api-key", CLIENT_KEY),
    ] {
        replies.push(send(Method::POST, &proxy.url(CHAT), &[header], Some(&request)).await);
    }
    for reply in &replies {
        reply.assert_status(200);
        let v = reply.json();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "from-a w1 w2");
        assert_eq!(v["usage"]["total_tokens"], 18);
    }

    let seen = fake.seen();
    assert_eq!(seen.len(), 3);
    let mut expected = request.clone();
    expected["model"] = json!("gpt-4o-mini");
    for s in &seen {
        assert_eq!(
            (s.method.as_str(), s.path.as_str()),
            ("POST", "/v1/chat/completions")
        );
        assert_eq!(
            s.headers.get("authorization").unwrap(),
            &format!("Bearer {UPSTREAM_KEY}")
        );
        let text = all_header_text(&s.headers);
        assert!(!text.contains(CLIENT_KEY), "client key forwarded: {text}");
        assert!(s.headers.get("x-api-key").is_none() && s.headers.get("api-key").is_none());
        assert_eq!(s.body, expected, "body changed beyond the model name");
    }

    let line = proxy.log_line_of(&replies[0].request_id()).await;
    assert_eq!(line["status"], 200);
    assert_eq!(line["namespace"], NS);
    assert_eq!(line["route"], "chat");
    assert_eq!(line["consumer"], "team-a/app");
    assert_eq!(line["subscription"], "team-a/app-chat");
    assert_eq!(line["model_requested"], "front-model");
    assert_eq!(line["model_served"], "gpt-4o-mini");
    assert_eq!(line["provider"], "team-a/openai-a");
    assert_eq!(
        (line["tokens_in"].as_u64(), line["tokens_out"].as_u64()),
        (Some(11), Some(7))
    );
    let cost = line["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (11.0 * 2.0 + 7.0 * 8.0) / 1e6).abs() < 1e-12,
        "cost {cost}"
    );
    assert_eq!(line["retries"], 0);
    assert!(line["error_class"].is_null());
    let all_logs = proxy.log.lock().unwrap().concat();
    assert!(!all_logs.contains(CLIENT_KEY) && !all_logs.contains(UPSTREAM_KEY));
    assert!(!all_logs.contains("héllo"), "bodies must not be logged");
    proxy.stop().await;
}

#[tokio::test]
async fn streaming_relays_chunks_and_reads_usage_from_the_final_chunk() {
    let mut behaviour = Behaviour::new("a", UPSTREAM_KEY);
    behaviour.stream_chunks = 5;
    behaviour.chunk_interval = Duration::from_millis(5);
    let (fake, proxy) = setup(behaviour).await;

    // The client did not ask for usage: the proxy asks upstream, reads it, and hides the usage chunk.
    let body = json!({"model": "front-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &body).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let payloads = sse_payloads(&reply.body);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let mut text = String::new();
    for p in &payloads[..payloads.len() - 1] {
        let chunk: Value = serde_json::from_str(p).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert!(
            !chunk["choices"].as_array().unwrap().is_empty(),
            "usage chunk leaked: {p}"
        );
        text.push_str(
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or(""),
        );
    }
    assert_eq!(text, "from-a w1 w2 w3 w4");
    assert_eq!(fake.seen()[0].body["stream_options"]["include_usage"], true);
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["stream"], true);
    assert_eq!(
        (line["tokens_in"].as_u64(), line["tokens_out"].as_u64()),
        (Some(11), Some(7))
    );
    assert!(line["ttft_ms"].as_f64().unwrap() > 0.0);

    // The client asked for usage: it gets the usage chunk as OpenAI sends it.
    let mut body = body;
    body["stream_options"] = json!({"include_usage": true});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &body).await;
    let payloads = sse_payloads(&reply.body);
    let usage: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 7);
    proxy.stop().await;
}

#[tokio::test]
async fn embeddings_are_forwarded_with_the_upstream_model() {
    let (fake, proxy) = setup(Behaviour::new("a", UPSTREAM_KEY)).await;
    let reply = post(
        &proxy.url("/team-a/chat/v1/embeddings"),
        CLIENT_KEY,
        &json!({"model": "front-model", "input": ["one", "two"]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    let v = reply.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let seen = &fake.seen()[0];
    assert_eq!(seen.path, "/v1/embeddings");
    assert_eq!(
        seen.body,
        json!({"model": "gpt-4o-mini", "input": ["one", "two"]})
    );
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["tokens_in"], 8);
    proxy.stop().await;
}

#[tokio::test]
async fn fallbacks_are_tried_in_order_after_a_5xx() {
    let mut failing = Behaviour::new("a", UPSTREAM_KEY);
    failing.fail_with = Some(503);
    let a = OpenAiFake::start(failing.clone()).await;
    let b = OpenAiFake::start(failing).await;
    let c = OpenAiFake::start(Behaviour::new("c", "sk-c")).await;
    let proxy = TestProxy::start(table(
        vec![
            provider("a", ProviderType::OpenAI, &a.endpoint(), UPSTREAM_KEY),
            provider("b", ProviderType::Groq, &b.endpoint(), UPSTREAM_KEY),
            provider("c", ProviderType::Mistral, &c.endpoint(), "sk-c"),
        ],
        "gpt-4o-mini",
    ))
    .await;
    let body = json!({"model": "front-model", "messages": [{"role": "user", "content": "hi"}]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "from-c w1 w2"
    );
    assert_eq!(c.seen()[0].headers["authorization"], "Bearer sk-c");
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["retries"], 2);
    assert_eq!(line["provider"], "team-a/c");

    // Every backend failing: a 502 in OpenAI's shape.
    c.behaviour.lock().unwrap().fail_with = Some(500);
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &body).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error_code(), "upstream_error");
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_failures_map_to_502_504_without_credentials() {
    // Nothing listens on port 1 (a port freed by another test could be taken again meanwhile).
    let closed: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let slow = OpenAiFake::start(Behaviour {
        latency: Duration::from_secs(3),
        ..Behaviour::new("slow", UPSTREAM_KEY)
    })
    .await;
    let picky = OpenAiFake::start(Behaviour::new("picky", "sk-some-other-key")).await;
    let body = json!({"model": "front-model", "messages": [{"role": "user", "content": "hi"}]});

    let mut unreachable = provider(
        "down",
        ProviderType::OpenAI,
        &format!("http://{closed}/v1"),
        UPSTREAM_KEY,
    );
    unreachable.timeouts.connect_ms = 500;
    let mut timing_out = provider("slow", ProviderType::OpenAI, &slow.endpoint(), UPSTREAM_KEY);
    timing_out.timeouts = Timeouts {
        // Room to connect on a busy machine: the timeout under test is the first byte's.
        connect_ms: 1_000,
        first_byte_ms: 200,
        ..Timeouts::default()
    };
    let rejecting = provider(
        "picky",
        ProviderType::OpenAI,
        &picky.endpoint(),
        UPSTREAM_KEY,
    );
    for (p, status, code) in [
        (unreachable, 502, "upstream_unreachable"),
        (timing_out, 504, "upstream_timeout"),
        (rejecting, 502, "upstream_auth_failed"),
    ] {
        let proxy = TestProxy::start(table(vec![p], "gpt-4o-mini")).await;
        let started = std::time::Instant::now();
        let reply = post(&proxy.url(CHAT), CLIENT_KEY, &body).await;
        assert_eq!(reply.status, status, "{code}");
        assert_eq!(reply.error_code(), code);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{code} took {:?}",
            started.elapsed()
        );
        let text = String::from_utf8_lossy(&reply.body);
        assert!(
            !text.contains(UPSTREAM_KEY) && !text.contains("sk-"),
            "{text}"
        );
        let line = proxy.log_line_of(&reply.request_id()).await;
        assert_eq!(line["error_class"], code);
        proxy.stop().await;
    }

    // A request the provider finds wrong is the client's problem: its 400 is relayed with its
    // status, shape and fields, final (not tried again), and scrubbed of the key it quotes.
    let (fake, proxy) = setup(Behaviour {
        quote: Some(format!("{}***", &UPSTREAM_KEY[..15])),
        ..Behaviour::new("a", UPSTREAM_KEY)
    })
    .await;
    let reply = post(
        &proxy.url(CHAT),
        CLIENT_KEY,
        &json!({"model": "front-model", "messages": []}),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json(),
        json!({"error": {"message": "'messages' is a required property; key [redacted] was used",
            "type": "invalid_request_error", "param": null, "code": null}})
    );
    assert_eq!(fake.seen().len(), 1);
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["error_class"], "upstream_rejected");
    proxy.stop().await;
}

#[tokio::test]
async fn error_events_in_a_relayed_stream_are_scrubbed_of_the_key() {
    let (_fake, proxy) = setup(Behaviour {
        quote: Some(format!("{}***", &UPSTREAM_KEY[..15])),
        ..Behaviour::new("a", UPSTREAM_KEY)
    })
    .await;
    let body = json!({"model": "front-model", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &body).await;
    assert_eq!(reply.status, 200);
    let text = String::from_utf8_lossy(&reply.body);
    assert!(!text.contains("upstream-sec"), "{text}");
    let payloads = sse_payloads(&reply.body);
    let error: Value = serde_json::from_str(payloads.last().unwrap()).unwrap();
    assert_eq!(
        error,
        json!({"error": {"message": "Key [redacted] is over its quota.",
            "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}})
    );
    proxy.stop().await;
}

#[tokio::test]
async fn client_disconnect_mid_stream_closes_the_upstream_request() {
    let mut behaviour = Behaviour::new("a", UPSTREAM_KEY);
    behaviour.stream_chunks = 400;
    behaviour.chunk_interval = Duration::from_millis(10);
    let (fake, proxy) = setup(behaviour).await;

    let mut socket = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let body = json!({"model": "front-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    let head = format!(
        "POST {CHAT} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {CLIENT_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    // Read until a few chunks have arrived, then hang up.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(6).filter(|w| w == b"data: ").count() < 4 {
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
            .await
            .expect("chunks arrive")
            .unwrap();
        assert!(n > 0, "proxy closed early");
        got.extend_from_slice(&buf[..n]);
    }
    let cut = fake.cut_notify.notified();
    drop(socket);
    tokio::time::timeout(Duration::from_secs(5), cut)
        .await
        .expect("the fake upstream sees its stream cut within 5s");
    assert_eq!(
        fake.streams_cut.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(
        fake.streams_finished
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    let line = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(l) = proxy.log_lines().into_iter().next() {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(line["error_class"], "client_disconnected");
    proxy.stop().await;
}

/// A stream that stops in the middle ends with an SSE error event once the provider's idle timeout
/// passes; one that keeps trickling ends the same way at the total deadline. Each is logged with its
/// own error class, and neither waits for the upstream's own end.
#[tokio::test]
async fn streams_end_with_an_error_event_at_the_idle_and_total_deadlines() {
    let body = json!({"model": "front-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    for (idle_ms, total_ms, interval_ms, class) in [
        // Silent for 1.5 s after each chunk: the 200 ms idle timeout fires first.
        (200, 10_000, 1_500, "upstream_idle_timeout"),
        // A chunk every 100 ms, never silent for long, but the call may take 700 ms in all.
        (1_000, 700, 100, "upstream_timeout"),
    ] {
        let mut behaviour = Behaviour::new("a", UPSTREAM_KEY);
        behaviour.stream_chunks = 40;
        behaviour.chunk_interval = Duration::from_millis(interval_ms);
        let fake = OpenAiFake::start(behaviour).await;
        let mut p = provider(
            "openai-a",
            ProviderType::OpenAI,
            &fake.endpoint(),
            UPSTREAM_KEY,
        );
        p.timeouts = Timeouts {
            idle_ms,
            total_ms,
            ..Timeouts::default()
        };
        let proxy = TestProxy::start(table(vec![p], "gpt-4o-mini")).await;
        let started = std::time::Instant::now();
        let reply = post(&proxy.url(CHAT), CLIENT_KEY, &body).await;
        let took = started.elapsed();
        assert_eq!(reply.status, 200, "{class}");
        let payloads = sse_payloads(&reply.body);
        let last: Value = serde_json::from_str(payloads.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], class, "last event {last}");
        assert!(
            payloads.len() >= 2,
            "{class}: a chunk arrived before the cut"
        );
        assert!(
            took < Duration::from_millis(total_ms.min(idle_ms + interval_ms))
                + Duration::from_secs(1),
            "{class} after {took:?}"
        );
        let line = proxy.log_line_of(&reply.request_id()).await;
        assert_eq!(line["error_class"], class);
    }
}
