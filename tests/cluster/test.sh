#!/usr/bin/env bash
# The chart on a real one-node cluster (README: "The chart on a real node"). Needs root and a Debian 12 machine.
# Builds what is missing (Kubernetes node binaries, CoreDNS, Debian packages, the images), then runs
# tests/e2e/cluster.rs. Run from anywhere: bash tests/cluster/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

step() { printf '\n== %s\n' "$*"; }

step "control-plane binaries"
time bash tests/controlplane/ensure.sh >/dev/null
step "node binaries and packages"
time bash tests/cluster/ensure.sh >/dev/null
step "images"
time bash scripts/images.sh
# Release, as the images are: the test's dependencies are then built once for both.
step "cargo test --test cluster"
time cargo test --release -p tollgate-e2e --test cluster -- --ignored --nocapture
