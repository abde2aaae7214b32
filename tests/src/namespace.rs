//! Per-test namespaces, so tests running in parallel never see each other's objects.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::ControlPlane;

/// Longest prefix kept, leaving room for the suffix within the 63-character DNS label limit.
const MAX_PREFIX: usize = 40;

static NEXT_SUFFIX: AtomicU64 = AtomicU64::new(1);

/// A namespace made for one test, with a unique name and a `default` ServiceAccount.
///
/// Dropping it deletes the namespace, best effort. There is no namespace controller, so a
/// deleted namespace stays `Terminating` with its objects in it until the control plane
/// exits; that is harmless because names are never reused within a control plane.
pub struct TestNamespace {
    name: String,
    cp: &'static ControlPlane,
}

impl ControlPlane {
    /// Creates a fresh namespace named `<prefix>-<n>` (the prefix cleaned into a DNS label),
    /// plus the `default` ServiceAccount a controller-manager would have added.
    pub fn namespace(&'static self, prefix: &str) -> TestNamespace {
        let name = format!(
            "{}-{}",
            dns_label_prefix(prefix),
            NEXT_SUFFIX.fetch_add(1, Ordering::Relaxed)
        );
        let manifest = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    tollgate.dev/e2e: \"true\"\n\
             ---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  namespace: {name}\n"
        );
        if let Err(stderr) = self.apply_yaml(&name, &manifest) {
            panic!("creating namespace {name}: {stderr}");
        }
        TestNamespace { name, cp: self }
    }
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// [`ControlPlane::apply_yaml`] into this namespace.
    pub fn apply_yaml(&self, yaml: &str) -> Result<String, String> {
        self.cp.apply_yaml(&self.name, yaml)
    }

    /// [`ControlPlane::apply_yaml_as`] into this namespace.
    pub fn apply_yaml_as(&self, user: &str, groups: &[&str], yaml: &str) -> Result<String, String> {
        self.cp.apply_yaml_as(user, groups, &self.name, yaml)
    }

    /// [`ControlPlane::grant`] in this namespace.
    pub fn grant(&self, user: &str, verbs: &[&str], resources: &[&str]) {
        self.cp.grant(&self.name, user, verbs, resources);
    }

    /// Sets an annotation on the Namespace object itself, as a cluster administrator would.
    pub fn annotate(&self, key: &str, value: &str) {
        let mut cmd = self.cp.kubectl();
        cmd.args(["annotate", "--overwrite", "namespace", &self.name])
            .arg(format!("{key}={value}"));
        crate::run(cmd).expect("annotating the namespace");
    }

    /// [`ControlPlane::grant_cluster_role`] in this namespace.
    pub fn grant_cluster_role(&self, user: &str, cluster_role: &str) {
        self.cp.grant_cluster_role(&self.name, user, cluster_role);
    }
}

impl fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // A failed test's objects are worth more than tidiness; the process is ending anyway.
        if std::thread::panicking() {
            return;
        }
        let _ = self
            .cp
            .kubectl()
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--request-timeout=10s",
            ])
            .output();
    }
}

/// Lowercases `prefix` and keeps only what a DNS label allows.
fn dns_label_prefix(prefix: &str) -> String {
    let cleaned: String = prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(MAX_PREFIX)
        .collect();
    let trimmed = cleaned.trim_matches('-');
    if trimmed.is_empty() {
        "test".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::dns_label_prefix;

    #[test]
    fn prefixes_become_dns_labels() {
        assert_eq!(dns_label_prefix("RBAC_edit test"), "rbac-edit-test");
        assert_eq!(dns_label_prefix("--x--"), "x");
        assert_eq!(dns_label_prefix("Ünïcode"), "n-code");
        assert_eq!(dns_label_prefix(""), "test");
        assert_eq!(dns_label_prefix(&"a".repeat(100)).len(), 40);
    }
}
