//! End-to-end test harness for Tollgate: a real etcd and kube-apiserver per test binary, and (for
//! `e2e/cluster.rs`) a one-node cluster around them: see [`Cluster`].
//!
//! ```no_run
//! # async fn demo() {
//! use tollgate_e2e::ControlPlane;
//!
//! let cp = ControlPlane::shared();
//! let ns = cp.namespace("demo");
//! ns.apply_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n").unwrap();
//! let client = cp.client_as("alice", &["team-a"]).await;
//! # let _ = client;
//! # }
//! ```
//!
//! The binaries come from `controlplane/ensure.sh` (built once, cached outside the repository).
//! Processes and scratch files are removed when the test process exits, however it exits;
//! see the `supervisor` module for how.

mod access;
mod aggregation;
mod apply;
mod certs;
mod cluster;
mod command;
mod controlplane;
mod namespace;
mod pki;
mod process;
mod supervisor;
mod tollgate_api;
mod wait;
mod workspace;

pub use apply::FIELD_MANAGER;
pub use certs::{certificate_text, decode_base64};
pub use cluster::{BRIDGE, Cluster, Image, NODE_IP, NODE_NAME, StartTimes};
pub use command::{run, run_combined, run_with_stdin};
pub use controlplane::{ControlPlane, Exposure, KUBERNETES_VERSION};
pub use namespace::TestNamespace;
pub use process::{Process, free_port};
pub use tollgate_api::CRD_NAMES;
pub use wait::eventually;
pub use workspace::{chart_dir, readme_shell_blocks, repo_root, tollgate_binaries};
