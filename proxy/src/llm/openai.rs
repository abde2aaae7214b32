//! The OpenAI wire format, as far as the proxy needs to understand it: the top level of a request body
//! (to read `model`/`stream` and rewrite them) and the `usage` object of responses.
//!
//! Request bodies are parsed once into their top-level members, each kept as the raw JSON text the
//! client sent, so re-encoding for upstream copies every other member byte for byte.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use crate::llm::answer_head::{AnswerHead, Name, answer_head, answer_head_before};

use crate::error::ApiError;
use crate::llm::Usage;

/// A JSON object key, borrowed from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The top-level members of a JSON request object, in the client's order.
pub struct RequestDoc<'a> {
    members: Vec<(Cow<'a, str>, &'a str)>,
}

/// The top-level members of a request object as places in its text: read once by a validating scan
/// and handed on, so the body is not split again (its strings may have been edited since, the places
/// moved with them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split(pub Vec<(SplitKey, Range<usize>)>);

/// A member's key in a [`Split`]: where its text lies, or the text itself when escapes were decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitKey {
    /// The key's text (inside its quotes).
    At(Range<usize>),
    /// The key's decoded text.
    Decoded(String),
}

impl Split {
    /// The places of `members`, slices of `text`; `None` if one is not.
    pub fn of(text: &str, members: Vec<(Cow<'_, str>, &str)>) -> Option<Split> {
        let base = text.as_ptr() as usize;
        let place = |s: &str| {
            let start = (s.as_ptr() as usize).checked_sub(base)?;
            (start + s.len() <= text.len()).then_some(start..start + s.len())
        };
        let mut places = Vec::with_capacity(members.len());
        for (key, value) in members {
            let key = match key {
                Cow::Borrowed(k) => SplitKey::At(place(k)?),
                Cow::Owned(k) => SplitKey::Decoded(k),
            };
            places.push((key, place(value)?));
        }
        Some(Split(places))
    }

    /// Each place moved by `moved`, which maps an offset of the text split to the same place in
    /// the text it became.
    pub fn moved(mut self, moved: impl Fn(usize) -> usize) -> Split {
        for (key, value) in &mut self.0 {
            if let SplitKey::At(k) = key {
                *k = moved(k.start)..moved(k.end);
            }
            *value = moved(value.start)..moved(value.end);
        }
        self
    }
}

/// One member's value: its JSON text exactly as the client sent it.
#[derive(Clone, Copy, Debug)]
pub struct Raw<'a>(&'a str);

impl<'a> Raw<'a> {
    /// The JSON text.
    pub fn get(&self) -> &'a str {
        self.0
    }
}

/// serde_json's reading of the top level, for the bodies the quick scan refuses.
struct SerdeDoc<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for SerdeDoc<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DocVisitor;
        impl<'de> Visitor<'de> for DocVisitor {
            type Value = SerdeDoc<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SerdeDoc<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((Key(k), v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((k, v));
                }
                Ok(SerdeDoc(members))
            }
        }
        d.deserialize_map(DocVisitor)
    }
}

/// Why a request body was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not a JSON object.
    #[error("the request body is not a valid JSON object: {0}")]
    Malformed(#[from] serde_json::Error),
    /// `model` is absent or not a string.
    #[error("you must provide a model parameter")]
    MissingModel,
}

impl<'a> RequestDoc<'a> {
    /// Parses the top level of a request body.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, RequestError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::parse_str(text),
            Err(_) => Self::parse_serde(bytes),
        }
    }

    /// Parses the top level of a request body already known to be UTF-8 (a member of another).
    pub fn parse_str(text: &'a str) -> Result<Self, RequestError> {
        match crate::llm::json_scan::object_members(text) {
            Some(members) => Ok(Self { members }),
            None => Self::parse_serde(text.as_bytes()),
        }
    }

    /// The top level of a body Tollgate wrote itself (a rendered prompt), which is valid JSON by
    /// construction: split with a skim instead of a second validation. Should it not split (it
    /// always does; the rendering proptest holds it), it is read as any caller's body is.
    pub fn parse_own(bytes: &'a [u8]) -> Result<Self, RequestError> {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Self::parse_serde(bytes);
        };
        match crate::llm::json_scan::members_of_valid(text) {
            Some(members) => Ok(Self { members }),
            None => Self::parse_str(text),
        }
    }

    /// The members of `bytes` at the places `split` says (`None` if a place is not in it).
    pub fn from_split(bytes: &'a [u8], split: &Split) -> Option<Self> {
        let text = crate::escape::utf8(bytes)?;
        let mut members = Vec::with_capacity(split.0.len());
        for (key, value) in &split.0 {
            let key = match key {
                SplitKey::At(k) => Cow::Borrowed(text.get(k.clone())?),
                SplitKey::Decoded(k) => Cow::Owned(k.clone()),
            };
            members.push((key, text.get(value.clone())?));
        }
        Some(Self { members })
    }

    fn parse_serde(bytes: &'a [u8]) -> Result<Self, RequestError> {
        // Refused by the quick scan: serde_json says what is wrong (and, should the two ever
        // disagree, its reading is used).
        let SerdeDoc(members) = serde_json::from_slice(bytes)?;
        let members = members.into_iter().map(|(k, v)| (k, v.get())).collect();
        Ok(Self { members })
    }

    /// Every member, in the client's order, each value as its exact JSON text.
    pub fn members(&self) -> &[(Cow<'a, str>, &'a str)] {
        &self.members
    }

    /// The raw value of a member.
    pub fn get(&self, name: &str) -> Option<Raw<'a>> {
        self.members
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| Raw(v))
    }

    /// The `model` member.
    pub fn model(&self) -> Result<Cow<'a, str>, RequestError> {
        let raw = self.get("model").ok_or(RequestError::MissingModel)?.get();
        // A string without escapes is its own text (the body was validated when it was read);
        // serde would copy it into a String even for a `Cow`.
        let plain = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .filter(|inner| !inner.contains(['\\', '"']));
        let model: Cow<'a, str> = match plain {
            Some(inner) => Cow::Borrowed(inner),
            None => serde_json::from_str(raw).map_err(|_| RequestError::MissingModel)?,
        };
        if model.is_empty() {
            return Err(RequestError::MissingModel);
        }
        Ok(model)
    }

    /// Whether the body has exactly one `model` member and it is `name` (so re-encoding for an
    /// upstream serving `name` would change nothing that matters).
    pub fn only_model_is(&self, name: &str) -> bool {
        let mut models = self.members.iter().filter(|(k, _)| k == "model");
        let only = models.next().is_some() && models.next().is_none();
        only && self.model().is_ok_and(|m| m == name)
    }

    /// Whether `stream` is `true`.
    pub fn stream(&self) -> bool {
        self.get("stream").is_some_and(|v| v.get() == "true")
    }

    /// Whether the client itself asked for `stream_options.include_usage`.
    pub fn include_usage_requested(&self) -> bool {
        #[derive(Deserialize)]
        struct StreamOptions {
            #[serde(default)]
            include_usage: bool,
        }
        self.get("stream_options")
            .and_then(|v| serde_json::from_str::<StreamOptions>(v.get()).ok())
            .is_some_and(|o| o.include_usage)
    }

    /// The body to send upstream: `model` replaced by the backend's model and, for streams,
    /// `stream_options.include_usage` forced on so the final chunk carries usage.
    pub fn encode_for_upstream(&self, upstream_model: &str, stream: bool) -> Vec<u8> {
        let size: usize = self
            .members
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum();
        let mut out = Vec::with_capacity(size + upstream_model.len() + 48);
        out.push(b'{');
        let mut first = true;
        let mut push_key = |out: &mut Vec<u8>, key: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *out, key).expect("key serialises");
            out.push(b':');
        };
        let mut wrote_options = false;
        for (key, value) in &self.members {
            match key.as_ref() {
                "model" => {
                    push_key(&mut out, key);
                    serde_json::to_writer(&mut out, upstream_model).expect("string serialises");
                }
                "stream_options" if stream => {
                    if wrote_options {
                        continue;
                    }
                    wrote_options = true;
                    push_key(&mut out, key);
                    let mut options =
                        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(value)
                            .unwrap_or_default();
                    options.insert("include_usage".into(), serde_json::Value::Bool(true));
                    serde_json::to_writer(&mut out, &options).expect("map serialises");
                }
                _ => {
                    push_key(&mut out, key);
                    out.extend_from_slice(value.as_bytes());
                }
            }
        }
        if stream && !wrote_options {
            push_key(&mut out, "stream_options");
            out.extend_from_slice(br#"{"include_usage":true}"#);
        }
        out.push(b'}');
        out
    }
}

/// OpenAI's `usage` object (chat and embeddings).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default)]
pub struct WireUsage {
    /// Prompt tokens (`input_tokens` in the Responses API).
    #[serde(default, alias = "input_tokens")]
    pub prompt_tokens: u64,
    /// Completion tokens (absent for embeddings; `output_tokens` in the Responses API).
    #[serde(default, alias = "output_tokens")]
    pub completion_tokens: u64,
    /// Sum.
    #[serde(default)]
    pub total_tokens: u64,
    /// Details of the prompt tokens (`input_tokens_details` in the Responses API).
    #[serde(default, alias = "input_tokens_details")]
    pub prompt_tokens_details: Option<WireTokenDetails>,
}

/// `prompt_tokens_details`: how many prompt tokens came from the provider's cache.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default)]
pub struct WireTokenDetails {
    /// Prompt tokens read from the cache.
    #[serde(default)]
    pub cached_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Usage {
            input: u.prompt_tokens,
            output: u.completion_tokens,
            cache_read: u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
            cache_write: 0,
        }
    }
}

/// Reads `usage` out of a whole (non-streamed) response body.
///
/// Providers put `usage` last, after the (possibly large) answer, so the key is looked for from the
/// end and only its value is parsed. A quoted `"usage"` inside a string is escaped (`\"usage\"`), so an
/// unescaped one followed by `:` is a key. If that value does not parse, the whole body is read —
/// unless `body` is only the `tail` of the answer, in which case the usage is unknown. (The proxy
/// reads it with [`usage_and_last_member`].)
#[cfg(test)]
pub fn usage_of_body(body: &[u8], tail: bool) -> Option<Usage> {
    usage_and_last_member(body, tail).0
}

/// [`usage_of_body`], and where the body's last top-level member starts (its key's opening quote)
/// when that member is the `usage` just read, for [`answer_head_before`] to stop at: the body is
/// then walked back over once.
pub fn usage_and_last_member(body: &[u8], tail: bool) -> (Option<Usage>, Option<usize>) {
    if let Some((found, last)) = usage_from_the_end(body) {
        return (found, last);
    }
    if tail {
        return (None, None);
    }
    #[derive(Deserialize)]
    struct Probe {
        usage: Option<WireUsage>,
    }
    let usage = serde_json::from_slice::<Probe>(body)
        .ok()
        .and_then(|p| p.usage)
        .map(Usage::from);
    (usage, None)
}

/// `Some(usage)` when the last `"usage"` key's value parses (`Some(None)` for `null`), with the
/// key's offset when only the closing brace of the body's object follows the value; `None` when
/// there is no such key or its value is not a usage object.
fn usage_from_the_end(body: &[u8]) -> Option<(Option<Usage>, Option<usize>)> {
    const KEY: &[u8] = b"\"usage\"";
    // Quotes are a few bytes apart in JSON and the key is near the end: walking back over them is
    // cheaper than a substring search.
    let at = memchr::memrchr_iter(b'"', body).find(|&i| body[i..].starts_with(KEY))?;
    if at > 0 && body[at - 1] == b'\\' {
        return None;
    }
    let rest = &body[at + KEY.len()..];
    let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[colon] != b':' {
        return None;
    }
    let value = &rest[colon + 1..];
    let mut values = serde_json::Deserializer::from_slice(value).into_iter::<Option<WireUsage>>();
    if let Some(Ok(usage)) = values.next() {
        // Only `}` after the value: the object holding the key is the body's own (escaped quotes
        // aside, which the check above and valid JSON rule out), and `usage` is its last member.
        let last = (value[values.byte_offset()..].trim_ascii() == b"}").then_some(at);
        return Some((usage.map(Usage::from), last));
    }
    // Not followed by a delimiter, or not a usage object: read as the key's value alone.
    let mut value = serde_json::Deserializer::from_slice(value);
    let usage = Option::<WireUsage>::deserialize(&mut value).ok()?;
    Some((usage.map(Usage::from), None))
}

/// What a streamed chunk says about usage.
pub struct ChunkUsage {
    /// The usage it carries.
    pub usage: Option<Usage>,
    /// Whether it is the usage-only chunk (`choices: []`) that `include_usage` adds at the end.
    pub usage_only: bool,
}

/// Reads `usage` out of one chunk's `data:` payload.
pub fn usage_of_chunk(payload: &[u8]) -> Option<ChunkUsage> {
    #[derive(Deserialize)]
    struct Probe {
        usage: Option<WireUsage>,
        choices: Option<Vec<de::IgnoredAny>>,
    }
    let probe: Probe = serde_json::from_slice(payload).ok()?;
    let usage = probe.usage.map(Usage::from);
    Some(ChunkUsage {
        usage,
        usage_only: usage.is_some() && probe.choices.is_some_and(|c| c.is_empty()),
    })
}

/// Parses a JSON request body's top level, with OpenAI's wording for the usual mistakes.
/// `own` says the body is one Tollgate wrote itself (see [`RequestDoc::parse_own`]).
/// With `split`, the body was split before (see [`Split`]) and is not split again.
pub fn parse_request<'a>(
    bytes: &'a [u8],
    own: bool,
    split: Option<&Split>,
) -> Result<(RequestDoc<'a>, Cow<'a, str>), ApiError> {
    let doc = match split.and_then(|split| RequestDoc::from_split(bytes, split)) {
        Some(doc) => Ok(doc),
        None if own => RequestDoc::parse_own(bytes),
        None => RequestDoc::parse(bytes),
    }
    .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
    let model = doc.model().map_err(|e| match e {
        RequestError::MissingModel => {
            ApiError::bad_request("missing_required_parameter", e.to_string()).with_param("model")
        }
        RequestError::Malformed(_) => ApiError::bad_request("invalid_json", e.to_string()),
    })?;
    Ok((doc, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::answer_head::MAX_REASONS;

    #[test]
    fn the_usage_reader_tells_where_the_last_member_starts() {
        let body = br#"{"choices":[{"finish_reason":"stop","message":{"content":"\"usage\":{}}"}}],
            "id":"c-1","model":"m","usage":{"prompt_tokens":1,"completion_tokens":2}} "#;
        let (usage, last) = usage_and_last_member(body, false);
        assert_eq!(usage.map(|u| (u.input, u.output)), Some((1, 2)));
        let at = last.unwrap();
        assert!(body[at..].starts_with(b"\"usage\""));
        let head = answer_head_before(body, last, MAX_REASONS).unwrap();
        assert_eq!(head, answer_head(body).unwrap());
        assert_eq!(
            (head.id().as_deref(), head.model().as_deref()),
            (Some("c-1"), Some("m"))
        );
        // Not the last member, nested, or the only container: no offset, or nothing behind it.
        for body in [
            &br#"{"usage":{"prompt_tokens":1},"id":"c"}"#[..],
            br#"{"id":"c","x":{"usage":null}}"#,
            br#"{"usage":null,"id":"c"}"#,
        ] {
            assert_eq!(usage_and_last_member(body, false).1, None);
        }
        let body = br#"{"id":"c","model":"m","usage":{"prompt_tokens":1}}"#;
        let last = usage_and_last_member(body, false).1;
        assert_eq!(last, Some(22));
        assert_eq!(
            answer_head_before(body, last, MAX_REASONS),
            answer_head(body)
        );
    }

    proptest::proptest! {
        #[test]
        fn the_head_read_up_to_the_usage_is_the_head_read_whole(
            order in proptest::strategy::Strategy::prop_shuffle(
                proptest::strategy::Just((0..5).collect::<Vec<usize>>()),
            ),
            id in "[a-z\\\\\"0-9 ]{0,12}",
            usage in proptest::option::of(0u64..5),
        ) {
            let members = [
                ("id", serde_json::json!(id)),
                ("model", serde_json::json!("m")),
                ("choices", serde_json::json!([{"id": "no", "finish_reason": "stop"}])),
                ("usage", serde_json::json!(usage.map(|n| serde_json::json!({"prompt_tokens": n, "x": [{"id": "no"}]})))),
                ("created", serde_json::json!(1)),
            ];
            let body = format!(
                "{{ {} }}\n",
                order
                    .iter()
                    .map(|&i| format!("{} : {}", serde_json::json!(members[i].0), members[i].1))
                    .collect::<Vec<_>>()
                    .join(" ,\n")
            );
            let (read, last) = usage_and_last_member(body.as_bytes(), false);
            proptest::prop_assert_eq!(read.map(|u| u.input), usage);
            proptest::prop_assert_eq!(last.is_some(), order[4] == 3);
            let head = answer_head_before(body.as_bytes(), last, MAX_REASONS);
            proptest::prop_assert_eq!(&head, &answer_head(body.as_bytes()));
            let head = head.unwrap();
            proptest::prop_assert_eq!(head.id(), Some(id.clone()));
            proptest::prop_assert_eq!(head.model(), Some("m".to_owned()));
            proptest::prop_assert_eq!(&head.finish_reasons[..], ["stop"]);
        }
    }

    #[test]
    fn documents_too_deep_for_the_scan_are_read_by_serde_json() {
        let text = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let doc = RequestDoc::parse(text.as_bytes()).unwrap();
        assert_eq!(doc.get("a").unwrap().get().len(), 200_001);
    }

    #[test]
    fn rewrites_model_and_keeps_the_rest() {
        let body = br#"{"model":"front","messages":[{"role":"user","content":"hi \"there\""}],"temperature":0.5,"x":{"a":[1,2]}}"#;
        let doc = RequestDoc::parse(body).unwrap();
        assert_eq!(doc.model().unwrap(), "front");
        assert!(!doc.stream());
        let out = doc.encode_for_upstream("back", false);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let mut want: serde_json::Value = serde_json::from_slice(body).unwrap();
        want["model"] = "back".into();
        assert_eq!(v, want);
    }

    #[test]
    fn knows_when_the_body_can_go_as_it_is() {
        let doc = RequestDoc::parse(br#"{"model":"m","messages":[]}"#).unwrap();
        assert!(doc.only_model_is("m"));
        assert!(!doc.only_model_is("other"));
        // A repeated model must be rewritten: upstream might read the first one.
        let doc = RequestDoc::parse(br#"{"model":"x","model":"m"}"#).unwrap();
        assert!(!doc.only_model_is("m"));
    }

    #[test]
    fn reads_the_model_with_and_without_escapes() {
        let doc = RequestDoc::parse(br#"{"model":"gpt-4o"}"#).unwrap();
        assert!(matches!(doc.model(), Ok(Cow::Borrowed("gpt-4o"))));
        let doc = RequestDoc::parse(br#"{"model":"gpt\u002d4o \"x\""}"#).unwrap();
        assert_eq!(doc.model().unwrap(), "gpt-4o \"x\"");
        for body in [
            &br#"{"model":""}"#[..],
            br#"{"model":4}"#,
            br#"{"model":null}"#,
        ] {
            let doc = RequestDoc::parse(body).unwrap();
            assert!(matches!(doc.model(), Err(RequestError::MissingModel)));
        }
    }

    #[test]
    fn forces_include_usage_on_streams() {
        let doc = RequestDoc::parse(br#"{"model":"m","stream":true}"#).unwrap();
        assert!(doc.stream());
        assert!(!doc.include_usage_requested());
        let v: serde_json::Value =
            serde_json::from_slice(&doc.encode_for_upstream("u", true)).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);

        let doc = RequestDoc::parse(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":false,"other":1}}"#,
        )
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&doc.encode_for_upstream("u", true)).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["other"], 1);
    }

    #[test]
    fn refuses_bad_bodies() {
        assert!(RequestDoc::parse(b"[1]").is_err());
        assert!(RequestDoc::parse(b"{").is_err());
        let doc = RequestDoc::parse(br#"{"model":3}"#).unwrap();
        assert!(doc.model().is_err());
        let doc = RequestDoc::parse(br#"{"mod\u0065l":"esc"}"#).unwrap();
        assert_eq!(doc.model().unwrap(), "esc");
    }

    #[test]
    fn reads_usage() {
        let u = usage_of_body(
            br#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            false,
        )
        .unwrap();
        assert_eq!((u.input, u.output), (3, 4));
        // From the end: a "usage" inside a string is escaped and skipped; spaces around the colon.
        let u = usage_of_body(br#"{"content":"say \"usage\": 9","usage" : {"prompt_tokens":5,"completion_tokens":6}}"#, false)
        .unwrap();
        assert_eq!((u.input, u.output), (5, 6));
        let u = usage_of_body(br#"{"usage":{"prompt_tokens":2,"completion_tokens":3},"content":"a \"usage\": 1, \"usage"}"#, false)
        .unwrap();
        assert_eq!((u.input, u.output), (2, 3));
        assert!(usage_of_body(br#"{"id":"x","usage":null}"#, false).is_none());
        assert!(usage_of_body(br#"{"id":"x"}"#, false).is_none());
        // A value that is not a usage object: the whole body decides.
        let u = usage_of_body(
            br#"{"usage":{"prompt_tokens":1,"completion_tokens":1},"note":{"usage":"n/a"}}"#,
            false,
        )
        .unwrap();
        assert_eq!((u.input, u.output), (1, 1));
        let c = usage_of_chunk(
            br#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
        )
        .unwrap();
        assert!(c.usage_only);
        let c = usage_of_chunk(br#"{"choices":[{"index":0}],"usage":null}"#).unwrap();
        assert!(c.usage.is_none() && !c.usage_only);
    }
}
