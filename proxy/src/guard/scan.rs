//! The built-in detectors in one pass over a text.
//!
//! A table gives every byte its classes. Most bytes of prose (letters inside words, spaces) start
//! nothing and cost one lookup. A value can only begin at a digit, `(` or `+` (numbers), an upper-case
//! letter or one of `s r g x e` at the start of a word (IBANs, key prefixes), `-` (`-----BEGIN`), and
//! is found from an `@` (e-mail addresses, read back to their local part) or a `:` (IPv6 addresses, at
//! most four hex digits before it). There the shape is read by hand (`shape.rs`), exactly as the
//! regular expressions this replaced matched it (leftmost first, greedy, each detector's matches not
//! overlapping; the expressions are kept as the test oracle in `oracle.rs`), and then checked by
//! `detect.rs` (Luhn, mod 97, SSN ranges, a real IPv6 address, phone digit counts).
//!
//! Secrets begin at lower-case letters too, so the scan looks at every word only when the text holds
//! a key mark where a secret's prefix holds one (`secret_possible`, found with `memchr`); otherwise
//! the bytes that may begin a value, from `(` to `Z`, are found sixteen at a time (`run_sparse`).
//!
//! Digits are ASCII digits and letters ASCII letters; word boundaries are Unicode ones, so a value glued
//! to a letter of any script is not a value.

use std::ops::Range;

use tollgate_snapshot::Detector;

use super::block::in_range16;
use super::detect;
use super::shape::{
    CLASSES, LOWER, START, Text, UPPER, WORD, card_run, domain, iban, international, ipv4, ipv6,
    is, local_part, north_american, secret, ssn,
};

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

    /// These but `d`.
    pub fn without(self, d: Detector) -> Self {
        Wanted(self.0 & !(1 << slot(d)))
    }

    /// Whether no detector is wanted.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What one scan found: per detector, its spans in order, not overlapping.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    spans: [Vec<Range<usize>>; 7],
}

impl Found {
    /// Where `d` found something (empty if it was not wanted).
    pub fn of(&self, d: Detector) -> &[Range<usize>] {
        &self.spans[slot(d)]
    }

    /// Whether no detector found anything.
    pub fn is_empty(&self) -> bool {
        self.spans.iter().all(Vec::is_empty)
    }
}

/// Where `detector` finds something in `text`, in order, without overlaps.
#[cfg(test)]
pub fn find(detector: Detector, text: &str) -> Vec<Range<usize>> {
    let mut found = scan(text, Wanted::default().and(detector));
    std::mem::take(&mut found.spans[slot(detector)])
}

/// Every wanted detector over `text`, in one pass. First, in text where no detector but secrets could
/// find anything, the others are no longer wanted (see [`possible`]), so prose without digits, `@`,
/// `:`, `-`, `_`, `A` or `J` costs one quick look at each byte and no scan. Then secrets are looked for only if the
/// text holds a key mark where a secret's prefix holds one ([`secret_possible`]): otherwise the scan
/// stops only at the bytes from `(` to `Z` (see [`Scan::run_sparse`]). In a longer text that look
/// is made by the scan without secrets itself, which watches for such a key mark on its way and
/// gives up at the first one (the text is then scanned again, secrets included).
pub fn scan(text: &str, wanted: Wanted) -> Found {
    let wanted = possible(wanted, text.as_bytes());
    if wanted.is_empty() {
        return Found::default();
    }
    if !wanted.has(Detector::Secret) {
        return scan_all(text, wanted);
    }
    if text.len() < 64 {
        return if secret_possible(text.as_bytes()) {
            scan_all(text, wanted)
        } else {
            scan_all(text, wanted.without(Detector::Secret))
        };
    }
    let mut found = Found::default();
    let mut s = Scan::new(text, wanted.without(Detector::Secret), &mut found);
    if s.run_sparse::<true>() {
        s.finish();
        found
    } else {
        scan_all(text, wanted)
    }
}

/// Whether no detector can find anything in `text`: it holds no byte from `-` to `_`, where every
/// byte some detector's values hold lies (see [`possible`]). Sixteen bytes a test: what a stream's
/// window checks for most pieces of prose, before any other work.
pub fn quiet(text: &str) -> bool {
    let bytes = text.as_bytes();
    let Some(last) = bytes.last_chunk::<16>() else {
        return !bytes.iter().any(|b| (b'-'..=b'_').contains(b));
    };
    // The bytes after the last whole block are read as the text's last sixteen, overlapping it.
    bytes
        .chunks_exact(16)
        .all(|block| in_range16::<b'-', b'_'>(block.try_into().expect("sixteen bytes")) == 0)
        && in_range16::<b'-', b'_'>(last) == 0
}

/// Bits of [`NEEDS`]: a byte that every value of some detector holds.
const HAS_DIGIT: u8 = 1;
const HAS_AT: u8 = 2;
const HAS_COLON: u8 = 4;
/// `-` (`sk-…`, `xoxb-…`, `-----BEGIN`), `_` (`sk_live_…`, `ghp_…`, `github_pat_…`), `A` (`AKIA…`,
/// `ASIA…`, `AIza…`) or `J` (`eyJ…`): every secret shape holds one.
const HAS_KEY_MARK: u8 = 8;

static NEEDS: [u8; 256] = needs();

const fn needs() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_digit() {
            HAS_DIGIT
        } else if c == b'@' {
            HAS_AT
        } else if c == b':' {
            HAS_COLON
        } else if matches!(c, b'-' | b'_' | b'A' | b'J') {
            HAS_KEY_MARK
        } else {
            0
        };
        b += 1;
    }
    t
}

/// Which of `wanted` may find something in `text`: e-mail addresses hold an `@`; phone, card, IBAN
/// and SSN numbers digits; IP addresses digits (IPv4) or a `:` (IPv6); secrets one of `- _ A J`.
/// One lookup a byte, sixteen bytes at a time, until a detector other than secrets is known to be
/// possible: all of `wanted` then, since the scan must run anyway, and it passes over the bytes that
/// begin nothing whatever it looks for (reading on to rule out the others cost a second read of
/// text without an `@`, or without digits).
fn possible(wanted: Wanted, text: &[u8]) -> Wanted {
    const DETECTORS: [(Detector, u8); 7] = [
        (Detector::Email, HAS_AT),
        (Detector::Phone, HAS_DIGIT),
        (Detector::CreditCard, HAS_DIGIT),
        (Detector::Iban, HAS_DIGIT),
        (Detector::UsSsn, HAS_DIGIT),
        (Detector::IpAddress, HAS_DIGIT | HAS_COLON),
        (Detector::Secret, HAS_KEY_MARK),
    ];
    let keep = |present: u8| {
        DETECTORS.iter().fold(Wanted::default(), |w, &(d, needs)| {
            if wanted.has(d) && needs & present != 0 {
                w.and(d)
            } else {
                w
            }
        })
    };
    if wanted.is_empty() {
        return wanted;
    }
    // The bytes that make some wanted detector other than secrets possible: once one is seen, the
    // scan runs.
    let enough = DETECTORS
        .iter()
        .filter(|&&(d, _)| wanted.has(d) && d != Detector::Secret)
        .fold(0, |bits, &(_, needs)| bits | needs);
    let mut present = 0u8;
    let mut blocks = text.chunks_exact(16);
    for block in &mut blocks {
        // Every byte `NEEDS` marks lies in `-..=_`; prose's lower-case letters and spaces do not, so
        // most blocks are passed over with one test.
        if in_range16::<b'-', b'_'>(block.try_into().expect("sixteen bytes")) == 0 {
            continue;
        }
        present |= block.iter().fold(0, |bits, &b| bits | NEEDS[b as usize]);
        if present & enough != 0 {
            return wanted;
        }
    }
    for &b in blocks.remainder() {
        present |= NEEDS[b as usize];
    }
    keep(present)
}

/// Whether `text` holds a key mark (`-`, `_`, `A` or `J`) where a secret's prefix holds one
/// ([`begins_key`]): a hyphen in a word or a date, or a capital A, is common in prose, a secret's
/// prefix is not. Read byte by byte: used for short texts (a streamed answer's pieces), where that
/// costs less than setting up a search; a longer text is watched by the scan itself.
fn secret_possible(text: &[u8]) -> bool {
    (0..text.len()).any(|i| matches!(text[i], b'-' | b'_' | b'J' | b'A') && begins_key(text, i))
}

/// Whether the byte at `i`, if a key mark, is where some secret's prefix holds one: the `-` of
/// `sk-`, `xox[abposr]-` or `-----BEGIN`, the first `_` of `sk_`/`rk_`, `gh[pousr]_` or `github_`,
/// the `A` of `AKIA`, `ASIA` or `AIza`, the `J` of `eyJ`. Every secret shape begins with one of these
/// prefixes, so a text without such a byte holds no secret. A byte that is no key mark is not one.
fn begins_key(text: &[u8], i: usize) -> bool {
    let before = i.checked_sub(1).map(|p| text[p]);
    let after = text.get(i + 1).copied();
    match text[i] {
        b'-' => {
            matches!(before, Some(b'k' | b'a' | b'b' | b'p' | b'o' | b's' | b'r'))
                || after == Some(b'-')
        }
        b'_' => matches!(before, Some(b'k' | b'p' | b'o' | b'u' | b's' | b'r' | b'b')),
        b'A' => matches!(after, Some(b'K' | b'S' | b'I')),
        b'J' => before == Some(b'y'),
        _ => false,
    }
}

/// Every built-in detector.
#[cfg(test)]
pub(super) const ALL: [Detector; 7] = [
    Detector::Email,
    Detector::Phone,
    Detector::CreditCard,
    Detector::Iban,
    Detector::UsSsn,
    Detector::IpAddress,
    Detector::Secret,
];

/// Every wanted detector over `text`, in one pass, without first asking whether secrets are
/// possible: the oracle of [`scan`]'s tests.
pub(super) fn scan_all(text: &str, wanted: Wanted) -> Found {
    let mut found = Found::default();
    let mut s = Scan::new(text, wanted, &mut found);
    if !wanted.is_empty() {
        s.run();
    }
    s.finish();
    found
}

/// Bits of [`BEGINS`]: the byte is an ASCII word character (letter, digit, `_`).
const AFTER_WORD_CHAR: u8 = 1;
/// A candidate begins at the byte after anything but a word character.
const AFTER_OTHER: u8 = 2;
/// A candidate begins at the byte even right after a word character (`AFTER_OTHER << 1`).
const AFTER_WORD: u8 = 4;

/// Per byte, where a candidate begins: a letter or digit right after an ASCII word character begins
/// nothing (every shape that starts with one needs a word boundary there); the other starting bytes
/// (`( + @ : -`) begin one anywhere. One lookup and one test a byte.
static BEGINS: [u8; 256] = begins();

const fn begins() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let class = CLASSES[b];
        let mut k = 0;
        if class & WORD != 0 {
            k |= AFTER_WORD_CHAR;
        }
        if class & START != 0 {
            k |= AFTER_OTHER;
            if class & WORD == 0 {
                k |= AFTER_WORD;
            }
        }
        t[b] = k;
        b += 1;
    }
    t
}

/// The lowest and the highest byte that may begin a value when secrets are not looked for: digits,
/// upper-case letters, `( + : @` (and `-`, which then begins nothing) lie between them; lower-case
/// letters, white space and bytes of wider characters do not.
const FIRST: u8 = b'(';
const LAST: u8 = b'Z';
/// The highest byte the scan without secrets stops at when it also watches for key marks: `_`
/// (the others, `- A J`, lie between [`FIRST`] and [`LAST`]).
const LAST_WATCHED: u8 = b'_';

/// The bytes of `block` [`Scan::run_sparse`] looks at: from [`FIRST`] to [`LAST`], or to
/// [`LAST_WATCHED`] with `WATCH`.
fn block_hits<const WATCH: bool>(block: &[u8; 16]) -> u32 {
    if WATCH {
        in_range16::<FIRST, LAST_WATCHED>(block)
    } else {
        in_range16::<FIRST, LAST>(block)
    }
}

/// Whether a group of `n` digits, the first `first`, followed by `after`, may begin a phone number
/// (`415-`, `415 `, `415.`, an area code, or `1` before one: `1-415…`, `1(415)…`), an SSN (`123-`, an
/// area code's shape too) or an IPv4 address (`10.`): what [`Scan::digits`] asks before it reads any
/// of them.
fn group_begins(n: usize, first: u8, after: Option<u8>) -> bool {
    phone_shaped(n, first, after) || (n <= 3 && after == Some(b'.'))
}

/// The phone number part of [`group_begins`].
fn phone_shaped(n: usize, first: u8, after: Option<u8>) -> bool {
    let separated = matches!(after, Some(b' ' | b'.' | b'-'));
    (n == 3 && separated) || (first == b'1' && n == 1 && (separated || after == Some(b'(')))
}

/// One scan's state; what it finds goes straight into the caller's [`Found`] (when the scan held
/// its own, the whole scan was copied to hand it back).
struct Scan<'t, 'f> {
    t: Text<'t>,
    wanted: Wanted,
    /// Per detector, where its next match may begin (the end of its last one).
    next: [usize; 7],
    /// Where the next IPv6 candidate may begin; candidates later dropped still count.
    next_v6: usize,
    v6: Vec<Range<usize>>,
    found: &'f mut Found,
}

impl<'t, 'f> Scan<'t, 'f> {
    fn new(text: &'t str, wanted: Wanted, found: &'f mut Found) -> Self {
        Scan {
            t: Text(text),
            wanted,
            next: [0; 7],
            next_v6: 0,
            v6: Vec::new(),
            found,
        }
    }

    /// Adds the IPv6 addresses found to the IP addresses, but those an IPv4 address overlaps.
    fn finish(mut self) {
        if self.wanted.has(Detector::IpAddress) && !self.v6.is_empty() {
            self.add_v6();
        }
    }

    /// The IPv6 addresses found added to the IP addresses, but those an IPv4 address overlaps.
    fn add_v6(&mut self) {
        let v4 = &self.found.spans[slot(Detector::IpAddress)];
        let v6: Vec<Range<usize>> = std::mem::take(&mut self.v6)
            .into_iter()
            .filter(|m| !v4.iter().any(|f| f.start < m.end && m.start < f.end))
            .collect();
        let ips = &mut self.found.spans[slot(Detector::IpAddress)];
        ips.extend(v6);
        ips.sort_unstable_by_key(|r| r.start);
    }

    fn wants(&self, d: Detector, i: usize) -> bool {
        self.wanted.has(d) && i >= self.next[slot(d)]
    }

    fn push(&mut self, d: Detector, span: Range<usize>) {
        let spans = &mut self.found.spans[slot(d)];
        // A text with one value often holds a few: room for eight at once, not grown from four.
        // Made with its room (an allocation and no more), not grown into it.
        if spans.capacity() == 0 {
            *spans = Vec::with_capacity(8);
        }
        spans.push(span);
    }

    fn run(&mut self) {
        if !self.wanted.has(Detector::Secret) {
            self.run_sparse::<false>();
            return;
        }
        let bytes = self.t.0.as_bytes();
        let n = bytes.len();
        let mut i = 0;
        // Here the byte before `i`, if any, is not an ASCII word character.
        while i < n {
            let b = bytes[i];
            let begins = BEGINS[b as usize];
            if begins & AFTER_OTHER != 0 {
                self.candidate(i, b);
            }
            i += 1;
            if begins & AFTER_WORD_CHAR == 0 {
                continue;
            }
            // The rest of a word begins nothing: passed over with one test a byte.
            while i < n && BEGINS[bytes[i] as usize] & AFTER_WORD_CHAR != 0 {
                i += 1;
            }
            // The byte after the word, not a word character, may still begin something (`@`, `:`, …).
            if i < n {
                let b = bytes[i];
                if BEGINS[b as usize] & AFTER_WORD != 0 {
                    self.candidate(i, b);
                }
                i += 1;
            }
        }
    }

    /// [`Self::run`] when secrets are not wanted: then only bytes from `(` to `Z` (digits, upper-case
    /// letters, `( + - : @` and a few more) can begin a value, and prose is mostly lower-case letters
    /// and spaces. Sixteen bytes are tested at a time for any such byte, from the byte after the
    /// last one looked at (or after the rest of a number it began); only those are looked at (`-`
    /// then begins nothing). With `WATCH`, the bytes up to `_` are, and the scan gives up (`false`)
    /// at the first key mark where a secret's prefix holds one ([`begins_key`]).
    fn run_sparse<const WATCH: bool>(&mut self) -> bool {
        let bytes = self.t.0.as_bytes();
        let n = bytes.len();
        if n < 16 {
            let last = if WATCH { LAST_WATCHED } else { LAST };
            let mut past = 0;
            for i in 0..n {
                if i >= past && (FIRST..=last).contains(&bytes[i]) {
                    let Some(next) = self.hit::<WATCH>(bytes, i) else {
                        return false;
                    };
                    past = next;
                }
            }
            return true;
        }
        // The next byte to look at.
        let mut at = 0;
        while let Some(block) = bytes[at..].first_chunk() {
            let hits = block_hits::<WATCH>(block);
            if hits == 0 {
                at += 16;
                continue;
            }
            let Some(next) = self.hit::<WATCH>(bytes, at + hits.trailing_zeros() as usize) else {
                return false;
            };
            at = next;
        }
        // The bytes left, read as the text's last sixteen with those before `at` shifted out.
        while at < n {
            let last = bytes[n - 16..].try_into().expect("sixteen bytes");
            let hits = block_hits::<WATCH>(last) >> (at + 16 - n);
            if hits == 0 {
                break;
            }
            let Some(next) = self.hit::<WATCH>(bytes, at + hits.trailing_zeros() as usize) else {
                return false;
            };
            at = next;
        }
        true
    }

    /// A byte [`Self::run_sparse`] looks at: `None` if `WATCH` and it is a key mark where a secret's
    /// prefix holds one, else where the next byte to look at is (see [`Self::maybe_candidate`]).
    #[inline(always)]
    fn hit<const WATCH: bool>(&mut self, bytes: &[u8], i: usize) -> Option<usize> {
        if WATCH && NEEDS[bytes[i] as usize] == HAS_KEY_MARK && begins_key(bytes, i) {
            return None;
        }
        Some(self.maybe_candidate(bytes, i))
    }

    /// A candidate at `i` if its byte begins one where it stands: anywhere for `( + @ :`, only
    /// after a byte that is no ASCII word character for a digit or a letter. Where the bytes it
    /// leaves to it end: the rest of a number it began (see [`Self::candidate`]), else `i + 1`.
    fn maybe_candidate(&mut self, bytes: &[u8], i: usize) -> usize {
        let b = bytes[i];
        let begins = BEGINS[b as usize];
        // Without secrets `-` begins nothing.
        if b != b'-'
            && begins & AFTER_OTHER != 0
            && (begins & AFTER_WORD != 0
                || i == 0
                || BEGINS[bytes[i - 1] as usize] & AFTER_WORD_CHAR == 0)
        {
            self.candidate(i, b)
        } else {
            i + 1
        }
    }

    /// Kept out of the loop above: inlined, its many offsets from `i` became counters the loop
    /// stepped on every byte.
    /// Where the candidate's first digits end if it began a number (nothing begins inside one), or
    /// its run of digit groups when no later group begins anything either, else `i + 1`.
    #[inline(never)]
    fn candidate(&mut self, i: usize, b: u8) -> usize {
        match b {
            // Inside a word (a longer number included) nothing begins.
            // The loop saw no ASCII word character before `i`: only a wider one can be.
            b'0'..=b'9' if !self.wide_word_before(i) => return i + self.digits(i, b),
            b'(' | b'+' => self.phone(i),
            b'@' => self.email(i),
            b':' => self.ipv6(i),
            b'-' => self.secret(i),
            _ if is(b, UPPER | LOWER) && !self.wide_word_before(i) => {
                if is(b, UPPER) {
                    self.iban(i);
                }
                self.secret(i);
            }
            _ => {}
        }
        i + 1
    }

    /// Whether a word character ends right before `i`, given that the byte before it is not an
    /// ASCII word character (the loop in [`Self::run`] called only then): only a character of more
    /// than one byte can be one.
    fn wide_word_before(&self, i: usize) -> bool {
        i > 0 && self.t.0.as_bytes()[i - 1] >= 0x80 && self.t.word_before(i)
    }

    /// Phone numbers, card numbers, SSNs and IPv4 addresses: they start at a digit at the start of a word.
    /// How many bytes from `i` begin nothing more: the first group of digits, or the whole run of
    /// groups a card is looked for in when no later group of it can begin a value either.
    fn digits(&mut self, i: usize, first: u8) -> usize {
        // The first group of digits and what follows it rule most shapes out before they are read.
        let n = self.t.digit_run(i);
        let after = self.t.byte(i + n);
        if phone_shaped(n, first, after) {
            self.phone(i);
        }
        let mut quiet = n;
        // A lone group of under 13 digits holds no card, and passing over it changes nothing: no
        // later card candidate can begin inside it.
        if self.wants(Detector::CreditCard, i)
            && (n >= 13 || matches!(after, Some(b' ' | b'-')))
            && let Some(run) = card_run(self.t, i, n, group_begins)
        {
            self.next[slot(Detector::CreditCard)] = run.end;
            if run.digits >= 13 {
                let cards = detect::cards_within(&self.t.0[i..run.end], i);
                self.found.spans[slot(Detector::CreditCard)].extend(cards);
            }
            // A date's or an amount's later groups (`-12-01`) are passed over as the first one is
            // when none of them may begin a value either: inside such a run nothing else can
            // begin (no `@`, `:`, `(` or `+`), and a dash between digits is no secret's key mark.
            if !run.later_begins {
                quiet = run.end - i;
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
        quiet
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::quiet;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4_000, failure_persistence: None, ..ProptestConfig::default() })]

        /// A text is quiet exactly when none of its bytes lies from `-` to `_`, wherever such a
        /// byte lies (in a whole block or among the last bytes, read as an overlapping block).
        #[test]
        fn a_text_is_quiet_exactly_when_no_byte_lies_from_dash_to_underscore(
            text in "[a-z ,.é]{0,40}",
            at in any::<prop::sample::Index>(),
            loud in prop::option::of(prop::sample::select(vec!['-', '@', '0', 'A', '_', ':'])),
        ) {
            let mut text = text;
            if let Some(c) = loud && !text.is_empty() {
                let at = at.index(text.len());
                let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
                text.insert(at, c);
            }
            let naive = !text.bytes().any(|b| (b'-'..=b'_').contains(&b));
            prop_assert_eq!(quiet(&text), naive, "{:?}", text);
        }
    }
}
