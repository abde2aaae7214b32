//! Creating objects the way a user would: `kubectl apply`, and RBAC grants.

use std::{
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
};

use serde_json::{Value, json};

use crate::{ControlPlane, command::run_with_stdin};

/// Field manager the harness applies with, so tests can tell its changes apart.
pub const FIELD_MANAGER: &str = "tollgate-e2e";

static NEXT_GRANT: AtomicU64 = AtomicU64::new(1);

impl ControlPlane {
    /// `kubectl apply --server-side` of `yaml` (one or more documents) into `namespace`, as the admin.
    ///
    /// Server-side apply, because client-side apply stores the whole object in an annotation,
    /// which large objects such as CRDs overflow. Conflicts with other field managers are
    /// forced: the test is the author of what it applies. `Ok` carries kubectl's stdout,
    /// `Err` its stderr, so tests can assert on rejection messages.
    pub fn apply_yaml(&self, namespace: &str, yaml: &str) -> Result<String, String> {
        let mut cmd = self.kubectl();
        cmd.args(["--namespace", namespace]);
        apply(cmd, yaml)
    }

    /// Like [`ControlPlane::apply_yaml`], but impersonating `user` in `groups`.
    pub fn apply_yaml_as(
        &self,
        user: &str,
        groups: &[&str],
        namespace: &str,
        yaml: &str,
    ) -> Result<String, String> {
        let mut cmd = self.kubectl_as(user, groups);
        cmd.args(["--namespace", namespace]);
        apply(cmd, yaml)
    }

    /// Applies cluster-scoped objects (CRDs, ClusterRoles, admission policies) as the admin.
    pub fn apply_cluster_yaml(&self, yaml: &str) -> Result<String, String> {
        apply(self.kubectl(), yaml)
    }

    /// Lets `user` perform `verbs` on `resources` in `namespace`, through a new Role and RoleBinding.
    ///
    /// Resources are written like kubectl's `--resource`: `pods`, `pods/log`, `deployments.apps`,
    /// `airoutes.tollgate.dev`. Verbs are not checked, so custom ones such as `approve` work.
    /// Panics if the API server refuses.
    pub fn grant(&self, namespace: &str, user: &str, verbs: &[&str], resources: &[&str]) {
        let name = format!("e2e-grant-{}", NEXT_GRANT.fetch_add(1, Ordering::Relaxed));
        let rules: Vec<Value> = resources
            .iter()
            .map(|resource| {
                let (resource, group) = resource.split_once('.').unwrap_or((resource, ""));
                json!({ "apiGroups": [group], "resources": [resource], "verbs": verbs })
            })
            .collect();
        let role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": { "name": name, "namespace": namespace },
            "rules": rules,
        });
        let binding = role_binding(&name, namespace, user, "Role", &name);
        self.apply_or_panic(namespace, &[role, binding]);
    }

    /// Binds `user` to the ClusterRole `cluster_role` (`view`, `edit`, `admin`, …) in `namespace`.
    /// Panics if the API server refuses. Roles aggregated into `view`/`edit`/`admin` after
    /// startup count only after [`ControlPlane::aggregate_cluster_roles`].
    pub fn grant_cluster_role(&self, namespace: &str, user: &str, cluster_role: &str) {
        let name = format!("e2e-grant-{}", NEXT_GRANT.fetch_add(1, Ordering::Relaxed));
        let binding = role_binding(&name, namespace, user, "ClusterRole", cluster_role);
        self.apply_or_panic(namespace, &[binding]);
    }

    fn apply_or_panic(&self, namespace: &str, objects: &[Value]) {
        let yaml = objects
            .iter()
            .map(|o| serde_yaml::to_string(o).expect("objects serialize to YAML"))
            .collect::<Vec<_>>()
            .join("---\n");
        if let Err(stderr) = self.apply_yaml(namespace, &yaml) {
            panic!("applying in {namespace} failed: {stderr}\n{yaml}");
        }
    }
}

fn role_binding(name: &str, namespace: &str, user: &str, role_kind: &str, role: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": { "name": name, "namespace": namespace },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
    })
}

fn apply(mut cmd: Command, yaml: &str) -> Result<String, String> {
    cmd.args([
        "apply",
        "--server-side",
        "--force-conflicts",
        "--request-timeout=30s",
        "-f",
        "-",
    ])
    .arg(format!("--field-manager={FIELD_MANAGER}"));
    run_with_stdin(cmd, yaml)
}
