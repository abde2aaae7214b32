#!/usr/bin/env bash
# The chart on a real one-node cluster (README: "The chart on a real node"). Needs root and a Debian 12 machine.
# Builds what is missing (Kubernetes node binaries, CoreDNS, metrics-server, Debian packages, the images), then
# runs tests/e2e/cluster.rs. scripts/test.sh runs the same test. Run from anywhere: bash tests/cluster/test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

step() { printf '\n== %s\n' "$*"; }

step "control-plane binaries"
time bash tests/controlplane/ensure.sh >/dev/null
step "node binaries and packages"
time bash tests/cluster/ensure.sh >/dev/null
# The images hold binaries of the test's own profile (debug, below); the harness would build them too.
export TOLLGATE_IMAGE_PROFILE="${TOLLGATE_IMAGE_PROFILE:-dev}"
step "images"
time bash scripts/images.sh
# Debug, like the rest of scripts/test.sh, whose build of the binaries the images take.
step "cargo test --test cluster"
time cargo test --workspace --test cluster -- --ignored --nocapture
