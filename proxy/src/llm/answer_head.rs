//! An answer's head (`id`, `model`, finish reasons) read in one pass over its bytes: the top-level
//! `id` and `model`, and every `finish_reason` key at any depth, found while the structure is
//! walked, instead of a walk for the names and a substring search of the whole body for the
//! reasons. Text the walk does not follow to its end exactly (damaged or unusual JSON: a key with
//! escapes at the top level, nesting past 64, anything but an object and whitespace) is left to
//! the search reading (`openai::answer_head_by_search`), which it is tested to agree with.

use super::openai::{AnswerHead, MAX_REASONS, short_string};

/// Nesting the walk follows (one bit per open container).
const MAX_DEPTH: u32 = 64;

/// What the walk expects next.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// A key, or `}` (just after `{`).
    KeyOrClose,
    /// A key (after a comma in an object).
    Key,
    Colon,
    /// A value, or `]` (just after `[`).
    ValueOrClose,
    Value,
    /// A comma, or the end of the container.
    CommaOrClose,
}

/// Which value the key just read names.
#[derive(Clone, Copy, PartialEq)]
enum Wanted {
    Nothing,
    Id,
    Model,
    FinishReason,
}

/// The head of the object `text` holds, or `None` when the walk cannot vouch for its reading (the
/// search reading decides then).
pub(super) fn walk(text: &str) -> Option<AnswerHead<'_>> {
    let b = text.as_bytes();
    let mut i = space(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut head = AnswerHead::default();
    // Whether the top-level `id` and `model` were seen (their value may not be a short string).
    let (mut id, mut model) = (false, false);
    // Bit `d` of `objects`: whether the container at depth `d + 1` is an object.
    let (mut depth, mut objects) = (1u32, 1u64);
    let mut expect = Expect::KeyOrClose;
    let mut wanted = Wanted::Nothing;
    loop {
        i = space(b, i);
        let c = *b.get(i)?;
        match expect {
            Expect::KeyOrClose | Expect::Key => {
                if c == b'}' && expect == Expect::KeyOrClose {
                    i += 1;
                    (depth, expect) = close(depth)?;
                    if depth == 0 {
                        break;
                    }
                    continue;
                }
                if c != b'"' {
                    return None;
                }
                let end = string_end(b, i)?;
                let key = &b[i + 1..end - 1];
                wanted = if key == b"finish_reason" {
                    Wanted::FinishReason
                } else if depth == 1 && !(id && model) {
                    // The search reading compares keys unescaped: leave escaped ones to it.
                    if key.contains(&b'\\') {
                        return None;
                    }
                    match key {
                        b"id" => Wanted::Id,
                        b"model" => Wanted::Model,
                        _ => Wanted::Nothing,
                    }
                } else {
                    Wanted::Nothing
                };
                i = end;
                expect = Expect::Colon;
            }
            Expect::Colon => {
                if c != b':' {
                    return None;
                }
                i += 1;
                expect = Expect::Value;
            }
            Expect::ValueOrClose | Expect::Value => {
                if c == b']' && expect == Expect::ValueOrClose {
                    i += 1;
                    (depth, expect) = close(depth)?;
                    continue;
                }
                let text_value = match c {
                    b'"' => {
                        let end = string_end(b, i)?;
                        let raw = text.get(i..end)?;
                        i = end;
                        expect = Expect::CommaOrClose;
                        Some(raw)
                    }
                    b'{' | b'[' => {
                        if depth == MAX_DEPTH {
                            return None;
                        }
                        let object = c == b'{';
                        objects = objects & !(1 << depth) | u64::from(object) << depth;
                        depth += 1;
                        i += 1;
                        expect = if object {
                            Expect::KeyOrClose
                        } else {
                            Expect::ValueOrClose
                        };
                        None
                    }
                    _ => {
                        // A number, `true`, `false` or `null`: only the bytes they are made of.
                        let from = i;
                        while b.get(i).is_some_and(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')
                        }) {
                            i += 1;
                        }
                        if i == from {
                            return None;
                        }
                        expect = Expect::CommaOrClose;
                        None
                    }
                };
                match std::mem::replace(&mut wanted, Wanted::Nothing) {
                    Wanted::Nothing => {}
                    Wanted::Id if !(id && model) => {
                        (head.id, id) = (text_value.and_then(short_string), true);
                    }
                    Wanted::Model if !(id && model) => {
                        (head.model, model) = (text_value.and_then(short_string), true);
                    }
                    Wanted::Id | Wanted::Model => {}
                    Wanted::FinishReason => {
                        if head.finish_reasons.len() < MAX_REASONS
                            && let Some(reason) = text_value.and_then(short_string)
                        {
                            head.finish_reasons.push(reason);
                        }
                    }
                }
            }
            Expect::CommaOrClose => {
                let object = objects >> (depth - 1) & 1 == 1;
                match (c, object) {
                    (b',', true) => expect = Expect::Key,
                    (b',', false) => expect = Expect::Value,
                    (b'}', true) | (b']', false) => {
                        (depth, expect) = close(depth)?;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    _ => return None,
                }
                i += 1;
            }
        }
    }
    // Only whitespace may follow (the search reading would look at anything else too).
    (space(b, i) == b.len()).then_some(head)
}

/// Leaves a container: the new depth, and what follows a value.
fn close(depth: u32) -> Option<(u32, Expect)> {
    Some((depth.checked_sub(1)?, Expect::CommaOrClose))
}

/// Past JSON whitespace from `i`.
fn space(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// Just past the end of the string whose opening quote is at `b[at]`: short strings (keys, ids,
/// names) by a plain loop, the rest of a long one by memchr; `None` when it does not end.
fn string_end(b: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    let short_end = b.len().min(i + 24);
    while i < short_end {
        match b[i] {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    loop {
        i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::super::openai::{answer_head, answer_head_by_search};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_chat_answer_with_its_choices_first_is_read_in_one_pass() {
        let body = r#"{"choices":[{"finish_reason":"stop","index":0,"logprobs":null,
            "message":{"content":"a \"finish_reason\": \"no\"","refusal":null,"role":"assistant"}},
            {"finish_reason":"length","index":1}],"created":1700000000,"id":"chatcmpl-1",
            "model":"gpt-x","usage":{"prompt_tokens":1,"completion_tokens":2}} "#;
        let head = walk(body).expect("read in one pass");
        assert_eq!(head.id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(head.model.as_deref(), Some("gpt-x"));
        assert_eq!(head.finish_reasons, ["stop", "length"]);
        assert_eq!(answer_head_by_search(body.as_bytes()), Some(head));
    }

    #[test]
    fn what_the_walk_cannot_vouch_for_is_left_to_the_search() {
        for body in [
            r#"{"id":"a"} "finish_reason":"x""#,
            r#"{"\u0069d":"a","model":"m"}"#,
            r#"{"id":"a","model":"m","choices":[{"finish_reason":"stop"}"#,
            r#"{"id": abc"finish_reason":"x"}"#,
            "[1]",
        ] {
            assert!(walk(body).is_none(), "{body}");
        }
        let deep = format!(
            "{{\"id\":\"a\",\"x\":{}1{}}}",
            "[".repeat(70),
            "]".repeat(70)
        );
        assert!(walk(&deep).is_none());
        assert_eq!(
            answer_head(deep.as_bytes()).and_then(|h| h.id).as_deref(),
            Some("a")
        );
    }

    /// A JSON value of OpenAI-answer shapes: objects whose keys include the ones read, strings with
    /// escapes and quoted keys inside them, numbers, literals, arrays, odd whitespace.
    fn any_json() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("id".to_string()),
            Just("model".to_string()),
            Just("finish_reason".to_string()),
            Just("choices".to_string()),
            Just("i\\u0064".to_string()),
            "[a-z_]{1,8}",
        ];
        let string = prop_oneof![
            "[a-z0-9 -]{0,30}",
            Just("a \\\"finish_reason\\\": \\\"x\\\"".to_string()),
            Just("back\\\\slash".to_string()),
            Just("caf\u{e9} \\u00e9".to_string()),
            "[a-z]{300}",
        ]
        .prop_map(|s| format!("\"{s}\""));
        let ws = prop_oneof![Just(""), Just(" "), Just("\n\t "), Just("\r")];
        let leaf = prop_oneof![
            string,
            Just("null".to_string()),
            Just("true".to_string()),
            Just("-12.5e+3".to_string()),
            any::<u32>().prop_map(|n| n.to_string()),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec((key.clone(), ws.clone(), inner), 0..6).prop_map(|members| {
                    let members: Vec<String> = members
                        .into_iter()
                        .map(|(k, ws, v)| format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// On answer-shaped JSON the one-pass reading is the search reading.
        #[test]
        fn the_walk_reads_what_the_search_reads(body in any_json()) {
            let body = format!("{{\"x\":{body},\"finish_reason\":\"stop\",\"id\":\"c-1\"}}");
            prop_assert_eq!(answer_head(body.as_bytes()), answer_head_by_search(body.as_bytes()));
            if let Some(head) = walk(&body) {
                prop_assert_eq!(Some(head), answer_head_by_search(body.as_bytes()));
            }
        }

        /// Damaged at one byte, or cut anywhere, the reading is still the search reading.
        #[test]
        fn damaged_answers_read_as_the_search_reads_them(
            body in any_json(),
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"\"\\{}[]:, x0\x0c".to_vec()),
            cut in any::<bool>(),
        ) {
            let mut bytes = format!("{{\"model\":\"m\",\"v\":{body}}}").into_bytes();
            let at = at.index(bytes.len());
            if cut {
                bytes.truncate(at);
            } else {
                bytes[at] = byte;
            }
            prop_assert_eq!(answer_head(&bytes), answer_head_by_search(&bytes));
        }

        /// Any bytes read the same both ways, without panicking.
        #[test]
        fn any_bytes_read_as_the_search_reads_them(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(answer_head(&bytes), answer_head_by_search(&bytes));
        }
    }
}
