//! What a trace records of an OpenAI answer: its `id`, `model` and the `finish_reason` of each
//! choice, read from a whole `chat.completion` body or one `chat.completion.chunk` payload — never
//! its content.
//!
//! The id and model are top-level members. OpenAI writes them first, but other servers (and any
//! JSON writer that sorts keys) put them after `choices`, which holds the content and is most of the
//! body: the members are read from the front up to the first object or array, then from the back
//! down to it, so that the container in between is skimmed only when a name is in neither part.

use std::borrow::Cow;
use std::sync::LazyLock;

use smallvec::SmallVec;

use crate::llm::json_scan;

/// Most finish reasons an [`AnswerHead`] keeps (one per choice).
pub const MAX_REASONS: usize = 16;
/// Longest id, model name or finish reason an [`AnswerHead`] keeps.
const MAX_NAME: usize = 256;

/// The answer's `id`, `model` and the `finish_reason` of each choice. Values longer than 256 bytes
/// are left out.
#[derive(Debug, Default, PartialEq)]
pub struct AnswerHead<'a> {
    pub id: Option<Name<'a>>,
    pub model: Option<Name<'a>>,
    /// One for most answers, kept in place.
    pub finish_reasons: SmallVec<[Name<'a>; 1]>,
}

#[cfg(test)]
impl AnswerHead<'_> {
    /// The id, if it is UTF-8.
    pub fn id(&self) -> Option<String> {
        self.id.as_ref().and_then(Name::as_str)
    }

    /// The model, if it is UTF-8.
    pub fn model(&self) -> Option<String> {
        self.model.as_ref().and_then(Name::as_str)
    }
}

/// A JSON string found in the answer, read no further: unescaped (when it has escapes) by whoever
/// keeps its text, and not checked as UTF-8 either, so that a name compared with one already known
/// (the model asked for, a usual finish reason) is not.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Name<'a> {
    /// Between the quotes.
    inner: &'a [u8],
    /// Whether it holds a backslash.
    escaped: bool,
}

impl<'a> Name<'a> {
    /// The text: the bytes between the quotes, or, for a string with escapes, its unescaped text
    /// (`None` if that is not a valid JSON string or is longer than [`MAX_NAME`] bytes).
    pub fn text(self) -> Option<Cow<'a, [u8]>> {
        if !self.escaped {
            return Some(Cow::Borrowed(self.inner));
        }
        let mut quoted = Vec::with_capacity(self.inner.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(self.inner);
        quoted.push(b'"');
        let text = serde_json::from_slice::<String>(&quoted).ok()?;
        (text.len() <= MAX_NAME).then(|| Cow::Owned(text.into_bytes()))
    }

    /// The text, if it is UTF-8.
    #[cfg(test)]
    pub fn as_str(&self) -> Option<String> {
        String::from_utf8(self.text()?.into_owned()).ok()
    }
}

impl PartialEq<&str> for Name<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.text().is_some_and(|t| *t == *other.as_bytes())
    }
}

/// The key an answer's finish reasons are found by.
const FINISH_REASON_KEY: &[u8] = b"\"finish_reason\"";

/// Reads the [`AnswerHead`] of `body`; `None` when the body does not start as a JSON object. The id
/// and model are read from the top level; the finish reasons are the string values of the
/// `finish_reason` keys found by a search of the body (a quoted key inside a string has its quotes
/// escaped, so it is not mistaken for one). The values are left for their keeper to check as UTF-8
/// ([`Name`]). On damaged
/// JSON the values may be incomplete or wrong, never a panic.
pub fn answer_head(body: &[u8]) -> Option<AnswerHead<'_>> {
    answer_head_before(body, None, MAX_REASONS)
}

/// [`answer_head`], told that the body's last top-level member starts at `last_member` (its key's
/// opening quote, as the usage reader `openai::usage_and_last_member` finds it): that member, which
/// is not the id or the model, is not walked back over again; and told how many finish reasons
/// the answer holds (`expected`: the choices the caller asked for, 0 for an answer that has none,
/// such as embeddings), so that the search for them stops once it has them. The search starts
/// where the reading of the top level stopped.
pub fn answer_head_before(
    body: &[u8],
    last_member: Option<usize>,
    expected: usize,
) -> Option<AnswerHead<'_>> {
    static FINISH_REASON: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(FINISH_REASON_KEY));
    let mut head = AnswerHead::default();
    let from = top_level_names(body, last_member, &mut head)?;
    let most = expected.min(MAX_REASONS);
    if most == 0 {
        return Some(head);
    }
    // Writers that sort keys put the first choice's finish reason right at the choices' start:
    // read there without setting up a search.
    let mut from = from;
    if let Some(at) = leading_reason(body, from) {
        if let Some(reason) = reason_at(body, at) {
            head.finish_reasons.push(reason);
            if head.finish_reasons.len() == most {
                return Some(head);
            }
        }
        from = at + FINISH_REASON_KEY.len();
    }
    for at in FINISH_REASON.find_iter(&body[from..]) {
        if let Some(reason) = reason_at(body, from + at) {
            head.finish_reasons.push(reason);
            if head.finish_reasons.len() == most {
                break;
            }
        }
    }
    Some(head)
}

/// Where the first choice's finish reason key is when it is that choice's first key and `from`
/// (where the reading of the top level stopped) is at the choices' opening bracket.
fn leading_reason(b: &[u8], from: usize) -> Option<usize> {
    if b.get(from) != Some(&b'[') {
        return None;
    }
    let i = space(b, from + 1);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let i = space(b, i + 1);
    b[i..].starts_with(FINISH_REASON_KEY).then_some(i)
}

/// The finish reason whose key a search found at `at`, unless the key is inside a string (its
/// quote escaped) or its value is not a short string.
fn reason_at(body: &[u8], at: usize) -> Option<Name<'_>> {
    if body[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1 {
        return None;
    }
    let rest = body[at + FINISH_REASON_KEY.len()..].trim_ascii_start();
    let value = rest.strip_prefix(b":")?.trim_ascii_start();
    if value.first() != Some(&b'"') {
        return None;
    }
    let end = json_scan::string_end(value, 0)?;
    short_string(&value[..end])
}

/// The two names read.
const ID: u8 = 0;
const MODEL: u8 = 1;

/// Which of the two names has been met (its value may not be a short string, and then is left
/// out); the first met of each counts.
#[derive(Default)]
struct Met {
    id: bool,
    model: bool,
}

impl Met {
    fn both(&self) -> bool {
        self.id && self.model
    }

    /// Notes the member `key: value` (both as their raw JSON text).
    fn note<'a>(&mut self, head: &mut AnswerHead<'a>, key: &[u8], value: &'a [u8]) {
        // Most keys are told apart by their bytes; one with escapes is unescaped first. A letter
        // escaped is six bytes (`\u0069`), so with its quotes an escaped `id` is 9 to 14 bytes
        // and an escaped `model` 12 to 32: no other key can spell either.
        let name = match key {
            b"\"id\"" => ID,
            b"\"model\"" => MODEL,
            _ if (9..=32).contains(&key.len()) && has_backslash(key) => {
                match serde_json::from_slice::<String>(key).ok().as_deref() {
                    Some("id") => ID,
                    Some("model") => MODEL,
                    _ => return,
                }
            }
            _ => return,
        };
        if name == ID && !self.id {
            (head.id, self.id) = (short_string(value), true);
        } else if name == MODEL && !self.model {
            (head.model, self.model) = (short_string(value), true);
        }
    }
}

/// Reads the top-level `id` and `model` of the object `b` starts with into `head`; `None` if `b`
/// does not start an object, else where the front reading stopped (no finish reason of a choice is
/// before it). `last_member`, when known, is where the object's last member starts.
fn top_level_names<'a>(
    b: &'a [u8],
    last_member: Option<usize>,
    head: &mut AnswerHead<'a>,
) -> Option<usize> {
    let mut i = space(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut met = Met::default();
    // From the front, up to the first value that is an object or an array.
    let stop = loop {
        i = space(b, i);
        if b.get(i) == Some(&b',') {
            i = space(b, i + 1);
        }
        if b.get(i) != Some(&b'"') {
            return Some(i);
        }
        let key_at = i;
        let Some(key_end) = json_scan::string_end(b, i) else {
            return Some(i);
        };
        i = space(b, key_end);
        if b.get(i) != Some(&b':') {
            return Some(i);
        }
        i = space(b, i + 1);
        let end = match b.get(i) {
            None => return Some(i),
            Some(b'{' | b'[') => break i,
            Some(b'"') => match json_scan::string_end(b, i) {
                Some(end) => end,
                None => return Some(i),
            },
            Some(_) => {
                i + b[i..]
                    .iter()
                    .position(|&c| ends_scalar(c))
                    .unwrap_or(b.len() - i)
            }
        };
        met.note(head, &b[key_at..key_end], &b[i..end]);
        if met.both() {
            return Some(end);
        }
        i = end;
    };
    // From the back, down to that value.
    let mut end = b.trim_ascii_end().len();
    if end <= stop || b[end - 1] != b'}' {
        return Some(stop);
    }
    end -= 1;
    if let Some(key_at) = last_member {
        // Past the last member without reading it; nothing to read if it is the one the front
        // stopped at.
        if key_at <= stop {
            return Some(stop);
        }
        end = b[..key_at].trim_ascii_end().len();
        if end == 0 || b[end - 1] != b',' {
            return Some(stop);
        }
        end -= 1;
    }
    while !met.both() {
        // `end` is at the `}` or `,` after a member.
        let value_end = b[..end].trim_ascii_end().len();
        let Some(value_at) = value_start_back(b, value_end) else {
            break;
        };
        if value_at <= stop {
            break;
        }
        let colon = b[..value_at].trim_ascii_end().len();
        if colon == 0 || b[colon - 1] != b':' {
            break;
        }
        let key_end = b[..colon - 1].trim_ascii_end().len();
        if key_end == 0 || b[key_end - 1] != b'"' {
            break;
        }
        let Some(key_at) = string_start_back(b, key_end - 1) else {
            break;
        };
        met.note(head, &b[key_at..key_end], &b[value_at..value_end]);
        end = b[..key_at].trim_ascii_end().len();
        if end == 0 || b[end - 1] != b',' {
            break;
        }
        end -= 1;
    }
    Some(stop)
}

/// Past the white space from `i`.
fn space(b: &[u8], i: usize) -> usize {
    i + b
        .get(i..)
        .map_or(0, |rest| rest.len() - rest.trim_ascii_start().len())
}

/// Whether `c` ends a number, `true`, `false` or `null` (in valid JSON).
fn ends_scalar(c: u8) -> bool {
    matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
}

/// Where the value that ends just before `end` starts, in text read as valid JSON.
fn value_start_back(b: &[u8], end: usize) -> Option<usize> {
    let last = end.checked_sub(1)?;
    match b[last] {
        b'"' => string_start_back(b, last),
        b'}' | b']' => container_start_back(b, last),
        _ => Some(
            b[..end]
                .iter()
                .rposition(|&c| ends_scalar(c) || matches!(c, b':' | b'[' | b'{'))
                .map_or(0, |i| i + 1),
        ),
    }
}

/// The opening quote of the string whose closing quote is at `close`: the nearest quote before it
/// that an even number of backslashes precedes (inside a string every quote is escaped).
fn string_start_back(b: &[u8], close: usize) -> Option<usize> {
    let mut before = close;
    loop {
        let quote = memchr::memrchr(b'"', &b[..before])?;
        let slashes = b[..quote].iter().rev().take_while(|&&c| c == b'\\').count();
        if slashes % 2 == 0 {
            return Some(quote);
        }
        before = quote;
    }
}

/// The opening bracket of the object or array whose closing bracket is at `close`.
fn container_start_back(b: &[u8], close: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = close + 1;
    while i > 0 {
        i -= 1;
        match b[i] {
            b'"' => i = string_start_back(b, i)?,
            b'}' | b']' => depth += 1,
            b'{' | b'[' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// A JSON string value (`raw`, with its quotes) as a [`Name`], if it may be at most [`MAX_NAME`]
/// bytes long once unescaped.
fn short_string(raw: &[u8]) -> Option<Name<'_>> {
    if raw.len() > MAX_NAME * 6 + 2 {
        return None;
    }
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let escaped = has_backslash(inner);
    (escaped || inner.len() <= MAX_NAME).then_some(Name { inner, escaped })
}

/// Whether the short `text` holds a backslash (every byte looked at, so that the loop is done a
/// vector at a time, cheaper than a search on names this short).
fn has_backslash(text: &[u8]) -> bool {
    text.iter().fold(false, |found, &c| found | (c == b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_head_is_its_id_model_and_finish_reasons_and_no_content() {
        let head = answer_head(
            br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-2024-08-06",
            "choices":[{"index":0,"message":{"role":"assistant","content":"secret \"id\": x"},"finish_reason":"stop"},
            {"index":1,"message":{"role":"assistant","content":"x"},"finish_reason":"length"}],
            "usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
        )
        .unwrap();
        assert_eq!(head.id().as_deref(), Some("chatcmpl-1"));
        assert_eq!(head.model().as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(head.finish_reasons[..], ["stop", "length"]);
        let chunk = answer_head(
            br#"{"id":"c-\u0031","model":"m","choices":[{"delta":{},"finish_reason":null}, 3]}"#,
        )
        .unwrap();
        assert_eq!(chunk.id().as_deref(), Some("c-1"));
        assert!(chunk.finish_reasons.is_empty());
    }

    #[test]
    fn an_answer_head_leaves_out_what_is_not_a_short_string() {
        let long = "m".repeat(MAX_NAME + 1);
        let body = format!(r#"{{"id":7,"model":"{long}","choices":null}}"#);
        assert_eq!(answer_head(body.as_bytes()), Some(AnswerHead::default()));
        // Escaped, its length is known once unescaped: left out then.
        let long = "m".repeat(MAX_NAME - 6) + &"\\u006d".repeat(7);
        let body = format!(r#"{{"model":"{long}","id":"\u0063","choices":null}}"#);
        let head = answer_head(body.as_bytes()).unwrap();
        assert_eq!((head.model(), head.id().as_deref()), (None, Some("c")));
        assert_eq!(answer_head(b"not json"), None);
        assert_eq!(answer_head(b"[1]"), None);
    }

    proptest::proptest! {
        #[test]
        fn an_answer_head_agrees_with_serde_json(
            id in proptest::option::of("[a-z\\\\\"0-9 ]{0,12}"),
            reasons in proptest::collection::vec(proptest::option::of("[a-z_]{1,8}"), 0..20),
            extra in proptest::option::of("[\\[\\]{}a-z\"\\\\ ]{0,10}"),
        ) {
            // Content that holds the key itself, quoted, escaped once it is in the body.
            let content = extra.as_ref().map(|e| format!(r#"{e} "finish_reason": "trick" \"#));
            let choices: Vec<serde_json::Value> = reasons
                .iter()
                .map(|r| serde_json::json!({"message": {"content": content}, "finish_reason": r}))
                .collect();
            let body = serde_json::json!({"model": "m", "choices": choices, "id": id, "x": extra}).to_string();
            let head = answer_head(body.as_bytes()).unwrap();
            proptest::prop_assert_eq!(head.id(), id.clone());
            proptest::prop_assert_eq!(head.model(), Some("m".to_owned()));
            let want: Vec<&str> = reasons.iter().flatten().map(String::as_str).take(MAX_REASONS).collect();
            proptest::prop_assert_eq!(&head.finish_reasons[..], &want[..]);
        }

        #[test]
        fn any_bytes_read_as_an_answer_head_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Some(head) = answer_head(&bytes) {
                proptest::prop_assert!(head.finish_reasons.len() <= MAX_REASONS);
            }
        }
    }

    #[test]
    fn names_spelled_with_escapes_are_read_and_other_keys_are_not_taken_for_them() {
        for body in [
            &br#"{"\u0069d":"c","mod\u0065l":"m","choices":[]}"#[..],
            br#"{"choices":[],"\u0069\u0064":"c","\u006d\u006f\u0064\u0065\u006c":"m"}"#,
        ] {
            let head = answer_head(body).unwrap();
            assert_eq!(
                (head.id().as_deref(), head.model().as_deref()),
                (Some("c"), Some("m"))
            );
        }
        let head = answer_head(br#"{"\u0069dx":"c","\"model":"m","choices":[]}"#).unwrap();
        assert_eq!((head.id(), head.model()), (None, None));
    }

    #[test]
    fn the_search_for_finish_reasons_stops_at_the_number_expected() {
        let body = br#"{"id":"c","finish_reason":"top","choices":[{"finish_reason":"stop"},
            {"finish_reason":null},{"finish_reason":"length"},{"finish_reason":"tool_calls"}]}"#;
        let reasons = |expected| {
            let head = answer_head_before(body, None, expected).unwrap();
            assert_eq!(head.id().as_deref(), Some("c"));
            head.finish_reasons
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        // The top-level member read before the choices is not one; a null is not counted.
        assert_eq!(reasons(0), Vec::<String>::new());
        assert_eq!(reasons(1), ["stop"]);
        assert_eq!(reasons(2), ["stop", "length"]);
        assert_eq!(reasons(9), ["stop", "length", "tool_calls"]);
    }

    #[test]
    fn names_after_the_choices_are_read_from_the_back() {
        // Keys sorted, as a JSON writer without insertion order puts them; the choices hold an
        // `id` and a `model` of their own (a tool call's id), which are not the answer's.
        let body = br#"{"choices":[{"finish_reason":"tool_calls","message":{"tool_calls":[{"id":"call_1","model":"no"}]}}],
            "created":1,"id":"chatcmpl-9","model":"m-2","object":"chat.completion","usage":{"prompt_tokens":1,"x":[{"id":"u"}]}}  "#;
        let head = answer_head(body).unwrap();
        assert_eq!(head.id().as_deref(), Some("chatcmpl-9"));
        assert_eq!(head.model().as_deref(), Some("m-2"));
        assert_eq!(head.finish_reasons[..], ["tool_calls"]);
        // One before the choices and one after them.
        let head = answer_head(br#"{"model":"m","choices":[{"id":"no"}],"id":"c-\"1\""}"#).unwrap();
        assert_eq!(head.id().as_deref(), Some("c-\"1\""));
        assert_eq!(head.model().as_deref(), Some("m"));
        // Neither after the container: it is walked past from the back, and nothing is invented.
        let head = answer_head(br#"{"choices":[{"id":"no","model":"no"}],"n":null}"#).unwrap();
        assert_eq!(head, AnswerHead::default());
        // Cut: what the front holds.
        let head = answer_head(br#"{"id":"c","choices":[{"model":"no"}],"model":"#).unwrap();
        assert_eq!(
            (head.id().as_deref(), head.model().as_deref()),
            (Some("c"), None)
        );
    }

    proptest::proptest! {
        #[test]
        fn names_in_any_member_order_agree_with_serde_json(
            order in proptest::strategy::Strategy::prop_shuffle(
                proptest::strategy::Just((0..6).collect::<Vec<usize>>()),
            ),
            id in "[a-z\\\\\"0-9 ]{0,12}",
            model in proptest::option::of("[a-z\\\\\"0-9 \\]\\[{}]{0,12}"),
        ) {
            let members = [
                ("id", serde_json::json!(id)),
                ("model", serde_json::json!(model)),
                ("choices", serde_json::json!([{"id": "no", "model": "no", "x": "\"id\":\"no\""}])),
                ("usage", serde_json::json!({"model": "no", "n": [1, {"id": "no"}]})),
                ("created", serde_json::json!(-1.5e3)),
                ("flag", serde_json::json!(true)),
            ];
            let body = format!(
                "{{ {} }}",
                order
                    .iter()
                    .map(|&i| format!("{} : {}", serde_json::json!(members[i].0), members[i].1))
                    .collect::<Vec<_>>()
                    .join(" ,\n")
            );
            let head = answer_head(body.as_bytes()).unwrap();
            proptest::prop_assert_eq!(head.id(), Some(id.clone()));
            proptest::prop_assert_eq!(head.model(), model.clone());
        }
    }
}
