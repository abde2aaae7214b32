//! Checking an answer while it streams: text is released only once no value that could still be
//! growing can reach into it.
//!
//! The last [`HOLD_BACK_BYTES`] of the text seen so far are held back; text before them is released
//! (masked) up to the last whitespace that no match crosses, so a value shorter than the window is
//! always whole when it is checked, wherever the stream was split. Text without whitespace is released
//! once [`MAX_PENDING_BYTES`] are held, cut outside every match.
//!
//! When every rule is a built-in detector, text is also released up to white space that follows a
//! plain word (lower-case ASCII letters, perhaps closed by one punctuation mark) that no match crosses,
//! even inside the window: no detector's value holds such a word next to white space, except a
//! private key's body, whose header is then already in the text and matched. Prose then waits for
//! its last word only, and each check reads the text not yet released, not a whole window again.

use std::collections::BTreeSet;
use std::sync::Arc;

use tollgate_snapshot::{GuardrailAction, Matcher};

use super::check::{Decision, Policy, apply, apply_onto};
use super::json_text;

/// Text held back at the end of what was seen (bytes, rounded to a character boundary): the delay a
/// streamed answer gets, and the longest value sure to be found whole.
pub const HOLD_BACK_BYTES: usize = 256;
/// Most text held when no whitespace offers a cut.
pub const MAX_PENDING_BYTES: usize = 4 * HOLD_BACK_BYTES;

/// A streamed answer's text checked as it comes.
#[derive(Debug)]
pub struct StreamGuard {
    policy: Arc<Policy>,
    /// Whether any rule rejects: if none does, text inside the window need not be checked yet.
    rejects: bool,
    /// Whether every rule is a built-in detector, so text may be cut after a plain word (see the
    /// module's doc): a pattern may match anything.
    plain_cuts: bool,
    pending: String,
    decisions: BTreeSet<Decision>,
}

impl StreamGuard {
    /// A guard for one answer.
    pub fn new(policy: Arc<Policy>) -> Self {
        Self {
            rejects: policy
                .rules
                .iter()
                .any(|r| r.action == GuardrailAction::Reject),
            plain_cuts: policy
                .rules
                .iter()
                .all(|r| matches!(r.matcher, Matcher::Detector(_))),
            policy,
            pending: String::new(),
            decisions: BTreeSet::new(),
        }
    }

    /// Takes the next piece of text; returns what may be released now (masked), or the Reject rule
    /// that matched (nothing more may be released then).
    pub fn push(&mut self, text: &str) -> Result<String, Arc<str>> {
        let mut out = String::new();
        self.push_onto(text, &mut out)?;
        Ok(out)
    }

    /// [`Self::push`] with what may be released written onto the end of `out` (a buffer the caller
    /// keeps from one piece to the next).
    pub fn push_onto(&mut self, text: &str, out: &mut String) -> Result<(), Arc<str>> {
        self.push_to(text, Onto::Text(out))
    }

    /// [`Self::push`] with what may be released written onto the end of `out` as a JSON string
    /// literal (`""` when nothing is): the literal a chat chunk's text is replaced by, written from
    /// the window itself.
    pub fn push_literal(&mut self, text: &str, out: &mut Vec<u8>) -> Result<(), Arc<str>> {
        let start = out.len();
        self.push_to(text, Onto::Literal(&mut *out))?;
        if out.len() == start {
            out.extend_from_slice(b"\"\"");
        }
        Ok(())
    }

    fn push_to(&mut self, text: &str, out: Onto<'_>) -> Result<(), Arc<str>> {
        let from = self.pending.len();
        self.pending.push_str(text);
        // Inside the window, text is released only up to a cut after a plain word, and only when
        // the piece made a new one: the last such cut, which the release takes unless a match
        // crosses it.
        let plain_cut = if self.plain_cuts && self.pending.len() <= HOLD_BACK_BYTES {
            let len = self.pending.len();
            last_cut(&self.pending, from, len, 0, |_| false)
        } else {
            None
        };
        if self.pending.len() <= HOLD_BACK_BYTES && plain_cut.is_none() {
            if !self.rejects {
                return Ok(());
            }
            // Still checked, so a rejection ends the stream as soon as it can be seen (and is
            // recorded: the rules that matched go to the access log).
            let checked = self.policy.check_whole(&self.pending);
            return match checked.rejected {
                Some(rule) => {
                    self.decisions.extend(checked.decisions);
                    Err(rule)
                }
                None => Ok(()),
            };
        }
        self.release(false, plain_cut, out)
    }

    /// The end of the answer: everything still held, masked.
    pub fn finish(&mut self) -> Result<String, Arc<str>> {
        let mut out = String::new();
        self.release(true, None, Onto::Text(&mut out))?;
        Ok(out)
    }

    /// What the rules did, once per rule.
    pub fn decisions(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter()
    }

    /// Writes what may be released onto `out`, and drops it from what is held: everything, with
    /// `all`, else up to the last cut that no match crosses (`plain_cut`, when it is one).
    fn release(
        &mut self,
        all: bool,
        plain_cut: Option<usize>,
        out: Onto<'_>,
    ) -> Result<(), Arc<str>> {
        let checked = self.policy.check(&self.pending);
        if let Some(rule) = checked.rejected {
            self.decisions.extend(checked.decisions);
            return Err(rule);
        }
        let crosses = |at: usize| checked.spans.iter().any(|s| s.start < at && at < s.end);
        let cut = if all {
            self.pending.len()
        } else if let Some(at) = plain_cut.filter(|&at| !crosses(at)) {
            at
        } else {
            let mut limit = self.pending.len().saturating_sub(HOLD_BACK_BYTES);
            while !self.pending.is_char_boundary(limit) {
                limit -= 1;
            }
            // Before the window any white space will do; inside it, only one after a plain word.
            let scope = if self.plain_cuts {
                self.pending.len()
            } else {
                limit
            };
            match last_cut(&self.pending, 0, scope, limit, crosses) {
                Some(at) => at,
                None if self.pending.len() > MAX_PENDING_BYTES => {
                    // No whitespace: cut before any match that reaches the limit.
                    let mut at = limit;
                    if let Some(s) = checked.spans.iter().find(|s| s.start < at && at < s.end) {
                        at = if s.start > 0 { s.start } else { s.end };
                    }
                    at
                }
                None => 0,
            }
        };
        if cut == 0 {
            return Ok(());
        }
        if !checked.decisions.is_empty() {
            self.decisions.extend(checked.decisions);
        }
        match out {
            Onto::Text(out) => apply_onto(out, &self.pending, &checked.masks, 0..cut),
            // A cut never crosses a match: the masks that end by it are the ones inside.
            Onto::Literal(out) if checked.masks.iter().any(|(span, _)| span.end <= cut) => {
                json_text::write_literal(out, &apply(&self.pending, &checked.masks, 0..cut));
            }
            Onto::Literal(out) => json_text::write_literal(out, &self.pending[..cut]),
        }
        self.pending.drain(..cut);
        Ok(())
    }
}

/// Where a window's released text is written.
enum Onto<'a> {
    /// Onto the end of a string, as it is.
    Text(&'a mut String),
    /// Onto the end of bytes, as a JSON string literal.
    Literal(&'a mut Vec<u8>),
}

/// Where the text may be cut: the end of the last white space in `text[floor..scope]` that is at a
/// character before `limit`, or after a plain word, and that `crosses` no match. Read back in bytes,
/// a character decoded only where one of more than one byte begins.
fn last_cut(
    text: &str,
    floor: usize,
    scope: usize,
    limit: usize,
    crosses: impl Fn(usize) -> bool,
) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = scope;
    while i > floor {
        i -= 1;
        let b = bytes[i];
        let len = match b {
            b if ascii_space(b) => 1,
            0..0x80 => continue,
            // The first byte of a wider character (the others are 0x80..0xC0).
            0xC0.. => match text[i..].chars().next() {
                Some(c) if c.is_whitespace() => c.len_utf8(),
                _ => continue,
            },
            _ => continue,
        };
        if (i < limit || plain_before(text, i)) && !crosses(i + len) {
            return Some(i + len);
        }
    }
    None
}

/// [`last_cut`] as it was first written, by characters: the oracle of its tests.
#[cfg(test)]
fn last_cut_by_chars(
    text: &str,
    floor: usize,
    scope: usize,
    limit: usize,
    crosses: impl Fn(usize) -> bool,
) -> Option<usize> {
    text[..scope]
        .char_indices()
        .rev()
        .filter(|&(i, _)| i >= floor)
        .filter(|&(_, c)| c.is_whitespace())
        .filter(|&(i, _)| i < limit || plain_before(text, i))
        .map(|(i, c)| i + c.len_utf8())
        .find(|&at| !crosses(at))
}

/// `char::is_whitespace` of an ASCII byte, without decoding it: space, tab, LF, VT, FF, CR.
fn ascii_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Whether the word that ends at `at` (where white space follows) is plain: lower-case ASCII letters,
/// perhaps closed by one of `, . ; : ! ?`.
fn plain_before(text: &str, at: usize) -> bool {
    // Read back in bytes: the punctuation mark, the letters, then what comes before them must be
    // the start of the text or white space (which may be a character of more than one byte).
    let before = &text.as_bytes()[..at];
    let mut end = before.len();
    if let Some(b',' | b'.' | b';' | b':' | b'!' | b'?') = before.last() {
        end -= 1;
    }
    let mut start = end;
    while start > 0 && before[start - 1].is_ascii_lowercase() {
        start -= 1;
    }
    if start == end {
        return false;
    }
    match start.checked_sub(1).map(|p| before[p]) {
        None => true,
        Some(b) if b.is_ascii() => ascii_space(b),
        Some(_) => text[..start]
            .chars()
            .next_back()
            .is_some_and(char::is_whitespace),
    }
}

/// [`plain_before`] as it was first written, the oracle of its tests.
#[cfg(test)]
fn plain_before_by_chars(text: &str, at: usize) -> bool {
    let word = text[..at]
        .rsplit(char::is_whitespace)
        .next()
        .unwrap_or_default();
    let word = word
        .strip_suffix([',', '.', ';', ':', '!', '?'])
        .unwrap_or(word);
    !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("TOLLGATE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(500),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// The cut found by reading back in bytes is the one found by reading back in characters:
        /// any text, any floor, scope and limit (on character boundaries), any spans not to cut
        /// through.
        #[test]
        fn cuts_read_back_in_bytes_are_the_cuts_read_back_in_characters(
            text in prop_oneof![
                "[a-cA0. ,;:!?\\n\\t\u{b}\u{c}\r\u{85}\u{a0}\u{2003}\u{3000}é😀_-]{0,40}",
                any::<String>(),
            ],
            floor in any::<prop::sample::Index>(),
            scope in any::<prop::sample::Index>(),
            limit in any::<prop::sample::Index>(),
            spans in prop::collection::vec((0usize..48, 0usize..8), 0..3),
        ) {
            let boundaries: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
            let floor = *floor.get(&boundaries);
            let scope = *scope.get(&boundaries);
            let limit = *limit.get(&boundaries);
            let crosses = |at: usize| spans.iter().any(|&(s, n)| s < at && at < s + n);
            prop_assert_eq!(
                last_cut(&text, floor, scope, limit, crosses),
                last_cut_by_chars(&text, floor, scope, limit, crosses),
                "{:?} {} {} {}",
                text,
                floor,
                scope,
                limit
            );
        }

        /// The word before white space read back in bytes is plain exactly when the old reading
        /// (split at white space, by characters) says so, at every place of any text.
        #[test]
        fn plain_words_are_found_as_the_old_reading_finds_them(
            text in prop_oneof![
                "[a-cA. ,;:!?\\n\\t\u{b}\u{c}\r\u{85}\u{a0}\u{2003}é0_-]{0,24}",
                any::<String>(),
            ],
        ) {
            for at in (0..=text.len()).filter(|&at| text.is_char_boundary(at)) {
                prop_assert_eq!(
                    plain_before(&text, at),
                    plain_before_by_chars(&text, at),
                    "{:?} at {}",
                    text,
                    at
                );
            }
        }
    }
}
