//! Which paths and hostnames each namespace may claim, as cluster administrators set them.
//!
//! Annotations on the Namespace object, which only those who may update Namespaces (cluster
//! administrators, not namespace admins) can set:
//!
//! - [`PATH_PREFIXES`]: prefixes the namespace's routes may use, each with every path beneath it
//!   (`/` grants every path). Without the annotation a namespace may use `/<its name>` and beneath.
//! - [`HOSTNAMES`]: hostnames its routes may list in `spec.hostnames`; `*.example.com` grants every
//!   name under `example.com`. Without the annotation a route may list no hostnames.
//!
//! Both are lists separated by commas or white space. The compiler enforces them only when given
//! [`Tenancy`]: the controller always gives it, standalone mode gives none and stays open.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::Namespace;

use super::paths::{normalize_hostname, normalize_prefix};
use crate::fx::FxHashMap;

/// Annotation on a Namespace: the path prefixes its routes may claim.
pub const PATH_PREFIXES: &str = "tollgate.dev/path-prefixes";
/// Annotation on a Namespace: the hostnames its routes may claim.
pub const HOSTNAMES: &str = "tollgate.dev/hostnames";

/// The cluster's Namespaces, whose annotations say what each may claim.
#[derive(Clone, Debug, Default)]
pub struct Tenancy {
    /// Every Namespace (only metadata is read).
    pub namespaces: Vec<Namespace>,
}

/// What one namespace may claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    /// Normalised prefixes (`""` for `/`).
    pub prefixes: Vec<String>,
    /// Lower-cased hostname patterns.
    pub hostnames: Vec<String>,
    /// Whether the prefixes come from the annotation (else the default).
    pub prefixes_annotated: bool,
}

fn entries(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

impl Grant {
    /// The grant read from a namespace's annotations (`None`: the namespace has none).
    pub fn read(
        namespace: &str,
        annotations: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Self {
        let get = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
        let (prefixes, prefixes_annotated) = match get(PATH_PREFIXES) {
            Some(value) => (
                entries(value)
                    .filter_map(|p| normalize_prefix(p).ok().map(str::to_owned))
                    .collect(),
                true,
            ),
            None => (vec![format!("/{namespace}")], false),
        };
        let hostnames = get(HOSTNAMES)
            .map(|value| {
                entries(value)
                    .filter_map(|h| normalize_hostname(h).ok())
                    .collect()
            })
            .unwrap_or_default();
        Self {
            prefixes,
            hostnames,
            prefixes_annotated,
        }
    }

    /// Whether a normalised prefix lies at or beneath a granted one.
    pub fn allows_prefix(&self, prefix: &str) -> bool {
        self.prefixes.iter().any(|g| {
            g.is_empty()
                || prefix == g
                || (prefix.starts_with(g.as_str()) && prefix.as_bytes()[g.len()] == b'/')
        })
    }

    /// Whether a normalised hostname pattern is covered by a granted one.
    pub fn allows_hostname(&self, host: &str) -> bool {
        self.hostnames.iter().any(|g| {
            g == host
                || g.strip_prefix("*.").is_some_and(|domain| {
                    let bare = host.strip_prefix("*.").unwrap_or(host);
                    bare.len() > domain.len() + 1
                        && bare.ends_with(domain)
                        && bare.as_bytes()[bare.len() - domain.len() - 1] == b'.'
                })
        })
    }

    /// The granted prefixes as written in a message.
    pub fn describe_prefixes(&self) -> String {
        if self.prefixes.is_empty() {
            return "no prefix".into();
        }
        let shown: Vec<String> = self
            .prefixes
            .iter()
            .map(|p| {
                if p.is_empty() {
                    "/".into()
                } else {
                    format!("{p} and beneath")
                }
            })
            .collect();
        shown.join(", ")
    }
}

/// Grants by namespace name.
pub(crate) struct Grants<'a> {
    by_namespace: FxHashMap<&'a str, Grant>,
}

impl<'a> Grants<'a> {
    /// Reads every namespace's annotations.
    pub fn new(tenancy: &'a Tenancy) -> Self {
        let by_namespace = tenancy
            .namespaces
            .iter()
            .filter_map(|ns| {
                let name = ns.metadata.name.as_deref()?;
                Some((name, Grant::read(name, ns.metadata.annotations.as_ref())))
            })
            .collect();
        Self { by_namespace }
    }

    /// What `namespace` may claim; the default when it carries no annotations (or is not listed).
    pub fn of(&self, namespace: &str) -> Cow<'_, Grant> {
        match self.by_namespace.get(namespace) {
            Some(grant) => Cow::Borrowed(grant),
            None => Cow::Owned(Grant::read(namespace, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn grant(prefixes: Option<&str>, hosts: Option<&str>) -> Grant {
        let mut annotations = BTreeMap::new();
        if let Some(p) = prefixes {
            annotations.insert(PATH_PREFIXES.to_string(), p.to_string());
        }
        if let Some(h) = hosts {
            annotations.insert(HOSTNAMES.to_string(), h.to_string());
        }
        Grant::read("team-a", Some(&annotations))
    }

    #[test]
    fn without_annotations_a_namespace_owns_its_own_name_and_no_hostnames() {
        let g = Grant::read("team-a", None);
        assert!(g.allows_prefix("/team-a"));
        assert!(g.allows_prefix("/team-a/chat"));
        assert!(!g.allows_prefix("/team-ab"));
        assert!(!g.allows_prefix("/team-b"));
        assert!(!g.allows_prefix(""));
        assert!(!g.allows_hostname("api.example.com"));
        assert_eq!(g.describe_prefixes(), "/team-a and beneath");
    }

    #[test]
    fn annotations_replace_the_default() {
        let g = grant(
            Some("/chat, /shared/x  /bad//"),
            Some("*.example.com,api.example.org"),
        );
        assert!(g.allows_prefix("/chat") && g.allows_prefix("/shared/x/y"));
        assert!(!g.allows_prefix("/team-a") && !g.allows_prefix("/shared"));
        assert_eq!(g.prefixes.len(), 2, "the invalid entry is ignored");
        assert!(g.allows_hostname("a.example.com"));
        assert!(g.allows_hostname("*.eu.example.com"));
        assert!(g.allows_hostname("*.example.com"));
        assert!(!g.allows_hostname("example.com"));
        assert!(g.allows_hostname("api.example.org"));
        assert!(!g.allows_hostname("x.api.example.org"));
        assert!(grant(Some("/"), None).allows_prefix(""));
        assert!(grant(Some("/"), None).allows_prefix("/anything"));
        let none = grant(Some(""), None);
        assert!(!none.allows_prefix("/team-a"));
        assert_eq!(none.describe_prefixes(), "no prefix");
    }

    proptest! {
        // The annotations are typed by people: any text reads without panicking, and only
        // well-formed entries are granted.
        #[test]
        fn any_annotation_text_reads_safely(prefixes in ".{0,64}", hosts in ".{0,64}", probe in "/[a-z/]{0,12}") {
            let g = grant(Some(&prefixes), Some(&hosts));
            for p in &g.prefixes {
                let shown = if p.is_empty() { "/" } else { p.as_str() };
                prop_assert_eq!(normalize_prefix(shown).ok(), Some(p.as_str()));
            }
            for h in &g.hostnames {
                let again = normalize_hostname(h);
                prop_assert_eq!(again.as_ref().ok(), Some(h));
            }
            if let Ok(p) = normalize_prefix(&probe) {
                let _ = g.allows_prefix(p);
            }
            let _ = g.allows_hostname(&hosts.to_ascii_lowercase());
        }
    }
}
