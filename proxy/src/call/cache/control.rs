//! What the caller asks of the cache in `Cache-Control` (RFC 9111 request directives): `no-store`
//! (neither look up nor store), `no-cache` (do not answer from the cache, but store the fresh answer),
//! `max-age=N` (accept only an entry at most N seconds old). Unknown directives are ignored.

use http::HeaderMap;
use http::header::CACHE_CONTROL;

/// The caller's cache directives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// Neither look up nor store.
    pub no_store: bool,
    /// Do not answer from the cache; store the fresh answer.
    pub no_cache: bool,
    /// Oldest entry accepted, in seconds.
    pub max_age_s: Option<u64>,
}

impl Directives {
    /// Reads every `Cache-Control` header of a request.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        for value in headers.get_all(CACHE_CONTROL) {
            if let Ok(text) = value.to_str() {
                d.read(text);
            }
        }
        d
    }

    /// Reads one header value: comma-separated directives, names in any case, `max-age` quoted or
    /// not. Where `max-age` is given twice, the smaller wins; one that is not a number is ignored.
    pub fn read(&mut self, text: &str) {
        for directive in text.split(',') {
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            if name.eq_ignore_ascii_case("no-store") {
                self.no_store = true;
            } else if name.eq_ignore_ascii_case("no-cache") {
                self.no_cache = true;
            } else if name.eq_ignore_ascii_case("max-age")
                && let Some(seconds) = value.and_then(|v| v.parse::<u64>().ok())
            {
                self.max_age_s = Some(self.max_age_s.map_or(seconds, |s| s.min(seconds)));
            }
        }
    }

    /// Whether an entry `age_ms` old may answer.
    pub fn accepts_age(&self, age_ms: i64) -> bool {
        self.max_age_s
            .is_none_or(|max| age_ms <= i64::try_from(max.saturating_mul(1000)).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(text: &str) -> Directives {
        let mut d = Directives::default();
        d.read(text);
        d
    }

    #[test]
    fn reads_the_three_directives_in_any_case_and_order() {
        assert_eq!(read(""), Directives::default());
        assert!(read("No-Store").no_store);
        assert!(read("private, no-cache").no_cache);
        assert_eq!(read("max-age=60").max_age_s, Some(60));
        assert_eq!(read("MAX-AGE = \"30\" , no-cache").max_age_s, Some(30));
        assert_eq!(read("max-age=60, max-age=5").max_age_s, Some(5));
        assert_eq!(read("max-age=-1").max_age_s, None);
        assert_eq!(read("max-age").max_age_s, None);
        let d = read("max-age=10");
        assert!(d.accepts_age(10_000));
        assert!(!d.accepts_age(10_001));
        assert!(read("max-age=0").accepts_age(0));
        assert!(Directives::default().accepts_age(i64::MAX));
        assert!(read("max-age=18446744073709551615").accepts_age(i64::MAX));
    }

    proptest! {
        #[test]
        fn any_header_text_reads_without_panicking(text in "\\PC{0,64}") {
            let d = read(&text);
            // What was read is what the text says, directive by directive.
            prop_assert_eq!(d.no_store, text
                .split(',')
                .any(|p| p.split('=').next().unwrap_or("").trim().eq_ignore_ascii_case("no-store")));
        }

        #[test]
        fn max_age_round_trips(n in any::<u64>(), pad in " {0,3}") {
            prop_assert_eq!(read(&format!("no-cache,{pad}max-age={n}{pad}")).max_age_s, Some(n));
        }
    }
}
