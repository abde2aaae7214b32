//! Checks, masking offsets, and properties: masking never leaves a detected value behind, whatever the
//! chunking of a stream; no detector panics on any text.
//!
//! The properties run a few thousand cases in the suite; for the long run set `TOLLGATE_FUZZ_CASES`,
//! e.g. `TOLLGATE_FUZZ_CASES=1000000 cargo test -p tollgate-proxy --release --lib guard::` (this file's
//! and the oracle's, `oracle.rs`: the scanner against the regular expressions it replaced).

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tollgate_snapshot::{
    Detector, GuardRule, Guardrail, GuardrailAction, GuardrailDirection, GuardrailEndpoint,
    Matcher, ObjectRef, Pattern, default_mask,
};

use super::*;

fn cases() -> u32 {
    std::env::var("TOLLGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

pub(super) fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

use super::scan::ALL;

fn rule(name: &str, detector: Detector, action: GuardrailAction) -> GuardRule {
    GuardRule {
        name: name.into(),
        matcher: Matcher::Detector(detector),
        action,
        mask_as: default_mask(Some(detector)).into(),
    }
}

fn masking_all() -> Policy {
    Policy {
        rules: ALL
            .iter()
            .map(|d| rule(&format!("{d:?}"), *d, GuardrailAction::Mask))
            .collect(),
        ..Policy::default()
    }
}

#[test]
fn masking_replaces_each_value_by_its_token_and_keeps_the_text_around_it() {
    let policy = masking_all();
    let text = "Mail bob@example.com, card 4111 1111 1111 1111; IBAN DE89370400440532013000. From 10.0.0.1!";
    let checked = policy.check(text);
    assert_eq!(
        checked.masked(text),
        "Mail [EMAIL], card [CREDIT_CARD]; IBAN [IBAN]. From [IP_ADDRESS]!"
    );
    let offsets: Vec<(usize, usize)> = checked
        .masks
        .iter()
        .map(|(r, _)| (r.start, r.end))
        .collect();
    assert_eq!(offsets, [(5, 20), (27, 46), (53, 75), (82, 90)]);
    assert!(checked.rejected.is_none());
    let rules: Vec<&str> = checked.decisions.iter().map(|d| &*d.rule).collect();
    assert_eq!(rules, ["Email", "CreditCard", "Iban", "IpAddress"]);
}

#[test]
fn overlapping_matches_become_one_mask_with_the_first_rules_token() {
    // The card number is also matched by a pattern rule that takes more text.
    let policy = Policy {
        rules: vec![
            rule("cards", Detector::CreditCard, GuardrailAction::Mask),
            GuardRule {
                name: "card-line".into(),
                matcher: Matcher::Pattern(Pattern::new(r"card \d+").unwrap()),
                action: GuardrailAction::Mask,
                mask_as: "[LINE]".into(),
            },
        ],
        ..Policy::default()
    };
    let text = "my card 4111111111111111 ok";
    assert_eq!(policy.check(text).masked(text), "my [LINE] ok");
}

#[test]
fn reject_wins_monitor_only_notes_and_an_empty_pattern_match_is_ignored() {
    let policy = Policy {
        rules: vec![
            rule("ssn", Detector::UsSsn, GuardrailAction::Reject),
            rule("ips", Detector::IpAddress, GuardrailAction::Monitor),
            GuardRule {
                name: "empty".into(),
                matcher: Matcher::Pattern(Pattern::new(r"x*").unwrap()),
                action: GuardrailAction::Reject,
                mask_as: "[X]".into(),
            },
        ],
        ..Policy::default()
    };
    let text = "host 10.1.2.3";
    let checked = policy.check(text);
    assert_eq!(checked.rejected, None);
    assert_eq!(checked.masked(text), text);
    assert_eq!(
        checked.decisions,
        [Decision {
            rule: "ips".into(),
            action: GuardrailAction::Monitor
        }]
    );
    assert_eq!(
        policy.check("ssn 123-45-6789").rejected.as_deref(),
        Some("ssn")
    );
}

fn guardrail(name: &str, applies_to: GuardrailDirection, rules: Vec<GuardRule>) -> Guardrail {
    Guardrail {
        id: ObjectRef::new("team", name),
        applies_to,
        endpoints: vec![GuardrailEndpoint::Chat],
        rules,
        moderations: Vec::new(),
        max_input_chars: Some(100),
        max_input_tokens: Some(10),
        broken: false,
    }
}

#[test]
fn a_policy_gathers_the_rules_of_its_side_and_endpoint_route_first_and_the_smallest_limits() {
    let route = guardrail(
        "route",
        GuardrailDirection::Both,
        vec![rule("a", Detector::Email, GuardrailAction::Mask)],
    );
    let mut consumer = guardrail(
        "consumer",
        GuardrailDirection::Request,
        vec![rule("b", Detector::Phone, GuardrailAction::Reject)],
    );
    consumer.max_input_chars = Some(50);
    let both = [route, consumer];
    let req = Policy::gather(&both, GuardrailEndpoint::Chat, true);
    let names: Vec<&str> = req.rules.iter().map(|r| &*r.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!((req.max_chars, req.max_tokens), (Some(50), Some(10)));
    let answer = Policy::gather(&both, GuardrailEndpoint::Chat, false);
    assert_eq!(answer.rules.len(), 1);
    assert_eq!(answer.max_chars, None);
    assert!(Policy::gather(&both, GuardrailEndpoint::Embeddings, true).is_empty());

    assert_eq!(req.admit(40), Ok(()));
    assert_eq!(
        req.admit(41),
        Err(Refusal::TooLong {
            unit: "tokens",
            limit: 10
        })
    );
    let mut broken = both.to_vec();
    broken.push(Guardrail::broken(ObjectRef::new("team", "gone")));
    let refused = Policy::gather(&broken, GuardrailEndpoint::Embeddings, true);
    assert_eq!(
        refused.admit(0),
        Err(Refusal::Broken(ObjectRef::new("team", "gone")))
    );
}

/// Streams `text` in the given pieces; the released text, or the rule that rejected it.
fn stream(policy: &Arc<Policy>, pieces: &[&str]) -> Result<String, Arc<str>> {
    let mut guard = StreamGuard::new(Arc::clone(policy));
    let mut out = String::new();
    for piece in pieces {
        out.push_str(&guard.push(piece)?);
    }
    out.push_str(&guard.finish()?);
    Ok(out)
}

fn split_at_every(text: &str, points: &[usize]) -> Vec<String> {
    let mut cuts: Vec<usize> = points
        .iter()
        .map(|p| p % (text.len() + 1))
        .filter(|p| text.is_char_boundary(*p))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces = Vec::new();
    let mut at = 0;
    for cut in cuts {
        pieces.push(text[at..cut].to_string());
        at = cut;
    }
    pieces.push(text[at..].to_string());
    pieces
}

#[test]
fn a_stream_split_at_every_byte_is_masked_like_the_whole_text() {
    let policy = Arc::new(masking_all());
    let text = format!(
        "{} contact bob@example.com or +44 20 7946 0958, card 4111-1111-1111-1111, key sk-proj-{} done",
        "lorem ipsum ".repeat(40),
        "A".repeat(30)
    );
    let whole = policy.check(&text).masked(&text);
    let bytes: Vec<String> = text.chars().map(String::from).collect();
    let pieces: Vec<&str> = bytes.iter().map(String::as_str).collect();
    assert_eq!(stream(&policy, &pieces).unwrap(), whole);
    assert!(!whole.contains("bob@example.com"));
}

#[test]
fn a_stream_is_rejected_as_soon_as_a_reject_rule_matches_and_holds_back_a_window_only() {
    let policy = Arc::new(Policy {
        rules: vec![rule("keys", Detector::Secret, GuardrailAction::Reject)],
        ..Policy::default()
    });
    let mut guard = StreamGuard::new(Arc::clone(&policy));
    // Capitalised, so not plain words: only the window is a reason to hold them.
    let filler = "Word ".repeat(100);
    let released = guard.push(&filler).unwrap();
    // Everything but the window (cut at whitespace) is released.
    assert!(
        released.len() >= filler.len() - HOLD_BACK_BYTES - 5,
        "{}",
        released.len()
    );
    assert!(released.len() <= filler.len() - HOLD_BACK_BYTES);
    let more = guard.push("and AKIAIOSF").unwrap();
    assert!(
        more.starts_with("Word ") && !more.contains("AKIA"),
        "{more}"
    );
    assert_eq!(guard.push("ODNN7EXAMPLE now").unwrap_err().as_ref(), "keys");
}

#[test]
fn a_rejection_inside_the_first_window_is_recorded_as_a_decision() {
    let policy = Arc::new(Policy {
        rules: vec![rule("keys", Detector::Secret, GuardrailAction::Reject)],
        ..Policy::default()
    });
    let mut guard = StreamGuard::new(policy);
    assert_eq!(
        guard.push("Key AKIAIOSFODNN7EXAMPLE").unwrap_err().as_ref(),
        "keys"
    );
    let decisions: Vec<_> = guard
        .decisions()
        .map(|d| (d.rule.to_string(), d.action))
        .collect();
    assert_eq!(decisions, [("keys".to_string(), GuardrailAction::Reject)]);
}

#[test]
fn prose_is_released_up_to_its_last_plain_word_when_every_rule_is_a_detector() {
    let policy = Arc::new(masking_all());
    let mut guard = StreamGuard::new(Arc::clone(&policy));
    assert_eq!(guard.push("write to bob@exa").unwrap(), "write to ");
    assert_eq!(guard.push("mple.com today and").unwrap(), "[EMAIL] today ");
    // Digits, capitals and other scripts are held as a window holds them.
    assert_eq!(
        guard.push(" call +44 20 7946 0958 über Straße ").unwrap(),
        "and call "
    );
    assert_eq!(guard.finish().unwrap(), "[PHONE] über Straße ");

    // A pattern may match anything: its text waits for the window.
    let pattern = Arc::new(Policy {
        rules: vec![GuardRule {
            name: "words".into(),
            matcher: Matcher::Pattern(Pattern::new("quiet [a-z ]+ words").unwrap()),
            action: GuardrailAction::Mask,
            mask_as: "[X]".into(),
        }],
        ..Policy::default()
    });
    let mut guard = StreamGuard::new(pattern);
    assert_eq!(guard.push("some quiet and plain ").unwrap(), "");
    assert_eq!(guard.push("words here").unwrap(), "");
    assert_eq!(guard.finish().unwrap(), "some [X] here");
}

#[test]
fn text_without_whitespace_is_released_once_the_most_is_held() {
    let policy = Arc::new(masking_all());
    let mut guard = StreamGuard::new(policy);
    let mut released = 0;
    for _ in 0..20 {
        released += guard.push(&"x".repeat(100)).unwrap().len();
    }
    assert!(released >= 2000 - MAX_PENDING_BYTES, "{released}");
}

/// Values every detector finds, for the properties.
const VALUES: &[&str] = &[
    "bob@example.com",
    "alice.smith+tag@mail.example.co.uk",
    "+44 20 7946 0958",
    "(415) 555-2671",
    "4111 1111 1111 1111",
    "378282246310005",
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "123-45-6789",
    "192.168.1.20",
    "2001:db8::8a2e:370:7334",
    "sk-ant-api03-abcdefghijklmnopqrstuv",
    "AKIAIOSFODNN7EXAMPLE",
];
const FILLER: &[&str] = &[
    " ",
    ", ",
    ". ",
    " and ",
    "\n",
    " (",
    ") ",
    " the quick brown fox ",
    "; ",
    " über ",
    " 日本 ",
];

fn document() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(FILLER),
            prop::option::of(prop::sample::select(VALUES)),
        ),
        1..24,
    )
    .prop_map(|parts| {
        let mut text = String::new();
        for (filler, value) in parts {
            text.push_str(filler);
            if let Some(v) = value {
                text.push_str(v);
            }
        }
        text.push(' ');
        text
    })
}

#[test]
fn property_no_detected_value_survives_masking_whatever_the_chunking() {
    let policy = Arc::new(masking_all());
    runner()
        .run(
            &(document(), prop::collection::vec(any::<usize>(), 0..40)),
            |(text, points)| {
                let whole = policy.check(&text).masked(&text);
                for v in VALUES {
                    prop_assert!(!whole.contains(v), "{v} left in {whole:?}");
                }
                let pieces = split_at_every(&text, &points);
                let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
                let streamed = stream(&policy, &refs).unwrap();
                for v in VALUES {
                    prop_assert!(!streamed.contains(v), "{v} left in {streamed:?}");
                }
                prop_assert_eq!(streamed, whole);
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn fuzz_detectors_and_streams_never_panic_and_masks_are_inside_the_text() {
    let policy = Arc::new(masking_all());
    let text = prop_oneof![
        any::<String>(),
        "[ -~]{0,200}",
        "[0-9 +().:-]{0,80}",
        "[A-Za-z0-9@.:_ -]{0,120}",
    ];
    runner()
        .run(
            &(text, prop::collection::vec(any::<usize>(), 0..8)),
            |(text, points)| {
                for d in ALL {
                    for span in find(d, &text) {
                        prop_assert!(span.start < span.end && span.end <= text.len());
                        prop_assert!(
                            text.is_char_boundary(span.start) && text.is_char_boundary(span.end)
                        );
                    }
                }
                let checked = policy.check(&text);
                let _ = checked.masked(&text);
                let pieces = split_at_every(&text, &points);
                let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
                let _ = stream(&policy, &refs);
                Ok(())
            },
        )
        .unwrap();
}

/// A text checked whole comes to what [`Policy::check`] says of it, without the spans a stream needs;
/// those are sorted and apart, and every mask lies inside one.
#[test]
fn property_a_text_checked_whole_is_the_text_checked_but_for_its_spans() {
    let mut policy = masking_all();
    policy.rules[1].action = GuardrailAction::Monitor;
    policy.rules.push(GuardRule {
        name: "card-line".into(),
        matcher: Matcher::Pattern(Pattern::new(r"card \d+").unwrap()),
        action: GuardrailAction::Mask,
        mask_as: "[LINE]".into(),
    });
    runner()
        .run(&document(), |text| {
            let checked = policy.check(&text);
            let whole = policy.check_whole(&text);
            prop_assert_eq!(&whole.masks, &checked.masks);
            prop_assert_eq!(&whole.decisions, &checked.decisions);
            prop_assert_eq!(&whole.rejected, &checked.rejected);
            prop_assert!(whole.spans.is_empty());
            prop_assert!(checked.spans.windows(2).all(|w| w[0].end <= w[1].start));
            for (mask, _) in &checked.masks {
                prop_assert!(
                    checked
                        .spans
                        .iter()
                        .any(|s| s.start <= mask.start && mask.end <= s.end)
                );
            }
            Ok(())
        })
        .unwrap();
}

/// A measurement for `bench/guard_scan.sh`: the text in the file `GUARD_TEXT_FILE` (the script
/// writes the guardrails bench's texts) checked `N` times with all seven detectors masking. The script
/// runs it under callgrind with two counts and divides the difference.
#[test]
#[ignore = "a measurement, run by bench/guard_scan.sh"]
fn measure_a_check() {
    let path = std::env::var("GUARD_TEXT_FILE").expect("GUARD_TEXT_FILE names the text to check");
    let text = std::fs::read_to_string(path).expect("the text to check is readable");
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let policy = masking_all();
    let mut masked = 0;
    for _ in 0..n {
        masked += policy.check_whole(std::hint::black_box(&text)).masks.len();
    }
    println!("{} masked a check", masked / n.max(1));
}

/// A measurement for `bench/guard_scan.sh`: the OpenAI chat stream in the file `GUARD_STREAM_FILE`
/// (what the guardrails bench's upstream sends) checked `N` times as a proxy checks it, one event a
/// read, with all seven detectors masking.
#[test]
#[ignore = "a measurement, run by bench/guard_scan.sh"]
fn measure_a_stream() {
    let path = std::env::var("GUARD_STREAM_FILE").expect("GUARD_STREAM_FILE names the stream");
    let stream = std::fs::read(path).expect("the stream is readable");
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let events: Vec<&[u8]> = stream.split_inclusive(|&b| b == b'\n').collect();
    let events: Vec<Vec<u8>> = events
        .chunk_by(|line, _| line != b"\n")
        .map(|lines| lines.concat())
        .collect();
    let policy = Arc::new(masking_all());
    let mut written = 0;
    for _ in 0..n {
        let mut answer = AnswerStream::new(StreamFormat::OpenAiChat, Arc::clone(&policy));
        for event in &events {
            written += answer.feed(std::hint::black_box(event)).len();
        }
        written += answer.finish().len();
    }
    println!(
        "{} events, {} bytes written a stream",
        events.len(),
        written / n.max(1)
    );
}
