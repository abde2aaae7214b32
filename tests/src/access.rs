//! Acting as someone other than the admin: ServiceAccount tokens, kubeconfigs that carry only a
//! token, and asking the authorizer with `kubectl auth can-i`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{ControlPlane, command::run, controlplane::kubectl_command};

impl ControlPlane {
    /// A TokenRequest (one hour) for ServiceAccount `account` in `namespace`, with the API server's
    /// audience unless `audience` names another. Panics if kubectl fails.
    pub fn create_token(&self, namespace: &str, account: &str, audience: Option<&str>) -> String {
        let mut cmd = self.kubectl();
        cmd.args(["create", "token", account, "-n", namespace, "--duration=1h"]);
        if let Some(audience) = audience {
            cmd.arg(format!("--audience={audience}"));
        }
        run(cmd).expect("kubectl create token").trim().to_owned()
    }

    /// Writes a kubeconfig into `dir` that authenticates with `token` alone (no client certificate
    /// to fall back on), and returns its path.
    pub fn token_kubeconfig(&self, dir: &Path, token: &str) -> PathBuf {
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, self.ca_pem()).expect("writing the CA");
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {"server": self.server_url(), "certificate-authority": ca}}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "e2e", "user": "sa"}}],
            "current-context": "sa",
        });
        let path = dir.join("kubeconfig");
        let yaml = serde_yaml::to_string(&config).expect("a kubeconfig serializes");
        std::fs::write(&path, yaml).expect("writing the kubeconfig");
        path
    }

    /// `kubectl` with another kubeconfig, such as one from [`ControlPlane::token_kubeconfig`].
    pub fn kubectl_with(&self, kubeconfig: &Path) -> Command {
        kubectl_command(self.bin_dir(), kubeconfig)
    }

    /// `kubectl auth can-i <args>` impersonating `user` in `groups`: the answer as printed,
    /// `yes` or `no` (empty if kubectl failed, so neither answer is assumed).
    pub fn can_i(&self, user: &str, groups: &[&str], args: &[&str]) -> String {
        let out = self
            .kubectl_as(user, groups)
            .args(["auth", "can-i"])
            .args(args)
            .output()
            .expect("running kubectl auth can-i");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}
