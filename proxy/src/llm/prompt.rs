//! The answers of prompt APIs (`POST <prefix>/prompts/<name>`), whole and streamed. A prompt call
//! goes upstream as a chat call; its answer, read into the neutral model whatever the provider, is
//! written here in the prompt API's own small format:
//!
//! - whole: `{"id", "object": "prompt.result", "model", "output", "finish_reason", "usage":
//!   {"input_tokens", "output_tokens", "total_tokens"}}`, where `output` is the text, or for JSON
//!   prompts the answer parsed;
//! - streamed: `event: delta` / `data: {"text": "…"}` for each piece of text, then `event: done` /
//!   `data: {"id", "model", "finish_reason", "usage"}` (with `output` parsed for JSON prompts), or
//!   `event: error` / `data: {"error": {…}}` in OpenAI's error shape.

use std::borrow::Cow;

use serde_json::{Value, json};

use super::chat::Answer;
use super::json_scan::{Cursor, is_string, members_of_valid};
use super::stream::{Encode, Finish, Piece, TokenCounts, openai_error_type, write_sse};

/// How much of an answer that is not JSON is quoted in the error about it.
const QUOTED: usize = 2048;

/// A JSON prompt's answer that is not JSON: the error message, quoting the start of the answer.
pub fn not_json(text: &str, error: &serde_json::Error) -> String {
    let mut end = text.len().min(QUOTED);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let more = if end < text.len() { "…" } else { "" };
    format!(
        "The model's answer is not the JSON this prompt promises ({error}); it began: {:?}{more}",
        &text[..end]
    )
}

/// The `output` of an answer: the text, or for JSON prompts the text parsed.
pub fn output_of(text: &str, json_output: bool) -> Result<Value, String> {
    if !json_output {
        return Ok(Value::String(text.to_string()));
    }
    serde_json::from_str(strip_fence(text)).map_err(|e| not_json(text, &e))
}

/// Models asked for JSON without a native structured-output mode sometimes wrap it in a Markdown
/// code fence: the fence is not part of the value.
fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    let Some(rest) = t.strip_prefix("```") else {
        return t;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").map(str::trim).unwrap_or(t)
}

fn usage_json(counts: &TokenCounts) -> Value {
    let u = counts.usage();
    json!({"input_tokens": u.input, "output_tokens": u.output, "total_tokens": u.input.saturating_add(u.output)})
}

/// A whole answer as the prompt API's result, or the message of a 502 when a JSON prompt's answer
/// is not JSON.
pub fn answer_to_prompt(answer: &Answer, json_output: bool) -> Result<Value, String> {
    let output = output_of(&answer.text, json_output)?;
    Ok(json!({
        "id": answer.id,
        "object": "prompt.result",
        "model": answer.model,
        "output": output,
        "finish_reason": answer.finish.openai(),
        "usage": usage_json(&answer.counts),
    }))
}

/// The last member called `name` (as a JSON reader keeps it), as its exact text.
fn member<'a>(members: &[(Cow<'a, str>, &'a str)], name: &str) -> Option<&'a str> {
    members
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
}

/// A member's JSON text if it is a string, else `""` (as the neutral reading has it).
fn string_or_empty(value: Option<&str>) -> &str {
    value
        .filter(|r| plain_string(r) || is_string(r))
        .unwrap_or("\"\"")
}

/// Whether `raw` is a JSON string of printable ASCII without escapes (ids, model names, finish
/// reasons): checked by one loop that the compiler vectorises, cheaper than a scan for such short
/// texts. `false` says only "not that simple"; [`is_string`] then decides.
fn plain_string(raw: &str) -> bool {
    raw.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .is_some_and(|inner| {
            inner.bytes().fold(true, |ok, b| {
                ok & (b' '..=b'~').contains(&b) & (b != b'"') & (b != b'\\')
            })
        })
}

/// What a whole answer's first choice says: its message's content (`None` without a message, the
/// text `"null"` for a message without content) and its finish reason.
struct FirstChoice<'a> {
    content: Option<&'a str>,
    reason: Option<&'a str>,
}

/// Reads the `choices` list at `at`: the first choice's parts, the other choices skipped. `None`
/// when the list or its first choice is not what a chat completion has.
fn first_choice<'a>(at: &mut Cursor<'a>) -> Option<FirstChoice<'a>> {
    let mut first = FirstChoice {
        content: None,
        reason: None,
    };
    at.enter_array()?;
    if !at.next_element()? {
        return None;
    }
    at.enter_object()?;
    while let Some(key) = at.next_key()? {
        match &*key {
            "message" => {
                first.content = Some("null");
                at.enter_object()?;
                while let Some(key) = at.next_key()? {
                    match &*key {
                        "content" => first.content = Some(at.value()?),
                        _ => at.skip()?,
                    }
                }
            }
            "finish_reason" => first.reason = Some(at.value()?),
            _ => at.skip()?,
        }
    }
    while at.next_element()? {
        at.skip()?;
    }
    Some(first)
}

/// A token count as the neutral reading has it: a whole number in u64's range, or nothing.
fn count(members: &[(Cow<'_, str>, &str)], name: &str) -> Option<u64> {
    member(members, name)?.parse().ok()
}

/// `n` in decimal at the end of `out`.
fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A whole OpenAI `chat.completion` answer written straight as the prompt API's result, without
/// a tree of values in between: the answer is skimmed for its parts (`json_scan`), the strings
/// copied into the result are checked, and its text goes into `output` as the JSON string it came
/// as. `None` when
/// the answer is not a JSON object or has a shape this reading leaves to [`Answer::from_openai`]
/// (no choices or message, content as a list of parts); `Some(Err)` is the 502 message of a JSON
/// prompt whose answer is not JSON.
pub fn openai_answer_to_prompt(
    whole: &[u8],
    json_output: bool,
) -> Option<Result<(Vec<u8>, TokenCounts), String>> {
    // The answer is read in one pass, stepping into the first choice's message and skimming past
    // everything else; what goes into the result as it came (strings) is checked, and the rest is
    // read as values. As a JSON reader does, the last of members with the same name counts.
    let mut at = Cursor::new(std::str::from_utf8(whole).ok()?);
    let (mut id, mut model, mut usage) = (None, None, None);
    let mut first: Option<FirstChoice<'_>> = None;
    at.enter_object()?;
    while let Some(key) = at.next_key()? {
        match &*key {
            "id" => id = Some(at.value()?),
            "model" => model = Some(at.value()?),
            "usage" => usage = Some(at.value()?),
            "choices" => first = Some(first_choice(&mut at)?),
            _ => at.skip()?,
        }
    }
    let FirstChoice { content, reason } = first?;
    let content = match content? {
        "null" => "\"\"",
        s if is_string(s) => s,
        _ => return None,
    };
    let counts = match usage.and_then(members_of_valid) {
        Some(usage) => TokenCounts {
            input: count(&usage, "prompt_tokens"),
            output: count(&usage, "completion_tokens"),
            cache_read: member(&usage, "prompt_tokens_details")
                .and_then(members_of_valid)
                .and_then(|d| count(&d, "cached_tokens")),
            cache_write: None,
        },
        None => TokenCounts::default(),
    };
    let reason: Cow<'_, str> = match reason {
        Some(r) if plain_string(r) => Cow::Borrowed(&r[1..r.len() - 1]),
        Some(r) if r.starts_with('"') => serde_json::from_str(r).ok()?,
        _ => Cow::Borrowed("stop"),
    };
    let mut out = Vec::with_capacity(content.len() + 256);
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(string_or_empty(id).as_bytes());
    out.extend_from_slice(b",\"object\":\"prompt.result\",\"model\":");
    out.extend_from_slice(string_or_empty(model).as_bytes());
    out.extend_from_slice(b",\"output\":");
    if json_output {
        let text: Cow<'_, str> = serde_json::from_str(content).ok()?;
        match output_of(&text, true) {
            Ok(value) => serde_json::to_writer(&mut out, &value).expect("JSON values serialise"),
            Err(message) => return Some(Err(message)),
        }
    } else {
        out.extend_from_slice(content.as_bytes());
    }
    let u = counts.usage();
    out.extend_from_slice(b",\"finish_reason\":\"");
    out.extend_from_slice(Finish::from_openai(&reason).openai().as_bytes());
    out.extend_from_slice(b"\",\"usage\":{\"input_tokens\":");
    decimal(&mut out, u.input);
    out.extend_from_slice(b",\"output_tokens\":");
    decimal(&mut out, u.output);
    out.extend_from_slice(b",\"total_tokens\":");
    decimal(&mut out, u.input.saturating_add(u.output));
    out.extend_from_slice(b"}}");
    Some(Ok((out, counts)))
}

/// The prompt API's stream: text deltas, then one `done` event.
pub struct PromptEncoder {
    id: String,
    model: String,
    json_output: bool,
    /// The whole text, kept only for JSON prompts (parsed at the end).
    text: String,
    finish: Option<Finish>,
    counts: TokenCounts,
    ended: bool,
}

impl PromptEncoder {
    /// An encoder for an answer of `model`; `json_output` parses the text at the end.
    pub fn new(model: &str, json_output: bool) -> Self {
        Self {
            id: format!("prompt-{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..)),
            model: model.to_string(),
            json_output,
            text: String::new(),
            finish: None,
            counts: TokenCounts::default(),
            ended: false,
        }
    }

    fn error(&mut self, status: u16, code: &str, message: &str, out: &mut Vec<u8>) {
        self.ended = true;
        write_sse(
            out,
            Some("error"),
            &json!({"error": {"message": message, "type": openai_error_type(status), "param": null, "code": code}}),
        );
    }
}

impl Encode for PromptEncoder {
    fn piece(&mut self, piece: Piece, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match piece {
            Piece::Meta { id, model } => {
                if let Some(m) = model.filter(|m| !m.is_empty()) {
                    self.model = m;
                }
                if let Some(id) = id.filter(|id| !id.is_empty()) {
                    self.id = id;
                }
            }
            Piece::Text(t) if !t.is_empty() => {
                if self.json_output {
                    self.text.push_str(&t);
                }
                write_sse(out, Some("delta"), &json!({ "text": t }));
            }
            // A prompt's answer is its text: reasoning and tool calls are not part of it.
            Piece::Text(_)
            | Piece::Reasoning(_)
            | Piece::ToolStart { .. }
            | Piece::ToolArgs { .. } => {}
            Piece::Finish(f) => {
                self.finish.get_or_insert(f);
            }
            Piece::Usage(c) => self.counts.merge(c),
            Piece::Error { status, message } => self.fail(status, &message, out),
            Piece::Done => self.finish(out),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let Some(finish) = self.finish else {
            self.fail(502, super::stream::CUT_SHORT, out);
            return;
        };
        let mut done = json!({
            "id": self.id,
            "model": self.model,
            "finish_reason": finish.openai(),
            "usage": usage_json(&self.counts),
        });
        if self.json_output {
            match output_of(&self.text, true) {
                Ok(output) => done["output"] = output,
                Err(message) => {
                    self.error(502, "invalid_output", &message, out);
                    return;
                }
            }
        }
        self.ended = true;
        write_sse(out, Some("done"), &done);
    }

    fn fail(&mut self, status: u16, message: &str, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let code = if status == 429 {
            "upstream_rate_limited"
        } else {
            "upstream_stream_error"
        };
        self.error(status, code, message, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(pieces: Vec<Piece>, json_output: bool) -> String {
        let mut e = PromptEncoder::new("m", json_output);
        let mut out = Vec::new();
        for p in pieces {
            e.piece(p, &mut out);
        }
        e.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn counts() -> TokenCounts {
        TokenCounts {
            input: Some(7),
            output: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn streams_text_deltas_then_done_with_usage() {
        let out = events(
            vec![
                Piece::Meta {
                    id: Some("abc".into()),
                    model: Some("gpt".into()),
                },
                Piece::Text("Hel".into()),
                Piece::Text("lo".into()),
                Piece::Finish(Finish::Stop),
                Piece::Usage(counts()),
                Piece::Done,
            ],
            false,
        );
        assert_eq!(
            out,
            "event: delta\ndata: {\"text\":\"Hel\"}\n\n\
             event: delta\ndata: {\"text\":\"lo\"}\n\n\
             event: done\ndata: {\"finish_reason\":\"stop\",\"id\":\"abc\",\"model\":\"gpt\",\
             \"usage\":{\"input_tokens\":7,\"output_tokens\":3,\"total_tokens\":10}}\n\n"
        );
    }

    #[test]
    fn json_streams_end_with_the_parsed_output_or_an_error() {
        let ok = events(
            vec![
                Piece::Text("{\"a\":".into()),
                Piece::Text(" 1}".into()),
                Piece::Finish(Finish::Stop),
            ],
            true,
        );
        assert!(ok.contains("\"output\":{\"a\":1}"), "{ok}");
        let bad = events(
            vec![Piece::Text("{\"a\":".into()), Piece::Finish(Finish::Length)],
            true,
        );
        assert!(
            bad.contains("event: error") && bad.contains("invalid_output"),
            "{bad}"
        );
        assert!(!bad.contains("event: done"), "{bad}");
    }

    #[test]
    fn a_stream_cut_short_ends_with_an_error_event() {
        let out = events(vec![Piece::Text("x".into())], false);
        assert!(
            out.ends_with("\"type\":\"server_error\"}}\n\n") || out.contains("event: error"),
            "{out}"
        );
        assert!(!out.contains("event: done"));
    }

    #[test]
    fn whole_answers_parse_json_and_fenced_json() {
        let answer = |text: &str| Answer {
            id: "id1".into(),
            model: "m".into(),
            text: text.into(),
            reasoning: Default::default(),
            tool_calls: Vec::new(),
            finish: Finish::Stop,
            counts: counts(),
        };
        let v = answer_to_prompt(&answer("plain"), false).unwrap();
        assert_eq!(v["output"], "plain");
        assert_eq!(v["usage"]["total_tokens"], 10);
        let v = answer_to_prompt(&answer("```json\n{\"x\": [1]}\n```"), true).unwrap();
        assert_eq!(v["output"], json!({"x": [1]}));
        let e = answer_to_prompt(&answer("not json"), true).unwrap_err();
        assert!(
            e.contains("not the JSON") && e.contains("\"not json\""),
            "{e}"
        );
    }

    /// The quick reading of a whole answer and the neutral one agree, value for value.
    fn both_readings(answer: &Value, json_output: bool) -> Option<(Value, Value)> {
        let bytes = serde_json::to_vec(answer).unwrap();
        let quick = openai_answer_to_prompt(&bytes, json_output)?;
        let neutral = answer_to_prompt(&Answer::from_openai(answer).unwrap(), json_output);
        match (quick, neutral) {
            (Ok((body, counts)), Ok(v)) => {
                let neutral_counts = Answer::from_openai(answer).unwrap().counts;
                assert_eq!(counts.usage(), neutral_counts.usage());
                Some((serde_json::from_slice(&body).expect("valid JSON"), v))
            }
            (Err(a), Err(b)) => Some((Value::String(a), Value::String(b))),
            (a, b) => panic!("the readings disagree: {a:?} / {b:?}"),
        }
    }

    #[test]
    fn the_quick_reading_of_an_answer_matches_the_neutral_one() {
        let cases = [
            (
                json!({"id": "c1", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant",
                    "content": "He said \"hi\"\n\u{2028}é"}, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13,
                              "prompt_tokens_details": {"cached_tokens": 2}}}),
                false,
            ),
            (
                json!({"choices": [{"message": {"content": null, "tool_calls": []}}]}),
                false,
            ),
            (
                json!({"id": 5, "model": null, "choices": [{"message": {"content": "```json\n{\"a\": [1, 2]}\n```"},
                    "finish_reason": null}]}),
                true,
            ),
            (
                json!({"choices": [{"message": {"content": "not json"}, "finish_reason": "stop"}]}),
                true,
            ),
            (
                json!({"id": ["x"], "choices": [{"message": {"content": "a"}, "finish_reason": 3},
                    {"message": {"content": "second"}}],
                    "usage": {"prompt_tokens": -1, "completion_tokens": 2.0,
                              "prompt_tokens_details": {"cached_tokens": "1"}}}),
                false,
            ),
            (
                json!({"choices": [{"message": {"content": "x"}, "finish_reason": "tool_calls"}],
                    "usage": {"prompt_tokens": 18446744073709551615u64, "completion_tokens": 1e3}}),
                false,
            ),
        ];
        for (answer, json_output) in cases {
            let (quick, neutral) = both_readings(&answer, json_output).expect("read quickly");
            assert_eq!(quick, neutral, "{answer}");
        }
    }

    #[test]
    fn answers_of_other_shapes_are_left_to_the_neutral_reading() {
        for answer in [
            json!({"choices": []}),
            json!({"choices": [{"message": {"content": [{"type": "text", "text": "a"}]}}]}),
            json!({"choices": [{"finish_reason": "stop"}]}),
            json!({"id": "x"}),
            json!([1]),
        ] {
            let bytes = serde_json::to_vec(&answer).unwrap();
            assert!(openai_answer_to_prompt(&bytes, false).is_none(), "{answer}");
        }
        assert!(openai_answer_to_prompt(b"{\"choices\": [", false).is_none());
        // Escapes in a member the reading compares are decoded first.
        let escaped =
            br#"{"choices": [{"message": {"content": "x"}, "finish_reason": "tool\u005fcalls"}]}"#;
        let (body, _) = openai_answer_to_prompt(escaped, false).unwrap().unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["finish_reason"], "tool_calls");
    }

    proptest::proptest! {
        /// The quick check never calls a text a plain string that a JSON reader would refuse or
        /// read as another text.
        #[test]
        fn plain_strings_are_strings_of_their_own_text(raw in "\"?[ -~\\x00-\\x1f\\x7f\u{e9}]{0,24}\"?") {
            if plain_string(&raw) {
                proptest::prop_assert!(is_string(&raw));
                let read: String = serde_json::from_str(&raw).expect("a JSON string");
                proptest::prop_assert_eq!(read.as_str(), &raw[1..raw.len() - 1]);
            }
        }

        #[test]
        fn any_text_answer_reads_the_same_both_ways(
            content in "\\PC*", id in "[a-z0-9-]{0,12}", input in 0u64..1 << 40, output in 0u64..1 << 40,
            reason in proptest::sample::select(vec!["stop", "length", "tool_calls", "content_filter", "other"]),
        ) {
            let answer = json!({"id": id, "model": "m", "choices": [{"message": {"content": content},
                "finish_reason": reason}], "usage": {"prompt_tokens": input, "completion_tokens": output}});
            let (quick, neutral) = both_readings(&answer, false).expect("read quickly");
            proptest::prop_assert_eq!(quick, neutral);
        }

        /// Whatever an upstream sends, a result written from it is valid JSON.
        #[test]
        fn any_answer_text_yields_valid_json_or_is_left_alone(
            bytes in proptest::collection::vec(proptest::sample::select(
                b"{}[]\",:\\ 0-.eE+tfnuchoiesmgaytpx\x01".to_vec()), 0..96),
            content in "\\PC{0,8}",
        ) {
            for text in [
                bytes.clone(),
                format!(r#"{{"choices":[{{"message":{{"content":{}}}}}]}}"#, String::from_utf8_lossy(&bytes)).into_bytes(),
                format!(r#"{{"id":{},"choices":[{{"message":{{"content":"{content}"}}}}]}}"#, String::from_utf8_lossy(&bytes)).into_bytes(),
            ] {
                if let Some(Ok((body, _))) = openai_answer_to_prompt(&text, false) {
                    proptest::prop_assert!(serde_json::from_slice::<Value>(&body).is_ok(), "{:?}", String::from_utf8_lossy(&body));
                }
            }
        }
    }
}
