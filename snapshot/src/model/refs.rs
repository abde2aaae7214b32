//! How a table names things: Kubernetes objects by `namespace/name`, rows of other tables by index.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::shared_str;

// Named in plain text, not linked: a link would make this file, below the table, refer up to it.
/// Index of a provider in `Content::providers`.
pub type ProviderIdx = u32;
/// Index of a route in `Content::routes`.
pub type RouteIdx = u32;
/// Index of a consumer in `Content::consumers`.
pub type ConsumerIdx = u32;

/// `namespace/name` of a Kubernetes object.
///
/// Shared strings: a compiled table and its verdicts name the same objects, and many objects share a
/// namespace, so a clone is two reference counts rather than two allocations. Encoded like two `String`s.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// Namespace (the team).
    #[serde(deserialize_with = "shared_str::deserialize")]
    pub namespace: Arc<str>,
    /// Object name.
    #[serde(deserialize_with = "shared_str::deserialize")]
    pub name: Arc<str>,
}

impl ObjectRef {
    /// Builds a reference.
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl ObjectRef {
    /// `namespace/name`, as `Display` writes it, without the formatting machinery (for hot paths).
    pub fn joined(&self) -> String {
        let mut out = String::with_capacity(self.namespace.len() + 1 + self.name.len());
        out.push_str(&self.namespace);
        out.push('/');
        out.push_str(&self.name);
        out
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
