//! Who may use a shared object (a ModelProvider, an MCPServer, an AIGuardrail): its own namespace, and
//! the namespaces its `spec.allowedNamespaces` lists (`*` for every one).

use tollgate_crds::NamespaceName;

/// The namespaces an object is shared with.
pub(crate) struct Sharing<'a> {
    owner: &'a str,
    everyone: bool,
    listed: Vec<&'a str>,
}

impl<'a> Sharing<'a> {
    /// The sharing of an object in `owner` whose spec lists `allowed`.
    pub fn of(owner: &'a str, allowed: &'a [NamespaceName]) -> Self {
        Self {
            owner,
            everyone: allowed.iter().any(|n| n.0 == "*"),
            listed: allowed.iter().map(|n| n.0.as_str()).collect(),
        }
    }

    /// Whether objects in `namespace` may use it.
    pub fn admits(&self, namespace: &str) -> bool {
        self.everyone || self.owner == namespace || self.listed.contains(&namespace)
    }
}
