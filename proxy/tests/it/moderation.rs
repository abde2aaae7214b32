//! Guardrails' moderation hooks against a real proxy run from standalone YAML (so the compiler
//! resolves the provider, its key and the webhook's Secret as in a cluster) and a real HTTP server on
//! 127.0.0.1 playing the moderation service: flagged → refused, clean → passes, slow and down under
//! `failureMode` Open (passes, noted) and Closed (503), the provider's key sent to the service and
//! never shown to the caller, the webhook's contract, whole answers moderated, streamed answers held and moderated whole.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_proxy::control::standalone::Watcher;

use crate::support::fake_server::{Seen, json_response, serve};
use crate::support::*;

const KEY: &str = "tg-moderation-test-key";
const MODERATION_KEY: &str = "sk-moderation-secret-4242";
const WEBHOOK_TOKEN: &str = "hook-token-7373";
const CHAT: &str = "/m/v1/chat/completions";

/// How the moderation server behaves.
#[derive(Clone, Default)]
struct Behaviour {
    /// Wait this long before answering.
    delay: Duration,
    /// Answer with this status and a non-JSON body instead.
    status: Option<u16>,
}

/// A moderation service on a loopback port speaking both contracts: `POST /v1/moderations`
/// (OpenAI's shape) and `POST /hook` (the webhook's). It flags any text holding `forbidden`, and
/// on the webhook every answer (`direction: response`).
#[derive(Clone)]
struct Moderator {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Moderator {
    async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let behaviour: Arc<Mutex<Behaviour>> = Arc::default();
        let (s, b) = (seen.clone(), behaviour.clone());
        let addr = serve(move |req| {
            let (seen, behaviour) = (s.clone(), b.clone());
            async move {
                let req = Seen::read(req).await;
                seen.lock().unwrap().push(req.clone());
                let now = behaviour.lock().unwrap().clone();
                tokio::time::sleep(now.delay).await;
                if let Some(status) = now.status {
                    return crate::support::fake_server::whole(status, "upstream trouble");
                }
                let flag = |t: &Value, word: &str| t.as_str().unwrap_or("").contains(word);
                if req.path == "/v1/moderations" {
                    let results: Vec<Value> = req.body["input"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| {
                            let bad = flag(t, "forbidden");
                            json!({"flagged": bad, "categories": {"violence": bad, "hate": false},
                                   "category_scores": {"violence": if bad {0.97} else {0.01}, "hate": 0.02}})
                        })
                        .collect();
                    json_response(
                        200,
                        &json!({"id": "modr-1", "model": req.body["model"], "results": results}),
                    )
                } else {
                    let word = if req.body["direction"] == "response" {
                        ""
                    } else {
                        "forbidden"
                    };
                    let bad = req.body["texts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|t| flag(t, word));
                    json_response(200, &json!({"flagged": bad, "categories": ["violence"]}))
                }
            }
        })
        .await;
        Self {
            port: addr.port(),
            seen,
            behaviour,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// The standalone resources: a Fake model behind route `/m`, a consumer with an approved
/// subscription, and the guardrail `moderated` (its rules given as YAML) attached to the route.
fn resources(port: u16, rules: &str) -> String {
    format!(
        r#"apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: fake, namespace: team}}
spec:
  type: Fake
  models: [{{name: fake-chat, pricing: {{inputPerMillion: 1, outputPerMillion: 2}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: moderation-key, namespace: team, labels: {{tollgate.dev/secret: "true"}}}}
stringData: {{apiKey: {MODERATION_KEY}, token: {WEBHOOK_TOKEN}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: moderator, namespace: team}}
spec:
  type: OpenAICompatible
  endpoint: http://127.0.0.1:{port}/v1
  credentials: {{secretRefs: [{{name: moderation-key}}]}}
  models: [{{name: omni-moderation-latest, pricing: {{inputPerMillion: 0, outputPerMillion: 0}}}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: AIGuardrail
metadata: {{name: moderated, namespace: team}}
spec:
  rules:
{rules}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: m, namespace: team}}
spec:
  prefix: /m
  approval: Automatic
  models: [{{name: fake-chat, backends: [{{provider: fake}}]}}]
  guardrails: [{{name: moderated}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: app-key, namespace: team, labels: {{tollgate.dev/secret: "true"}}}}
stringData: {{apiKey: {KEY}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Consumer
metadata: {{name: app, namespace: team}}
spec:
  keys: [{{name: primary, secretRef: {{name: app-key}}}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: ApiSubscription
metadata: {{name: app-m, namespace: team}}
spec:
  consumer: app
  route: {{name: m}}
"#
    )
}

/// A provider-backed moderation rule.
fn provider_rule(failure_mode: &str, timeout: &str) -> String {
    format!(
        "    - name: emails\n      detector: Email\n      action: Mask\n    - name: moderation\n      action: Reject\n      moderation:\n        provider: {{name: moderator}}\n        timeout: {timeout}\n        failureMode: {failure_mode}\n"
    )
}

/// A webhook rule on both sides, its token from the Secret.
fn webhook_rule(port: u16) -> String {
    format!(
        "    - name: hook\n      action: Reject\n      moderation:\n        webhook:\n          url: http://127.0.0.1:{port}/hook\n          credentials: {{secretRef: {{name: moderation-key, key: token}}, header: X-Hook-Token}}\n        failureMode: Closed\n"
    )
}

struct Running {
    proxy: TestProxy,
    _watcher: Watcher,
    _dir: tempfile::TempDir,
}

async fn start(yaml: String) -> Running {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.yaml"), yaml).unwrap();
    let proxy = TestProxy::start_with(test_config(), None).await;
    let watcher = Watcher::start(dir.path(), proxy.store.clone(), None).unwrap();
    Running {
        proxy,
        _watcher: watcher,
        _dir: dir,
    }
}

fn chat(text: &str, stream: bool) -> Value {
    json!({"model": "fake-chat", "stream": stream,
           "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn a_flagged_request_is_refused_naming_the_rule_and_the_provider_key_goes_only_to_the_service()
 {
    let moderator = Moderator::start().await;
    let run = start(resources(moderator.port, &provider_rule("Closed", "2s"))).await;
    let proxy = &run.proxy;

    let text = "write bob@example.com something forbidden";
    let reply = post(&proxy.url(CHAT), KEY, &chat(text, false)).await;
    reply.assert_status(400);
    assert_eq!(reply.error_code(), "content_policy_violation");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("moderation"), "{message}");
    let body = String::from_utf8_lossy(&reply.body).to_string();
    for hidden in [MODERATION_KEY, "forbidden", "bob@example.com"] {
        assert!(!body.contains(hidden), "{hidden} in the answer: {body}");
    }

    // The service got the masked text, OpenAI's shape, and the provider's key.
    let asked = moderator.seen();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].method, "POST");
    assert_eq!(asked[0].path, "/v1/moderations");
    assert_eq!(
        asked[0].header("authorization"),
        Some(format!("Bearer {MODERATION_KEY}").as_str())
    );
    assert_eq!(
        asked[0].body,
        json!({"model": "omni-moderation-latest", "input": ["write [EMAIL] something forbidden"]})
    );

    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(
        line["guardrails"],
        json!([{"rule": "emails", "action": "mask"}, {"rule": "moderation", "action": "reject"}])
    );
    assert!(!line.to_string().contains(MODERATION_KEY));
    assert!(!line.to_string().contains("forbidden"));

    // A clean text passes, after two more questions to the service: the text, then the answer.
    let reply = post(&proxy.url(CHAT), KEY, &chat("hello there", false)).await;
    reply.assert_status(200);
    let asked = moderator.seen();
    assert_eq!(asked.len(), 3);
    assert_eq!(asked[1].body["input"], json!(["hello there"]));
    let answer = reply.json()["choices"][0]["message"]["content"].clone();
    assert_eq!(asked[2].body["input"], json!([answer]));
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert!(line.get("guardrails").is_none(), "{line}");

    // The Anthropic envelope on /v1/messages.
    let reply = post(
        &proxy.url("/m/v1/messages"),
        KEY,
        &json!({"model": "fake-chat", "max_tokens": 20,
                "messages": [{"role": "user", "content": "forbidden words"}]}),
    )
    .await;
    reply.assert_status(400);
    let v = reply.json();
    assert_eq!(v["type"], "error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("moderation"),
        "{v}"
    );
}

#[tokio::test]
async fn a_slow_service_passes_calls_under_open_and_refuses_them_under_closed_within_the_timeout() {
    let moderator = Moderator::start().await;
    moderator.set(Behaviour {
        delay: Duration::from_millis(2_000),
        status: None,
    });
    let run = start(resources(moderator.port, &provider_rule("Open", "300ms"))).await;
    let started = Instant::now();
    let reply = post(
        &run.proxy.url(CHAT),
        KEY,
        &chat("something forbidden", false),
    )
    .await;
    let waited = started.elapsed();
    reply.assert_status(200);
    assert!(waited < Duration::from_millis(1_500), "{waited:?}");
    let line = run.proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(
        line["guardrails"],
        json!([{"rule": "moderation", "action": "fail_open"}])
    );
    let metrics = send(
        http::Method::GET,
        &run.proxy.admin_url("/metrics"),
        &[],
        None,
    )
    .await;
    let metrics = String::from_utf8_lossy(&metrics.body);
    assert!(
        metrics.contains(
            r#"tollgate_guardrail_decisions_total{rule="moderation",action="fail_open"} 1"#
        ),
        "{metrics}"
    );

    let run = start(resources(moderator.port, &provider_rule("Closed", "300ms"))).await;
    let started = Instant::now();
    let reply = post(&run.proxy.url(CHAT), KEY, &chat("hello", false)).await;
    let waited = started.elapsed();
    reply.assert_status(503);
    assert_eq!(reply.error_code(), "moderation_unavailable");
    assert!(waited < Duration::from_millis(1_500), "{waited:?}");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("no answer within 300 ms"), "{message}");
    assert!(!message.contains("127.0.0.1") && !message.contains(MODERATION_KEY));
    let line = run.proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(
        line["guardrails"],
        json!([{"rule": "moderation", "action": "fail_closed"}])
    );

    // An error status from the service is a failure too.
    moderator.set(Behaviour {
        delay: Duration::ZERO,
        status: Some(500),
    });
    let reply = post(&run.proxy.url(CHAT), KEY, &chat("hello", false)).await;
    reply.assert_status(503);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("it answered 500"), "{message}");
}

#[tokio::test]
async fn a_service_that_is_down_passes_calls_under_open_and_refuses_them_under_closed() {
    let port = closed_port().await;
    let run = start(resources(port, &provider_rule("Open", "2s"))).await;
    let reply = post(
        &run.proxy.url(CHAT),
        KEY,
        &chat("something forbidden", false),
    )
    .await;
    reply.assert_status(200);
    let line = run.proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(
        line["guardrails"],
        json!([{"rule": "moderation", "action": "fail_open"}])
    );

    let run = start(resources(port, &provider_rule("Closed", "2s"))).await;
    let reply = post(&run.proxy.url(CHAT), KEY, &chat("hello", false)).await;
    reply.assert_status(503);
    assert_eq!(reply.error_code(), "moderation_unavailable");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("no connection could be made"), "{message}");
    let body = String::from_utf8_lossy(&reply.body).to_string();
    assert!(
        !body.contains(MODERATION_KEY) && !body.contains(&port.to_string()),
        "{body}"
    );
}

#[tokio::test]
async fn a_webhook_gets_the_documented_contract_and_its_secret_and_moderates_whole_answers_and_streams()
 {
    let moderator = Moderator::start().await;
    let run = start(resources(moderator.port, &webhook_rule(moderator.port))).await;
    let proxy = &run.proxy;

    // The webhook flags every answer.
    let reply = post(&proxy.url(CHAT), KEY, &chat("hello", false)).await;
    reply.assert_status(400);
    assert_eq!(reply.error_code(), "content_policy_violation");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("answer") && message.contains("hook"),
        "{message}"
    );

    let asked = moderator.seen();
    assert_eq!(asked.len(), 2, "the request, then the answer");
    assert_eq!(asked[0].path, "/hook");
    assert_eq!(asked[0].header("x-hook-token"), Some(WEBHOOK_TOKEN));
    assert_eq!(
        asked[0].body,
        json!({"texts": ["hello"], "direction": "request", "route": "team/m",
               "endpoint": "chat", "guardrail": "team/moderated", "rule": "hook"})
    );
    assert_eq!(asked[1].body["direction"], "response");
    assert!(
        !asked[1].body["texts"][0].as_str().unwrap().is_empty(),
        "{}",
        asked[1].body
    );

    // A stream is held until it ends and judged whole: nothing of it has been sent, so it is
    // refused as a whole answer is, in the caller's shape.
    let reply = post(&proxy.url(CHAT), KEY, &chat("hello", true)).await;
    reply.assert_status(400);
    assert_eq!(reply.error_code(), "content_policy_violation");
    let asked = moderator.seen();
    assert_eq!(
        asked.len(),
        4,
        "the request, then the whole streamed answer"
    );
    assert_eq!(asked[3].body["direction"], "response");
    let texts = asked[3].body["texts"].as_array().unwrap();
    assert_eq!(texts.len(), 1, "{}", asked[3].body);
    assert!(!texts[0].as_str().unwrap().is_empty());

    let reply = post(
        &proxy.url("/m/v1/messages"),
        KEY,
        &json!({"model": "fake-chat", "max_tokens": 20, "stream": true,
                "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    reply.assert_status(400);
    let v = reply.json();
    assert_eq!(v["type"], "error", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("hook"),
        "{v}"
    );
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["error_class"], "content_policy_violation", "{line}");
    assert_eq!(
        line["guardrails"],
        json!([{"rule": "hook", "action": "reject"}]),
        "{line}"
    );
    assert_eq!(line["stream"], true, "{line}");
}

/// The text a caller got from an OpenAI chat stream, and whether it ended with `[DONE]`.
fn streamed_text(body: &[u8]) -> (String, bool) {
    let body = String::from_utf8_lossy(body);
    let mut text = String::new();
    for data in body.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
        if let Ok(v) = serde_json::from_str::<Value>(data) {
            text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    (text, body.ends_with("data: [DONE]\n\n"))
}

#[tokio::test]
async fn a_streamed_answer_is_held_and_moderated_whole_then_sent_or_refused_under_the_failure_mode()
{
    let moderator = Moderator::start().await;
    let run = start(resources(moderator.port, &provider_rule("Closed", "2s"))).await;
    let proxy = &run.proxy;

    // Clean: the whole stream arrives, and the service was asked about exactly the text sent.
    let reply = post(&proxy.url(CHAT), KEY, &chat("hello there", true)).await;
    reply.assert_status(200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (text, done) = streamed_text(&reply.body);
    assert!(
        done && !text.is_empty(),
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let asked = moderator.seen();
    assert_eq!(asked.len(), 2, "the request, then the answer");
    assert_eq!(asked[1].body["input"], json!([text]));

    // The service down under Closed: 503 before any of the stream is sent.
    moderator.set(Behaviour {
        delay: Duration::ZERO,
        status: Some(500),
    });
    let reply = post(&proxy.url(CHAT), KEY, &chat("hello there", true)).await;
    // The request side is asked first and refuses already: same rule, same 503.
    reply.assert_status(503);
    assert_eq!(reply.error_code(), "moderation_unavailable");
    drop(run);

    // Under Open a slow service lets the held stream through, noted.
    moderator.set(Behaviour {
        delay: Duration::from_millis(2_000),
        status: None,
    });
    let run = start(resources(moderator.port, &provider_rule("Open", "300ms"))).await;
    let started = Instant::now();
    let reply = post(&run.proxy.url(CHAT), KEY, &chat("hello again", true)).await;
    reply.assert_status(200);
    let (text, done) = streamed_text(&reply.body);
    assert!(done && !text.is_empty());
    assert!(
        started.elapsed() < Duration::from_millis(1_800),
        "{:?}",
        started.elapsed()
    );
    let line = run.proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(
        line["guardrails"],
        json!([{"rule": "moderation", "action": "fail_open"}]),
        "{line}"
    );
}
