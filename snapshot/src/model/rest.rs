//! A route's REST service: where it runs, how to reach it, and the operations its OpenAPI document
//! declares, which are the only ones forwarded.

use serde::{Deserialize, Serialize};

use super::provider::{Credential, Timeouts};

/// A REST service published under `<prefix>/api/`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RestService {
    /// Base URL without a trailing `/`, e.g. `http://orders.team-a.svc:8080/v2`.
    pub base_url: String,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// PEM certificates of the only CAs trusted for this service; `None`: the public roots.
    pub ca_pem: Option<String>,
    /// The header added to every request, if any.
    pub credential: Option<RestCredential>,
    /// Largest request body accepted.
    pub max_request_bytes: u64,
    /// The operations forwarded, in the document's order of paths and methods.
    pub operations: Vec<RestOperation>,
    /// The source document's `components`, which the operations' `$ref`s point into.
    pub components: Option<serde_json::Value>,
}

/// A credential sent to a REST service. The value is plaintext because the proxy must send it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RestCredential {
    /// Header name, lower-case.
    pub header: String,
    /// The whole header value, prefix included.
    pub value: Credential,
}

/// One operation of the service's OpenAPI document.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RestOperation {
    /// HTTP method, upper-case.
    pub method: String,
    /// The path template as declared, e.g. `/items/{id}`.
    pub path: String,
    /// `operationId`, if the document gives one.
    pub operation_id: Option<String>,
    /// The Operation Object as the document gives it.
    pub spec: serde_json::Value,
}

impl RestService {
    /// The operation that `method` and `path` (below `<prefix>/api`, starting with `/`, without the
    /// query) call. A template parameter matches one non-empty segment; of several matching
    /// templates, the one with the most literal text wins (`/items/mine` before `/items/{id}`).
    /// Paths with `.` or `..` segments match nothing, so an upstream that resolves them cannot be
    /// steered to an undeclared operation.
    pub fn operation(&self, method: &str, path: &str) -> Option<&RestOperation> {
        self.operation_index(method, path)
            .map(|i| &self.operations[i])
    }

    /// The position in [`RestService::operations`] of the operation [`RestService::operation`] finds.
    pub fn operation_index(&self, method: &str, path: &str) -> Option<usize> {
        if !path.starts_with('/') || has_dot_segment(path) {
            return None;
        }
        let mut best: Option<(usize, usize)> = None;
        for (i, op) in self.operations.iter().enumerate() {
            if op.method != method {
                continue;
            }
            if let Some(score) = match_operation(&op.path, path)
                && best.is_none_or(|(_, s)| score > s)
            {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// Whether any segment of `path` is a dot segment. A path without `.` and `%` (nearly every one)
/// has none, which one pass over its bytes tells without splitting it (this runs on every REST call).
fn has_dot_segment(path: &str) -> bool {
    path.bytes().any(|b| b == b'.' || b == b'%') && path.split('/').any(is_dot_segment)
}

/// [`match_template`], with templates without parameters (most operations) compared whole: such a
/// template matches only the identical path, its score being every byte but the slashes.
fn match_operation(template: &str, path: &str) -> Option<usize> {
    if template.as_bytes().contains(&b'{') {
        return match_template(template, path);
    }
    (template == path).then(|| template.bytes().filter(|&b| b != b'/').count())
}

/// `.` and `..`, also percent-encoded (`%2e`, `%2E`). Read in place: this runs for every segment
/// of every REST call.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return false,
        };
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
}

/// Whether `path` fits `template`, and if so how many literal bytes the template matched.
pub(crate) fn match_template(template: &str, path: &str) -> Option<usize> {
    let mut literal = 0;
    let mut want = template.split('/');
    let mut have = path.split('/');
    loop {
        match (want.next(), have.next()) {
            (None, None) => return Some(literal),
            (Some(w), Some(h)) => literal += match_segment(w.as_bytes(), h.as_bytes())?,
            _ => return None,
        }
    }
}

/// Matches one segment: literal bytes, and `{name}` parameters that each take at least one byte.
/// Returns the literal bytes matched. A parameter followed by more parameters ends at the first
/// place the literal text after it appears, so matching never backtracks: linear in the segment,
/// whatever a caller sends.
fn match_segment(template: &[u8], segment: &[u8]) -> Option<usize> {
    let Some(open) = template.iter().position(|&b| b == b'{') else {
        return (template == segment).then_some(template.len());
    };
    let (head, rest) = template.split_at(open);
    let segment = segment.strip_prefix(head)?;
    let close = rest.iter().position(|&b| b == b'}')?;
    let after = &rest[close + 1..];
    let taken = match after.iter().position(|&b| b == b'{') {
        // The last parameter takes everything before the template's literal ending.
        None => {
            let taken = segment.len().checked_sub(after.len())?;
            (taken > 0).then_some(taken)?
        }
        Some(next) => {
            let literal = &after[..next];
            if literal.is_empty() {
                return None; // two parameters side by side: ambiguous, refused when compiling
            }
            1 + segment
                .get(1..)?
                .windows(literal.len())
                .position(|w| w == literal)?
        }
    };
    match_segment(after, &segment[taken..]).map(|n| n + head.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ops: &[(&str, &str)]) -> RestService {
        RestService {
            base_url: "http://x".into(),
            timeouts: Timeouts::default(),
            ca_pem: None,
            credential: None,
            max_request_bytes: 1024,
            operations: ops
                .iter()
                .map(|(m, p)| RestOperation {
                    method: m.to_string(),
                    path: p.to_string(),
                    operation_id: Some(format!("{m} {p}")),
                    spec: serde_json::json!({}),
                })
                .collect(),
            components: None,
        }
    }

    fn found<'a>(s: &'a RestService, method: &str, path: &str) -> Option<&'a str> {
        s.operation(method, path).map(|o| o.path.as_str())
    }

    #[test]
    fn templates_match_exactly_one_non_empty_segment() {
        let s = service(&[
            ("GET", "/items"),
            ("GET", "/items/{id}"),
            ("GET", "/items/mine"),
            ("DELETE", "/items/{id}"),
            ("GET", "/items/{id}/parts/{part}.json"),
        ]);
        assert_eq!(found(&s, "GET", "/items"), Some("/items"));
        assert_eq!(found(&s, "GET", "/items/42"), Some("/items/{id}"));
        assert_eq!(found(&s, "GET", "/items/mine"), Some("/items/mine"));
        assert_eq!(found(&s, "DELETE", "/items/42"), Some("/items/{id}"));
        assert_eq!(
            found(&s, "GET", "/items/4/parts/a.b.json"),
            Some("/items/{id}/parts/{part}.json")
        );
        assert_eq!(found(&s, "GET", "/items/4/parts/.json"), None);
        assert_eq!(found(&s, "GET", "/items/"), None, "an empty segment");
        assert_eq!(found(&s, "GET", "/items/1/2"), None, "two segments");
        assert_eq!(found(&s, "GET", "/items/"), None);
        assert_eq!(found(&s, "PUT", "/items/42"), None, "undeclared method");
        assert_eq!(found(&s, "GET", "/other"), None);
        assert_eq!(found(&s, "GET", "items"), None);
    }

    #[test]
    fn dot_segments_match_nothing() {
        let s = service(&[("GET", "/items/{id}"), ("GET", "/{a}/{b}")]);
        for path in [
            "/items/..",
            "/items/.",
            "/items/%2e%2E",
            "/../admin",
            "/x/%2E",
        ] {
            assert_eq!(found(&s, "GET", path), None, "{path}");
        }
        assert_eq!(found(&s, "GET", "/items/..x"), Some("/items/{id}"));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A template's parameters filled with any non-empty segment text make a path that matches it;
        /// no input panics the matcher.
        #[test]
        fn filled_templates_match_their_template(
            literals in proptest::collection::vec("[a-z0-9._-]{0,5}", 1..5),
            values in proptest::collection::vec("[A-Za-z0-9%:@_-]{1,8}", 4),
        ) {
            let template: String = literals
                .iter()
                .enumerate()
                .map(|(i, l)| if i % 2 == 1 { format!("/{l}{{p{i}}}") } else { format!("/x{l}") })
                .collect();
            let path: String = literals
                .iter()
                .enumerate()
                .map(|(i, l)| if i % 2 == 1 { format!("/{l}{}", values[i]) } else { format!("/x{l}") })
                .collect();
            prop_assert!(match_template(&template, &path).is_some(), "{} vs {}", template, path);
            let longer = format!("{path}/more");
            prop_assert!(match_template(&template, &longer).is_none());
        }

        /// The in-place reading of dot segments agrees with decoding `%2e` and comparing.
        #[test]
        fn dot_segments_read_in_place_as_decoded(segment in "(\\.|%2e|%2E|%2|%|e|x){0,5}") {
            let decoded = segment.replace("%2e", ".").replace("%2E", ".");
            prop_assert_eq!(is_dot_segment(&segment), decoded == "." || decoded == "..");
        }

        /// Whole-path comparison of literal templates and the dot-segment pre-check give what
        /// matching segment by segment gives, for any template and path.
        #[test]
        fn literal_templates_match_as_segment_by_segment(
            template in "(/(\\{p\\}|[a-c.%]{0,3}|%2e)){1,4}",
            path in "(/([a-c.%]{0,3}|%2e)){0,4}",
        ) {
            let slow = !path.split('/').any(is_dot_segment);
            prop_assert_eq!(!has_dot_segment(&path), slow);
            prop_assert_eq!(match_operation(&template, &path), match_template(&template, &path));
        }

        #[test]
        fn matching_anything_never_panics(template in "\\PC{0,40}", path in "\\PC{0,40}") {
            let _ = match_template(&template, &path);
        }
    }
}
