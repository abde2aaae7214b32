//! A JSON object in canonical form, written straight from its bytes: object members in byte order of
//! their (unescaped) names at every depth, no insignificant whitespace, strings and numbers as
//! serde_json writes the values it reads, and some top-level members left out.
//!
//! It is what `serde_json::from_slice::<Value>` followed by writing the value with sorted members
//! gives, without building the value: the text is read once, each object's members are written as
//! they come and moved into order only when they came out of it. The two agree on every input
//! (`call::cache::key`'s tests hold this one to that one): what serde_json rejects — text that is not
//! one JSON value, bytes that are not UTF-8, lone surrogates in `\u` escapes, numbers too large for
//! an `f64`, more than 127 levels of nesting — gives `None` here. A name given twice in one object
//! keeps its last value, as serde_json's map does; where the first one stood does not matter,
//! since members are sorted.
//!
//! Plain strings and integers, which most requests are made of, are copied as they are; a string
//! with escapes and a number with a fraction or an exponent are handed to serde_json alone, so that
//! their canonical text is serde_json's by construction.

use super::json_scan::plain_run;

/// serde_json's nesting limit: its reader starts at 128 and refuses the container that brings it to 0.
const REMAINING_DEPTH: u8 = 128;

/// Buffers of a canonicaliser, kept between calls so that a warm one allocates nothing.
#[derive(Default)]
pub struct Canonical {
    /// Members of the objects being read, innermost last.
    members: Vec<Member>,
    /// Where an object's members are moved from when they are put in order.
    scratch: Vec<u8>,
}

/// One member of an object being read: its name, and where `"name":value` stands in the output.
struct Member {
    name: Name,
    start: usize,
    end: usize,
}

/// A member's name as serde_json reads it: the bytes between the quotes when there are no escapes.
enum Name {
    Raw { start: usize, end: usize },
    Unescaped(String),
}

impl Name {
    fn bytes<'a>(&'a self, text: &'a [u8]) -> &'a [u8] {
        match self {
            Self::Raw { start, end } => &text[*start..*end],
            Self::Unescaped(name) => name.as_bytes(),
        }
    }
}

impl Canonical {
    /// Bytes held in its buffers between calls (so that a caller keeping one can let a huge one go).
    pub fn retained_bytes(&self) -> usize {
        self.scratch.capacity() + self.members.capacity() * std::mem::size_of::<Member>()
    }

    /// Writes the canonical form of the object `text` to `out` (cleared first), leaving out the
    /// top-level members named in `skip`; `None` (with `out` in any state) when `text` is not a
    /// JSON object serde_json would read.
    pub fn object(&mut self, text: &[u8], skip: &[&str], out: &mut Vec<u8>) -> Option<()> {
        out.clear();
        self.members.clear();
        // Outside strings, any byte beyond ASCII is a syntax error; inside, serde_json refuses text
        // that is not UTF-8. Checking the whole text once settles both.
        std::str::from_utf8(text).ok()?;
        let mut reader = Reader {
            b: text,
            i: 0,
            canonical: self,
        };
        reader.space();
        if reader.peek()? != b'{' {
            return None;
        }
        reader.object(out, REMAINING_DEPTH, skip)?;
        reader.space();
        (reader.i == text.len()).then_some(())
    }
}

struct Reader<'t, 'c> {
    b: &'t [u8],
    i: usize,
    canonical: &'c mut Canonical,
}

impl Reader<'_, '_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Any value, `remaining` being serde_json's depth counter before it.
    fn value(&mut self, out: &mut Vec<u8>, remaining: u8) -> Option<()> {
        match self.peek()? {
            b'"' => self.string(out).map(drop),
            b'{' => self.object(out, remaining, &[]),
            b'[' => self.array(out, remaining),
            b't' => self.word(out, b"true"),
            b'f' => self.word(out, b"false"),
            b'n' => self.word(out, b"null"),
            b'-' | b'0'..=b'9' => self.number(out),
            _ => None,
        }
    }

    fn word(&mut self, out: &mut Vec<u8>, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then_some(())?;
        out.extend_from_slice(word);
        self.i = end;
        Some(())
    }

    /// A number: an integer that fits an `i64` (and is not `-0`, which serde_json reads as a float)
    /// as it stands, anything else as serde_json writes what it reads.
    fn number(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let start = self.i;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
            self.i += 1;
        }
        let token = &self.b[start..self.i];
        let digits = token.strip_prefix(b"-").unwrap_or(token);
        let plain_integer = !digits.is_empty()
            && digits.len() <= 18
            && digits.iter().all(u8::is_ascii_digit)
            && (digits[0] != b'0' || (digits.len() == 1 && token.len() == 1));
        if plain_integer {
            out.extend_from_slice(token);
        } else {
            let value: serde_json::Value = serde_json::from_slice(token).ok()?;
            serde_json::to_writer(&mut *out, &value).ok()?;
        }
        Some(())
    }

    /// A string, written canonically; its unescaped text is returned for names.
    fn string(&mut self, out: &mut Vec<u8>) -> Option<Name> {
        let start = self.i;
        self.i += 1;
        let mut escaped = false;
        loop {
            self.i += plain_run(self.b.get(self.i..)?);
            match self.peek()? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    // Past the backslash and the byte it escapes (`"` or `\` included); serde_json
                    // judges the escape below.
                    self.i += 2;
                }
                // A control character.
                _ => return None,
            }
        }
        self.i += 1;
        let token = &self.b[start..self.i];
        if escaped {
            let text: String = serde_json::from_slice(token).ok()?;
            serde_json::to_writer(&mut *out, &text).ok()?;
            Some(Name::Unescaped(text))
        } else {
            out.extend_from_slice(token);
            Some(Name::Raw {
                start: start + 1,
                end: self.i - 1,
            })
        }
    }

    fn array(&mut self, out: &mut Vec<u8>, remaining: u8) -> Option<()> {
        let remaining = remaining - 1;
        if remaining == 0 {
            return None;
        }
        self.i += 1;
        out.push(b'[');
        self.space();
        if self.peek()? != b']' {
            loop {
                self.space();
                self.value(out, remaining)?;
                self.space();
                if self.peek()? == b',' {
                    self.i += 1;
                    out.push(b',');
                } else {
                    break;
                }
            }
        }
        self.expect(b']')?;
        out.push(b']');
        Some(())
    }

    /// The object starting here, its members written then put in order; members named in `skip`
    /// read (and checked) but left out.
    fn object(&mut self, out: &mut Vec<u8>, remaining: u8, skip: &[&str]) -> Option<()> {
        let remaining = remaining - 1;
        if remaining == 0 {
            return None;
        }
        self.i += 1;
        out.push(b'{');
        let inner = out.len();
        let base = self.canonical.members.len();
        self.space();
        if self.peek()? != b'}' {
            loop {
                self.space();
                if self.peek()? != b'"' {
                    return None;
                }
                let before = out.len();
                if before > inner {
                    out.push(b',');
                }
                let start = out.len();
                let name = self.string(out)?;
                self.space();
                self.expect(b':')?;
                out.push(b':');
                self.space();
                self.value(out, remaining)?;
                let kept =
                    skip.is_empty() || !skip.iter().any(|s| s.as_bytes() == name.bytes(self.b));
                if kept {
                    let end = out.len();
                    self.canonical.members.push(Member { name, start, end });
                } else {
                    out.truncate(before);
                }
                self.space();
                if self.peek()? == b',' {
                    self.i += 1;
                } else {
                    break;
                }
            }
        }
        self.expect(b'}')?;
        self.order(out, base, inner);
        self.canonical.members.truncate(base);
        out.push(b'}');
        Some(())
    }

    /// Puts the members from `base` on, written from `inner` on in `out`, in order of their names,
    /// keeping only the last of each name.
    fn order(&mut self, out: &mut Vec<u8>, base: usize, inner: usize) {
        let text = self.b;
        let members = &mut self.canonical.members[base..];
        let in_order = members
            .windows(2)
            .all(|pair| pair[0].name.bytes(text) < pair[1].name.bytes(text));
        if in_order {
            return;
        }
        // Stable: of equal names, the last read stays last.
        members.sort_by(|a, b| a.name.bytes(text).cmp(b.name.bytes(text)));
        let scratch = &mut self.canonical.scratch;
        scratch.clear();
        scratch.extend_from_slice(&out[inner..]);
        out.truncate(inner);
        for (at, member) in members.iter().enumerate() {
            let last_of_name = members
                .get(at + 1)
                .is_none_or(|next| next.name.bytes(text) != member.name.bytes(text));
            if !last_of_name {
                continue;
            }
            if out.len() > inner {
                out.push(b',');
            }
            out.extend_from_slice(&scratch[member.start - inner..member.end - inner]);
        }
    }
}
