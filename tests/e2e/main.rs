//! The end-to-end tests that can share one control plane, one module per behaviour.
//!
//! They share it safely because each keeps to objects it names uniquely (per-test namespaces,
//! release names of its own), and the cluster-wide objects they do create are identical whoever
//! creates them (Tollgate's CRDs; the approval policy, which the chart renames per release).
//! Tests that need a control plane nobody else touches, or their process to themselves, are
//! separate binaries: see `tests/Cargo.toml`.

mod chart;
mod controlplane;
mod crds;
