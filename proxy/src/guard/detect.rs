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
pub fn cards_within(run: &str, offset: usize) -> Vec<Range<usize>> {
    let bytes = run.as_bytes();
    let mut groups: Vec<Range<usize>> = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        if !b.is_ascii_digit() {
            continue;
        }
        match groups.last_mut() {
            Some(g) if g.end == i => g.end = i + 1,
            _ => groups.push(i..i + 1),
        }
    }
    let mut found = Vec::new();
    let mut i = 0;
    while i < groups.len() {
        let mut best = None;
        let mut digits = 0;
        for (j, group) in groups.iter().enumerate().skip(i) {
            digits += group.len();
            if digits > 19 {
                break;
            }
            let span = groups[i].start..group.end;
            if card_number(&run[span.clone()]) {
                best = Some((j, span));
            }
        }
        match best {
            Some((j, span)) => {
                found.push(offset + span.start..offset + span.end);
                i = j + 1;
            }
            None => i += 1,
        }
    }
    found
}

/// A card number: 13 to 19 digits whose Luhn check digit is right (other characters skipped).
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
/// next word too: `DE89 3704 0044 0532 0130 00 THEN`), or `None`.
pub fn iban_within(candidate: &str) -> Option<usize> {
    if iban(candidate) {
        return Some(candidate.len());
    }
    candidate
        .bytes()
        .enumerate()
        .rev()
        .filter(|&(i, b)| b == b' ' && i > 0)
        .map(|(i, _)| i)
        .find(|&end| iban(&candidate[..end]))
}

/// An IBAN: country letters, two check digits and 11 to 30 letters and digits (spaces allowed),
/// whose mod-97 checksum is 1.
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
        for i in 0..good.len() {
            for d in b'0'..=b'9' {
                if d == good.as_bytes()[i] {
                    continue;
                }
                let mut bad = good.as_bytes().to_vec();
                bad[i] = d;
                let bad = String::from_utf8(bad).unwrap();
                assert!(!card_number(&bad), "position {i} digit {d}");
            }
        }
    }
}
