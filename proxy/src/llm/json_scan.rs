//! A validating scan of a JSON object's top level: the members as (key, raw value text), or `None`
//! when the text is not exactly one valid JSON object (RFC 8259) or nests deeper than 128 levels.
//!
//! It exists for speed: every request body is checked, and serde_json spends most of its time on the
//! members the proxy never reads. A `None` costs nothing in accuracy: the caller then asks serde_json,
//! which says what is wrong (or, should the two ever disagree, parses the body itself).

use std::borrow::Cow;
use std::ops::Range;

/// Deepest nesting of arrays and objects, the top-level object included. The scan recurses; deeper
/// text is left to serde_json, which reads it without recursion.
const MAX_DEPTH: usize = 128;

/// Members as (key, raw value text), in order.
pub type Members<'t> = Vec<(Cow<'t, str>, &'t str)>;

/// The members of the object `text`, in order, each value as its exact text (no surrounding space).
pub fn object_members(text: &str) -> Option<Members<'_>> {
    object_members_and(text, "").map(|(members, _)| members)
}

/// [`object_members`], and in the same pass the members of the last top-level member named `inner`
/// when that member is an object (`None` when there is none or it is something else): a body and
/// its one nested object of interest are checked and split reading each byte once.
pub fn object_members_and<'t>(
    text: &'t str,
    inner: &str,
) -> Option<(Members<'t>, Option<Members<'t>>)> {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    s.space();
    let mut nested = None;
    let members = s.members(text, MAX_DEPTH, inner, &mut nested)?;
    s.space();
    (s.i == s.b.len()).then_some((members, nested))
}

/// Which members of an object hold text (the guardrails' reading of a request): given whether the
/// enclosing value is text, the depth of the object (0 for the top level) and a member's key,
/// whether the member's value is text; `None` to pass over the member.
pub type Select = fn(bool, usize, &str) -> Option<bool>;

/// A string literal [`object_members_picking`] picked: its range (quotes included) and whether it
/// holds escapes.
pub type Picked = (Range<usize>, bool);

/// [`object_members`], and in the same validating pass the string literals `select` marks as text,
/// in document order: a body's texts are found without a second walk. `None` where
/// [`object_members`] says `None`, and also where a key's escapes do not decode.
pub fn object_members_picking(text: &str, select: Select) -> Option<(Members<'_>, Vec<Picked>)> {
    let mut p = Picking {
        s: Scanner {
            b: text.as_bytes(),
            i: 0,
        },
        select,
        // A chat request's system and user messages and a few more, without growing.
        picked: Vec::with_capacity(4),
    };
    p.s.space();
    let members = p.members(text, MAX_DEPTH)?;
    p.s.space();
    (p.s.i == p.s.b.len()).then_some((members, p.picked))
}

/// The text of the key whose literal (quotes included) is `text[literal]`: borrowed, unless it
/// holds escapes.
fn key_text(text: &str, literal: Range<usize>, escaped: bool) -> Option<Cow<'_, str>> {
    Some(if escaped {
        Cow::Owned(serde_json::from_str::<String>(text.get(literal)?).ok()?)
    } else {
        Cow::Borrowed(text.get(literal.start + 1..literal.end - 1)?)
    })
}

/// Where the string starting at `b[at]` (a `"`) ends, just past its closing quote, in text already
/// known to be valid JSON; `None` when no string starts there or it does not end.
pub fn string_end(b: &[u8], at: usize) -> Option<usize> {
    if b.get(at) != Some(&b'"') {
        return None;
    }
    let mut s = Scanner { b, i: at };
    s.skim_string()?;
    Some(s.i)
}

/// Whether `text` is exactly one valid JSON string, quotes included.
pub fn is_string(text: &str) -> bool {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    s.peek() == Some(b'"') && s.string().is_some() && s.i == s.b.len()
}

/// The members of an object whose text is already known to be valid JSON (a member or element of
/// a body [`object_members`] accepted): split without checking it again, so reading nested parts
/// costs a skim instead of a second validation. On text that is not valid JSON the answer may be
/// wrong, and is then `None` or a split of some kind, never a panic.
pub fn members_of_valid(text: &str) -> Option<Vec<(Cow<'_, str>, &str)>> {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    let mut members = Vec::with_capacity(8);
    s.space();
    s.expect(b'{')?;
    loop {
        s.space();
        match s.peek()? {
            b'}' => return Some(members),
            b'"' => {}
            _ => return None,
        }
        let start = s.i;
        let escaped = s.skim_string()?;
        let key = key_text(text, start..s.i, escaped)?;
        s.space();
        s.expect(b':')?;
        s.space();
        let from = s.i;
        s.skim_value()?;
        members.push((key, text.get(from..s.i)?));
        s.space();
        match s.next()? {
            b',' => {}
            b'}' => return Some(members),
            _ => return None,
        }
    }
}

/// A cursor over text already known to be valid JSON, for reading a nested part in one pass: the
/// caller steps into the objects and arrays on its way and skims past everything else, so no byte
/// is read twice (splitting each level with [`members_of_valid`] reads the inner ones again at
/// every level). On text that is not valid JSON the answers may be wrong, never a panic.
pub struct Cursor<'a> {
    text: &'a str,
    s: Scanner<'a>,
}

impl<'a> Cursor<'a> {
    /// A cursor before the first value of `text`.
    pub fn new(text: &'a str) -> Self {
        Cursor {
            text,
            s: Scanner {
                b: text.as_bytes(),
                i: 0,
            },
        }
    }

    /// Steps into the object that starts here; `None` if something else does.
    pub fn enter_object(&mut self) -> Option<()> {
        self.s.space();
        self.s.expect(b'{')
    }

    /// Steps into the array that starts here; `None` if something else does.
    pub fn enter_array(&mut self) -> Option<()> {
        self.s.space();
        self.s.expect(b'[')
    }

    /// Inside an object: the next member's key, leaving the cursor before its value (which the
    /// caller must read, enter or skip), or `Some(None)` past the object's end.
    pub fn next_key(&mut self) -> Option<Option<Cow<'a, str>>> {
        self.s.space();
        if self.s.peek()? == b',' {
            self.s.i += 1;
            self.s.space();
        }
        match self.s.peek()? {
            b'}' => {
                self.s.i += 1;
                return Some(None);
            }
            b'"' => {}
            _ => return None,
        }
        let start = self.s.i;
        let escaped = self.s.skim_string()?;
        let key = key_text(self.text, start..self.s.i, escaped)?;
        self.s.space();
        self.s.expect(b':')?;
        Some(Some(key))
    }

    /// Inside an array: whether another element starts here (`false` past the array's end).
    pub fn next_element(&mut self) -> Option<bool> {
        self.s.space();
        if self.s.peek()? == b',' {
            self.s.i += 1;
            self.s.space();
        }
        if self.s.peek()? == b']' {
            self.s.i += 1;
            return Some(false);
        }
        Some(true)
    }

    /// The value that starts here, as its exact text; the cursor moves past it. `None` where no
    /// value starts (so that a loop over a damaged array always moves on or stops).
    pub fn value(&mut self) -> Option<&'a str> {
        self.s.space();
        let from = self.s.i;
        self.s.skim_value()?;
        (self.s.i > from).then(|| self.text.get(from..self.s.i))?
    }

    /// Moves past the value that starts here.
    pub fn skip(&mut self) -> Option<()> {
        self.value().map(drop)
    }
}

/// Skimming text already validated: where values end, and nothing more.
impl Scanner<'_> {
    /// Past the string starting at the current `"`; says whether it holds escapes.
    fn skim_string(&mut self) -> Option<bool> {
        self.i += 1;
        let mut escaped = false;
        loop {
            self.i += memchr::memchr2(b'"', b'\\', self.b.get(self.i..)?)?;
            if self.next()? == b'"' {
                return Some(escaped);
            }
            escaped = true;
            self.i += 1;
        }
    }

    /// Past one value: strings skimmed, containers by their brackets, scalars to their end.
    fn skim_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skim_string().map(drop),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.skim_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.i += 1;
                }
                Some(())
            }
        }
    }
}

/// The validating scan of [`Scanner`] that also picks text strings: the same checks, made by the
/// same primitives, in the same order.
struct Picking<'a> {
    s: Scanner<'a>,
    select: Select,
    picked: Vec<Picked>,
}

impl Picking<'_> {
    /// A member's key at the current byte (which must be a `"`), validated, and its text; the
    /// cursor is left at the member's value, past the colon.
    fn member_key<'t>(&mut self, text: &'t str) -> Option<Cow<'t, str>> {
        if self.s.peek()? != b'"' {
            return None;
        }
        let start = self.s.i;
        let escaped = self.s.string()?;
        let key = key_text(text, start..self.s.i, escaped)?;
        self.s.space();
        self.s.expect(b':')?;
        self.s.space();
        Some(key)
    }

    /// [`Scanner::members`] (with no nested member of interest), picking texts.
    fn members<'t>(&mut self, text: &'t str, depth: usize) -> Option<Members<'t>> {
        if depth == 0 {
            return None;
        }
        let mut members = Vec::with_capacity(8);
        self.s.expect(b'{')?;
        self.s.space();
        if self.s.peek()? == b'}' {
            self.s.i += 1;
            return Some(members);
        }
        loop {
            self.s.space();
            let key = self.member_key(text)?;
            let from = self.s.i;
            match (self.select)(false, 0, &key) {
                Some(inner) => self.value(text, depth - 1, inner, 1)?,
                None => self.s.value(depth - 1)?,
            }
            members.push((key, text.get(from..self.s.i)?));
            self.s.space();
            match self.s.next()? {
                b',' => continue,
                b'}' => return Some(members),
                _ => return None,
            }
        }
    }

    /// [`Scanner::value`], picking texts: a string here is text if `is_text`; `level` is the depth
    /// of an object that starts here.
    fn value(&mut self, text: &str, depth: usize, is_text: bool, level: usize) -> Option<()> {
        match self.s.peek()? {
            b'"' => {
                let start = self.s.i;
                let escaped = self.s.string()?;
                if is_text {
                    self.picked.push((start..self.s.i, escaped));
                }
                Some(())
            }
            b'{' => self.container(text, depth, b'}', is_text, level),
            b'[' => self.container(text, depth, b']', is_text, level),
            _ => self.s.value(depth),
        }
    }

    /// [`Scanner::container`], picking texts: an object's members by what `select` says of their
    /// keys, an array's elements as the array.
    fn container(
        &mut self,
        text: &str,
        depth: usize,
        close: u8,
        is_text: bool,
        level: usize,
    ) -> Option<()> {
        if depth == 0 {
            return None;
        }
        let keyed = close == b'}';
        self.s.i += 1;
        self.s.space();
        if self.s.peek()? == close {
            self.s.i += 1;
            return Some(());
        }
        loop {
            self.s.space();
            let inner = if keyed {
                let key = self.member_key(text)?;
                (self.select)(is_text, level, &key).map(|t| (t, level + 1))
            } else {
                Some((is_text, level))
            };
            match inner {
                Some((t, l)) => self.value(text, depth - 1, t, l)?,
                None => self.s.value(depth - 1)?,
            }
            self.s.space();
            match self.s.next()? {
                b',' => continue,
                c if c == close => return Some(()),
                _ => None?,
            }
        }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// Any value, with at most `depth` more levels of nesting allowed inside it.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.container(depth, b'}', true),
            b'[' => self.container(depth, b']', false),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn container(&mut self, depth: usize, close: u8, keyed: bool) -> Option<()> {
        if depth == 0 {
            return None;
        }
        self.i += 1;
        self.space();
        if self.peek()? == close {
            self.i += 1;
            return Some(());
        }
        loop {
            self.space();
            if keyed {
                if self.peek()? != b'"' {
                    return None;
                }
                self.string()?;
                self.space();
                self.expect(b':')?;
                self.space();
            }
            self.value(depth - 1)?;
            self.space();
            match self.next()? {
                b',' => continue,
                c if c == close => return Some(()),
                _ => None?,
            }
        }
    }

    /// The object starting here, validated, as its members; the members of the last member named
    /// `inner` (never the empty name) go to `nested` when it is an object, split in the same pass.
    fn members<'t>(
        &mut self,
        text: &'t str,
        depth: usize,
        inner: &str,
        nested: &mut Option<Members<'t>>,
    ) -> Option<Members<'t>> {
        if depth == 0 {
            return None;
        }
        let mut members = Vec::with_capacity(8);
        self.expect(b'{')?;
        self.space();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(members);
        }
        loop {
            self.space();
            if self.peek()? != b'"' {
                return None;
            }
            let start = self.i;
            let escaped = self.string()?;
            let key = key_text(text, start..self.i, escaped)?;
            self.space();
            self.expect(b':')?;
            self.space();
            let from = self.i;
            if !inner.is_empty() && key == inner {
                *nested = None;
                if self.peek()? == b'{' {
                    *nested = Some(self.members(text, depth - 1, "", &mut None)?);
                } else {
                    self.value(depth - 1)?;
                }
            } else {
                self.value(depth - 1)?;
            }
            members.push((key, text.get(from..self.i)?));
            self.space();
            match self.next()? {
                b',' => continue,
                b'}' => return Some(members),
                _ => return None,
            }
        }
    }

    fn word(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digit()?;
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digit()?;
            self.digits();
        }
        Some(())
    }

    fn digit(&mut self) -> Option<()> {
        self.next()?.is_ascii_digit().then_some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// A string starting at the current `"`; says whether it holds escapes.
    fn string(&mut self) -> Option<bool> {
        self.i += 1;
        let mut escaped = false;
        loop {
            self.i += plain_run(self.b.get(self.i..)?);
            match self.next()? {
                b'"' => return Some(escaped),
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hex = self.b.get(self.i..self.i + 4)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 4;
                        }
                        _ => return None,
                    }
                }
                // A control character.
                _ => return None,
            }
        }
    }
}

/// How many leading bytes need no attention inside a string: not `"`, not `\`, not a control
/// character. Both searches run many bytes at a time (memchr's, and a loop without early exit that
/// the compiler vectorises). Also what a writer of JSON strings may copy without escaping.
pub fn plain_run(b: &[u8]) -> usize {
    let end = memchr::memchr2(b'"', b'\\', b).unwrap_or(b.len());
    let span = &b[..end];
    if span.iter().fold(false, |seen, &c| seen | (c < 0x20)) {
        span.iter().position(|&c| c < 0x20).unwrap_or(end)
    } else {
        end
    }
}

/// A number's text read as `f64`, as `str::parse` reads it. A short decimal (at most 15 digits, no
/// exponent) is worked out directly: its digits, an integer below 2^53, divided by a power of ten
/// below 10^23 give the correctly rounded value, the rule the standard parser's own fast path
/// follows after more checks than a request's temperature needs.
pub fn number_f64(text: &str) -> Option<f64> {
    const POWERS: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    // The usual temperatures, read at once.
    match *text.as_bytes() {
        [d @ b'0'..=b'9'] => return Some(f64::from(d - b'0')),
        [i @ b'0'..=b'9', b'.', f @ b'0'..=b'9'] => {
            return Some(f64::from((i - b'0') * 10 + (f - b'0')) / 10.0);
        }
        _ => {}
    }
    let (negative, digits) = match text.as_bytes().split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text.as_bytes()),
    };
    let (mut value, mut count, mut point) = (0u64, 0usize, None);
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' if count < 15 => {
                value = value * 10 + u64::from(c - b'0');
                count += 1;
            }
            b'.' if point.is_none() => point = Some(i),
            _ => return text.parse().ok(),
        }
    }
    if count == 0 {
        return text.parse().ok();
    }
    let scale = point.map_or(0, |at| digits.len() - at - 1);
    let magnitude = value as f64 / POWERS[scale];
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// An object's members read with the cursor, as `members_of_valid` splits them.
    fn members_by_cursor(text: &str) -> Option<Vec<(Cow<'_, str>, &str)>> {
        let mut at = Cursor::new(text);
        let mut members = Vec::new();
        at.enter_object()?;
        while let Some(key) = at.next_key()? {
            members.push((key, at.value()?));
        }
        Some(members)
    }

    /// An array's elements read with the cursor.
    fn elements_by_cursor(text: &str) -> Option<Vec<&str>> {
        let mut at = Cursor::new(text);
        let mut elements = Vec::new();
        at.enter_array()?;
        while at.next_element()? {
            elements.push(at.value()?);
        }
        Some(elements)
    }

    /// What serde_json makes of `text` as a top-level object: its members as (key, raw text).
    fn by_serde(text: &str) -> Option<Vec<(String, String)>> {
        let map: Vec<(String, Box<serde_json::value::RawValue>)> =
            serde_json::from_str::<serde_reading::Members>(text).ok()?.0;
        Some(
            map.into_iter()
                .map(|(k, v)| (k, v.get().to_string()))
                .collect(),
        )
    }

    /// serde_json's reading of an object as an ordered list of members (duplicates kept).
    mod serde_reading {
        use std::fmt;

        use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
        use serde_json::value::RawValue;

        pub struct Members(pub Vec<(String, Box<RawValue>)>);

        impl<'de> Deserialize<'de> for Members {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Members;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                        let mut out = Vec::new();
                        while let Some(entry) = map.next_entry()? {
                            out.push(entry);
                        }
                        Ok(Members(out))
                    }
                }
                d.deserialize_map(V)
            }
        }
    }

    fn ours(text: &str) -> Option<Vec<(String, String)>> {
        object_members(text).map(|m| {
            m.into_iter()
                .map(|(k, v)| (k.into_owned(), v.to_string()))
                .collect()
        })
    }

    #[test]
    fn agrees_with_serde_json_on_chosen_cases() {
        let cases = [
            r#"{}"#,
            r#" { "a" : 1 , "b":[1,2,{"c":null}], "d":"x\"y\\z\u00e9", "e": -0.5e+10 } "#,
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"héllo 🌍\n"}],"stream":true}"#,
            r#"{"mod\u0065l":"esc","a":"\ud800"}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":[]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{"a":tru}"#,
            r#"{"a":"tab	inside"}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12G4"}"#,
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{,"a":1}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":1} x"#,
            r#"{"a":1}{}"#,
            r#"[1]"#,
            r#""x""#,
            r#"{"a":"unterminated}"#,
            "",
            "{",
        ];
        for text in cases {
            assert_eq!(ours(text), by_serde(text), "{text}");
        }
    }

    #[test]
    fn deep_nesting_is_left_to_serde_json() {
        // serde_json skips raw values without a depth limit; the scan recurses, so it stops at 128
        // levels and the caller falls back to serde_json.
        let deep = |depth: usize| format!("{{\"a\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
        assert!(ours(&deep(126)).is_some());
        assert_eq!(ours(&deep(126)), by_serde(&deep(126)));
        assert!(ours(&deep(128)).is_none());
        assert!(by_serde(&deep(128)).is_some());
        // That a request document this deep is still read (by serde_json) is tested in `openai`.
    }

    #[test]
    fn plain_runs_stop_at_every_special_byte() {
        for special in [b'"', b'\\', 0x00, 0x1f] {
            for at in 0..20 {
                let mut b = vec![b'a'; 20];
                b[at] = special;
                assert_eq!(plain_run(&b), at, "byte {special:#x} at {at}");
            }
        }
        assert_eq!(plain_run("é🌍 ~\u{7f}".as_bytes()), "é🌍 ~\u{7f}".len());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Valid objects are read exactly as serde_json reads them.
        #[test]
        fn valid_objects_match_serde_json(
            members in prop::collection::vec((any::<String>(), json_value()), 0..8),
            pretty in any::<bool>(),
        ) {
            let object = Value::Object(members.into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&object).unwrap()
            } else {
                serde_json::to_string(&object).unwrap()
            };
            prop_assert!(ours(&text).is_some());
            prop_assert_eq!(ours(&text), by_serde(&text));
        }

        /// Damaged text is accepted only when serde_json accepts it too, and then read the same.
        #[test]
        fn damaged_text_is_never_accepted_alone(
            members in prop::collection::vec((any::<String>(), json_value()), 1..6),
            cut in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"{}[]\",:\\ 0-.eE+tfnu\x01".to_vec()),
            replace in any::<bool>(),
        ) {
            let text = serde_json::to_string(&Value::Object(members.into_iter().collect())).unwrap();
            let mut bytes = text.into_bytes();
            let at = cut.index(bytes.len());
            if replace {
                bytes[at] = byte;
            } else {
                bytes.insert(at, byte);
            }
            if let Ok(text) = String::from_utf8(bytes) {
                prop_assert_eq!(ours(&text), by_serde(&text), "{}", text);
            }
        }

        /// On valid JSON the skim and the cursor split exactly as the validating scan (objects) and
        /// serde_json (arrays) do.
        #[test]
        fn the_skim_of_valid_text_matches_the_scan(
            members in prop::collection::vec((any::<String>(), json_value()), 0..8),
            elements in prop::collection::vec(json_value(), 0..8),
            pretty in any::<bool>(),
        ) {
            let write = |v: &Value| if pretty {
                serde_json::to_string_pretty(v).unwrap()
            } else {
                serde_json::to_string(v).unwrap()
            };
            let object = write(&Value::Object(members.into_iter().collect()));
            prop_assert_eq!(members_of_valid(&object), object_members(&object));
            prop_assert_eq!(members_by_cursor(&object), object_members(&object));
            let array = write(&Value::Array(elements));
            let by_serde = serde_json::from_str::<Vec<Box<serde_json::value::RawValue>>>(&array)
                .unwrap()
                .into_iter()
                .map(|r| r.get().to_string())
                .collect::<Vec<_>>();
            prop_assert_eq!(
                elements_by_cursor(&array).map(|e| e.into_iter().map(str::to_string).collect::<Vec<_>>()),
                Some(by_serde)
            );
        }

        /// Splitting one nested object in the same pass gives the top level as [`object_members`]
        /// does and that object's members as splitting its text alone does; damaged text is
        /// accepted only when the plain scan accepts it.
        #[test]
        fn a_nested_split_matches_two_scans(
            members in prop::collection::vec((prop::sample::select(vec!["a", "params", "b"]), json_value()), 0..6),
            cut in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"{}[]\",:\\ 0-.eE+tfnu\x01".to_vec()),
            pretty in any::<bool>(),
        ) {
            // Repeated keys are kept (a body may repeat a member): written by hand.
            let write = |v: &Value| if pretty {
                serde_json::to_string_pretty(v).unwrap()
            } else {
                serde_json::to_string(v).unwrap()
            };
            let body = format!("{{{}}}", members
                .iter()
                .map(|(k, v)| format!("{}:{}", write(&Value::from(*k)), write(v)))
                .collect::<Vec<_>>()
                .join(","));
            let mut damaged = body.clone().into_bytes();
            let at = cut.index(damaged.len());
            damaged[at] = byte;
            for text in [Some(body), String::from_utf8(damaged).ok()].into_iter().flatten() {
                let plain = object_members(&text);
                let split = object_members_and(&text, "params");
                prop_assert_eq!(split.as_ref().map(|(m, _)| m), plain.as_ref());
                if let Some((top, nested)) = split {
                    let last = top.iter().rev().find(|(k, _)| k == "params").map(|(_, v)| *v);
                    let expected = last.filter(|v| v.starts_with('{')).and_then(object_members);
                    prop_assert_eq!(nested, expected);
                }
            }
        }

        /// On any text at all the skim ends without a panic.
        #[test]
        fn the_skim_of_any_text_never_panics(text in "\\PC{0,64}", bytes in prop::collection::vec(
            prop::sample::select(b"{}[]\",:\\ 0-.eE+tfnu\x01a".to_vec()), 0..64)) {
            let _ = members_of_valid(&text);
            let _ = elements_by_cursor(&text);
            let _ = members_by_cursor(&text);
            let text = String::from_utf8(bytes).unwrap();
            let _ = members_of_valid(&text);
            let _ = elements_by_cursor(&text);
            let _ = members_by_cursor(&text);
        }

        /// A string is valid exactly when serde_json reads it as one JSON string value (its raw
        /// reading: a lone surrogate escape is well-formed syntax, as everywhere in the scan).
        #[test]
        fn strings_are_checked_as_serde_json_checks_them(text in "\"(\\PC|\\\\|\\\\u[0-9a-fA-F]{0,4}|[\\x00-\\x1f])*\"?") {
            let by_serde = serde_json::from_str::<Box<serde_json::value::RawValue>>(&text)
                .is_ok_and(|r| r.get().starts_with('"'));
            prop_assert_eq!(is_string(&text), by_serde, "{:?}", text);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// Short decimals and anything else read as `f64` exactly as `str::parse` reads them.
        #[test]
        fn numbers_read_as_str_parse_reads_them(
            text in prop_oneof![
                "-?[0-9]{0,17}(\\.[0-9]{0,17})?",
                "-?[0-9]{1,3}\\.[0-9]{1,3}([eE][-+]?[0-9]{1,3})?",
                "[-+.0-9eE]{0,6}",
                any::<String>(),
            ],
        ) {
            let want: Option<f64> = text.parse().ok();
            prop_assert_eq!(number_f64(&text).map(f64::to_bits), want.map(f64::to_bits), "{:?}", text);
        }
    }
}
