//! Wall-clock helpers: Unix time and the two date formats the proxy writes (HTTP-date, RFC 3339).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A clock for state that ages (cache entries, keys' expiry): the system's, or one that a test sets and moves.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that shows `unix_ms` until [`Clock::advance`] moves it.
    pub fn manual(unix_ms: i64) -> Self {
        Self(Some(Arc::new(AtomicI64::new(unix_ms))))
    }

    /// Moves a manual clock forward (the system clock ignores it).
    pub fn advance(&self, ms: i64) {
        if let Some(at) = &self.0 {
            at.fetch_add(ms, Ordering::Relaxed);
        }
    }

    /// Seconds since the Unix epoch.
    pub fn now_unix(&self) -> i64 {
        self.now_unix_ms().div_euclid(1_000)
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_unix_ms(&self) -> i64 {
        match &self.0 {
            None => now_unix_ms(),
            Some(at) => at.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Clock::system"),
            Some(at) => write!(f, "Clock::manual({})", at.load(Ordering::Relaxed)),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Calendar fields of a Unix instant (UTC).
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    weekday: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

fn civil(unix: i64) -> Civil {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400) as u32;
    // Howard Hinnant's days-to-civil, shifted so the era starts on 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        // 1970-01-01 was a Thursday (4, counting Sunday as 0).
        weekday: (days + 4).rem_euclid(7) as u32,
        hour: secs / 3_600,
        minute: secs / 60 % 60,
        second: secs % 60,
    }
}

/// Days since 1970-01-01 of the first day of `month` (1-12) in `year` (the inverse of [`civil`]).
fn days_from_civil(year: i64, month: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The calendar month (UTC) holding `unix`: its number counted from 1970-01, and the Unix second it ends.
pub fn month_of(unix: i64) -> (i64, i64) {
    let c = civil(unix);
    let number = (c.year - 1970) * 12 + i64::from(c.month) - 1;
    let (next_year, next_month) = if c.month == 12 {
        (c.year + 1, 1)
    } else {
        (c.year, c.month + 1)
    };
    (number, days_from_civil(next_year, next_month) * 86_400)
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 IMF-fixdate), as the `Sunset` header wants.
pub fn http_date(unix: i64) -> String {
    let c = civil(unix);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[c.weekday as usize],
        c.day,
        MONTHS[c.month as usize - 1],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// `2024-05-01T12:00:00.123Z`, for log lines.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    Rfc3339Ms(unix_ms).to_string()
}

/// Unix milliseconds shown as RFC 3339 UTC with milliseconds, e.g. `2024-02-29T12:34:56.007Z`
/// (written straight into a formatter, e.g. a log line, without a `String` of its own).
pub struct Rfc3339Ms(pub i64);

impl Rfc3339Ms {
    /// The 24 bytes of the text, digit by digit (this runs for every access-log line; `write!` with
    /// padded fields costs several times as much).
    pub fn bytes(&self) -> [u8; 24] {
        // Lines come many to a second: the date and time of the last second written on this thread
        // are kept, so that mostly only the milliseconds are written.
        thread_local! {
            static LAST: std::cell::Cell<(i64, [u8; 24])> = const {
                std::cell::Cell::new((i64::MIN, [0; 24]))
            };
        }
        let second = self.0.div_euclid(1_000);
        let mut out = LAST.with(|last| {
            let (at, text) = last.get();
            if at == second {
                return text;
            }
            let text = Self::second_bytes(second);
            last.set((second, text));
            text
        });
        put_digits(&mut out, 20, 3, self.0.rem_euclid(1_000) as u64);
        out
    }

    /// The text of Unix second `second`, its milliseconds `000`.
    fn second_bytes(second: i64) -> [u8; 24] {
        let c = civil(second);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        put_digits(&mut out, 0, 4, c.year.clamp(0, 9_999) as u64);
        put_digits(&mut out, 5, 2, u64::from(c.month));
        put_digits(&mut out, 8, 2, u64::from(c.day));
        put_digits(&mut out, 11, 2, u64::from(c.hour));
        put_digits(&mut out, 14, 2, u64::from(c.minute));
        put_digits(&mut out, 17, 2, u64::from(c.second));
        out
    }
}

/// Writes the last `width` decimal digits of `n` at `at`.
fn put_digits(out: &mut [u8; 24], at: usize, width: usize, mut n: u64) {
    for i in (at..at + width).rev() {
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

impl std::fmt::Display for Rfc3339Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = self.bytes();
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| std::fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(1_709_210_096), "Thu, 29 Feb 2024 12:34:56 GMT");
        assert_eq!(rfc3339_ms(1_709_210_096_007), "2024-02-29T12:34:56.007Z");
        assert_eq!(rfc3339_ms(-1_000), "1969-12-31T23:59:59.000Z");
    }

    #[test]
    fn the_kept_second_changes_with_the_time() {
        // The same second twice, then another second and back: each text as if written anew.
        for (ms, text) in [
            (1_709_210_096_007, "2024-02-29T12:34:56.007Z"),
            (1_709_210_096_999, "2024-02-29T12:34:56.999Z"),
            (1_709_210_097_000, "2024-02-29T12:34:57.000Z"),
            (1_709_210_096_010, "2024-02-29T12:34:56.010Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (-1_000, "1969-12-31T23:59:59.000Z"),
        ] {
            assert_eq!(rfc3339_ms(ms), text);
        }
    }

    proptest::proptest! {
        /// Kept or not, the text is the civil date of the instant.
        #[test]
        fn rfc3339_is_the_civil_date(ms in -62_135_596_800_000i64..253_402_300_799_999) {
            let c = civil(ms.div_euclid(1_000));
            let fresh = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                c.year, c.month, c.day, c.hour, c.minute, c.second, ms.rem_euclid(1_000)
            );
            proptest::prop_assert_eq!(rfc3339_ms(ms), fresh.clone());
            proptest::prop_assert_eq!(rfc3339_ms(ms), fresh);
        }
    }

    #[test]
    fn months_end_on_the_first_of_the_next() {
        assert_eq!(month_of(0), (0, 2_678_400));
        // 2024-02-29T12:34:56Z: leap February ends on 2024-03-01.
        assert_eq!(month_of(1_709_210_096), (649, 1_709_251_200));
        // 2025-12-31T23:59:59Z ends a second later, in 2026.
        assert_eq!(month_of(1_767_225_599), (671, 1_767_225_600));
    }
}
