//! The cache key made straight from a body's bytes (`llm::canonical_json`) is the key made by way of a
//! `serde_json::Value` (the way it was made before, kept as the oracle): on generated JSON text with
//! escapes, non-ASCII text, odd spacing, numbers in every spelling and names given twice, and on that
//! text damaged, both give the same key or both give none.

use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::key::{
    CacheKey, Form, KeyParts, LocalKey, Sharing, cache_key, cache_key_by_value, lookup_key,
    normalised_by_value,
};
use crate::llm::canonical_json::Canonical;

fn parts() -> KeyParts<'static> {
    KeyParts {
        endpoint: "chat",
        route: "team-a/chat",
        consumer: Some("team-a/app"),
        model: "gpt",
        form: Form::Whole,
    }
}

fn normalised(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    Canonical::default()
        .object(body, &super::key::IGNORED, &mut out)
        .map(|()| out)
}

/// Both ways agree on `body`; says whether it had a key.
fn agree(body: &[u8]) -> Result<bool, TestCaseError> {
    let by_value = normalised_by_value(body);
    prop_assert_eq!(
        normalised(body).map(String::from_utf8),
        by_value.clone().map(String::from_utf8),
        "body {:?}",
        String::from_utf8_lossy(body)
    );
    let key: Option<CacheKey> = cache_key(&parts(), body);
    prop_assert_eq!(key, cache_key_by_value(&parts(), body));
    // The keys a call looks up by: none where there is no SHA-256 key, and the same SHA-256 when
    // made later from the kept bytes or at once.
    let local = lookup_key(&parts(), body, Sharing::Local);
    let on_miss = lookup_key(&parts(), body, Sharing::OnMiss);
    let now = lookup_key(&parts(), body, Sharing::Now);
    prop_assert_eq!(local.is_some(), key.is_some());
    prop_assert_eq!(local.map(|l| l.local), on_miss.as_ref().map(|l| l.local));
    prop_assert_eq!(on_miss.and_then(|l| l.shared()), key);
    prop_assert_eq!(now.as_ref().and_then(|l| l.shared()), key);
    prop_assert_eq!(now.map(|l| l.local), key.as_ref().map(LocalKey::of));
    Ok(key.is_some())
}

#[track_caller]
fn canonical(body: &str) -> Option<String> {
    let ours = normalised(body.as_bytes()).map(|b| String::from_utf8(b).unwrap());
    let oracle = normalised_by_value(body.as_bytes()).map(|b| String::from_utf8(b).unwrap());
    assert_eq!(ours, oracle, "{body}");
    ours
}

#[test]
fn names_given_twice_keep_the_last_value() {
    assert_eq!(
        canonical(r#"{"b":1,"a":"x","a":{"d":1,"c":2},"b":[3]}"#).unwrap(),
        r#"{"a":{"c":2,"d":1},"b":[3]}"#
    );
    // The same name spelt with an escape is the same name.
    assert_eq!(canonical(r#"{"a":1,"\u0061":2}"#).unwrap(), r#"{"a":2}"#);
    // An ignored top-level member given twice is still left out; nested ones count.
    assert_eq!(
        canonical(r#"{"user":"a","x":{"user":1,"user":2},"user":"b"}"#).unwrap(),
        r#"{"x":{"user":2}}"#
    );
}

#[test]
fn numbers_are_written_as_serde_json_reads_them() {
    for (number, written) in [
        ("0", "0"),
        ("-0", "-0.0"),
        ("1.0", "1.0"),
        ("1e2", "100.0"),
        ("1E+2", "100.0"),
        ("-1.50e-3", "-0.0015"),
        ("123456789012345678", "123456789012345678"),
        ("9223372036854775807", "9223372036854775807"),
        ("-9223372036854775808", "-9223372036854775808"),
        ("-9223372036854775809", "-9.223372036854776e+18"),
        ("18446744073709551615", "18446744073709551615"),
        ("18446744073709551616", "1.8446744073709552e+19"),
        ("0.1000000000000000055511151231257827", "0.1"),
    ] {
        assert_eq!(
            canonical(&format!(r#"{{"n":{number}}}"#)).unwrap(),
            format!(r#"{{"n":{written}}}"#),
            "{number}"
        );
    }
    for bad in [
        "01", "1e400", "-", "1.", ".5", "+1", "1e", "--1", "0x10", "1.5.2",
    ] {
        assert_eq!(canonical(&format!(r#"{{"n":{bad}}}"#)), None, "{bad}");
    }
}

#[test]
fn strings_are_written_as_serde_json_writes_them() {
    for (string, written) in [
        (r#""\u0041\/\b\f\n\r\t\"\\""#, r#""A/\b\f\n\r\t\"\\""#),
        (r#""\u00e9\ud83d\ude00""#, "\"é😀\""),
        (r#""\u0000\u001f\u007f""#, "\"\\u0000\\u001f\u{7f}\""),
        ("\"é😀\u{7f}\"", "\"é😀\u{7f}\""),
    ] {
        assert_eq!(
            canonical(&format!(r#"{{"s":{string}}}"#)).unwrap(),
            format!(r#"{{"s":{written}}}"#),
            "{string}"
        );
    }
    for bad in [
        r#""\ud83d""#,
        r#""\ude00""#,
        r#""\ud83dx""#,
        r#""\x""#,
        r#""\u12""#,
        "\"\u{1}\"",
        "\"tab\there\"",
        r#""open"#,
        r#""\"#,
    ] {
        assert_eq!(canonical(&format!(r#"{{"s":{bad}}}"#)), None, "{bad}");
    }
    assert_eq!(normalised(b"{\"s\":\"\xff\"}"), None);
    assert_eq!(normalised_by_value(b"{\"s\":\"\xff\"}"), None);
}

#[test]
fn nesting_stops_where_serde_json_stops() {
    for depth in [125usize, 126, 127, 128, 129, 300] {
        let body = format!(
            r#"{{"a":{}{}}}"#,
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        );
        let accepted = canonical(&body).is_some();
        assert_eq!(accepted, depth <= 127, "{depth}");
    }
}

#[test]
fn what_is_not_one_object_has_no_key() {
    for body in [
        "",
        " ",
        "[]",
        "null",
        "1",
        "\"x\"",
        "{",
        "}",
        "{}{}",
        "{} x",
        "{,}",
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{"a":[1,]}"#,
        r#"{"a":[,1]}"#,
        r#"{1:2}"#,
        "{\"a\":tru}",
        "\u{feff}{}",
    ] {
        assert_eq!(canonical(body), None, "{body:?}");
    }
    assert_eq!(canonical(" \t\r\n{ } \n").unwrap(), "{}");
}

/// Spacing between tokens, mostly none.
fn space() -> impl Strategy<Value = &'static str> {
    prop_oneof![6 => Just(""), 1 => Just(" "), 1 => Just("\n\t "), 1 => Just("\r")]
}

/// Number spellings: plain integers, signs, fractions, exponents, the too large and the malformed.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
        prop::sample::select(
            &[
                "-0", "0", "1.0", "1e2", "1E2", "1e+2", "-0.0", "1e400", "-1e400", "1e-400", "01",
                "-", "1.", "2e", "-01.5",
            ][..]
        )
        .prop_map(String::from),
    ]
}

/// Pieces of a string's inside: plain text, any characters, and every kind of escape (lone
/// surrogates and invalid ones included, and now and then a raw control character).
fn string_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z ]{0,6}",
        2 => any::<char>()
            .prop_filter("no quote, backslash or control", |c| {
                !matches!(c, '"' | '\\') && !c.is_control()
            })
            .prop_map(String::from),
        3 => prop::sample::select(&[
            "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0041", "\\u00e9",
            "\\u0000", "\\u001F", "\\u007f", "\\ud83d\\ude00", "\\uD834\\uDD1E", "\\u2028",
        ][..])
        .prop_map(String::from),
        1 => prop::sample::select(&["\\ud83d", "\\ude00", "\\ud83d\\u0041", "\\x", "\\u12G4", "\u{1}"][..])
            .prop_map(String::from),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop::collection::vec(string_piece(), 0..4)
        .prop_map(|pieces| format!("\"{}\"", pieces.concat()))
}

/// Member names from a few, so that names repeat (also spelt with escapes) and some are ignored
/// ones; now and then any string.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(&[
            "\"a\"", "\"b\"", "\"\\u0061\"", "\"model\"", "\"user\"", "\"stream\"", "\"messages\"",
            "\"é\"", "\"\\u00e9\"", "\"a b\"", "\"\"", "\"\\\"\"", "\"A\"", "\"aa\"",
        ][..])
        .prop_map(String::from),
        1 => string(),
    ]
}

/// JSON text (valid more often than not) with the spacing given.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        number(),
        string(),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec((space(), inner.clone(), space()), 0..5).prop_map(|items| {
                let items: Vec<String> = items
                    .into_iter()
                    .map(|(before, item, after)| format!("{before}{item}{after}"))
                    .collect();
                format!("[{}]", items.join(","))
            }),
            object(inner),
        ]
    })
}

fn object(value: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    prop::collection::vec((space(), name(), space(), value), 0..6).prop_map(|members| {
        let members: Vec<String> = members
            .into_iter()
            .map(|(s, name, t, value)| format!("{s}{name}{t}:{t}{value}{s}"))
            .collect();
        format!("{{{}}}", members.join(","))
    })
}

/// A byte-level change: one byte replaced, inserted or removed.
fn damage() -> impl Strategy<Value = (u8, prop::sample::Index, u8)> {
    (0u8..3, any::<prop::sample::Index>(), any::<u8>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn the_key_from_bytes_is_the_key_by_value(body in object(json_text()), (s, t) in (space(), space())) {
        agree(format!("{s}{body}{t}").as_bytes())?;
    }

    #[test]
    fn damaged_bodies_give_the_same_key_or_none(body in object(json_text()), (how, at, byte) in damage()) {
        let mut bytes = body.into_bytes();
        let at = at.index(bytes.len() + 1);
        match how {
            0 if at < bytes.len() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => {}
        }
        agree(&bytes)?;
    }

    #[test]
    fn any_bytes_give_the_same_key_or_none(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        agree(&bytes)?;
        let mut braced = b"{\"a\":".to_vec();
        braced.extend(&bytes);
        braced.push(b'}');
        agree(&braced)?;
    }
}

/// The generated bodies are mostly ones the key is made of, so the agreement above is not only on
/// refusals.
#[test]
fn most_generated_bodies_have_a_key() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = object(json_text());
    let (mut with, mut all) = (0, 0);
    for _ in 0..500 {
        let body = strategy.new_tree(&mut runner).unwrap().current();
        all += 1;
        if agree(body.as_bytes()).unwrap() {
            with += 1;
        }
    }
    assert!(with * 2 > all, "{with} of {all} generated bodies had a key");
}
