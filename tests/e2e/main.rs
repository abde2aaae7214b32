//! The end-to-end tests that can share one control plane, one module per behaviour.
//!
//! They share it safely because each keeps to objects it names uniquely (per-test namespaces),
//! the only cluster-wide objects they create are `crds/` applied by one manager, and neither
//! installs a Helm release (controlplane asserts that `helm list` is empty). Tests that need a
//! control plane nobody else touches, or their process to themselves, are separate binaries:
//! see `tests/Cargo.toml`.

mod controlplane;
mod crds;
