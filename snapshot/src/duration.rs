//! Durations as users write them in resources: `500ms`, `30s`, `5m`, `1h30m`.

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was written.
    #[error("the duration is empty; write it like 500ms, 30s, 5m or 1h30m")]
    Empty,
    /// Something other than digits followed by `ms`, `s`, `m` or `h`.
    #[error("{0:?} is not a duration; write it like 500ms, 30s, 5m or 1h30m")]
    Malformed(String),
    /// Too large to count in milliseconds.
    #[error("{0:?} is too long a duration")]
    Overflow(String),
}

/// Parses a sequence of `<digits><unit>` parts (units `ms`, `s`, `m`, `h`) into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.to_string());
    let overflow = || DurationError::Overflow(text.to_string());
    let bytes = text.as_bytes();
    let mut total: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let mut value: u64 = 0;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(bytes[i] - b'0')))
                .ok_or_else(overflow)?;
            i += 1;
        }
        if i == start {
            return Err(malformed());
        }
        // `m` followed by `s` is milliseconds; `m` alone is minutes.
        let unit_ms: u64 = match (bytes.get(i), bytes.get(i + 1)) {
            (Some(b'm'), Some(b's')) => {
                i += 2;
                1
            }
            (Some(b's'), _) => {
                i += 1;
                1_000
            }
            (Some(b'm'), _) => {
                i += 1;
                60_000
            }
            (Some(b'h'), _) => {
                i += 1;
                3_600_000
            }
            _ => return Err(malformed()),
        };
        let part = value.checked_mul(unit_ms).ok_or_else(overflow)?;
        total = total.checked_add(part).ok_or_else(overflow)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit_and_combination() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("1m30s250ms"), Ok(90_250));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
    }

    #[test]
    fn malformed_durations_are_refused_with_a_hint() {
        for bad in ["", "5", "m", "1.5s", "1d", "10 s", "-1s", "1hm", "ms"] {
            let err = parse_duration_ms(bad).unwrap_err();
            assert!(
                matches!(err, DurationError::Empty | DurationError::Malformed(_)),
                "{bad:?} gave {err:?}"
            );
            if !bad.is_empty() {
                assert!(err.to_string().contains("1h30m"), "{err}");
            }
        }
        assert!(matches!(
            parse_duration_ms("99999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }
}
