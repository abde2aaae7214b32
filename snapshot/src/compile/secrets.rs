//! Looking up values in Secrets, from `data` or `stringData`.

use std::collections::hash_map::Entry;

use k8s_openapi::api::core::v1::Secret;

use super::objects::{namespace_of, same_name_order};
use crate::fx::{FxHashMap, map_with_capacity};

/// Secrets by namespace and name.
pub(crate) struct Secrets<'a> {
    by_id: FxHashMap<(&'a str, &'a str), &'a Secret>,
}

/// Why a Secret reference gave no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretProblem {
    SecretNotFound,
    KeyNotFound { available: Vec<String> },
    Empty,
}

impl SecretProblem {
    /// The condition reason for this problem.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SecretNotFound => "SecretNotFound",
            Self::KeyNotFound { .. } => "SecretKeyNotFound",
            Self::Empty => "SecretKeyEmpty",
        }
    }

    /// A clause describing the problem, e.g. `Secret team-a/openai has no key "apiKey"`.
    pub fn describe(&self, namespace: &str, name: &str, key: &str) -> String {
        match self {
            Self::SecretNotFound => format!("Secret {namespace}/{name} does not exist"),
            Self::KeyNotFound { available } if available.is_empty() => {
                format!("Secret {namespace}/{name} has no key {key:?} (it is empty)")
            }
            Self::KeyNotFound { available } => format!(
                "Secret {namespace}/{name} has no key {key:?} (its keys are {})",
                super::objects::join_list(available)
            ),
            Self::Empty => format!("key {key:?} of Secret {namespace}/{name} is empty"),
        }
    }
}

impl<'a> Secrets<'a> {
    /// Indexes Secrets; of duplicates (standalone files only) the canonical first is used.
    pub fn new(secrets: &'a [Secret]) -> Self {
        let mut by_id: FxHashMap<(&'a str, &'a str), &'a Secret> = map_with_capacity(secrets.len());
        for secret in secrets {
            let meta = &secret.metadata;
            let key = (namespace_of(meta), meta.name.as_deref().unwrap_or_default());
            match by_id.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(secret);
                }
                // Two Secrets with one name happen only in standalone files; keep the canonical first.
                Entry::Occupied(mut slot) => {
                    if same_name_order(secret, *slot.get()).is_lt() {
                        slot.insert(secret);
                    }
                }
            }
        }
        Self { by_id }
    }

    /// The value under `key`, with surrounding whitespace (a trailing newline from a file) removed.
    /// `stringData` wins over `data`, as the API server merges them.
    pub fn value(&self, namespace: &str, name: &str, key: &str) -> Result<&'a [u8], SecretProblem> {
        let secret = self
            .by_id
            .get(&(namespace, name))
            .ok_or(SecretProblem::SecretNotFound)?;
        let raw: Option<&'a [u8]> = secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|s| s.as_bytes())
            .or_else(|| {
                secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| b.0.as_slice())
            });
        match raw {
            Some(bytes) => {
                let trimmed = bytes.trim_ascii();
                if trimmed.is_empty() {
                    Err(SecretProblem::Empty)
                } else {
                    Ok(trimmed)
                }
            }
            None => {
                let mut available: Vec<String> = secret
                    .data
                    .iter()
                    .flat_map(|d| d.keys())
                    .chain(secret.string_data.iter().flat_map(|d| d.keys()))
                    .cloned()
                    .collect();
                available.sort();
                available.dedup();
                Err(SecretProblem::KeyNotFound { available })
            }
        }
    }
}
