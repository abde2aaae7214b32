//! The built-in detectors in one pass over a text.
//!
//! A table gives every byte its classes. Most bytes of prose (letters inside words, spaces) start
//! nothing and cost one lookup. A value can only begin at a digit, `(` or `+` (numbers), an upper-case
//! letter or one of `s r g x e` at the start of a word (IBANs, key prefixes), `-` (`-----BEGIN`), and
//! is found from an `@` (e-mail addresses, read back to their local part) or a `:` (IPv6 addresses, at
//! most four hex digits before it). There the shape is read by hand, exactly as the regular expressions
//! this replaced matched it (leftmost first, greedy, each detector's matches not overlapping; the
//! expressions are kept as the test oracle in `oracle.rs`), and then checked by `detect.rs` (Luhn,
//! mod 97, SSN ranges, a real IPv6 address, phone digit counts).
//!
//! Digits are ASCII digits and letters ASCII letters; word boundaries are Unicode ones, so a value glued
//! to a letter of any script is not a value.

use std::ops::Range;

use tollgate_snapshot::Detector;

use super::detect;

const DIGIT: u8 = 1;
const UPPER: u8 = 1 << 1;
const LOWER: u8 = 1 << 2;
const HEX: u8 = 1 << 3;
/// `_`: with letters and digits, an ASCII word character.
const UNDERSCORE: u8 = 1 << 4;
/// A character of an e-mail address's local part (besides letters, digits and `_`).
const ATOM_MARK: u8 = 1 << 5;
/// Where a shape may begin or be found from.
const START: u8 = 1 << 6;
const DASH: u8 = 1 << 7;

const WORD: u8 = DIGIT | UPPER | LOWER | UNDERSCORE;
const ALNUM: u8 = DIGIT | UPPER | LOWER;
const ATOM: u8 = WORD | ATOM_MARK;

static CLASSES: [u8; 256] = classes();

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

fn is(b: u8, class: u8) -> bool {
    CLASSES[b as usize] & class != 0
}

fn slot(d: Detector) -> usize {
    match d {
        Detector::Email => 0,
        Detector::Phone => 1,
        Detector::CreditCard => 2,
        Detector::Iban => 3,
        Detector::UsSsn => 4,
        Detector::IpAddress => 5,
        Detector::Secret => 6,
    }
}

/// The detectors a scan looks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wanted(u8);

impl Wanted {
    /// These and `d`.
    pub fn and(self, d: Detector) -> Self {
        Wanted(self.0 | 1 << slot(d))
    }

    fn has(self, d: Detector) -> bool {
        self.0 & 1 << slot(d) != 0
    }

    /// Whether no detector is wanted.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What one scan found: per detector, its spans in order, not overlapping.
#[derive(Debug, Default)]
pub struct Found {
    spans: [Vec<Range<usize>>; 7],
}

impl Found {
    /// Where `d` found something (empty if it was not wanted).
    pub fn of(&self, d: Detector) -> &[Range<usize>] {
        &self.spans[slot(d)]
    }
}

/// Where `detector` finds something in `text`, in order, without overlaps.
#[cfg(test)]
pub fn find(detector: Detector, text: &str) -> Vec<Range<usize>> {
    let mut found = scan(text, Wanted::default().and(detector));
    std::mem::take(&mut found.spans[slot(detector)])
}

/// Every wanted detector over `text`, in one pass.
pub fn scan(text: &str, wanted: Wanted) -> Found {
    let mut s = Scan {
        t: Text(text),
        wanted,
        next: [0; 7],
        next_v6: 0,
        v6: Vec::new(),
        found: Found::default(),
    };
    if !wanted.is_empty() {
        s.run();
    }
    if wanted.has(Detector::IpAddress) && !s.v6.is_empty() {
        let v4 = &s.found.spans[slot(Detector::IpAddress)];
        let v6: Vec<Range<usize>> =
            s.v6.into_iter()
                .filter(|m| !v4.iter().any(|f| f.start < m.end && m.start < f.end))
                .collect();
        let ips = &mut s.found.spans[slot(Detector::IpAddress)];
        ips.extend(v6);
        ips.sort_unstable_by_key(|r| r.start);
    }
    s.found
}

/// The text with the lookups the shapes need.
#[derive(Clone, Copy)]
struct Text<'t>(&'t str);

impl Text<'_> {
    fn len(self) -> usize {
        self.0.len()
    }

    fn byte(self, i: usize) -> Option<u8> {
        self.0.as_bytes().get(i).copied()
    }

    /// Whether the byte at `i` exists and is of `class`.
    fn is(self, i: usize, class: u8) -> bool {
        self.byte(i).is_some_and(|b| is(b, class))
    }

    fn at(self, i: usize, c: u8) -> bool {
        self.byte(i) == Some(c)
    }

    fn starts(self, i: usize, lit: &str) -> bool {
        self.0.as_bytes()[i..].starts_with(lit.as_bytes())
    }

    /// How many bytes of `class` follow from `i`.
    fn run(self, i: usize, class: u8) -> usize {
        self.0.as_bytes()[i.min(self.len())..]
            .iter()
            .take_while(|&&b| is(b, class))
            .count()
    }

    /// Whether the character at `i` (a character boundary) is a word character (Unicode, as the
    /// regex crate's `\w`).
    fn word_at(self, i: usize) -> bool {
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
    fn word_before(self, i: usize) -> bool {
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

struct Scan<'t> {
    t: Text<'t>,
    wanted: Wanted,
    /// Per detector, where its next match may begin (the end of its last one).
    next: [usize; 7],
    /// Where the next IPv6 candidate may begin; candidates later dropped still count.
    next_v6: usize,
    v6: Vec<Range<usize>>,
    found: Found,
}

impl Scan<'_> {
    fn wants(&self, d: Detector, i: usize) -> bool {
        self.wanted.has(d) && i >= self.next[slot(d)]
    }

    fn push(&mut self, d: Detector, span: Range<usize>) {
        self.found.spans[slot(d)].push(span);
    }

    fn run(&mut self) {
        let bytes = self.t.0.as_bytes();
        let mut after_word = false;
        for (i, &b) in bytes.iter().enumerate() {
            let class = CLASSES[b as usize];
            let inside_word = after_word && class & WORD != 0;
            after_word = class & WORD != 0;
            // A letter or digit right after an ASCII letter or digit begins nothing.
            if class & START != 0 && !inside_word {
                self.candidate(i, b);
            }
        }
    }

    /// Kept out of the loop above: inlined, its many offsets from `i` became counters the loop
    /// stepped on every byte.
    #[inline(never)]
    fn candidate(&mut self, i: usize, b: u8) {
        match b {
            // Inside a word (a longer number included) nothing begins.
            b'0'..=b'9' => {
                if !self.t.word_before(i) {
                    self.digits(i, b);
                }
            }
            b'(' | b'+' => self.phone(i),
            b'@' => self.email(i),
            b':' => self.ipv6(i),
            b'-' => self.secret(i),
            _ if is(b, UPPER | LOWER) => {
                if !self.t.word_before(i) {
                    if is(b, UPPER) {
                        self.iban(i);
                    }
                    self.secret(i);
                }
            }
            _ => {}
        }
    }

    /// Phone numbers, card numbers, SSNs and IPv4 addresses: they start at a digit at the start of a word.
    fn digits(&mut self, i: usize, first: u8) {
        // The first group of digits and what follows it rule most shapes out before they are read.
        let n = self.t.run(i, DIGIT);
        let after = self.t.byte(i + n);
        let separated = matches!(after, Some(b' ' | b'.' | b'-'));
        // `415-`, `415 `, `415.` (an area code), or `1` before one (`1-415…`, `1(415)…`).
        if (n == 3 && separated) || (first == b'1' && n == 1 && (separated || after == Some(b'(')))
        {
            self.phone(i);
        }
        if self.wants(Detector::CreditCard, i)
            && let Some((end, digits)) = card_run(self.t, i, n)
        {
            self.next[slot(Detector::CreditCard)] = end;
            if digits >= 13 {
                let cards = detect::cards_within(&self.t.0[i..end], i);
                self.found.spans[slot(Detector::CreditCard)].extend(cards);
            }
        }
        if n == 3
            && after == Some(b'-')
            && self.wants(Detector::UsSsn, i)
            && let Some((end, issuable)) = ssn(self.t, i)
        {
            self.next[slot(Detector::UsSsn)] = end;
            if issuable {
                self.push(Detector::UsSsn, i..end);
            }
        }
        if n <= 3
            && after == Some(b'.')
            && self.wants(Detector::IpAddress, i)
            && let Some(end) = ipv4(self.t, i)
        {
            self.next[slot(Detector::IpAddress)] = end;
            self.push(Detector::IpAddress, i..end);
        }
    }

    /// A phone number's candidate at `i`, cut down to the number it begins with.
    fn phone(&mut self, i: usize) {
        if !self.wants(Detector::Phone, i) {
            return;
        }
        let end = if self.t.at(i, b'+') {
            international(self.t, i)
        } else {
            north_american(self.t, i)
        };
        if let Some(end) = end {
            self.next[slot(Detector::Phone)] = match detect::phone_within(&self.t.0[i..end]) {
                Some(len) if len > 0 => {
                    self.push(Detector::Phone, i..i + len);
                    i + len
                }
                // Candidates begin with an ASCII byte: the search goes on one byte later.
                _ => i + 1,
            };
        }
    }

    fn iban(&mut self, i: usize) {
        if !self.wants(Detector::Iban, i) {
            return;
        }
        if let Some(end) = iban(self.t, i) {
            self.next[slot(Detector::Iban)] = match detect::iban_within(&self.t.0[i..end]) {
                Some(len) if len > 0 => {
                    self.push(Detector::Iban, i..i + len);
                    i + len
                }
                _ => i + 1,
            };
        }
    }

    fn secret(&mut self, i: usize) {
        if self.wants(Detector::Secret, i)
            && let Some(end) = secret(self.t, i)
        {
            self.next[slot(Detector::Secret)] = end;
            self.push(Detector::Secret, i..end);
        }
    }

    /// An e-mail address around the `@` at `at`.
    fn email(&mut self, at: usize) {
        if !self.wanted.has(Detector::Email) {
            return;
        }
        let floor = self.next[slot(Detector::Email)];
        if let Some(start) = local_part(self.t, at, floor)
            && let Some(end) = domain(self.t, at + 1)
        {
            self.next[slot(Detector::Email)] = end;
            self.push(Detector::Email, start..end);
        }
    }

    /// An IPv6 candidate whose first `:` is at `colon`.
    fn ipv6(&mut self, colon: usize) {
        if !self.wanted.has(Detector::IpAddress) || colon < self.next_v6 {
            return;
        }
        let Some(span) = ipv6(self.t, colon, self.next_v6) else {
            return;
        };
        self.next_v6 = span.end;
        let text = self.t.0;
        if detect::standalone(text, span.clone())
            && text[span.clone()].parse::<std::net::Ipv6Addr>().is_ok()
        {
            self.v6.push(span);
        }
    }
}

fn separator(t: Text, i: usize) -> bool {
    matches!(t.byte(i), Some(b' ' | b'.' | b'-'))
}

/// Whether `n` digits start at `i`.
fn digits(t: Text, i: usize, n: usize) -> bool {
    (i..i + n).all(|j| t.is(j, DIGIT))
}

/// `\b\d+(?:[ -]\d+)*\b` at `i` (its first group `first` digits long): digit groups joined by single
/// spaces or dashes, ending at a word boundary (the last group is left out when a letter follows it).
/// Its end and how many digits it holds.
fn card_run(t: Text, i: usize, first: usize) -> Option<(usize, usize)> {
    let mut end = i + first;
    let mut digits = first;
    let mut before_last = None;
    while matches!(t.byte(end), Some(b' ' | b'-')) && t.is(end + 1, DIGIT) {
        before_last = Some((end, digits));
        let n = t.run(end + 1, DIGIT);
        end += 1 + n;
        digits += n;
    }
    if t.word_at(end) {
        before_last
    } else {
        Some((end, digits))
    }
}

/// `\b(\d{3})-(\d{2})-(\d{4})\b` at `i`: its end, and whether the number could have been issued.
fn ssn(t: Text, i: usize) -> Option<(usize, bool)> {
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
fn ipv4(t: Text, i: usize) -> Option<usize> {
    let mut at = i;
    for k in 0..4 {
        let n = t.run(at, DIGIT);
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
fn international(t: Text, i: usize) -> Option<usize> {
    if !matches!(t.byte(i + 1), Some(b'1'..=b'9')) {
        return None;
    }
    let more = t.run(i + 2, DIGIT).min(3);
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
    let n = t.run(at, DIGIT);
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
fn north_american(t: Text, i: usize) -> Option<usize> {
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
fn iban(t: Text, i: usize) -> Option<usize> {
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
fn secret(t: Text, i: usize) -> Option<usize> {
    match t.byte(i)? {
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
fn local_part(t: Text, at: usize, floor: usize) -> Option<usize> {
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
fn domain(t: Text, i: usize) -> Option<usize> {
    let mut tops = Vec::new();
    let mut at = i;
    loop {
        let n = t.run(at, ALNUM | DASH);
        let label = n >= 1 && n <= 63 && t.is(at, ALNUM) && t.is(at + n - 1, ALNUM);
        if !(label && t.at(at + n, b'.')) {
            break;
        }
        at += n + 1;
        tops.push(at);
    }
    tops.into_iter().rev().find_map(|top| {
        let n = t.run(top, UPPER | LOWER);
        ((2..=24).contains(&n) && !t.word_at(top + n)).then_some(top + n)
    })
}

/// `[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?:(?:\d{1,3}\.){3}\d{1,3})?` (any case) whose first `:` is
/// at `colon`, beginning at `floor` or later: it begins at most four hex digits before the colon.
fn ipv6(t: Text, colon: usize, floor: usize) -> Option<Range<usize>> {
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
        let n = t.run(at, DIGIT);
        if !(1..=3).contains(&n) || !t.at(at + n, b'.') {
            return None;
        }
        at += n + 1;
    }
    let n = t.run(at, DIGIT);
    (n >= 1).then_some(at + n.min(3))
}
