//! Tollgate's own API on the control plane: the CRDs and the approval admission policy.

use std::sync::OnceLock;

use crate::{ControlPlane, command::run, workspace::repo_root};

/// The CustomResourceDefinitions in `crds/`, by name.
pub const CRD_NAMES: [&str; 6] = [
    "modelproviders.tollgate.dev",
    "airoutes.tollgate.dev",
    "consumers.tollgate.dev",
    "apisubscriptions.tollgate.dev",
    "aiguardrails.tollgate.dev",
    "mcpservers.tollgate.dev",
];

impl ControlPlane {
    /// The shared control plane with `crds/` applied the way a user would (CRDs and the approval
    /// policy), once per test process, and every CRD Established.
    pub fn shared_with_tollgate_api() -> &'static ControlPlane {
        static DONE: OnceLock<()> = OnceLock::new();
        let cp = ControlPlane::shared();
        DONE.get_or_init(|| {
            let mut apply = cp.kubectl();
            apply
                .args(["apply", "--server-side", "-f"])
                .arg(repo_root().join("crds"));
            run(apply).expect("kubectl apply -f crds/");
            let mut wait = cp.kubectl();
            wait.args(["wait", "--for=condition=Established", "--timeout=60s"])
                .args(CRD_NAMES.iter().map(|n| format!("crd/{n}")));
            run(wait).expect("CRDs become Established");
        });
        cp
    }
}
