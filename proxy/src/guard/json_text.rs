//! The text strings of a JSON document found in its own bytes, and replacements spliced back into
//! them: checking a body this way costs a skim of its bytes instead of a `serde_json::Value` read and
//! written again, and a body whose text nothing masks goes on exactly as it came.
//!
//! The walk expects valid JSON and checks only what it needs to find its way; on other text it
//! answers `None` or some reading of it, never a panic. Callers read a `None` the slow way.

use std::borrow::Cow;
use std::ops::Range;

use super::block::in_range16;
pub use crate::escape::utf8;
use crate::escape::{equal, needs_escape};

/// Deepest nesting walked; deeper documents are read the slow way (serde_json stops at 128 too).
const MAX_DEPTH: usize = 128;

/// One string the walk picked: where its literal lies (quotes included) and its decoded text.
#[derive(Debug)]
pub struct Found<'a> {
    /// The literal's bytes in the document, quotes included.
    pub at: Range<usize>,
    /// The string's value.
    pub text: Cow<'a, str>,
}

/// Which members hold text: given whether the enclosing value is text, the depth of the object
/// (0 for the document's own members) and a member's key, whether the member's value is text;
/// `None` to pass over the member without looking inside it.
pub type Select = fn(bool, usize, &str) -> Option<bool>;

/// Every string of `json` that `select` marks as text, in document order; `None` when `json` is not
/// one JSON value the walk can follow, nests deeper than [`MAX_DEPTH`], or a picked string does not
/// decode (a lone surrogate).
pub fn find_texts(json: &str, select: Select) -> Option<Vec<Found<'_>>> {
    let mut walk = Walk {
        s: json,
        b: json.as_bytes(),
        i: 0,
        select,
        found: Vec::new(),
    };
    walk.value(false, 0, MAX_DEPTH)?;
    walk.space();
    (walk.i == walk.b.len()).then_some(walk.found)
}

/// [`find_texts`] for a select that marks a member as text when `is_key` says so of its key or it
/// lies in text already, whatever its level (`Some(text || is_key(key.as_bytes()))`). Only a member's key
/// can make text then, so the document's structure need not be followed: the search hops from
/// string to string (one followed by `:` is a key; the bytes between strings are passed over
/// unread) and reads a keyed member's value whole, every string in it being text. The same as
/// [`find_texts`] on valid JSON; on other text some reading of it, never a panic; `None` when a
/// string does not end or a picked one does not decode (a lone surrogate).
pub fn find_keyed_texts<'a>(
    json: &'a str,
    is_key: impl Fn(&[u8]) -> bool,
) -> Option<Vec<Found<'a>>> {
    fn text(_: bool, _: usize, _: &str) -> Option<bool> {
        Some(true)
    }
    let b = json.as_bytes();
    let mut walk = Walk {
        s: json,
        b,
        i: 0,
        select: text,
        // An answer's text and perhaps its shown reasoning, without growing.
        found: Vec::with_capacity(2),
    };
    let mut marks = Marks::at(b, 0);
    while let Some(open) = marks.next() {
        if b[open] == b'\\' {
            // Outside a string only in broken JSON.
            continue;
        }
        let mut escaped = false;
        let close = loop {
            let m = marks.next()?;
            if b[m] == b'"' {
                break m;
            }
            escaped = true;
            // The escaped byte, if it is a mark itself, is the next one.
            if matches!(b.get(m + 1), Some(b'"' | b'\\')) {
                marks.next();
            }
        };
        walk.i = close + 1;
        walk.space();
        if b.get(walk.i) != Some(&b':') {
            continue;
        }
        let keyed = if escaped {
            is_key(walk.decode(open..close + 1, true)?.as_bytes())
        } else {
            is_key(&b[open + 1..close])
        };
        if keyed {
            walk.i += 1;
            walk.value(true, 1, MAX_DEPTH)?;
            marks = Marks::at(b, walk.i);
        }
    }
    Some(walk.found)
}

/// The `"` and `\` of a document from some place on, in order, found sixty-four bytes at a time.
struct Marks<'a> {
    b: &'a [u8],
    /// Where the sixty-four bytes `bits` tells of begin.
    base: usize,
    /// Their marks not taken yet: bit `k` for the byte at `base + k`.
    bits: u64,
}

impl<'a> Marks<'a> {
    /// The marks of `b` from `at` on.
    fn at(b: &'a [u8], at: usize) -> Self {
        Marks {
            b,
            base: at,
            bits: marks64(b, at),
        }
    }

    /// Where the next mark lies.
    fn next(&mut self) -> Option<usize> {
        while self.bits == 0 {
            self.base += 64;
            if self.base >= self.b.len() {
                return None;
            }
            self.bits = marks64(self.b, self.base);
        }
        let k = self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(self.base + k)
    }
}

/// Bit `k` set for each `"` or `\` at `at + k` of `b`, for the sixty-four bytes from `at` (those
/// past its end unmarked); the last ones are read as `b`'s last sixty-four, the bytes before `at`
/// shifted out.
fn marks64(b: &[u8], at: usize) -> u64 {
    fn marks(block: &[u8; 64]) -> u64 {
        block
            .as_chunks::<16>()
            .0
            .iter()
            .enumerate()
            .fold(0, |bits, (k, sixteen)| {
                let m = in_range16::<b'"', b'"'>(sixteen) | in_range16::<b'\\', b'\\'>(sixteen);
                bits | u64::from(m) << (16 * k)
            })
    }
    if let Some(block) = b.get(at..).and_then(<[u8]>::first_chunk) {
        return marks(block);
    }
    if at >= b.len() {
        return 0;
    }
    match b.last_chunk::<64>() {
        Some(last) => marks(last) >> (at + 64 - b.len()),
        None => b[at..]
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, b'"' | b'\\'))
            .fold(0, |bits, (k, _)| bits | 1 << k),
    }
}

/// The string whose literal lies at `at` in `json` (quotes included; `escaped` if it holds escapes),
/// as the walk finds it: `None` when its escapes do not decode (a lone surrogate).
pub fn found_at(json: &str, at: Range<usize>, escaped: bool) -> Option<Found<'_>> {
    let text = if escaped {
        Cow::Owned(serde_json::from_str::<String>(json.get(at.clone())?).ok()?)
    } else {
        Cow::Borrowed(json.get(at.start + 1..at.end - 1)?)
    };
    Some(Found { at, text })
}

/// Ranges of a text (sorted, not overlapping) and what each becomes.
pub type Edits<T> = Vec<(Range<usize>, T)>;

/// How an edited document's bytes moved: per edited literal, in order, where it ended in the old
/// document and how much longer (or shorter) it became.
pub type Shifts = Vec<(usize, isize)>;

/// Where the byte at `at` of a document (outside its edited literals, or at one's end) lies in
/// the document `shifts` describe the edit of.
pub fn moved(shifts: &[(usize, isize)], at: usize) -> usize {
    let by: isize = shifts
        .iter()
        .take_while(|(end, _)| *end <= at)
        .map(|(_, d)| d)
        .sum();
    at.checked_add_signed(by)
        .expect("a place inside the edited document")
}

/// `json` with the literal of each text found in it (in document order) replaced by the literal of
/// the text with its edits (see [`edited_literal`]), written straight into the one new document;
/// and how its bytes moved. `valid`: `json` is known to be valid JSON (a text borrowed from one of
/// its literals then holds no control character).
pub fn splice_edited<T: AsRef<str>>(
    json: &str,
    edited: &[(&Found<'_>, Edits<T>)],
    valid: bool,
) -> (String, Shifts) {
    // The new length when no literal needs escapes written anew (the usual case): then the
    // document is made with exactly its room, which `Bytes` takes over without a new allocation.
    let grows: isize = edited
        .iter()
        .flat_map(|(_, edits)| edits.iter())
        .map(|(r, t)| t.as_ref().len() as isize - r.len() as isize)
        .sum();
    let mut out = String::with_capacity(json.len().saturating_add_signed(grows));
    let mut shifts = Vec::with_capacity(edited.len());
    let mut at = 0;
    for (found, edits) in edited {
        out.push_str(&json[at..found.at.start]);
        let before = out.len();
        write_edited_literal(&mut out, found, edits, valid);
        let grew = (out.len() - before) as isize - found.at.len() as isize;
        shifts.push((found.at.end, grew));
        at = found.at.end;
    }
    out.push_str(&json[at..]);
    (out, shifts)
}

/// Whether `b` holds a control character (below 0x20). A fold without an early exit, which the
/// compiler writes with vector instructions (sixteen bytes a step): a masked text is read whole
/// anyway, and controls are rare.
fn has_control(b: &[u8]) -> bool {
    b.iter().fold(false, |seen, &c| seen | (c < 0x20))
}

/// The literal of `found`'s text with `edits` (sorted, not overlapping ranges of the text) replaced
/// by their tokens: exactly [`literal`] of the edited text. A text read from a literal without
/// escapes holds no `"` nor `\` (the walk stops at both), so when it holds no control character
/// and no token needs escaping, the literal is the quoted edit, with no second look at its bytes.
#[cfg(test)]
pub fn edited_literal<T: AsRef<str>>(found: &Found<'_>, edits: &[(Range<usize>, T)]) -> String {
    let mut out = String::new();
    write_edited_literal(&mut out, found, edits, false);
    out
}

/// [`edited_literal`] written at the end of `out`; `valid`: `found` was read from valid JSON, where
/// a literal holds no control character (which the test of a borrowed text then skips).
fn write_edited_literal<T: AsRef<str>>(
    out: &mut String,
    found: &Found<'_>,
    edits: &[(Range<usize>, T)],
    valid: bool,
) {
    let text: &str = &found.text;
    // A token is looked at once however many values it masks (a rule's token is one string).
    let mut last: Option<&str> = None;
    let plain = matches!(found.text, Cow::Borrowed(_))
        && edits.iter().all(|(_, t)| {
            let t = t.as_ref();
            let seen = last.is_some_and(|l| std::ptr::eq(l, t));
            last = Some(t);
            seen || !needs_escape(t.as_bytes())
        })
        && (valid || !has_control(text.as_bytes()));
    if plain {
        out.push('"');
        push_edited(out, text, edits);
        out.push('"');
    } else {
        let mut edited = String::with_capacity(text.len() + edits.len() * 8);
        push_edited(&mut edited, text, edits);
        out.push_str(&literal(&edited));
    }
}

/// `text` with `edits` made, written at the end of `out`.
fn push_edited<T: AsRef<str>>(out: &mut String, text: &str, edits: &[(Range<usize>, T)]) {
    let mut at = 0;
    for (range, token) in edits {
        out.push_str(&text[at..range.start]);
        out.push_str(token.as_ref());
        at = range.end;
    }
    out.push_str(&text[at..]);
}

/// [`literal`] written at the end of `out`.
pub fn write_literal(out: &mut Vec<u8>, text: &str) {
    if needs_escape(text.as_bytes()) {
        serde_json::to_writer(out, text).expect("a string encodes into memory");
    } else {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// `text` as a JSON string literal, exactly as serde_json writes it.
pub fn literal(text: &str) -> String {
    // Most text needs no escape: serde_json escapes only `"`, `\` and control characters, and its
    // byte-by-byte writer cost more than the rest of a masked answer's handling.
    if !needs_escape(text.as_bytes()) {
        let mut out = String::with_capacity(text.len() + 2);
        out.push('"');
        out.push_str(text);
        out.push('"');
        return out;
    }
    serde_json::to_string(text).expect("a string encodes")
}

/// Where the string literal whose `"` is at `b[start]` ends (past its closing quote), and whether
/// it holds escapes; `None` if it does not end.
pub fn literal_end(b: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut i = start + 1;
    let mut escaped = false;
    loop {
        i += quote_or_backslash(b.get(i..)?)?;
        let c = b[i];
        i += 1;
        if c == b'"' {
            return Some((i, escaped));
        }
        escaped = true;
        // The escaped byte; a `\u` escape's hex digits need no attention.
        b.get(i)?;
        i += 1;
    }
}

/// The first `"` or `\` of `b`. Keys and short values (a streamed chunk's text) end within a few
/// bytes, where setting up a vector search costs more than the search: the first 32 bytes are looked
/// at eight at a time (the lowest byte a test marks is exact), then `memchr2` takes over.
fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    let mut k = 0;
    while k < 32 {
        let Some(word) = b.get(k..k + 8) else {
            return b[k..]
                .iter()
                .position(|&c| c == b'"' || c == b'\\')
                .map(|p| k + p);
        };
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let marked = equal(x, b'"') | equal(x, b'\\');
        if marked != 0 {
            return Some(k + (marked.trailing_zeros() / 8) as usize);
        }
        k += 8;
    }
    memchr::memchr2(b'"', b'\\', &b[32..]).map(|p| 32 + p)
}

/// The bytes that end a number, `true`, `false` or `null` (or a run of other bytes the walk passes
/// over as one): structure, a quote, white space.
static ENDS_SCALAR: [bool; 256] = {
    let mut t = [false; 256];
    let ends = b",]}:\"{[ \t\n\r";
    let mut k = 0;
    while k < ends.len() {
        t[ends[k] as usize] = true;
        k += 1;
    }
    t
};

struct Walk<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    select: Select,
    found: Vec<Found<'a>>,
}

impl<'a> Walk<'a> {
    fn space(&mut self) {
        // Compact JSON has no white space: one test passes over every byte above a space.
        while let Some(&c) = self.b.get(self.i)
            && c <= b' '
            && matches!(c, b' ' | b'\t' | b'\n' | b'\r')
        {
            self.i += 1;
        }
    }

    /// The next byte that is not white space, and past it. Compact JSON has none: the byte is
    /// taken at once.
    fn after_space(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        if c > b' ' {
            self.i += 1;
            return Some(c);
        }
        self.space();
        self.next()
    }

    /// Past the byte `c` after any white space; `None` if the next byte is another.
    fn past(&mut self, c: u8) -> Option<()> {
        (self.after_space()? == c).then_some(())
    }

    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    /// The string starting at the current `"`: its literal's range and whether it holds escapes.
    fn string(&mut self) -> Option<(Range<usize>, bool)> {
        let start = self.i;
        let (end, escaped) = literal_end(self.b, start)?;
        self.i = end;
        Some((start..end, escaped))
    }

    /// The value of a string literal at `at`.
    fn decode(&self, at: Range<usize>, escaped: bool) -> Option<Cow<'a, str>> {
        let s: &'a str = self.s;
        if escaped {
            serde_json::from_str::<String>(s.get(at)?)
                .ok()
                .map(Cow::Owned)
        } else {
            s.get(at.start + 1..at.end - 1).map(Cow::Borrowed)
        }
    }

    /// One value; `text` says whether a string here is text, `level` is the depth of an object
    /// starting here, `depth` how many more levels may open.
    fn value(&mut self, text: bool, level: usize, depth: usize) -> Option<()> {
        self.space();
        match *self.b.get(self.i)? {
            b'"' => {
                let (at, escaped) = self.string()?;
                if text {
                    let value = self.decode(at.clone(), escaped)?;
                    self.found.push(Found { at, text: value });
                }
                Some(())
            }
            b'{' => {
                let depth = depth.checked_sub(1)?;
                self.i += 1;
                self.space();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    if self.b.get(self.i) != Some(&b'"') {
                        self.space();
                        if self.b.get(self.i) != Some(&b'"') {
                            return None;
                        }
                    }
                    let (at, escaped) = self.string()?;
                    let key = self.decode(at, escaped)?;
                    self.past(b':')?;
                    match (self.select)(text, level, &key) {
                        Some(inner) => self.value(inner, level + 1, depth)?,
                        None => self.skip(depth)?,
                    }
                    match self.after_space()? {
                        b',' => {}
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'[' => {
                let depth = depth.checked_sub(1)?;
                self.i += 1;
                self.space();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.value(text, level, depth)?;
                    match self.after_space()? {
                        b',' => {}
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            _ => {
                let from = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|&c| !ENDS_SCALAR[c as usize])
                {
                    self.i += 1;
                }
                (self.i > from).then_some(())
            }
        }
    }

    /// Past one value without looking for text in it.
    fn skip(&mut self, depth: usize) -> Option<()> {
        self.space();
        match *self.b.get(self.i)? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                let mut open = 0usize;
                loop {
                    match *self.b.get(self.i)? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => {
                            open += 1;
                            if open > depth {
                                return None;
                            }
                        }
                        b'}' | b']' => {
                            open -= 1;
                            if open == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => self.value(false, 0, 0),
        }
    }
}

/// A cursor over one JSON document, for reading a few members of a known shape in one pass: the
/// caller steps into the objects and arrays on its way and passes over everything else.
pub struct Cursor<'a> {
    walk: Walk<'a>,
}

impl<'a> Cursor<'a> {
    /// A cursor before the value of `json`.
    pub fn new(json: &'a str) -> Self {
        fn none(_: bool, _: usize, _: &str) -> Option<bool> {
            None
        }
        Cursor {
            walk: Walk {
                s: json,
                b: json.as_bytes(),
                i: 0,
                select: none,
                found: Vec::new(),
            },
        }
    }

    /// A cursor at `offset` of `json`, where a cursor that read `json[..offset]` stood: used to go
    /// on after bytes read before.
    pub fn resume(json: &'a str, offset: usize) -> Self {
        let mut cursor = Self::new(json);
        cursor.walk.i = offset;
        cursor
    }

    /// Where the cursor stands, in bytes.
    pub fn offset(&self) -> usize {
        self.walk.i
    }

    /// The first byte of the value that starts here.
    pub fn peek(&mut self) -> Option<u8> {
        self.walk.space();
        self.walk.b.get(self.walk.i).copied()
    }

    /// Steps into the object (`open` `{`) or array (`[`) that starts here.
    pub fn enter(&mut self, open: u8) -> Option<()> {
        (self.peek()? == open).then(|| self.walk.i += 1)
    }

    /// Inside an object: the next member's key, the cursor left before its value (which the caller
    /// reads or passes over), or `Some(None)` past the object's end.
    pub fn next_key(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek()? == b',' {
            self.walk.i += 1;
        }
        match self.peek()? {
            b'}' => {
                self.walk.i += 1;
                Some(None)
            }
            b'"' => {
                let (at, escaped) = self.walk.string()?;
                let key = self.walk.decode(at, escaped)?;
                (self.peek()? == b':').then(|| self.walk.i += 1)?;
                Some(Some(key))
            }
            _ => None,
        }
    }

    /// Inside an array: whether another element starts here (`false` past the array's end).
    pub fn next_element(&mut self) -> Option<bool> {
        if self.peek()? == b',' {
            self.walk.i += 1;
        }
        if self.peek()? == b']' {
            self.walk.i += 1;
            return Some(false);
        }
        Some(true)
    }

    /// Past the value that starts here; its text.
    pub fn raw(&mut self) -> Option<&'a str> {
        self.walk.space();
        let from = self.walk.i;
        self.walk.skip(MAX_DEPTH)?;
        let s: &'a str = self.walk.s;
        s.get(from..self.walk.i)
    }

    /// The string that starts here: its literal's range and its value.
    pub fn string(&mut self) -> Option<(Range<usize>, Cow<'a, str>)> {
        (self.peek()? == b'"').then_some(())?;
        let (at, escaped) = self.walk.string()?;
        let text = self.walk.decode(at.clone(), escaped)?;
        Some((at, text))
    }

    /// Whether nothing but white space is left.
    pub fn at_end(&mut self) -> bool {
        self.walk.space();
        self.walk.i == self.walk.b.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Masked texts are written into the document where their literals were: texts with escapes
    /// (`\u00e9`, `\"`) or without, a value at a text's start and end, texts side by side, and the
    /// document's bytes between them kept as they were.
    #[test]
    fn masked_texts_are_spliced_over_their_literals() {
        fn all(_: bool, _: usize, _: &str) -> Option<bool> {
            Some(true)
        }
        let json = r#"{"a":"caf\u00e9 bob@example.com \"q\"","b":"bob@example.com","c" : "keep",
            "d":["bob@example.com and bob@example.com","\u00e9bob@example.com"]}"#;
        let found = find_texts(json, all).unwrap();
        let value = "bob@example.com";
        let edited: Vec<(&Found<'_>, Edits<&str>)> = found
            .iter()
            .map(|f| {
                let masks = f
                    .text
                    .match_indices(value)
                    .map(|(at, _)| (at..at + value.len(), "[EMAIL]"))
                    .collect();
                (f, masks)
            })
            .filter(|(_, masks): &(_, Vec<_>)| !masks.is_empty())
            .collect();
        let (spliced, shifts) = splice_edited(json, &edited, false);
        // Places outside the edited literals move with them.
        let c = json.find(r#""c" : "keep""#).unwrap();
        assert_eq!(&spliced[moved(&shifts, c)..][..12], r#""c" : "keep""#);
        assert_eq!(moved(&shifts, json.len()), spliced.len());
        let doc: serde_json::Value = serde_json::from_str(&spliced).unwrap();
        assert_eq!(doc["a"], "café [EMAIL] \"q\"");
        assert_eq!(doc["b"], "[EMAIL]");
        assert_eq!(doc["c"], "keep");
        assert_eq!(doc["d"][0], "[EMAIL] and [EMAIL]");
        assert_eq!(doc["d"][1], "é[EMAIL]");
        // A text without escapes keeps its literal's form; the rest of the document is untouched.
        assert!(spliced.contains(
            r#""b":"[EMAIL]","c" : "keep",
            "d":["#
        ));
    }

    fn content_or_text(key: &[u8]) -> bool {
        matches!(key, b"content" | b"text")
    }

    fn content_or_text_select(text: bool, _: usize, key: &str) -> Option<bool> {
        Some(text || content_or_text(key.as_bytes()))
    }

    /// The texts the hop from string to string finds: a keyed member's string value, everything in
    /// a keyed object or array (its keys excepted), keys written with escapes, white space before
    /// the `:`, quotes and backslashes escaped in values and keys; not strings that are values of
    /// other keys, nor a keyed name that is a value.
    #[test]
    fn keyed_texts_are_found_by_hopping_from_string_to_string() {
        let json = r#"{"id":"content","a\\":"x\"","cont\u0065nt" : "one \"two\" \\",
            "list":[{"text":{"content":"n1","k":["n2",3,null]}},"content"],
            "b":{"\"content":"no"},"content":[]}"#;
        let found = find_keyed_texts(json, content_or_text).unwrap();
        let texts: Vec<&str> = found.iter().map(|f| &*f.text).collect();
        assert_eq!(texts, ["one \"two\" \\", "n1", "n2"]);
        for f in &found {
            assert_eq!(
                serde_json::from_str::<String>(&json[f.at.clone()]).unwrap(),
                f.text
            );
        }
        assert_eq!(
            texts,
            find_texts(json, content_or_text_select)
                .unwrap()
                .iter()
                .map(|f| &*f.text)
                .collect::<Vec<_>>()
        );
        // A string that does not end, or a picked one that does not decode.
        assert!(find_keyed_texts(r#"{"content":"ab"#, content_or_text).is_none());
        assert!(find_keyed_texts(r#"{"content":"\ud800"}"#, content_or_text).is_none());
        // Broken JSON is read somehow.
        assert!(find_keyed_texts(r#"\"content":"a"}}"#, content_or_text).is_some());
    }

    /// `value` as JSON whose string characters (keys' too) are written as `\u` escapes where
    /// `escape` says (taken in turn, round and round), with white space around its structure
    /// where `spaced`.
    fn write_escaping(value: &serde_json::Value, escape: &[bool], spaced: bool) -> String {
        fn string(out: &mut String, s: &str, escape: &[bool], turn: &mut usize) {
            out.push('"');
            for c in s.chars() {
                *turn += 1;
                if escape.is_empty() || !escape[*turn % escape.len()] {
                    let mut buf = [0; 4];
                    let lit = serde_json::to_string(c.encode_utf8(&mut buf)).unwrap();
                    out.push_str(&lit[1..lit.len() - 1]);
                } else {
                    let mut units = [0; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
            out.push('"');
        }
        fn write(
            out: &mut String,
            v: &serde_json::Value,
            escape: &[bool],
            sp: &str,
            turn: &mut usize,
        ) {
            match v {
                serde_json::Value::String(s) => string(out, s, escape, turn),
                serde_json::Value::Array(items) => {
                    out.push('[');
                    for (k, item) in items.iter().enumerate() {
                        if k > 0 {
                            out.push_str(sp);
                            out.push(',');
                        }
                        out.push_str(sp);
                        write(out, item, escape, sp, turn);
                    }
                    out.push_str(sp);
                    out.push(']');
                }
                serde_json::Value::Object(members) => {
                    out.push('{');
                    for (k, (key, item)) in members.iter().enumerate() {
                        if k > 0 {
                            out.push(',');
                        }
                        out.push_str(sp);
                        string(out, key, escape, turn);
                        out.push_str(sp);
                        out.push(':');
                        out.push_str(sp);
                        write(out, item, escape, sp, turn);
                    }
                    out.push_str(sp);
                    out.push('}');
                }
                other => out.push_str(&other.to_string()),
            }
        }
        let mut out = String::new();
        write(
            &mut out,
            value,
            escape,
            if spaced { " \n\t" } else { "" },
            &mut 0,
        );
        out
    }

    fn document() -> impl Strategy<Value = serde_json::Value> {
        fn key() -> prop::sample::Select<&'static str> {
            prop::sample::select(vec!["content", "text", "id", "con\"tent", "content\\", "k"])
        }
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<i32>().prop_map(serde_json::Value::from),
            "[a\"\\\\:,{}\\[\\] é😀\n]{0,6}".prop_map(serde_json::Value::String),
            key().prop_map(|k| serde_json::Value::String(k.to_string())),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::vec((key(), inner), 0..4).prop_map(|members| {
                    serde_json::Value::Object(
                        members
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("TOLLGATE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(500),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// The eight-bytes-at-a-time test finds what a byte-by-byte one finds.
        #[test]
        fn escapes_are_found_as_a_byte_loop_finds_them(
            bytes in prop::collection::vec(prop::sample::select(&b"a \x00\x1f\x20\"\\\x7f\x80\xa2\xdc\xff"[..]), 0..40),
        ) {
            let slow = bytes.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
            prop_assert_eq!(needs_escape(&bytes), slow);
        }

        /// A text is read as UTF-8 exactly when `from_utf8` reads it, ASCII or not.
        #[test]
        fn bytes_are_utf8_as_from_utf8_says(
            bytes in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..40),
                "[ -~]{0,40}".prop_map(String::into_bytes),
                "\\PC{0,20}".prop_map(String::into_bytes),
            ],
        ) {
            prop_assert_eq!(utf8(&bytes), std::str::from_utf8(&bytes).ok());
        }

        /// Text that needs no escape but perhaps one byte, wherever it lies (in a whole word, in the
        /// last bytes, which are read as a word overlapping the one before).
        #[test]
        fn one_byte_to_escape_is_found_wherever_it_lies(
            bytes in prop::collection::vec(prop::sample::select(&b"a \x20\x7f\x80\xa2\xdc\xff!#[]"[..]), 0..40),
            at in any::<prop::sample::Index>(),
            bad in prop::option::of(prop::sample::select(&b"\x00\x1f\"\\"[..])),
        ) {
            let mut bytes = bytes;
            if let Some(bad) = bad && !bytes.is_empty() {
                let at = at.index(bytes.len());
                bytes[at] = bad;
            }
            let slow = bytes.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
            prop_assert_eq!(needs_escape(&bytes), slow);
        }

        /// The literal written without serde_json where nothing needs an escape is the one it writes.
        #[test]
        fn literals_are_written_as_serde_json_writes_them(
            text in prop_oneof!["\\PC{0,40}", "[ -~\\x00-\\x1f\\x7f\"\\\\é]{0,40}", any::<String>()],
        ) {
            prop_assert_eq!(literal(&text), serde_json::to_string(&text).unwrap());
            let mut out = b"x".to_vec();
            write_literal(&mut out, &text);
            let expected = serde_json::to_string(&text).unwrap();
            prop_assert_eq!(&out[1..], expected.as_bytes());
        }

        /// A text's edited literal is the literal of the edited text, whether the text came from a
        /// literal with escapes or not, and whatever the text and the tokens hold.
        #[test]
        fn an_edited_literal_is_the_literal_of_the_edited_text(
            text in prop_oneof!["[a-z @.\x00-\x1f]{0,40}", "[ -~\x01\né]{0,40}"],
            cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..4),
            tokens in prop::collection::vec(prop_oneof![Just("[EMAIL]"), Just("\"q\""), Just("a\\b"), Just("\t"), Just("")], 4),
            escaped in any::<bool>(),
        ) {
            let mut bounds: Vec<usize> = cuts
                .iter()
                .flat_map(|(a, b)| [a.index(text.len() + 1), b.index(text.len() + 1)])
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            bounds.sort_unstable();
            let edits: Vec<(Range<usize>, &str)> = bounds
                .chunks_exact(2)
                .zip(&tokens)
                .map(|(r, &t)| (r[0]..r[1], t))
                .collect();
            let mut edited = String::new();
            let mut at = 0;
            for (range, token) in &edits {
                edited.push_str(&text[at..range.start]);
                edited.push_str(token);
                at = range.end;
            }
            edited.push_str(&text[at..]);
            // A text without escapes is borrowed from its literal, one with them decoded into its own.
            let plain = !escaped && !text.contains(['"', '\\']);
            let found = Found {
                at: 0..0,
                text: if plain { Cow::Borrowed(&text) } else { Cow::Owned(text.clone()) },
            };
            prop_assert_eq!(edited_literal(&found, &edits), literal(&edited));
        }

        /// The first `"` or `\` found eight bytes at a time, then by `memchr2`, is the first one.
        #[test]
        fn the_first_quote_or_backslash_is_found_wherever_it_lies(
            bytes in prop::collection::vec(prop::sample::select(vec![b'a', b'"', b'\\', 0x22 ^ 0x80, 0x5c ^ 0x01, 0x00, 0xff, b' ']), 0..60),
            plain in 0usize..60,
        ) {
            // Mostly plain bytes before the first marked one, so every offset gets its turn.
            let mut b = vec![b'x'; plain];
            b.extend_from_slice(&bytes);
            let expected = b.iter().position(|&c| c == b'"' || c == b'\\');
            prop_assert_eq!(quote_or_backslash(&b), expected);
        }

        /// The marks of sixty-four bytes from any place, whole blocks, the last bytes read as the
        /// document's last sixty-four, and short documents alike, are its `"` and `\`.
        #[test]
        fn marks_are_the_quotes_and_backslashes_from_any_place(
            bytes in prop::collection::vec(prop::sample::select(&b"a\"\\ \xa2\x00{"[..]), 0..200),
            at in any::<prop::sample::Index>(),
        ) {
            let at = at.index(bytes.len() + 1);
            let expected = (0..64)
                .filter(|k| matches!(bytes.get(at + k), Some(b'"' | b'\\')))
                .fold(0u64, |bits, k| bits | 1 << k);
            prop_assert_eq!(marks64(&bytes, at), expected);
        }

        /// Hopping from string to string finds what the walk finds, in any valid JSON: keys and
        /// values written with escapes or without, with white space or without.
        #[test]
        fn keyed_texts_are_the_texts_the_walk_finds(
            doc in document(),
            escape in prop::collection::vec(prop::bool::weighted(0.2), 0..8),
            spaced in any::<bool>(),
        ) {
            let json = write_escaping(&doc, &escape, spaced);
            prop_assert_eq!(serde_json::from_str::<serde_json::Value>(&json).unwrap(), doc);
            let hopped = find_keyed_texts(&json, content_or_text).unwrap();
            let walked = find_texts(&json, content_or_text_select).unwrap();
            prop_assert_eq!(hopped.len(), walked.len(), "{}", json);
            for (h, w) in hopped.iter().zip(&walked) {
                prop_assert_eq!(&h.at, &w.at);
                prop_assert_eq!(&h.text, &w.text);
            }
        }

        /// Any bytes, and valid JSON cut and joined with bits of JSON, are read without a panic.
        #[test]
        fn keyed_texts_are_read_from_any_text_without_a_panic(
            doc in document(),
            cut in any::<prop::sample::Index>(),
            junk in "[\"\\\\{}\\[\\],: a0]{0,3}",
            bytes in prop::collection::vec(prop::sample::select(&b"\"\\:{}[],a \xc3\xa9"[..]), 0..64),
        ) {
            let json = serde_json::to_string(&doc).unwrap();
            let at = cut.index(json.len() + 1);
            if json.is_char_boundary(at) {
                let _ = find_keyed_texts(&format!("{}{junk}{}", &json[..at], &json[at..]), content_or_text);
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = find_keyed_texts(text, content_or_text);
            }
        }
    }
}
