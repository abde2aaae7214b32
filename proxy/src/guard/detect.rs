//! The built-in detectors: where in a text personal data and secrets are.
//!
//! Each detector is a linear-time regular expression that finds candidates, and for the shapes that
//! carry one, a check that removes false positives (the Luhn digit of card numbers, the mod-97 checksum
//! of IBANs, the number ranges the SSA never issues, a real IPv6 address).

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;
use tollgate_snapshot::Detector;

fn re(source: &str) -> Regex {
    Regex::new(source).expect("built-in detector patterns compile")
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    // The domain ends in letters, so punctuation after an address ("mail bob@example.com.") is left out.
    re(
        r"(?i)[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}\b",
    )
});
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        // International: +country, then groups of digits with single separators, 7 to 15 digits in all
        // (E.164), checked after matching.
        r"\+[1-9]\d{0,3}(?:[ .-]?\(?\d{1,5}\)?){1,6}",
        // North American: (415) 555-2671, 415-555-2671, 415.555.2671, 1-415-555-2671.
        r"|(?:\b1[ .-]?)?(?:\(\d{3}\)[ .-]?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b",
    ))
});
// Runs of digits with single separators; `cards_within` finds the numbers in a run.
static CARD: LazyLock<Regex> = LazyLock::new(|| re(r"\b\d+(?:[ -]\d+)*\b"));
static IBAN: LazyLock<Regex> = LazyLock::new(|| re(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"));
static SSN: LazyLock<Regex> = LazyLock::new(|| re(r"\b(\d{3})-(\d{2})-(\d{4})\b"));
static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    re(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b")
});
static IPV6: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?:(?:\d{1,3}\.){3}\d{1,3})?"));
static SECRET: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        // A PEM private key: its header, base64 body and footer (the body as far as it goes).
        r"-----BEGIN [A-Z ]{0,20}PRIVATE KEY-----[A-Za-z0-9+/=\s]*(?:-----END [A-Z ]{0,20}PRIVATE KEY-----)?",
        // OpenAI and Anthropic (sk-…, sk-proj-…, sk-ant-…).
        r"|\bsk-[A-Za-z0-9_-]{20,}",
        // AWS access key ids.
        r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        // GitHub tokens.
        r"|\bgh[pousr]_[A-Za-z0-9]{36,255}\b|\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
        // Slack tokens.
        r"|\bxox[abposr]-[A-Za-z0-9-]{10,}",
        // Google API keys.
        r"|\bAIza[0-9A-Za-z_-]{35}",
        // Stripe secret and restricted keys.
        r"|\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}",
        // JSON Web Tokens.
        r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    ))
});

/// Where `detector` finds something in `text`, in order, without overlaps.
pub fn find(detector: Detector, text: &str) -> Vec<Range<usize>> {
    let spans = |re: &Regex| re.find_iter(text).map(|m| m.range()).collect::<Vec<_>>();
    match detector {
        Detector::Email => spans(&EMAIL),
        Detector::Phone => shrinking(&PHONE, text, phone_within),
        Detector::CreditCard => CARD
            .find_iter(text)
            .flat_map(|m| cards_within(m.as_str(), m.start()))
            .collect(),
        Detector::Iban => shrinking(&IBAN, text, iban_within),
        Detector::UsSsn => SSN
            .captures_iter(text)
            .filter(|c| ssn_issuable(&c[1], &c[2], &c[3]))
            .map(|c| c.get(0).expect("group 0").range())
            .collect(),
        Detector::IpAddress => {
            let mut found = spans(&IPV4);
            let v6: Vec<Range<usize>> = IPV6
                .find_iter(text)
                .filter(|m| standalone(text, m.range()))
                .filter(|m| m.as_str().parse::<std::net::Ipv6Addr>().is_ok())
                .filter(|m| !found.iter().any(|f| f.start < m.end() && m.start() < f.end))
                .map(|m| m.range())
                .collect();
            found.extend(v6);
            found.sort_unstable_by_key(|r| r.start);
            found
        }
        Detector::Secret => spans(&SECRET),
    }
}

/// Candidates of `re`, each cut down to the value it begins with (`within` gives its length): the
/// search goes on after that value, or one character on when there is none, so a greedy candidate
/// that ran into the next value does not hide it.
fn shrinking(re: &Regex, text: &str, within: fn(&str) -> Option<usize>) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(m) = re.find_at(text, at) {
        match within(m.as_str()) {
            Some(len) if len > 0 => {
                found.push(m.start()..m.start() + len);
                at = m.start() + len;
            }
            _ => {
                let step = text[m.start()..].chars().next().map_or(1, char::len_utf8);
                at = m.start() + step;
            }
        }
        if at > text.len() {
            break;
        }
    }
    found
}

/// Whether `span` is not part of a longer word (`Vec::new`, `abc::def` are paths, not addresses).
fn standalone(text: &str, span: Range<usize>) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    !text[..span.start].chars().next_back().is_some_and(word)
        && !text[span.end..].chars().next().is_some_and(word)
}

/// The longest phone number `candidate` begins with, ending at the end of a group of digits and
/// holding 7 to 15 digits (a greedy match may have run into the next number).
fn phone_within(candidate: &str) -> Option<usize> {
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
fn cards_within(run: &str, offset: usize) -> Vec<Range<usize>> {
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
fn iban_within(candidate: &str) -> Option<usize> {
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
fn ssn_issuable(area: &str, group: &str, serial: &str) -> bool {
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(detector: Detector, text: &str) -> Vec<&str> {
        find(detector, text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn emails_are_found_inside_punctuation_and_the_punctuation_is_left_alone() {
        let text = "Write to <alice.smith+tag@mail.example.co.uk>, (bob@example.com). Or \"carol@x.io\"; dave@EXAMPLE.ORG!";
        assert_eq!(
            found(Detector::Email, text),
            [
                "alice.smith+tag@mail.example.co.uk",
                "bob@example.com",
                "carol@x.io",
                "dave@EXAMPLE.ORG"
            ]
        );
    }

    #[test]
    fn things_that_only_look_like_emails_are_not_found() {
        for text in [
            "user@localhost",
            "@handle on social media",
            "a@b",
            "foo@bar.c",
            "git@github.com:org/repo is ssh",
        ] {
            let expected: &[&str] = if text.starts_with("git@") {
                &["git@github.com"]
            } else {
                &[]
            };
            assert_eq!(found(Detector::Email, text), expected, "{text}");
        }
    }

    #[test]
    fn phone_numbers_are_found_in_international_and_north_american_formats() {
        let text = "Call +44 20 7946 0958 or +1-415-555-2671, (415) 555-2671, 415.555.2671 or +33142685300.";
        assert_eq!(
            found(Detector::Phone, text),
            [
                "+44 20 7946 0958",
                "+1-415-555-2671",
                "(415) 555-2671",
                "415.555.2671",
                "+33142685300"
            ]
        );
    }

    #[test]
    fn numbers_that_are_not_phone_numbers_are_not_found() {
        for text in [
            "version 1.2.3",
            "order 12345",
            "+12 is a score",
            "2026-11-01",
            "pi is 3.14159",
            "total 415 555",
        ] {
            assert!(found(Detector::Phone, text).is_empty(), "{text}");
        }
    }

    #[test]
    fn card_numbers_are_found_only_when_their_luhn_digit_is_right() {
        let valid = [
            "4111111111111111",
            "4111 1111 1111 1111",
            "5500-0000-0000-0004",
            "378282246310005",
            "6011111111111117",
        ];
        for card in valid {
            let text = format!("card: {card}.");
            assert_eq!(found(Detector::CreditCard, &text), [card], "{card}");
        }
        for invalid in [
            "4111111111111112",
            "4111 1111 1111 1110",
            "1234567890123",
            "12345678901234567890123",
        ] {
            assert!(
                found(Detector::CreditCard, &format!("n {invalid} n")).is_empty(),
                "{invalid}"
            );
        }
    }

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

    #[test]
    fn ibans_are_found_only_when_their_checksum_is_right() {
        for iban in [
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB82WEST12345698765432",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
        ] {
            let text = format!("IBAN {iban}, thanks");
            assert_eq!(found(Detector::Iban, &text), [iban], "{iban}");
        }
        for invalid in [
            "DE89370400440532013001",
            "GB82WEST12345698765433",
            "DE00370400440532013000",
        ] {
            assert!(found(Detector::Iban, invalid).is_empty(), "{invalid}");
        }
        // A greedy match that took the next word still finds the IBAN it starts with.
        let text = "pay DE89 3704 0044 0532 0130 00 THEN stop";
        assert_eq!(found(Detector::Iban, text), ["DE89 3704 0044 0532 0130 00"]);
    }

    #[test]
    fn social_security_numbers_outside_the_issued_ranges_are_not_found() {
        assert_eq!(found(Detector::UsSsn, "SSN 123-45-6789."), ["123-45-6789"]);
        for never in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "1234-56-7890",
        ] {
            assert!(found(Detector::UsSsn, never).is_empty(), "{never}");
        }
    }

    #[test]
    fn ip_addresses_of_both_families_are_found_and_versions_and_times_are_not() {
        let text = "from 192.168.1.20, to 2001:db8::8a2e:370:7334 and ::1; also 10.0.0.1.";
        assert_eq!(
            found(Detector::IpAddress, text),
            ["192.168.1.20", "2001:db8::8a2e:370:7334", "::1", "10.0.0.1"]
        );
        for not in [
            "version 1.2.3",
            "at 10:30:00",
            "256.1.1.1x",
            "a:b",
            "use std::fmt;",
            "Vec::new()",
        ] {
            assert!(found(Detector::IpAddress, not).is_empty(), "{not}");
        }
    }

    #[test]
    fn secrets_are_found_by_their_known_shapes() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\nabc+/=\n-----END RSA PRIVATE KEY-----";
        let text = format!(
            "key sk-proj-abcdefghijklmnopqrstuvwx1234, aws AKIAIOSFODNN7EXAMPLE, gh ghp_{}, pem {pem} end",
            "a".repeat(36)
        );
        let got = found(Detector::Secret, &text);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], "sk-proj-abcdefghijklmnopqrstuvwx1234");
        assert_eq!(got[1], "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(got[3], pem);
        for not in [
            "ask-me-anything",
            "sk-short",
            "AKIA too short",
            "task-force",
        ] {
            assert!(found(Detector::Secret, not).is_empty(), "{not}");
        }
    }
}
