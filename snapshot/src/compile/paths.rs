//! Who owns which path: prefix and hostname validation, and conflicts between routes.
//!
//! Two routes conflict when some request could reach both: the same prefix with overlapping hostnames,
//! or one prefix lying inside the other's API (`/a/v1/...` captures requests meant for `/a`'s
//! `/a/v1/chat/completions`). A route with hostnames next to one without, on the same prefix, is no
//! conflict: the proxy tries hostname-specific routes first.

use crate::fx::FxHashMap;

/// Checks `spec.prefix` as the CRD schema does, and returns it without a trailing `/` (`""` for `/`).
pub(crate) fn normalize_prefix(prefix: &str) -> Result<&str, String> {
    let ok_chars = prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'~' | b'/' | b'-' | b'.'));
    if !prefix.starts_with('/') || !ok_chars || prefix.len() > 256 {
        return Err(format!(
            "set spec.prefix to a path such as /team-a/chat: it must start with '/' and use only letters, digits and _ ~ - . / (got {prefix:?})"
        ));
    }
    if prefix.contains("//") || prefix.contains("..") {
        return Err(format!(
            "remove the empty segment or '..' from spec.prefix {prefix:?}"
        ));
    }
    if prefix == "/" {
        return Ok("");
    }
    if prefix.ends_with('/') {
        return Err(format!(
            "remove the trailing '/' from spec.prefix {prefix:?}"
        ));
    }
    Ok(prefix)
}

/// Lower-cases a hostname and checks it is a DNS name, optionally with a leading `*.`.
pub(crate) fn normalize_hostname(host: &str) -> Result<String, String> {
    let lower = host.to_ascii_lowercase();
    let bare = lower.strip_prefix("*.").unwrap_or(&lower);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if bare.is_empty() || lower.len() > 253 || !bare.split('.').all(label_ok) {
        return Err(format!(
            "set spec.hostnames entries to DNS names such as api.example.com or *.example.com (got {host:?})"
        ));
    }
    Ok(lower)
}

/// Where in `prefix` a `/v1` segment starts, i.e. the prefixes of routes whose API this path lies in.
fn api_stems(prefix: &str) -> impl Iterator<Item = &str> {
    prefix.match_indices("/v1").filter_map(move |(i, _)| {
        let after = &prefix[i + 3..];
        (after.is_empty() || after.starts_with('/')).then(|| &prefix[..i])
    })
}

/// Whether a request host could match both patterns.
fn patterns_overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix("*."), b.strip_prefix("*.")) {
        (None, None) => a == b,
        (Some(suffix), None) => under(b, suffix),
        (None, Some(suffix)) => under(a, suffix),
        (Some(x), Some(y)) => x == y || under(x, y) || under(y, x),
    }
}

/// Whether `host` is a strict subdomain of `domain`.
fn under(host: &str, domain: &str) -> bool {
    host.len() > domain.len() + 1
        && host.ends_with(domain)
        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
}

/// Some host reaches both lists (an empty list is any host).
fn hosts_intersect(a: &[String], b: &[String]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|x| b.iter().any(|y| patterns_overlap(x, y)))
}

/// On one prefix: both any-host, or two hostname lists that share a host.
fn hosts_collide(a: &[String], b: &[String]) -> bool {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => true,
        (false, false) => hosts_intersect(a, b),
        _ => false,
    }
}

/// How a newer route collides with an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Collision {
    /// Same prefix, overlapping hostnames.
    SamePath,
    /// The older route's prefix lies inside this route's API paths.
    OlderInsideApi,
    /// This route's prefix lies inside the older route's API paths.
    InsideOlderApi,
}

struct Claim<'a> {
    owner: usize,
    hostnames: &'a [String],
}

/// Paths already taken by accepted routes, in the order they were accepted (oldest first).
#[derive(Default)]
pub(crate) struct Claims<'a> {
    by_prefix: FxHashMap<&'a str, Vec<Claim<'a>>>,
    by_stem: FxHashMap<&'a str, Vec<Claim<'a>>>,
}

impl<'a> Claims<'a> {
    /// The first (oldest) accepted route this one collides with.
    pub fn collision(&self, prefix: &str, hostnames: &[String]) -> Option<(usize, Collision)> {
        let first = |claims: Option<&Vec<Claim<'a>>>, hit: fn(&[String], &[String]) -> bool| {
            claims?
                .iter()
                .find(|c| hit(c.hostnames, hostnames))
                .map(|c| c.owner)
        };
        if let Some(owner) = first(self.by_prefix.get(prefix), hosts_collide) {
            return Some((owner, Collision::SamePath));
        }
        if let Some(owner) = first(self.by_stem.get(prefix), hosts_intersect) {
            return Some((owner, Collision::OlderInsideApi));
        }
        api_stems(prefix).find_map(|stem| {
            first(self.by_prefix.get(stem), hosts_intersect).map(|o| (o, Collision::InsideOlderApi))
        })
    }

    /// Records an accepted route's paths.
    pub fn insert(&mut self, owner: usize, prefix: &'a str, hostnames: &'a [String]) {
        self.by_prefix
            .entry(prefix)
            .or_default()
            .push(Claim { owner, hostnames });
        for stem in api_stems(prefix) {
            self.by_stem
                .entry(stem)
                .or_default()
                .push(Claim { owner, hostnames });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prefixes_normalise_like_the_crd_schema() {
        assert_eq!(normalize_prefix("/"), Ok(""));
        assert_eq!(normalize_prefix("/team-a/chat"), Ok("/team-a/chat"));
        for bad in ["", "team", "/a/", "/a//b", "/a/../b", "/a b", "/a?x"] {
            assert!(normalize_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hostnames_lower_case_and_validate() {
        assert_eq!(
            normalize_hostname("API.Example.com"),
            Ok("api.example.com".into())
        );
        assert_eq!(
            normalize_hostname("*.example.com"),
            Ok("*.example.com".into())
        );
        for bad in ["", "*.", "a..b", "-a.com", "a_b.com", "*.*.a.com"] {
            assert!(normalize_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wildcards_overlap_the_hosts_under_them() {
        assert!(patterns_overlap("*.example.com", "api.example.com"));
        assert!(patterns_overlap("*.example.com", "*.eu.example.com"));
        assert!(!patterns_overlap("*.example.com", "example.com"));
        assert!(!patterns_overlap("a.example.com", "b.example.com"));
        assert!(!patterns_overlap("*.example.com", "api.example.org"));
    }

    #[test]
    fn api_stems_are_found_on_segment_boundaries() {
        assert_eq!(api_stems("/a/v1").collect::<Vec<_>>(), vec!["/a"]);
        assert_eq!(api_stems("/v1/x/v1").collect::<Vec<_>>(), vec!["", "/v1/x"]);
        assert_eq!(api_stems("/a/v10").count(), 0);
    }

    #[test]
    fn claims_find_the_oldest_colliding_route() {
        let any: Vec<String> = Vec::new();
        let a_host = hosts(&["a.example.com"]);
        let mut claims = Claims::default();
        claims.insert(0, "/x", &a_host);
        // Same prefix, other host: fine. Same prefix, any host: fine (specific hosts go first).
        assert_eq!(claims.collision("/x", &hosts(&["b.example.com"])), None);
        assert_eq!(claims.collision("/x", &any), None);
        assert_eq!(
            claims.collision("/x", &hosts(&["*.example.com"])),
            Some((0, Collision::SamePath))
        );
        assert_eq!(
            claims.collision("/x/v1/chat", &any),
            Some((0, Collision::InsideOlderApi))
        );
        claims.insert(1, "/y/v1", &any);
        assert_eq!(
            claims.collision("/y", &a_host),
            Some((1, Collision::OlderInsideApi))
        );
    }
}
