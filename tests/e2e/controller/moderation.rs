//! A moderation rule end to end (issue 23): an AIGuardrail whose rule asks a webhook, its token in a
//! Secret, and a route using it, applied with kubectl; the real controller compiles them and the
//! proxy asks the webhook on 127.0.0.1 about each call's text, refusing what it flags, holding a
//! streamed answer until it has been judged, and reporting a hook it cannot build in status.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tollgate_e2e::eventually;

use crate::fixtures::{
    KEY, MODEL, base_yaml, condition, controller_and_proxies, route_yaml, wait_condition,
};
use crate::support::Setup;

const HOOK_TOKEN: &str = "hook-e2e-token-5151";

/// What the webhook was sent: its request head and its JSON body.
type Asked = Arc<Mutex<Vec<(String, Value)>>>;

/// A moderation webhook on 127.0.0.1 following the documented contract: flags a text holding
/// `forbidden`, and every answer once `flag_answers` is set.
async fn webhook(flag_answers: Arc<Mutex<bool>>) -> (u16, Asked) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked: Asked = Arc::default();
    let seen = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (seen, flag_answers) = (seen.clone(), flag_answers.clone());
            tokio::spawn(async move {
                let mut read = Vec::new();
                let mut buf = [0u8; 8192];
                let head_end = loop {
                    if let Some(at) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&read[..head_end]).into_owned();
                let length: usize = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                while read.len() < head_end + length {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                    }
                }
                let body: Value = serde_json::from_slice(&read[head_end..head_end + length])
                    .unwrap_or(Value::Null);
                let answer = body["direction"] == "response" && *flag_answers.lock().unwrap();
                let flagged = answer
                    || body["texts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|t| t.as_str().unwrap_or("").contains("forbidden"));
                seen.lock().unwrap().push((head, body));
                let verdict = json!({"flagged": flagged, "categories": ["violence"]}).to_string();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{verdict}",
                    verdict.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, asked)
}

fn guardrail_yaml(port: u16, secret: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: hook-token
  labels:
    tollgate.dev/secret: "true"
stringData:
  token: {HOOK_TOKEN}
---
apiVersion: tollgate.dev/v1alpha1
kind: AIGuardrail
metadata:
  name: moderated
spec:
  rules:
    - name: hook
      action: Reject
      moderation:
        webhook:
          url: http://127.0.0.1:{port}/hook
          credentials: {{secretRef: {{name: {secret}, key: token}}, header: X-Hook-Token}}
        timeout: 2s
        failureMode: Closed
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderation_rule_applied_with_kubectl_asks_its_webhook_and_refuses_what_it_flags() {
    let _serial = crate::SERIAL.lock().await;
    let setup = Setup::new("ctl-moderation");
    let flag_answers = Arc::new(Mutex::new(false));
    let (port, asked) = webhook(flag_answers.clone()).await;
    let (_controller, a, _b) = controller_and_proxies(&setup).await;
    setup.apply(&base_yaml());
    setup.apply(&guardrail_yaml(port, "hook-token"));
    let route = route_yaml("moderated", "/moderated", "Automatic", "moderated").replace(
        "  models:\n",
        "  guardrails:\n    - name: moderated\n  models:\n",
    );
    setup.apply(&route);
    wait_condition(&setup, "airoute/moderated", "GuardrailsValid", "True").await;
    let guardrail = wait_condition(&setup, "aiguardrail/moderated", "Accepted", "True").await;
    println!("the guardrail's status: {}", guardrail["status"]);

    let chat = |text: &str, stream: bool| json!({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": text}]});
    let path = "/moderated/v1/chat/completions";
    // Clean text passes once the proxy holds the route; the hook was asked with its token.
    eventually("a clean call served", Duration::from_secs(15), || async {
        match a.post(path, KEY, &chat("hello there", false)).await {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    {
        let asked = asked.lock().unwrap();
        let (head, body) = asked.last().unwrap();
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("x-hook-token: {HOOK_TOKEN}")),
            "{head}"
        );
        assert_eq!(
            body["route"],
            format!("{}/moderated", setup.ns.name()),
            "{body}"
        );
        assert_eq!(body["direction"], "response", "{body}");
        assert_eq!(body["rule"], "hook", "{body}");
    }

    // Flagged text: 400 naming the rule, never the text.
    let (status, answer) = a.post(path, KEY, &chat("something forbidden", false)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("content_policy_violation") && answer.contains("hook"),
        "{answer}"
    );
    assert!(!answer.contains("something forbidden"), "{answer}");

    // A streamed answer is held and judged whole: sent when clean, refused when flagged.
    let (status, answer) = a.post(path, KEY, &chat("hello stream", true)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.ends_with("data: [DONE]\n\n"), "{answer}");
    *flag_answers.lock().unwrap() = true;
    let (status, answer) = a.post(path, KEY, &chat("hello stream", true)).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("content_policy_violation"), "{answer}");
    assert!(
        !answer.contains("data:"),
        "nothing of the stream was sent: {answer}"
    );

    // A hook whose Secret does not exist is reported in status, and its calls refused.
    setup.apply(&guardrail_yaml(port, "no-such-secret"));
    let route = wait_condition(&setup, "airoute/moderated", "GuardrailsValid", "False").await;
    let message = condition(&route, "GuardrailsValid").unwrap()["message"].clone();
    println!("GuardrailsValid with a missing Secret: {message}");
    eventually(
        "calls are refused with guardrail_unavailable",
        Duration::from_secs(10),
        || async {
            let (status, answer) = a.post(path, KEY, &chat("hi", false)).await;
            (status == 503 && answer.contains("guardrail_unavailable"))
                .then_some(())
                .ok_or(format!("{status} {answer}"))
        },
    )
    .await;
}
