//! Guardrails against a real proxy and a recording upstream: the caller's text masked before it goes
//! upstream or the call refused in the caller's shape; answers masked, whole and streamed (split at
//! every byte), and streams ended in the caller's format when a Reject rule matches mid-answer; the
//! route's and the consumer's rules together; decisions in the access log, never the text.

use serde_json::{Value, json};
use tollgate_snapshot::{
    Content, Detector, GuardRule, Guardrail, GuardrailAction, GuardrailDirection, Matcher,
    ObjectRef, Pattern, ProviderType, default_mask,
};

use crate::support::chat_route::{CHAT, CLIENT_KEY, EMBEDDINGS, MESSAGES, table, typed};
use crate::support::fake_server::{FakeServer, paced, serve};
use crate::support::{TestProxy, azure_fake, post, send};

const UPSTREAM_KEY: &str = "sk-upstream-guardrails";

fn detector(name: &str, detector: Detector, action: GuardrailAction) -> GuardRule {
    GuardRule {
        name: name.into(),
        matcher: Matcher::Detector(detector),
        action,
        mask_as: default_mask(Some(detector)).into(),
    }
}

fn pattern(name: &str, source: &str, action: GuardrailAction, mask: &str) -> GuardRule {
    GuardRule {
        name: name.into(),
        matcher: Matcher::Pattern(Pattern::new(source).unwrap()),
        action,
        mask_as: mask.into(),
    }
}

fn guardrail(name: &str, applies_to: GuardrailDirection, rules: Vec<GuardRule>) -> Guardrail {
    Guardrail {
        id: ObjectRef::new("team-a", name),
        applies_to,
        endpoints: Vec::new(),
        rules,
        moderations: Vec::new(),
        max_input_chars: None,
        max_input_tokens: None,
        broken: false,
    }
}

/// The one-route table in front of the recording fake, with guardrails on the route and the consumer.
async fn proxy(route: Vec<Guardrail>, consumer: Vec<Guardrail>) -> (FakeServer, TestProxy) {
    let fake = azure_fake::start_openai(UPSTREAM_KEY).await;
    let endpoint = format!("{}/v1", fake.url());
    let provider = typed(ProviderType::OpenAI, &endpoint, UPSTREAM_KEY, "up-model");
    let mut content: Content = table(vec![provider], "up-model");
    content.routes[0].guardrails = route;
    content.consumers[0].guardrails = consumer;
    (fake, TestProxy::start(content).await)
}

fn pii_masking() -> Guardrail {
    guardrail(
        "pii",
        GuardrailDirection::Both,
        vec![
            detector("emails", Detector::Email, GuardrailAction::Mask),
            detector("cards", Detector::CreditCard, GuardrailAction::Mask),
            pattern(
                "employee-ids",
                r"EMP-\d{6}",
                GuardrailAction::Mask,
                "[EMPLOYEE]",
            ),
        ],
    )
}

fn chat(text: &str, stream: bool) -> Value {
    json!({"model": "front-model", "stream": stream,
           "messages": [{"role": "system", "content": "be brief"},
                        {"role": "user", "content": [{"type": "text", "text": text}]}]})
}

#[tokio::test]
async fn request_text_is_masked_before_it_reaches_the_upstream() {
    let (fake, proxy) = proxy(vec![pii_masking()], vec![]).await;
    let text = "Mail bob@example.com about card 4111 1111 1111 1111 of EMP-123456.";
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &chat(text, false)).await;
    reply.assert_status(200);
    let seen = fake.last();
    assert_eq!(
        seen.body["messages"][1]["content"][0]["text"],
        "Mail [EMAIL] about card [CREDIT_CARD] of [EMPLOYEE]."
    );
    assert_eq!(seen.body["messages"][0]["content"], "be brief");
    let raw = String::from_utf8_lossy(&seen.raw);
    for value in ["bob@example.com", "4111", "EMP-123456"] {
        assert!(!raw.contains(value), "{value} reached the upstream: {raw}");
    }
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(
        line["guardrails"],
        json!([{"rule": "emails", "action": "mask"}, {"rule": "cards", "action": "mask"},
               {"rule": "employee-ids", "action": "mask"}])
    );
    assert!(!line.to_string().contains("bob@example.com"));
    let metrics = send(http::Method::GET, &proxy.admin_url("/metrics"), &[], None).await;
    let metrics = String::from_utf8_lossy(&metrics.body);
    assert!(
        metrics.contains(r#"tollgate_guardrail_decisions_total{rule="emails",action="mask"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_new_snapshot_s_rules_apply_from_the_next_call() {
    // Policies are gathered once per snapshot: a swap must bring the new rules, not the kept ones.
    let fake = azure_fake::start_openai(UPSTREAM_KEY).await;
    let endpoint = format!("{}/v1", fake.url());
    let provider = typed(ProviderType::OpenAI, &endpoint, UPSTREAM_KEY, "up-model");
    let mut content: Content = table(vec![provider], "up-model");
    content.routes[0].guardrails = vec![pii_masking()];
    let proxy = TestProxy::start(content.clone()).await;
    let text = "Mail bob@example.com, ref EMP-123456.";
    for expected in [
        "Mail [EMAIL], ref [EMPLOYEE].",
        "Mail [EMAIL], ref [EMPLOYEE].",
    ] {
        post(&proxy.url(CHAT), CLIENT_KEY, &chat(text, false))
            .await
            .assert_status(200);
        assert_eq!(
            fake.last().body["messages"][1]["content"][0]["text"],
            expected
        );
    }
    // Only e-mail addresses now; then no guardrail at all.
    content.routes[0].guardrails = vec![guardrail(
        "pii",
        GuardrailDirection::Both,
        vec![detector("emails", Detector::Email, GuardrailAction::Mask)],
    )];
    proxy.swap(content.clone(), 2);
    post(&proxy.url(CHAT), CLIENT_KEY, &chat(text, false))
        .await
        .assert_status(200);
    assert_eq!(
        fake.last().body["messages"][1]["content"][0]["text"],
        "Mail [EMAIL], ref EMP-123456."
    );
    content.routes[0].guardrails = vec![];
    proxy.swap(content, 3);
    post(&proxy.url(CHAT), CLIENT_KEY, &chat(text, false))
        .await
        .assert_status(200);
    assert_eq!(fake.last().body["messages"][1]["content"][0]["text"], text);
}

#[tokio::test]
async fn embeddings_inputs_are_masked_too() {
    let (fake, proxy) = proxy(vec![pii_masking()], vec![]).await;
    let body = json!({"model": "front-model", "input": ["hi bob@example.com", "plain"]});
    // The fake serves embeddings only at Azure's paths: what matters is what it was sent.
    let _ = post(&proxy.url(EMBEDDINGS), CLIENT_KEY, &body).await;
    assert_eq!(fake.last().body["input"], json!(["hi [EMAIL]", "plain"]));
}

#[tokio::test]
async fn a_rejected_request_gets_400_content_policy_violation_naming_the_rule_and_never_goes_upstream()
 {
    let secrets = guardrail(
        "secrets",
        GuardrailDirection::Request,
        vec![detector(
            "no-keys",
            Detector::Secret,
            GuardrailAction::Reject,
        )],
    );
    let (fake, proxy) = proxy(vec![secrets], vec![]).await;
    let key = "AKIAIOSFODNN7EXAMPLE";
    let reply = post(
        &proxy.url(CHAT),
        CLIENT_KEY,
        &chat(&format!("my key is {key}"), false),
    )
    .await;
    reply.assert_status(400);
    assert_eq!(reply.error_code(), "content_policy_violation");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        message,
        "The request was refused by the guardrail rule no-keys."
    );
    assert!(fake.seen().is_empty(), "nothing goes upstream");
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["status"], 400);
    assert_eq!(line["error_class"], "content_policy_violation");
    assert_eq!(
        line["guardrails"],
        json!([{"rule": "no-keys", "action": "reject"}])
    );
    assert!(!line.to_string().contains(key));

    // On the Messages endpoint the refusal comes in Anthropic's envelope.
    let body = json!({"model": "front-model", "max_tokens": 10,
                      "messages": [{"role": "user", "content": format!("key {key}")}]});
    let reply = post(&proxy.url(MESSAGES), CLIENT_KEY, &body).await;
    reply.assert_status(400);
    let v = reply.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("guardrail rule no-keys"),
        "{v}"
    );
    assert!(!v.to_string().contains(key));
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn consumer_rules_add_to_route_rules_and_size_limits_refuse_long_inputs() {
    let route = pii_masking();
    let mut consumer = guardrail(
        "consumer-rules",
        GuardrailDirection::Request,
        vec![detector("no-ssn", Detector::UsSsn, GuardrailAction::Reject)],
    );
    consumer.max_input_chars = Some(200);
    let (fake, proxy) = proxy(vec![route], vec![consumer]).await;

    // The route masks, the consumer's rule lets this through.
    let reply = post(
        &proxy.url(CHAT),
        CLIENT_KEY,
        &chat("hi bob@example.com", false),
    )
    .await;
    reply.assert_status(200);
    assert_eq!(
        fake.last().body["messages"][1]["content"][0]["text"],
        "hi [EMAIL]"
    );
    // The consumer's rule refuses.
    let reply = post(
        &proxy.url(CHAT),
        CLIENT_KEY,
        &chat("bob@example.com 123-45-6789", false),
    )
    .await;
    reply.assert_status(400);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-ssn")
    );
    // The consumer's size limit counts every text of the request.
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &chat(&"a".repeat(200), false)).await;
    reply.assert_status(400);
    assert_eq!(reply.error_code(), "content_policy_violation");
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn an_unusable_guardrail_refuses_calls_with_503_rather_than_letting_them_through_unchecked() {
    let (fake, proxy) = proxy(
        vec![Guardrail::broken(ObjectRef::new("team-a", "gone"))],
        vec![],
    )
    .await;
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &chat("hello", false)).await;
    reply.assert_status(503);
    assert_eq!(reply.error_code(), "guardrail_unavailable");
    assert!(fake.seen().is_empty());
}

const ANSWER: &str = "Sure: write to alice@example.org or call card 4111 1111 1111 1111, regards.";

/// A proxy whose upstream answers `text`, in one piece per character when streamed.
async fn answering(text: &str, route: Vec<Guardrail>) -> (FakeServer, TestProxy) {
    let (fake, proxy) = proxy(route, vec![]).await;
    let pieces: Vec<String> = text.chars().map(String::from).collect();
    fake.set(|c| c.pieces = pieces);
    (fake, proxy)
}

fn answers_masking() -> Guardrail {
    guardrail(
        "answers",
        GuardrailDirection::Response,
        vec![
            detector("emails", Detector::Email, GuardrailAction::Mask),
            detector("cards", Detector::CreditCard, GuardrailAction::Mask),
        ],
    )
}

const MASKED: &str = "Sure: write to [EMAIL] or call card [CREDIT_CARD], regards.";

/// A proxy masking answers ([`answers_masking`]) from the OpenAI-compatible upstream at `addr`.
async fn masking_answers_from(addr: std::net::SocketAddr) -> TestProxy {
    let endpoint = format!("http://{addr}/v1");
    let provider = typed(ProviderType::OpenAI, &endpoint, UPSTREAM_KEY, "up-model");
    let mut content: Content = table(vec![provider], "up-model");
    content.routes[0].guardrails = vec![answers_masking()];
    TestProxy::start(content).await
}

#[tokio::test]
async fn a_whole_answer_is_masked() {
    let (_fake, proxy) = answering(ANSWER, vec![answers_masking()]).await;
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &chat("hi", false)).await;
    reply.assert_status(200);
    let v = reply.json();
    assert_eq!(v["choices"][0]["message"]["content"], MASKED, "{v}");
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["tokens_out"], 6, "usage is still read from the answer");
    assert_eq!(
        line["guardrails"],
        json!([{"rule": "emails", "action": "mask"}, {"rule": "cards", "action": "mask"}])
    );
}

/// A whole (non-stream) answer that arrives in many pieces, an address and a card number cut
/// across them, is masked as one: the proxy reads it whole before it checks it.
#[tokio::test]
async fn a_whole_answer_arriving_in_pieces_is_masked_as_one() {
    let answer = json!({
        "id": "chatcmpl-pieces", "object": "chat.completion", "created": 1, "model": "up-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
            "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9},
    })
    .to_string();
    let addr = serve(move |_req| {
        // Seven-byte pieces: `alice@example.org` and the card's digits are each cut several times.
        let frames = answer
            .as_bytes()
            .chunks(7)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let response = paced(
            "application/json",
            frames,
            std::time::Duration::from_millis(1),
            || {},
            |_| {},
        );
        async move { response }
    })
    .await;
    let proxy = masking_answers_from(addr).await;
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &chat("hi", false)).await;
    reply.assert_status(200);
    let v = reply.json();
    assert_eq!(v["choices"][0]["message"]["content"], MASKED, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 6, "{v}");
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["tokens_out"], 6, "usage is read from the pieces");
}

#[tokio::test]
async fn a_streamed_answer_split_at_every_byte_is_masked_for_openai_and_anthropic_callers() {
    let (_fake, proxy) = answering(ANSWER, vec![answers_masking()]).await;
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &chat("hi", true)).await;
    reply.assert_status(200);
    let chunks = crate::support::chat_route::openai_chunks(&reply.body);
    assert_eq!(crate::support::chat_route::chunk_text(&chunks), MASKED);
    assert_eq!(chunks.last().unwrap(), &json!("[DONE]"));
    let shown = String::from_utf8_lossy(&reply.body);
    assert!(
        !shown.contains("alice") && !shown.contains("4111"),
        "{shown}"
    );

    let body = json!({"model": "front-model", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let reply = post(&proxy.url(MESSAGES), CLIENT_KEY, &body).await;
    reply.assert_status(200);
    let events = crate::support::chat_route::anthropic_events(&reply.body);
    let text: String = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, MASKED);
    assert_eq!(events.last().unwrap().0, "message_stop");
}

#[tokio::test]
async fn a_reject_rule_ends_a_stream_mid_answer_with_an_error_event_in_the_callers_format() {
    let stop = guardrail(
        "stop-cards",
        GuardrailDirection::Response,
        vec![detector(
            "cards",
            Detector::CreditCard,
            GuardrailAction::Reject,
        )],
    );
    let long = format!("{}{ANSWER}", "Some harmless words. ".repeat(30));
    let (_fake, proxy) = answering(&long, vec![stop]).await;
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &chat("hi", true)).await;
    reply.assert_status(200);
    let chunks = crate::support::chat_route::openai_chunks(&reply.body);
    let last = chunks.last().unwrap();
    assert_eq!(last["error"]["code"], "content_policy_violation", "{last}");
    assert_eq!(
        last["error"]["message"],
        "The answer was stopped by the guardrail rule cards."
    );
    // The harmless start was sent before the card number showed up; nothing of the number was.
    let text = crate::support::chat_route::chunk_text(&chunks);
    assert!(text.starts_with("Some harmless words."), "{text}");
    assert!(!String::from_utf8_lossy(&reply.body).contains("4111"));
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["error_class"], "content_policy_violation");
    assert_eq!(
        line["guardrails"],
        json!([{"rule": "cards", "action": "reject"}])
    );

    let body = json!({"model": "front-model", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let reply = post(&proxy.url(MESSAGES), CLIENT_KEY, &body).await;
    let events = crate::support::chat_route::anthropic_events(&reply.body);
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["error"]["type"], "invalid_request_error");
    assert!(!String::from_utf8_lossy(&reply.body).contains("4111"));

    // A whole answer that a Reject rule matches is refused.
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &chat("hi", false)).await;
    reply.assert_status(400);
    assert_eq!(reply.error_code(), "content_policy_violation");
    assert!(!String::from_utf8_lossy(&reply.body).contains("4111"));
}

/// A prompt stream's events: name and data.
fn prompt_events(body: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').expect("event: and data: lines");
            let name = name.strip_prefix("event: ").expect("an event name");
            let data = data.strip_prefix("data: ").expect("a data line");
            (
                name.to_string(),
                serde_json::from_str(data).expect("JSON data"),
            )
        })
        .collect()
}

/// The route in front of the recording fake as a provider of `provider_type`, answering `ANSWER` a
/// character at a time, with the prompt API `ask` (an `OpenAI` provider is sent Responses calls as
/// they are; an `OpenAICompatible` one gets them translated to chat completions).
async fn answering_as(
    provider_type: ProviderType,
    route: Vec<Guardrail>,
) -> (FakeServer, TestProxy) {
    let fake = azure_fake::start_openai(UPSTREAM_KEY).await;
    let endpoint = format!("{}/v1", fake.url());
    let provider = typed(provider_type, &endpoint, UPSTREAM_KEY, "up-model");
    let mut content: Content = table(vec![provider], "up-model");
    let spec: tollgate_crds::PromptApi = serde_json::from_value(json!({
        "name": "ask", "model": "front-model",
        "messages": [{"role": "user", "content": "{{question}}"}],
        "variables": [{"name": "question"}]
    }))
    .unwrap();
    content.routes[0].prompts =
        vec![tollgate_snapshot::compile_prompt_spec(&spec, &["front-model"]).unwrap()];
    content.routes[0].guardrails = route;
    let pieces: Vec<String> = ANSWER.chars().map(String::from).collect();
    fake.set(|c| c.pieces = pieces);
    (fake, TestProxy::start(content).await)
}

#[tokio::test]
async fn a_streamed_prompt_answer_is_masked_and_a_reject_ends_it_with_an_error_event() {
    let url = "/team-a/chat/prompts/ask";
    let body = json!({"variables": {"question": "hi"}, "stream": true});
    let (_fake, proxy) = answering_as(ProviderType::OpenAI, vec![answers_masking()]).await;
    let reply = post(&proxy.url(url), CLIENT_KEY, &body).await;
    reply.assert_status(200);
    let events = prompt_events(&reply.body);
    let text: String = events
        .iter()
        .filter(|(name, _)| name == "delta")
        .filter_map(|(_, d)| d["text"].as_str())
        .collect();
    assert_eq!(text, MASKED);
    assert_eq!(events.last().unwrap().0, "done");
    let shown = String::from_utf8_lossy(&reply.body);
    assert!(
        !shown.contains("alice") && !shown.contains("4111"),
        "{shown}"
    );

    let rejecting = guardrail(
        "answers",
        GuardrailDirection::Response,
        vec![detector(
            "cards",
            Detector::CreditCard,
            GuardrailAction::Reject,
        )],
    );
    let (_fake, proxy) = answering_as(ProviderType::OpenAI, vec![rejecting]).await;
    let reply = post(&proxy.url(url), CLIENT_KEY, &body).await;
    reply.assert_status(200);
    let events = prompt_events(&reply.body);
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "error", "{events:?}");
    assert_eq!(last["error"]["code"], "content_policy_violation");
    assert!(
        last["error"]["message"].as_str().unwrap().contains("cards"),
        "{last}"
    );
    assert!(!events.iter().any(|(n, _)| n == "done"));
    assert!(!String::from_utf8_lossy(&reply.body).contains("4111"));
}

#[tokio::test]
async fn a_streamed_responses_answer_is_masked_in_its_deltas_and_in_every_whole_text_event() {
    let url = "/team-a/chat/v1/responses";
    let body = json!({"model": "front-model", "input": "hi", "stream": true});
    let (_fake, proxy) =
        answering_as(ProviderType::OpenAICompatible, vec![answers_masking()]).await;
    let reply = post(&proxy.url(url), CLIENT_KEY, &body).await;
    reply.assert_status(200);
    let shown = String::from_utf8_lossy(&reply.body).to_string();
    assert!(
        !shown.contains("alice") && !shown.contains("4111"),
        "{shown}"
    );
    let events = prompt_events(&reply.body);
    let text: String = events
        .iter()
        .filter(|(name, _)| name == "response.output_text.delta")
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert_eq!(text, MASKED);
    let of = |name: &str| &events.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(of("response.output_text.done")["text"], MASKED);
    assert_eq!(
        of("response.completed")["response"]["output"][0]["content"][0]["text"],
        MASKED
    );
    let numbers: Vec<u64> = events
        .iter()
        .map(|(_, d)| d["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..events.len() as u64).collect::<Vec<_>>());
    for (name, d) in &events {
        if name == "response.output_text.delta" {
            assert!(d["item_id"].is_string(), "{d}");
        }
    }

    let rejecting = guardrail(
        "answers",
        GuardrailDirection::Response,
        vec![detector(
            "cards",
            Detector::CreditCard,
            GuardrailAction::Reject,
        )],
    );
    let (_fake, proxy) = answering_as(ProviderType::OpenAICompatible, vec![rejecting]).await;
    let reply = post(&proxy.url(url), CLIENT_KEY, &body).await;
    reply.assert_status(200);
    let events = prompt_events(&reply.body);
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "error", "{events:?}");
    assert_eq!(last["code"], "content_policy_violation");
    assert!(
        last["message"].as_str().unwrap().contains("cards"),
        "{last}"
    );
    assert!(!events.iter().any(|(n, _)| n == "response.completed"));
    assert!(!String::from_utf8_lossy(&reply.body).contains("4111"));
}

/// The reasoning the fake shows when asked for it: an address split across stream pieces.
fn thinking_of_an_address() -> Vec<String> {
    ["The user is bob@", "example.com, ", "so be kind."]
        .map(String::from)
        .to_vec()
}

const THOUGHT_MASKED: &str = "The user is [EMAIL], so be kind.";

/// A chat call that asks for reasoning, and a Messages call that asks for thinking (sent to the
/// OpenAI-compatible fake as `reasoning_effort`; its `reasoning_content` comes back as thinking).
fn reasoning_calls(stream: bool) -> [(&'static str, Value); 2] {
    let mut chat = chat("hi", stream);
    chat["reasoning_effort"] = "low".into();
    let messages = json!({"model": "front-model", "max_tokens": 4096, "stream": stream,
                          "thinking": {"type": "enabled", "budget_tokens": 1024},
                          "messages": [{"role": "user", "content": "hi"}]});
    [(CHAT, chat), (MESSAGES, messages)]
}

#[tokio::test]
async fn shown_reasoning_is_masked_whole_and_streamed_for_openai_and_anthropic_callers() {
    let (fake, proxy) = answering(ANSWER, vec![answers_masking()]).await;
    fake.set(|c| c.thought = thinking_of_an_address());
    for stream in [false, true] {
        for (url, body) in reasoning_calls(stream) {
            let reply = post(&proxy.url(url), CLIENT_KEY, &body).await;
            reply.assert_status(200);
            let shown = String::from_utf8_lossy(&reply.body).to_string();
            assert!(!shown.contains("bob@"), "{url} {stream}: {shown}");
            let (reasoning, text): (String, String) = match (url, stream) {
                (CHAT, false) => {
                    let m = &reply.json()["choices"][0]["message"];
                    (
                        m["reasoning_content"].as_str().unwrap().into(),
                        m["content"].as_str().unwrap().into(),
                    )
                }
                (CHAT, true) => {
                    let chunks = crate::support::chat_route::openai_chunks(&reply.body);
                    let of = |member: &str| {
                        chunks
                            .iter()
                            .filter_map(|c| c["choices"][0]["delta"][member].as_str())
                            .collect()
                    };
                    (of("reasoning_content"), of("content"))
                }
                (_, false) => {
                    let content = &reply.json()["content"];
                    assert_eq!(content[0]["type"], "thinking", "{content}");
                    (
                        content[0]["thinking"].as_str().unwrap().into(),
                        content[1]["text"].as_str().unwrap().into(),
                    )
                }
                (_, true) => {
                    let events = crate::support::chat_route::anthropic_events(&reply.body);
                    let of = |member: &str| {
                        events
                            .iter()
                            .filter_map(|(_, d)| d["delta"][member].as_str())
                            .collect()
                    };
                    (of("thinking"), of("text"))
                }
            };
            assert_eq!(reasoning, THOUGHT_MASKED, "{url} {stream}: {shown}");
            assert_eq!(text, MASKED, "{url} {stream}");
            let line = proxy.log_line_of(&reply.request_id()).await;
            assert!(
                line["guardrails"]
                    .as_array()
                    .unwrap()
                    .contains(&json!({"rule": "emails", "action": "mask"})),
                "{line}"
            );
        }
    }
}

#[tokio::test]
async fn a_reject_rule_matching_shown_reasoning_refuses_the_answer_or_ends_its_stream() {
    let stop = guardrail(
        "stop-emails",
        GuardrailDirection::Response,
        vec![detector("emails", Detector::Email, GuardrailAction::Reject)],
    );
    // The answer itself has nothing the rule looks for.
    let (fake, proxy) = answering("Be kind.", vec![stop]).await;
    fake.set(|c| c.thought = thinking_of_an_address());
    for (url, body) in reasoning_calls(false) {
        let reply = post(&proxy.url(url), CLIENT_KEY, &body).await;
        reply.assert_status(400);
        let shown = String::from_utf8_lossy(&reply.body).to_string();
        assert!(shown.contains("guardrail rule emails"), "{url}: {shown}");
        assert!(!shown.contains("bob@"), "{shown}");
        let line = proxy.log_line_of(&reply.request_id()).await;
        assert_eq!(line["error_class"], "content_policy_violation", "{line}");
    }
    for (url, body) in reasoning_calls(true) {
        let reply = post(&proxy.url(url), CLIENT_KEY, &body).await;
        reply.assert_status(200);
        let shown = String::from_utf8_lossy(&reply.body).to_string();
        assert!(
            shown.contains("content_policy_violation") || shown.contains("event: error"),
            "{shown}"
        );
        assert!(shown.contains("guardrail rule emails"), "{shown}");
        assert!(
            !shown.contains("bob@") && !shown.contains("Be kind"),
            "{shown}"
        );
        let line = proxy.log_line_of(&reply.request_id()).await;
        assert_eq!(line["error_class"], "content_policy_violation", "{line}");
    }
}

#[tokio::test]
async fn an_upstream_stream_event_that_never_ends_is_cut_off_with_an_error_event() {
    use crate::support::fake_server::{paced, serve};
    // 5 MiB of one chunk's text and never the blank line that ends it.
    let addr = serve(|_req| async {
        let mut frames = vec![Ok(bytes::Bytes::from_static(
            b"data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"",
        ))];
        frames.extend((0..80).map(|_| Ok(bytes::Bytes::from(vec![b'a'; 64 << 10]))));
        paced(
            "text/event-stream",
            frames,
            std::time::Duration::ZERO,
            || {},
            |_| {},
        )
    })
    .await;
    let proxy = masking_answers_from(addr).await;
    let reply = post(&proxy.url(CHAT), CLIENT_KEY, &chat("hi", true)).await;
    reply.assert_status(200);
    assert!(reply.body.len() < 4096, "{} bytes sent", reply.body.len());
    let chunks = crate::support::chat_route::openai_chunks(&reply.body);
    let last = chunks.last().unwrap();
    assert_eq!(last["error"]["code"], "upstream_event_too_large", "{last}");
    assert_eq!(last["error"]["type"], "server_error", "{last}");
    let line = proxy.log_line_of(&reply.request_id()).await;
    assert_eq!(line["error_class"], "upstream_event_too_large", "{line}");
}
