#!/usr/bin/env bash
# The project's test command (README, CI): everything a change must pass, in the order that
# fails fastest. Run from anywhere: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

# Builds etcd and kube-apiserver on a machine that has never run the tests (minutes, once),
# so that time shows up here rather than inside the first end-to-end test.
step "control-plane binaries"
time bash tests/controlplane/ensure.sh

# The proxy's cluster-wide limit tests start their own redis-server on a free loopback port.
step "redis-server"
if ! command -v redis-server >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
fi
redis-server --version

# Python packages for the SDK compatibility tests go here, e.g.:
#   step "python test dependencies"
#   python3 -m pip install --quiet openai

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace
