//! The checks the built-in detectors apply to the candidates `scan.rs` finds: the Luhn digit of card
//! numbers, the mod-97 checksum of IBANs, the number ranges the SSA never issues, a phone number's
//! digit count, an IPv6 address standing alone.

use std::ops::Range;

/// Whether `span` is not part of a longer word (`Vec::new`, `abc::def` are paths, not addresses).
pub fn standalone(text: &str, span: Range<usize>) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    !text[..span.start].chars().next_back().is_some_and(word)
        && !text[span.end..].chars().next().is_some_and(word)
}

/// The longest phone number `candidate` begins with, ending at the end of a group of digits and
/// holding 7 to 15 digits (a greedy match may have run into the next number).
pub fn phone_within(candidate: &str) -> Option<usize> {
    let bytes = candidate.as_bytes();
    let mut digits = 0;
    let mut best = None;
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_digit() {
            digits += 1;
        }
        let group_end = (b.is_ascii_digit() || b == b')')
            && bytes
                .get(i + 1)
                .is_none_or(|n| !n.is_ascii_digit() && *n != b')');
        if group_end && (7..=15).contains(&digits) {
            best = Some(i + 1);
        }
    }
    best
}

/// The card numbers in a run of digit groups (`offset`: where the run starts in the text): from each
/// group, the longest run of groups holding 13 to 19 digits whose Luhn digit is right.
///
/// Each start's Luhn sums are carried along as groups are added (one pass over at most 19 digits per
/// start) rather than computed again for every end: on digit-rich text this was the scan's largest
/// cost.
pub fn cards_within(run: &str, offset: usize) -> Vec<Range<usize>> {
    let b = run.as_bytes();
    // Groups are the runs of digits; read in place, not gathered first.
    let next_group = |from: usize| (from..b.len()).find(|&k| b[k].is_ascii_digit());
    let group_end =
        |from: usize| from + b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut found = Vec::new();
    let mut start = next_group(0);
    while let Some(first) = start {
        let mut luhn = Luhn::default();
        let mut best = None;
        let mut group = first;
        let mut to_the_end = true;
        loop {
            let end = group_end(group);
            if luhn.count + (end - group) > 19 {
                to_the_end = false;
                break;
            }
            for &c in &b[group..end] {
                luhn.push(c - b'0');
            }
            if luhn.valid() {
                best = Some(end);
            }
            match next_group(end) {
                Some(next) => group = next,
                None => break,
            }
        }
        match best {
            Some(end) => {
                found.push(offset + first..offset + end);
                start = next_group(end);
            }
            // Every later start holds fewer digits still.
            None if to_the_end && luhn.count < 13 => break,
            None => start = next_group(group_end(first)),
        }
    }
    found
}

/// The Luhn sum of digits read left to right, kept both ways: with every digit at an even position
/// from the left doubled, and with every odd one doubled. Which one the check wants depends on the
/// parity of the count, known only at the end (the check digit is the last one, never doubled).
#[derive(Default)]
struct Luhn {
    count: usize,
    even_doubled: u32,
    odd_doubled: u32,
}

impl Luhn {
    fn push(&mut self, digit: u8) {
        let d = u32::from(digit);
        let twice = if d * 2 > 9 { d * 2 - 9 } else { d * 2 };
        if self.count.is_multiple_of(2) {
            self.even_doubled += twice;
            self.odd_doubled += d;
        } else {
            self.even_doubled += d;
            self.odd_doubled += twice;
        }
        self.count += 1;
    }

    /// 13 to 19 digits, the last one right: from the right, every second digit is doubled, so the
    /// first from the left is doubled when the count is even.
    fn valid(&self) -> bool {
        let sum = if self.count.is_multiple_of(2) {
            self.even_doubled
        } else {
            self.odd_doubled
        };
        (13..=19).contains(&self.count) && sum.is_multiple_of(10)
    }
}

/// A card number: 13 to 19 digits whose Luhn check digit is right (other characters skipped). The
/// scan uses [`cards_within`]; this whole-value check is what tests hold it to.
#[cfg(test)]
pub fn card_number(text: &str) -> bool {
    let mut count = 0;
    let mut sum = 0;
    for b in text.bytes().rev().filter(u8::is_ascii_digit) {
        let d = u32::from(b - b'0');
        sum += if count % 2 == 1 {
            let twice = d * 2;
            if twice > 9 { twice - 9 } else { twice }
        } else {
            d
        };
        count += 1;
        if count > 19 {
            return false;
        }
    }
    (13..=19).contains(&count) && sum.is_multiple_of(10)
}

/// The length of the longest IBAN that `candidate` begins with (a greedy match may have taken the
/// next word too: `DE89 3704 0044 0532 0130 00 THEN`), or `None`: the whole candidate, or a part of
/// it that ends before a space.
///
/// One pass: the mod-97 remainder of the characters after the first four is carried along, and at
/// every place a part may end the first four are appended to it arithmetically (they are two letters
/// and two digits, six decimal digits once the letters are numbers).
pub fn iban_within(candidate: &str) -> Option<usize> {
    let bytes = candidate.as_bytes();
    let mut head: u32 = 0;
    let mut rest: u32 = 0;
    let mut n = 0usize;
    let mut best = None;
    // Whether the compact characters `0..n` are shaped as an IBAN's.
    let mut shaped = true;
    let ends_here = |n: usize, shaped: bool, rest: u32, head: u32| {
        shaped && (15..=34).contains(&n) && (rest * 1_000_000 + head) % 97 == 1
    };
    for (i, &b) in bytes.iter().enumerate() {
        if b == b' ' {
            if i > 0 && ends_here(n, shaped, rest, head) {
                best = Some(i);
            }
            continue;
        }
        shaped = shaped
            && match n {
                0 | 1 => b.is_ascii_uppercase(),
                2 | 3 => b.is_ascii_digit(),
                _ => b.is_ascii_uppercase() || b.is_ascii_digit(),
            };
        if !shaped || n >= 34 {
            // No longer part can be one.
            return best;
        }
        let fold = |r: u32| {
            if b.is_ascii_digit() {
                (r * 10 + u32::from(b - b'0')) % 97
            } else {
                (r * 100 + u32::from(b - b'A') + 10) % 97
            }
        };
        if n < 4 {
            head = fold(head);
        } else {
            rest = fold(rest);
        }
        n += 1;
    }
    if ends_here(n, shaped, rest, head) {
        best = Some(bytes.len());
    }
    best
}

/// An IBAN: country letters, two check digits and 11 to 30 letters and digits (spaces allowed),
/// whose mod-97 checksum is 1. The scan uses [`iban_within`]; this whole-value check is what tests
/// hold it to.
#[cfg(test)]
pub fn iban(text: &str) -> bool {
    let compact = || text.bytes().filter(|b| *b != b' ');
    let len = compact().count();
    if !(15..=34).contains(&len) {
        return false;
    }
    let shaped = compact().enumerate().all(|(i, b)| match i {
        0 | 1 => b.is_ascii_uppercase(),
        2 | 3 => b.is_ascii_digit(),
        _ => b.is_ascii_uppercase() || b.is_ascii_digit(),
    });
    if !shaped {
        return false;
    }
    // Move the first four characters to the end, letters become 10..35, the number mod 97 must be 1.
    let mut rest: u32 = 0;
    for b in compact().skip(4).chain(compact().take(4)) {
        rest = if b.is_ascii_digit() {
            (rest * 10 + u32::from(b - b'0')) % 97
        } else {
            (rest * 100 + u32::from(b - b'A') + 10) % 97
        };
    }
    rest == 1
}

/// Whether the SSA could have issued this number: area not 000, 666 or 900-999; group not 00;
/// serial not 0000.
pub fn ssn_issuable(area: &str, group: &str, serial: &str) -> bool {
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_luhn_check_catches_every_single_digit_change() {
        let good = "4111111111111111";
        assert!(card_number(good));
        assert_eq!(cards_within(good, 0), vec![0..good.len()]);
        for i in 0..good.len() {
            for d in b'0'..=b'9' {
                if d == good.as_bytes()[i] {
                    continue;
                }
                let mut bad = good.as_bytes().to_vec();
                bad[i] = d;
                let bad = String::from_utf8(bad).unwrap();
                assert!(!card_number(&bad), "position {i} digit {d}");
                assert!(cards_within(&bad, 0).is_empty(), "position {i} digit {d}");
            }
        }
    }
}
