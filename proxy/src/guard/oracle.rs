//! The test oracle: the regular expressions the built-in detectors were until the one-pass scanner
//! (`scan.rs`) replaced them, with the same candidate checks. Properties and tables below show that the
//! scanner finds exactly what they find: same spans, same detectors.
//!
//! Two deliberate differences from the expressions as shipped before (commit d30e5f8), both because
//! every check after them (Luhn, mod 97, SSN ranges, phone digit counts) only ever read ASCII:
//! - `\d` is an ASCII digit here. The shipped `\d` was Unicode's, so `١٢٣-٤٥-٦٧٨٩` (Arabic-Indic
//!   digits) was masked as an SSN and `١.٢.٣.٤` as an IPv4 address, while a card number's Luhn check
//!   skipped such digits.
//! - Letters under `(?i)` (e-mail, IPv6) are ASCII letters. With Unicode case folding the shipped
//!   classes also took `ſ` (U+017F) and `K` (U+212A, Kelvin) as letters of an address.
//!
//! Word boundaries (`\b`) stay Unicode in both. The tests `unicode_digits_and_case_folded_letters_are_
//! not_part_of_values` pin the new behaviour.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;
use tollgate_snapshot::Detector;

use super::detect::{phone_within, ssn_issuable, standalone};

/// The expression, with `\d` meaning an ASCII digit (see the module's comment).
fn re(source: &str) -> Regex {
    Regex::new(&source.replace(r"\d", "[0-9]")).expect("built-in detector patterns compile")
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    // The domain ends in letters, so punctuation after an address ("mail bob@example.com.") is left out.
    re(
        r"[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,24}\b",
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
    LazyLock::new(|| re(r"[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}(?:(?:\d{1,3}\.){3}\d{1,3})?"));
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

/// Where `detector` found something in `text` before the one-pass scanner.
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

// The checks as they were with the expressions (allocating); `detect.rs` has them without.

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
fn card_number(text: &str) -> bool {
    let digits: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    (13..=19).contains(&digits.len()) && luhn(&digits)
}

/// The Luhn check over decimal digits (the last one being the check digit).
fn luhn(digits: &[u8]) -> bool {
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
fn iban(text: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::scan;
    use super::super::tests::runner;
    use super::*;

    use super::super::scan::ALL;

    /// What the scanner finds, after checking that the oracle finds the same.
    fn found(detector: Detector, text: &str) -> Vec<&str> {
        let spans = scan::find(detector, text);
        assert_eq!(spans, find(detector, text), "{detector:?} in {text:?}");
        spans.into_iter().map(|r| &text[r]).collect()
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

    #[test]
    fn unicode_digits_and_case_folded_letters_are_not_part_of_values() {
        for text in [
            "SSN ١٢٣-٤٥-٦٧٨٩.",
            "from ١.٢.٣.٤ on",
            "call ٤١٥-٥٥٥-٢٦٧١ now",
            "mail sam@example.\u{212a}om",
        ] {
            for d in ALL {
                assert!(scan::find(d, text).is_empty(), "{d:?} in {text:?}");
            }
        }
        // A Unicode digit is still a word character: a value glued to one is not a value.
        assert!(found(Detector::CreditCard, "٤4111111111111111").is_empty());
        // The shipped expression took all of `ſam@example.com`; the address is now what follows `ſ`
        // (still masked, the `ſ` left in front of the token).
        assert_eq!(
            found(Detector::Email, "mail ſam@example.com"),
            ["am@example.com"]
        );
    }

    #[test]
    fn the_scanner_agrees_with_the_expressions_on_tricky_texts() {
        for text in [
            "+12 (345) 678-9012 ext +1 2 3 4 5 6 7 8 +1234 56789012345678901 +1)2",
            "1-415-555-2671 1 (415)555-2671 1(415) 555-2671 415 555 2671x 1415-555-2671",
            "4111 1111 1111 1111 4111-1111-1111-1111x 12 34x 4111111111111111_",
            "DE89 3704 0044 0532 0130 00X DE89370400440532013000 GB82 WEST 1234 5698 7654 32",
            "a..b.c@x.io .x@y.io x.@y.io a@b.c.de.f a@b-.com a@-b.com a@b.com1 a@b.cc@d.ee é@b.com",
            "::ffff:192.168.1.1 ::ffff1.2.3.4 abcdef::1 1:2:3:4:5:6:7:8:9 fe80::1%eth0 [::1]:80 10:30:00",
            "1.2.3.4.5 01.2.3.4 255.255.255.255 256.1.1.1 1.2.3.4x 1.2.3 999.1.1.1",
            "-----BEGIN RSA PRIVATE KEY-----\nabc\u{a0}def\n-----END RSA PRIVATE KEY----- ------BEGIN PRIVATE KEY-----",
            "sk_live_abcdefghijklmnop rk_test_0123456789abcdefXYZ xoxb-1234567890 AIzaSyA-1234567890abcdefghijklmnopqrstu",
            "eyJhbGciOiJI.eyJzdWIiOiIx.abcdefgh1 ghp_abcdefghijklmnopqrstuvwxyz0123456789_ github_pat_abcdefghijklmnopqrstuvwxyz",
            "ASIAIOSFODNN7EXAMPLE AKIAIOSFODNN7EXAMPLEX sk-aaaaaaaaaaaaaaaaaaaa-bbb",
        ] {
            for d in ALL {
                found(d, text);
            }
        }
    }

    /// The scan with every detector, each one's spans against the expressions'; and with secrets
    /// ruled out first (no key mark where a prefix holds one), against the scan without that look.
    fn agrees(text: &str) {
        let all = ALL.iter().fold(scan::Wanted::default(), |w, d| w.and(*d));
        let together = scan::scan(text, all);
        for d in ALL {
            assert_eq!(together.of(d), &find(d, text)[..], "{d:?} in {text:?}");
            found(d, text);
        }
        assert_eq!(together, scan::scan_all(text, all), "{text:?}");
    }

    /// The scan without secrets tests sixteen bytes at a time for a byte that may begin a value, and
    /// the look for secrets jumps from key mark to key mark: values at the start and the end of the
    /// text, on each side of a sixteen-byte edge, next to each other and next to wider characters.
    /// The scan without secrets passes over the rest of a number a candidate began: what follows
    /// a number right after its digits (a separator, another value, a wider character, the end of
    /// the text) is still looked at, in short texts and in long ones.
    #[test]
    fn what_follows_a_number_is_still_looked_at() {
        let numbers = [
            "4111111111111111",
            "415",
            "1",
            "2026",
            "10",
            "123456789012345678901",
        ];
        let after = [
            "",
            " ",
            "-",
            ".",
            ":",
            "@example.com",
            "(415) 555-2671",
            "+44 20 7946 0958",
            "é5",
            "٤٤",
            "😀1",
            ".0.0.1",
            "-555-2671",
            "-45-6789",
            " 1111 1111 1111",
            "::1",
            "x@example.com",
            "DE89 3704 0044 0532 0130 00",
        ];
        let pad = "quiet prose without digits, ".repeat(3);
        for number in numbers {
            for a in after {
                for b in after {
                    let text = format!("{number}{a}{number}{b}");
                    agrees(&text);
                    agrees(&format!("{pad}{text}"));
                    agrees(&format!("{text} {pad}"));
                }
            }
        }
    }

    #[test]
    fn values_are_found_wherever_the_sixteen_byte_steps_fall() {
        let values = [
            "bob@example.com",
            "415-555-2671",
            "+44 20 7946 0958",
            "(415) 555-2671",
            "4111 1111 1111 1111",
            "123-45-6789",
            "10.0.0.1",
            "fe80::1",
            "DE89 3704 0044 0532 0130 00",
            "2026-12-01",
            "sk-aaaaaaaaaaaaaaaaaaaa",
            "AKIAIOSFODNN7EXAMPLE",
            "xoxb-1234567890",
            "eyJhbGciOiJI.eyJzdWIiOiIx.abcdefgh1",
            "-----BEGIN PRIVATE KEY----- abc -----END PRIVATE KEY-----",
        ];
        let around = ["", " ", "é", "😀", "٤", "a", "_", "\u{a0}", ".", "x1"];
        for value in values {
            for pad in 0..17 {
                let lead = "w".repeat(pad);
                for edge in around {
                    // Alone, at the start, at the end, after a word of `pad` bytes, twice in a
                    // row, and glued to what `edge` is.
                    agrees(value);
                    agrees(&format!("{value}{edge}{lead}"));
                    agrees(&format!("{lead} {edge}{value}"));
                    agrees(&format!("{lead} {value}{edge}{value} {lead}"));
                    agrees(&format!("{lead}{edge}{value}{edge}"));
                }
            }
        }
        for (a, b) in values.iter().zip(values.iter().skip(1)) {
            for pad in 0..9 {
                let lead = " ".repeat(pad);
                agrees(&format!("{lead}{a} {b}"));
                agrees(&format!("{lead}{a}{b}"));
            }
        }
    }

    /// Pieces of values, near misses and separators, so generated texts are dense with candidates.
    const PIECES: &[&str] = &[
        "0",
        "1",
        "4",
        "9",
        "12",
        "123",
        "415",
        "555",
        "2671",
        "4111",
        "1111",
        "00",
        "256",
        "255",
        "192.168.1.20",
        "10.0.0.1",
        "4111 1111 1111 1111",
        "4111111111111111",
        "378282246310005",
        "123-45-6789",
        "666-12-3456",
        "+",
        "+1",
        "+44",
        "(",
        ")",
        "(415)",
        " ",
        "-",
        ".",
        ":",
        "::",
        "@",
        "_",
        "a",
        "Z",
        "é",
        "٤",
        "\u{a0}",
        "\n",
        "DE",
        "DE89",
        "GB82WEST",
        "3704",
        "0044",
        "DE89 3704 0044 0532 0130 00",
        "NL91ABNA0417164300",
        "bob",
        "bob@example.com",
        "example",
        ".com",
        "x.io",
        "ffff",
        "db8",
        "2001:db8::8a2e:370:7334",
        "fe80",
        "sk-",
        "sk_live_",
        "AKIA",
        "AIza",
        "ghp_",
        "github_pat_",
        "xoxb-",
        "eyJ",
        "abcdefghijklmnopqrstuvwxyz",
        "ABCDEFGHIJKLMNOP",
        "-----BEGIN ",
        "RSA ",
        "PRIVATE KEY-----",
        "-----END ",
        "MIIEpA+/=",
    ];

    /// Shapes near each detector's: numbers in groups, hex with colons, IBAN-like runs, addresses.
    fn shaped() -> impl Strategy<Value = String> {
        prop_oneof![
            "(?:[0-9]{1,4}[ .:()+-]?){1,12}",
            "(?:\\+[0-9]{1,4}|\\(?[0-9]{3}\\)?)(?:[ .-]?\\(?[0-9]{1,6}\\)?){0,7}",
            "(?:[0-9]{1,3}\\.){1,5}[0-9]{0,4}[a-z.]?",
            "[0-9a-fA-F]{0,6}(?::[0-9a-fA-F]{0,5}){0,9}(?:[0-9]{1,4}\\.){0,4}[0-9]{0,4}",
            "[A-Z]{1,3}[0-9]{1,3}(?: ?[A-Z0-9]{1,5}){0,9}[a-z ]?",
            "[a-z0-9.+_-]{0,8}@(?:[a-zA-Z0-9-]{0,5}\\.){0,4}[a-zA-Z]{0,26}[0-9_é]?",
            "(?:[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{4}(?:[ -][0-9]{1,5}){0,6})[0-9a-z]?",
        ]
    }

    fn candidates() -> impl Strategy<Value = String> {
        let piece = || prop::sample::select(PIECES);
        let pieces = || prop::collection::vec(piece(), 0..6).prop_map(|p| p.concat());
        prop_oneof![
            1 => any::<String>(),
            1 => "[ -~]{0,200}",
            1 => "[0-9 +().:-]{0,80}",
            1 => "[A-Za-z0-9@._ -]{0,120}",
            3 => prop::collection::vec(piece(), 0..40).prop_map(|p| p.concat()),
            6 => prop::collection::vec((pieces(), shaped()), 1..5).prop_map(|parts| {
                parts.into_iter().map(|(a, b)| a + &b).collect::<String>()
            }),
        ]
    }

    #[test]
    fn property_the_checks_without_allocations_agree_with_the_old_ones() {
        let text = prop_oneof![
            "[0-9 -]{0,30}",
            "[A-Z]{2}[0-9]{2}[A-Z0-9 ]{0,36}",
            "[ -~]{0,40}"
        ];
        runner()
            .run(&text, |text| {
                prop_assert_eq!(super::super::detect::card_number(&text), card_number(&text));
                prop_assert_eq!(super::super::detect::iban(&text), iban(&text));
                prop_assert_eq!(super::super::detect::iban_within(&text), iban_within(&text));
                prop_assert_eq!(
                    super::super::detect::cards_within(&text, 3),
                    cards_within(&text, 3)
                );
                Ok(())
            })
            .unwrap();
        for valid in [
            "DE89 3704 0044 0532 0130 00",
            "GB82WEST12345698765432",
            "4111 1111 1111 1111",
        ] {
            assert_eq!(super::super::detect::iban(valid), iban(valid));
            assert_eq!(super::super::detect::card_number(valid), card_number(valid));
        }
    }

    /// `body` (upper-case letters and digits) as an IBAN of `country` with its right check digits.
    fn valid_iban(country: &str, body: &str) -> String {
        let mut rest: u32 = 0;
        for b in body.bytes().chain(country.bytes()).chain(*b"00") {
            rest = if b.is_ascii_digit() {
                (rest * 10 + u32::from(b - b'0')) % 97
            } else {
                (rest * 100 + u32::from(b - b'A') + 10) % 97
            };
        }
        format!("{country}{:02}{body}", 98 - rest)
    }

    /// `digits` closed by the Luhn digit that makes them a card number.
    fn valid_card(digits: &str) -> String {
        (b'0'..=b'9')
            .map(|d| format!("{digits}{}", d as char))
            .find(|c| card_number(c))
            .expect("one check digit fits")
    }

    /// Splits `text` with a space or dash before the characters `cuts` name (indices wrapped).
    fn grouped(text: &str, cuts: &[(usize, bool)]) -> String {
        let mut at: Vec<(usize, bool)> = cuts
            .iter()
            .map(|&(i, dash)| (1 + i % text.len().max(1), dash))
            .filter(|&(i, _)| i < text.len())
            .collect();
        at.sort();
        at.dedup_by_key(|(i, _)| *i);
        let mut out = String::new();
        let mut from = 0;
        for (i, dash) in at {
            out.push_str(&text[from..i]);
            out.push(if dash { '-' } else { ' ' });
            from = i;
        }
        out.push_str(&text[from..]);
        out
    }

    /// The one-pass card and IBAN checks agree with the old ones where the values are real (random
    /// text almost never holds a right check digit): valid numbers grouped anyhow, run together, with
    /// more groups and words after them.
    #[test]
    fn property_the_one_pass_card_and_iban_checks_agree_with_the_old_ones_on_valid_values() {
        let iban = (
            "[A-Z]{2}",
            "[A-Z0-9]{9,32}",
            prop::collection::vec((0usize..40, any::<bool>()), 0..8),
            "(?: [A-Z0-9]{1,6}| [a-z]{1,4}| ?[0-9]{1,4}){0,3}",
        )
            .prop_map(|(country, body, cuts, tail)| {
                let iban = valid_iban(&country, &body);
                let spaced: Vec<(usize, bool)> =
                    cuts.into_iter().map(|(i, _)| (i, false)).collect();
                grouped(&iban, &spaced) + &tail
            });
        let cards = (
            prop::collection::vec(("[0-9]{12,18}", any::<bool>()), 1..4),
            prop::collection::vec((0usize..40, any::<bool>()), 0..8),
            "(?:[ -][0-9]{1,5}){0,3}",
        )
            .prop_map(|(numbers, cuts, tail)| {
                let run: Vec<String> = numbers
                    .into_iter()
                    .map(|(n, valid)| if valid { valid_card(&n) } else { n })
                    .collect();
                grouped(&run.join(" "), &cuts) + &tail
            });
        runner()
            .run(&(iban, cards), |(iban, cards)| {
                prop_assert_eq!(
                    super::super::detect::iban_within(&iban),
                    iban_within(&iban),
                    "{:?}",
                    iban
                );
                prop_assert_eq!(
                    super::super::detect::cards_within(&cards, 5),
                    cards_within(&cards, 5),
                    "{:?}",
                    cards
                );
                Ok(())
            })
            .unwrap();
        // The generators do make real values.
        let iban = valid_iban("DE", "370400440532013000");
        assert_eq!(iban, "DE89370400440532013000");
        assert_eq!(super::super::detect::iban_within(&iban), Some(iban.len()));
        assert_eq!(valid_card("411111111111111"), "4111111111111111");
    }

    /// Dropping the detectors a text cannot hold a value of changes nothing: any subset of the
    /// detectors, on the oracle's candidates and on prose with a few of the bytes that decide it.
    #[test]
    fn property_the_scan_after_the_byte_look_finds_what_the_full_scan_finds() {
        // Values that hold only the one byte that makes their detector possible, in prose: each
        // is lost if the look misses that byte.
        let lone = prop::sample::select(
            &[
                "eyJabcdefgh.eyJabcdefgh.abcdefgh",
                "sk-abcdefghijklmnopqrstu",
                "sk_live_abcdefghijklmnop",
                "ghp_abcdefghijklmnopqrstuvwxyzabcdefghij",
                "xoxb-abcdefghij",
                "xoxp-abcdefghij",
                "rk_test_abcdefghijklmnop",
                "github_pat_abcdefghijklmnopqrstuvwxyz",
                "gho_abcdefghijklmnopqrstuvwxyzabcdefghij",
                "ASIAABCDEFGHIJKLMNOP",
                "AKIAABCDEFGHIJKLMNOP",
                "AIzaabcdefghijklmnopqrstuvwxyzabcdefghi",
                "-----BEGIN PRIVATE KEY----- abc -----END PRIVATE KEY-----",
                "bob@example.com",
                "fe::ab",
                "::",
                "1.2.3.4",
            ][..],
        );
        let text = prop_oneof![
            candidates(),
            "[a-z .,]{0,40}[0-9@:_AJ-]?[a-z .,]{0,40}",
            "[a-zA-Z :._@-]{0,80}",
            // Near misses: key marks in prose, beside the letters of the prefixes.
            "(?:[a-z ]{0,6}(?:[kabposruy]?[-_]|A[KSIa ]|eyJ|[a-z]J|--)){0,8}[a-z ]{0,6}",
            ("[a-z ,]{0,20}", lone, "[a-z ,.]{0,20}").prop_map(|(a, v, b)| format!("{a} {v} {b}")),
        ];
        runner()
            .run(&(text, 1u8..128), |(text, bits)| {
                let wanted = ALL
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| bits & 1 << k != 0)
                    .fold(scan::Wanted::default(), |w, (_, d)| w.and(*d));
                prop_assert_eq!(
                    scan::scan(&text, wanted),
                    scan::scan_all(&text, wanted),
                    "{:?} in {:?}",
                    wanted,
                    text
                );
                // Past 64 bytes the scan without secrets watches for key marks itself: the same
                // text behind and before prose (so a mark falls at every place of a sixteen-byte
                // step), and the text twice.
                for long in [
                    format!("{}{text}", "quiet prose, ".repeat(5)),
                    format!("{text}{}", " quiet prose,".repeat(5)),
                    format!("{text} {text} {text}"),
                ] {
                    prop_assert_eq!(
                        scan::scan(&long, wanted),
                        scan::scan_all(&long, wanted),
                        "{:?} in {:?}",
                        wanted,
                        long
                    );
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn property_the_scanner_finds_exactly_what_the_expressions_find() {
        runner()
            .run(&candidates(), |text| {
                let all = ALL.iter().fold(scan::Wanted::default(), |w, d| w.and(*d));
                let together = scan::scan(&text, all);
                for d in ALL {
                    let alone = scan::find(d, &text);
                    prop_assert_eq!(&alone, &find(d, &text), "{:?} in {:?}", d, text);
                    prop_assert_eq!(together.of(d), &alone[..], "{:?} with the others", d);
                }
                Ok(())
            })
            .unwrap();
    }
}
