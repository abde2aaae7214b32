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
    let groups: Vec<Range<usize>> = run.match_indices(|c: char| c.is_ascii_digit()).fold(
        Vec::<Range<usize>>::new(),
        |mut groups, (i, _)| {
            match groups.last_mut() {
                Some(g) if g.end == i => g.end = i + 1,
                _ => groups.push(i..i + 1),
            }
            groups
        },
    );
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

/// A card number: 13 to 19 digits whose Luhn check digit is right.
pub fn card_number(text: &str) -> bool {
    let digits: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    (13..=19).contains(&digits.len()) && luhn(&digits)
}

/// The Luhn check over decimal digits (the last one being the check digit).
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let twice = d * 2;
                if twice > 9 { twice - 9 } else { twice }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The length of the longest IBAN that `candidate` begins with (a greedy match may have taken the
/// next word too: `DE89 3704 0044 0532 0130 00 THEN`), or `None`.
pub fn iban_within(candidate: &str) -> Option<usize> {
    let mut ends: Vec<usize> = candidate
        .char_indices()
        .filter(|&(i, c)| c == ' ' && i > 0)
        .map(|(i, _)| i)
        .collect();
    ends.push(candidate.len());
    ends.into_iter().rev().find(|&end| iban(&candidate[..end]))
}

/// An IBAN: country letters, two check digits and 11 to 30 letters and digits (spaces allowed),
/// whose mod-97 checksum is 1.
pub fn iban(text: &str) -> bool {
    let compact: Vec<u8> = text.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len())
        || !compact[..2].iter().all(u8::is_ascii_uppercase)
        || !compact[2..4].iter().all(u8::is_ascii_digit)
        || !compact
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return false;
    }
    // Move the first four characters to the end, letters become 10..35, the number mod 97 must be 1.
    let mut rest: u32 = 0;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let value = if b.is_ascii_digit() {
            u32::from(b - b'0')
        } else {
            u32::from(b - b'A') + 10
        };
        rest = if value >= 10 {
            (rest * 100 + value) % 97
        } else {
            (rest * 10 + value) % 97
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
        let good: Vec<u8> = "4111111111111111".bytes().map(|b| b - b'0').collect();
        assert!(luhn(&good));
        for i in 0..good.len() {
            for d in 0..10u8 {
                if d == good[i] {
                    continue;
                }
                let mut bad = good.clone();
                bad[i] = d;
                assert!(!luhn(&bad), "position {i} digit {d}");
            }
        }
    }
}
