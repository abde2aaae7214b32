//! The shapes of the built-in detectors' values, read by hand where `scan.rs` finds a byte one can
//! begin at: each function reads what one of the regular expressions these replaced (kept in
//! `oracle.rs`) matched there, with the same preferences, and says where it ends.

use std::ops::Range;

use super::block::in_range16;
use super::detect;

pub(super) const DIGIT: u8 = 1;
pub(super) const UPPER: u8 = 1 << 1;
pub(super) const LOWER: u8 = 1 << 2;
pub(super) const HEX: u8 = 1 << 3;
/// `_`: with letters and digits, an ASCII word character.
pub(super) const UNDERSCORE: u8 = 1 << 4;
/// A character of an e-mail address's local part (besides letters, digits and `_`).
pub(super) const ATOM_MARK: u8 = 1 << 5;
/// Where a shape may begin or be found from.
pub(super) const START: u8 = 1 << 6;
pub(super) const DASH: u8 = 1 << 7;

pub(super) const WORD: u8 = DIGIT | UPPER | LOWER | UNDERSCORE;
pub(super) const ALNUM: u8 = DIGIT | UPPER | LOWER;
pub(super) const ATOM: u8 = WORD | ATOM_MARK;

pub(super) static CLASSES: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut k = 0;
        if c.is_ascii_digit() {
            k |= DIGIT | HEX | START;
        }
        if c.is_ascii_uppercase() {
            k |= UPPER | START;
        }
        if c.is_ascii_lowercase() {
            k |= LOWER;
        }
        if matches!(c, b'a'..=b'f' | b'A'..=b'F') {
            k |= HEX;
        }
        if c == b'_' {
            k |= UNDERSCORE;
        }
        if c == b'-' {
            k |= DASH;
        }
        if matches!(
            c,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'/'
                | b'='
                | b'?'
                | b'^'
                | b'`'
                | b'{'
                | b'|'
                | b'}'
                | b'~'
                | b'-'
        ) {
            k |= ATOM_MARK;
        }
        if matches!(
            c,
            b'(' | b'+' | b'@' | b':' | b'-' | b's' | b'r' | b'g' | b'x' | b'e'
        ) {
            k |= START;
        }
        t[b] = k;
        b += 1;
    }
    t
}

pub(super) fn is(b: u8, class: u8) -> bool {
    CLASSES[b as usize] & class != 0
}

/// The text with the lookups the shapes need.
#[derive(Clone, Copy)]
pub(super) struct Text<'t>(pub(super) &'t str);

impl Text<'_> {
    pub(super) fn len(self) -> usize {
        self.0.len()
    }

    pub(super) fn byte(self, i: usize) -> Option<u8> {
        self.0.as_bytes().get(i).copied()
    }

    /// Whether the byte at `i` exists and is of `class`.
    pub(super) fn is(self, i: usize, class: u8) -> bool {
        self.byte(i).is_some_and(|b| is(b, class))
    }

    pub(super) fn at(self, i: usize, c: u8) -> bool {
        self.byte(i) == Some(c)
    }

    pub(super) fn starts(self, i: usize, lit: &str) -> bool {
        self.0.as_bytes()[i..].starts_with(lit.as_bytes())
    }

    /// How many bytes of `class` follow from `i`.
    pub(super) fn run(self, i: usize, class: u8) -> usize {
        self.0.as_bytes()[i.min(self.len())..]
            .iter()
            .take_while(|&&b| is(b, class))
            .count()
    }

    /// How many ASCII digits follow from `i`: [`Self::run`] for [`DIGIT`], eight bytes a step while
    /// eight are left.
    pub(super) fn digit_run(self, i: usize) -> usize {
        let bytes = self.0.as_bytes();
        let from = i.min(bytes.len());
        let mut at = from;
        while let Some(eight) = bytes[at..].first_chunk::<8>() {
            let others = not_digits(u64::from_le_bytes(*eight));
            if others != 0 {
                return at - from + (others.trailing_zeros() / 8) as usize;
            }
            at += 8;
        }
        at - from
            + bytes[at..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
    }

    /// Whether the character at `i` (a character boundary) is a word character (Unicode, as the
    /// regex crate's `\w`).
    pub(super) fn word_at(self, i: usize) -> bool {
        match self.byte(i) {
            None => false,
            Some(b) if b < 0x80 => is(b, WORD),
            Some(_) => self.0[i..]
                .chars()
                .next()
                .is_some_and(regex_syntax::is_word_character),
        }
    }

    /// Whether the character before `i` (a character boundary) is a word character.
    pub(super) fn word_before(self, i: usize) -> bool {
        match i.checked_sub(1).and_then(|p| self.byte(p)) {
            None => false,
            Some(b) if b < 0x80 => is(b, WORD),
            Some(_) => self.0[..i]
                .chars()
                .next_back()
                .is_some_and(regex_syntax::is_word_character),
        }
    }
}

/// The high bit of each byte of `x` that is not an ASCII digit, every other bit clear.
fn not_digits(x: u64) -> u64 {
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    let low = x & LOW7;
    // Each byte's sum stays below 0x100, so no carry reaches the next byte; the high bit says
    // `byte >= b'0'`, and in the second `byte > b'9'` (a byte with its own high bit set is no digit).
    let from_zero = low + ONES * u64::from(0x80 - b'0');
    let past_nine = low + ONES * u64::from(0x7f - b'9');
    (!from_zero | past_nine | x) & HIGH
}

fn separator(t: Text, i: usize) -> bool {
    matches!(t.byte(i), Some(b' ' | b'.' | b'-'))
}

/// Whether `n` digits start at `i`.
fn digits(t: Text, i: usize, n: usize) -> bool {
    (i..i + n).all(|j| t.is(j, DIGIT))
}

/// `\b\d+(?:[ -]\d+)*\b` at `i` (its first group `first` digits long, the whole of it): digit groups
/// joined by single spaces or dashes, ending at a word boundary (the last group is left out when a
/// letter follows it). Its end, how many digits it holds, and whether `begins` holds for any of its
/// groups after the first (asked of each group read, given its length, its first digit and the byte
/// after it). A run that ends within the sixteen bytes after its first group (a date's, a short
/// amount's) is read from their masks ([`card_run_in_block`]); a longer one group by group.
pub(super) fn card_run(
    t: Text,
    i: usize,
    first: usize,
    begins: impl Fn(usize, u8, Option<u8>) -> bool,
) -> Option<CardRun> {
    if let Some(run) = card_run_in_block(t, i + first, first, &begins) {
        return run;
    }
    card_run_by_groups(t, i, first, begins)
}

/// [`card_run`] read from the masks of the sixteen bytes after the first group, which ends at
/// `from`: its digits, and the spaces and dashes a digit follows, which join groups. `None` when
/// no group follows the first, the text has not sixteen bytes there, or the run may go on past
/// them (it reaches the fifteenth byte: whether a separator there joins a group cannot be told
/// from these bytes).
fn card_run_in_block(
    t: Text,
    from: usize,
    first: usize,
    begins: &impl Fn(usize, u8, Option<u8>) -> bool,
) -> Option<Option<CardRun>> {
    let block = t.0.as_bytes().get(from..)?.first_chunk::<16>()?;
    // A lone group is read at once by the group loop.
    if !(matches!(block[0], b' ' | b'-') && block[1].is_ascii_digit()) {
        return None;
    }
    let digits = in_range16::<b'0', b'9'>(block);
    let separators = in_range16::<b' ', b' '>(block) | in_range16::<b'-', b'-'>(block);
    let joins = separators & digits >> 1;
    let length = (!(digits | joins)).trailing_zeros() as usize;
    if length >= 15 {
        return None;
    }
    // Each later group begins after a join and ends at the next join or at the run's end. Every
    // byte of the run is a digit or a join: up to a join it holds as many digits as bytes but joins.
    let mut joins_left = joins & ((1 << length) - 1);
    let mut groups = 0;
    let mut later_begins = false;
    let mut last = (0, false);
    while joins_left != 0 {
        let join = joins_left.trailing_zeros() as usize;
        joins_left &= joins_left - 1;
        let end = if joins_left == 0 {
            length
        } else {
            joins_left.trailing_zeros() as usize
        };
        last = (join, later_begins);
        groups += 1;
        later_begins = later_begins || begins(end - join - 1, block[join + 1], Some(block[end]));
    }
    if t.word_at(from + length) {
        // The run without its last group.
        let (join, later_begins) = last;
        return Some(Some(CardRun {
            end: from + join,
            digits: first + join + 1 - groups,
            later_begins,
        }));
    }
    Some(Some(CardRun {
        end: from + length,
        digits: first + length - groups,
        later_begins,
    }))
}

/// [`card_run`] read group by group: for a run that goes on past the sixteen bytes after its first
/// group (a card number's), a lone group, or a run near the text's end.
fn card_run_by_groups(
    t: Text,
    i: usize,
    first: usize,
    begins: impl Fn(usize, u8, Option<u8>) -> bool,
) -> Option<CardRun> {
    let bytes = t.0.as_bytes();
    let mut run = CardRun {
        end: i + first,
        digits: first,
        later_begins: false,
    };
    let mut before_last = None;
    while let Some(&[b' ' | b'-', lead @ b'0'..=b'9']) = bytes.get(run.end..run.end + 2) {
        before_last = Some(run);
        let start = run.end + 1;
        let n = t.digit_run(start);
        run.end = start + n;
        run.digits += n;
        run.later_begins = run.later_begins || begins(n, lead, t.byte(run.end));
    }
    if t.word_at(run.end) {
        before_last
    } else {
        Some(run)
    }
}

/// What [`card_run`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CardRun {
    pub(super) end: usize,
    pub(super) digits: usize,
    /// Whether a group after the first may begin something (the test `card_run` was given).
    pub(super) later_begins: bool,
}

/// `\b(\d{3})-(\d{2})-(\d{4})\b` at `i`: its end, and whether the number could have been issued.
pub(super) fn ssn(t: Text, i: usize) -> Option<(usize, bool)> {
    let shaped = digits(t, i, 3)
        && t.at(i + 3, b'-')
        && digits(t, i + 4, 2)
        && t.at(i + 6, b'-')
        && digits(t, i + 7, 4)
        && !t.word_at(i + 11);
    if !shaped {
        return None;
    }
    let s = t.0;
    Some((
        i + 11,
        detect::ssn_issuable(&s[i..i + 3], &s[i + 4..i + 6], &s[i + 7..i + 11]),
    ))
}

/// Four dotted numbers 0-255 (no leading zeros) at `i`, ending at a word boundary.
pub(super) fn ipv4(t: Text, i: usize) -> Option<usize> {
    let mut at = i;
    for k in 0..4 {
        let n = t.digit_run(at);
        if !octet(&t.0.as_bytes()[at..at + n]) {
            return None;
        }
        at += n;
        if k < 3 {
            if !t.at(at, b'.') {
                return None;
            }
            at += 1;
        }
    }
    (!t.word_at(at)).then_some(at)
}

fn octet(d: &[u8]) -> bool {
    match *d {
        [_] => true,
        [a, _] => a != b'0',
        [a, b, c] => a == b'1' || (a == b'2' && (b < b'5' || (b == b'5' && c <= b'5'))),
        _ => false,
    }
}

/// `\+[1-9]\d{0,3}(?:[ .-]?\(?\d{1,5}\)?){1,6}` at `i` (a `+`): the country code gives back digits
/// when no group would follow it otherwise.
pub(super) fn international(t: Text, i: usize) -> Option<usize> {
    if !matches!(t.byte(i + 1), Some(b'1'..=b'9')) {
        return None;
    }
    let more = t.digit_run(i + 2).min(3);
    (0..=more).rev().find_map(|j| {
        let mut at = i + 2 + j;
        let mut groups = 0;
        while groups < 6
            && let Some(end) = phone_group(t, at)
        {
            at = end;
            groups += 1;
        }
        (groups > 0).then_some(at)
    })
}

/// `[ .-]?\(?\d{1,5}\)?` at `i`.
fn phone_group(t: Text, i: usize) -> Option<usize> {
    let mut at = i;
    if separator(t, at) {
        at += 1;
    }
    if t.at(at, b'(') {
        at += 1;
    }
    let n = t.digit_run(at);
    if n == 0 {
        return None;
    }
    at += n.min(5);
    if t.at(at, b')') {
        at += 1;
    }
    Some(at)
}

/// `(?:\b1[ .-]?)?(?:\(\d{3}\)[ .-]?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b` at `i`, its ways tried in the
/// order the expression prefers them.
pub(super) fn north_american(t: Text, i: usize) -> Option<usize> {
    if t.at(i, b'1') && !t.word_before(i) {
        if separator(t, i + 1)
            && let Some(end) = area_and_number(t, i + 2)
        {
            return Some(end);
        }
        if let Some(end) = area_and_number(t, i + 1) {
            return Some(end);
        }
    }
    area_and_number(t, i)
}

fn area_and_number(t: Text, i: usize) -> Option<usize> {
    if t.at(i, b'(') && digits(t, i + 1, 3) && t.at(i + 4, b')') {
        let after = i + 5;
        if separator(t, after)
            && let Some(end) = local_number(t, after + 1)
        {
            return Some(end);
        }
        if let Some(end) = local_number(t, after) {
            return Some(end);
        }
    }
    if !t.word_before(i) && digits(t, i, 3) && separator(t, i + 3) {
        return local_number(t, i + 4);
    }
    None
}

/// `\d{3}[ .-]\d{4}\b` at `i`.
fn local_number(t: Text, i: usize) -> Option<usize> {
    (digits(t, i, 3) && separator(t, i + 3) && digits(t, i + 4, 4) && !t.word_at(i + 8))
        .then_some(i + 8)
}

/// `\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b` at `i`: the most characters after the check digits that
/// end at a word boundary.
pub(super) fn iban(t: Text, i: usize) -> Option<usize> {
    if !(t.is(i + 1, UPPER) && digits(t, i + 2, 2)) {
        return None;
    }
    let mut ends = [0usize; 30];
    let mut n = 0;
    let mut at = i + 4;
    while n < 30 {
        if t.at(at, b' ') && t.is(at + 1, UPPER | DIGIT) {
            at += 2;
        } else if t.is(at, UPPER | DIGIT) {
            at += 1;
        } else {
            break;
        }
        ends[n] = at;
        n += 1;
    }
    ends[..n]
        .iter()
        .skip(10)
        .rev()
        .find(|&&end| !t.word_at(end))
        .copied()
}

/// The secret shapes at `i`, in the order the old alternation tried them (only one can begin at a
/// given character).
pub(super) fn secret(t: Text, i: usize) -> Option<usize> {
    let first = t.byte(i)?;
    // Most words that begin with one of these letters are no key: the second letter of every
    // prefix below rules them out at once.
    let second = t.byte(i + 1);
    let possible = match first {
        b's' | b'r' => second == Some(b'k'),
        b'g' => matches!(second, Some(b'h' | b'i')),
        b'x' => second == Some(b'o'),
        b'e' => second == Some(b'y'),
        _ => true,
    };
    if !possible {
        return None;
    }
    match first {
        b'-' => private_key(t, i),
        b's' | b'r' => {
            if t.starts(i, "sk-") {
                let n = t.run(i + 3, ALNUM | UNDERSCORE | DASH);
                (n >= 20).then_some(i + 3 + n)
            } else if t.starts(i + 1, "k_live_") || t.starts(i + 1, "k_test_") {
                let n = t.run(i + 8, ALNUM);
                (n >= 16).then_some(i + 8 + n)
            } else {
                None
            }
        }
        b'A' => {
            if t.starts(i, "AKIA") || t.starts(i, "ASIA") {
                (t.run(i + 4, UPPER | DIGIT) >= 16 && !t.word_at(i + 20)).then_some(i + 20)
            } else if t.starts(i, "AIza") {
                (t.run(i + 4, ALNUM | UNDERSCORE | DASH) >= 35).then_some(i + 39)
            } else {
                None
            }
        }
        b'g' => {
            if t.starts(i, "gh")
                && matches!(t.byte(i + 2), Some(b'p' | b'o' | b'u' | b's' | b'r'))
                && t.at(i + 3, b'_')
            {
                bounded_token(t, i + 4, ALNUM, 36)
            } else if t.starts(i, "github_pat_") {
                bounded_token(t, i + 11, ALNUM | UNDERSCORE, 22)
            } else {
                None
            }
        }
        b'x' => {
            if t.starts(i, "xox")
                && matches!(t.byte(i + 3), Some(b'a' | b'b' | b'p' | b'o' | b's' | b'r'))
                && t.at(i + 4, b'-')
            {
                let n = t.run(i + 5, ALNUM | DASH);
                (n >= 10).then_some(i + 5 + n)
            } else {
                None
            }
        }
        b'e' => {
            let part = |at: usize| {
                let n = t.run(at, ALNUM | UNDERSCORE | DASH);
                (n >= 8).then_some(at + n)
            };
            if !t.starts(i, "eyJ") {
                return None;
            }
            let first = part(i + 3)?;
            if !(t.at(first, b'.') && t.starts(first + 1, "eyJ")) {
                return None;
            }
            let second = part(first + 4)?;
            if !t.at(second, b'.') {
                return None;
            }
            part(second + 1)
        }
        _ => None,
    }
}

/// `[class]{least,255}\b` at `i`.
fn bounded_token(t: Text, i: usize, class: u8, least: usize) -> Option<usize> {
    let n = t.run(i, class);
    ((least..=255).contains(&n) && !t.word_at(i + n)).then_some(i + n)
}

/// `-----BEGIN … PRIVATE KEY-----`, its base64 body as far as it goes, and its footer if there is one.
fn private_key(t: Text, i: usize) -> Option<usize> {
    if !t.starts(i, "-----BEGIN ") {
        return None;
    }
    let mut end = key_label(t, i + 11)?;
    let s = t.0;
    while let Some(c) = s[end..].chars().next() {
        if c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=') || c.is_whitespace() {
            end += c.len_utf8();
        } else {
            break;
        }
    }
    if t.starts(end, "-----END ")
        && let Some(footer) = key_label(t, end + 9)
    {
        end = footer;
    }
    Some(end)
}

/// `[A-Z ]{0,20}PRIVATE KEY-----` at `i`: where it ends.
fn key_label(t: Text, i: usize) -> Option<usize> {
    let n = t.0.as_bytes()[i.min(t.len())..]
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || **b == b' ')
        .count();
    let label = i + n;
    (n >= 11 && n - 11 <= 20 && t.0[..label].ends_with("PRIVATE KEY") && t.starts(label, "-----"))
        .then_some(label + 5)
}

/// Where the local part of an address whose `@` is at `at` begins: the most atoms joined by single
/// dots that end at the `@`, not before `floor` (the end of the last address).
pub(super) fn local_part(t: Text, at: usize, floor: usize) -> Option<usize> {
    if at <= floor || !t.is(at - 1, ATOM) {
        return None;
    }
    let mut start = at - 1;
    while start > floor {
        let before = t.byte(start - 1)?;
        if is(before, ATOM) || (before == b'.' && !t.at(start, b'.')) {
            start -= 1;
        } else {
            break;
        }
    }
    while t.at(start, b'.') {
        start += 1;
    }
    (start < at).then_some(start)
}

/// `(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}\b` at `i`: with as many labels as can be
/// followed by a top-level domain that ends at a word boundary.
pub(super) fn domain(t: Text, i: usize) -> Option<usize> {
    // The last label after which a top-level domain ends at a word boundary wins: each is tried
    // as the labels are read, and the latest that fits is kept (no list of them is gathered).
    let mut end = None;
    let mut at = i;
    let mut n = label_runs(t, at).1;
    loop {
        let label = (1..=63).contains(&n) && t.is(at, ALNUM) && t.is(at + n - 1, ALNUM);
        if !(label && t.at(at + n, b'.')) {
            break;
        }
        at += n + 1;
        // The next label begins with the letters read as a top-level domain.
        let top;
        (top, n) = label_runs(t, at);
        if (2..=24).contains(&top) && !t.word_at(at + top) {
            end = Some(at + top);
        }
    }
    end
}

/// How many ASCII letters follow from `at` (a top-level domain's), and how many letters, digits and
/// dashes (a label's): from one block's masks when both end within the sixteen bytes from `at`,
/// else a byte at a time.
fn label_runs(t: Text, at: usize) -> (usize, usize) {
    if let Some(block) =
        t.0.as_bytes()
            .get(at..)
            .and_then(|rest| rest.first_chunk::<16>())
    {
        let letters = in_range16::<b'a', b'z'>(block) | in_range16::<b'A', b'Z'>(block);
        let label = letters | in_range16::<b'0', b'9'>(block) | in_range16::<b'-', b'-'>(block);
        let label_length = (!label).trailing_zeros() as usize;
        if label_length < 16 {
            return ((!letters).trailing_zeros() as usize, label_length);
        }
    }
    (t.run(at, UPPER | LOWER), t.run(at, ALNUM | DASH))
}

/// `[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?:(?:\d{1,3}\.){3}\d{1,3})?` (any case) whose first `:` is
/// at `colon`, beginning at `floor` or later: it begins at most four hex digits before the colon.
pub(super) fn ipv6(t: Text, colon: usize, floor: usize) -> Option<Range<usize>> {
    let lowest = floor.max(colon.saturating_sub(4));
    let mut start = colon;
    while start > lowest && t.is(start - 1, HEX) {
        start -= 1;
    }
    let mut at = colon;
    let mut groups = 0;
    while groups < 7 && t.at(at, b':') {
        at += 1;
        at += t.run(at, HEX).min(4);
        groups += 1;
    }
    if groups < 2 {
        return None;
    }
    Some(start..ipv4_tail(t, at).unwrap_or(at))
}

/// `(?:\d{1,3}\.){3}\d{1,3}` at `i`.
fn ipv4_tail(t: Text, i: usize) -> Option<usize> {
    let mut at = i;
    for _ in 0..3 {
        let n = t.digit_run(at);
        if !(1..=3).contains(&n) || !t.at(at + n, b'.') {
            return None;
        }
        at += n + 1;
    }
    let n = t.digit_run(at);
    (n >= 1).then_some(at + n.min(3))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{ALNUM, DASH, DIGIT, LOWER, Text, UPPER, card_run, card_run_by_groups, label_runs};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4_000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Digits counted eight bytes at a step are the digits counted one byte at a time, from
        /// every position (past the end included), whatever bytes lie around them.
        #[test]
        fn digit_runs_counted_eight_at_a_time_are_counted_right(
            text in prop::collection::vec(
                prop_oneof![
                    4 => prop::sample::select(vec!['0', '5', '9', '/', ':', ' ', '-', 'a', '\u{e9}', '\u{663}']),
                    1 => any::<char>(),
                ],
                0..40,
            ).prop_map(String::from_iter),
        ) {
            let t = Text(&text);
            for i in 0..=text.len() + 1 {
                prop_assert_eq!(t.digit_run(i), t.run(i, DIGIT), "at {}", i);
            }
        }

        /// A domain's letters and label characters counted from a block's masks are those counted
        /// a byte at a time, from every position, whatever ends them (the block's edge, the text's
        /// end, a byte of a wider character, the bytes beside each range).
        #[test]
        fn label_runs_read_from_a_block_are_counted_right(
            text in prop::collection::vec(
                prop_oneof![
                    6 => prop::sample::select(vec!['a', 'z', 'A', 'Z', '0', '9', '-']),
                    1 => prop::sample::select(vec!['.', '@', '[', '`', '{', '/', ':', ',', '_', ' ', '\u{e9}']),
                ],
                0..48,
            ).prop_map(String::from_iter),
        ) {
            let t = Text(&text);
            for at in 0..=text.len() {
                prop_assert_eq!(
                    label_runs(t, at),
                    (t.run(at, UPPER | LOWER), t.run(at, ALNUM | DASH)),
                    "at {} in {:?}",
                    at,
                    text
                );
            }
        }

        /// A card run read from a block's masks is the run read group by group, from every digit
        /// group's start, whatever the groups' lengths, separators, what ends the run (near the
        /// sixteen bytes' edge included) and what is asked of each group.
        #[test]
        fn card_runs_read_from_a_block_are_the_runs_read_group_by_group(
            text in prop::collection::vec(
                prop_oneof![
                    6 => prop::sample::select(vec!['0', '1', '5', '9']),
                    3 => prop::sample::select(vec![' ', '-']),
                    1 => prop::sample::select(vec!['.', '(', 'a', '_', '\u{e9}', '\u{663}']),
                ],
                0..48,
            ).prop_map(String::from_iter),
        ) {
            let t = Text(&text);
            let asks: [&dyn Fn(usize, u8, Option<u8>) -> bool; 3] = [
                &|_, _, _| false,
                &|n, _, after| n <= 3 && after == Some(b'.'),
                &|n, lead, after| (n + usize::from(lead) + after.map_or(7, usize::from)) % 3 == 0,
            ];
            for i in (0..text.len()).filter(|&i| t.is(i, DIGIT) && (i == 0 || !t.is(i - 1, DIGIT))) {
                let first = t.digit_run(i);
                for begins in asks {
                    prop_assert_eq!(
                        card_run(t, i, first, begins),
                        card_run_by_groups(t, i, first, begins),
                        "at {} in {:?}",
                        i,
                        text
                    );
                }
            }
        }
    }
}
