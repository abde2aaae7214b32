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

# The cluster test (tests/e2e/cluster.rs) runs the chart's pods on a one-node cluster around that control
# plane: kubelet and the other node binaries, CoreDNS and metrics-server built here from their Go modules,
# containerd, runc, the CNI plugins and buildah installed from Debian, on a fresh machine (minutes, once).
step "cluster node binaries and packages"
time bash tests/cluster/ensure.sh

# The trace tests (proxy/tests/it/traces.rs) start a real OpenTelemetry Collector, built here from
# its Go modules on a fresh machine (a few minutes, once).
step "OpenTelemetry Collector"
time bash tests/collector/ensure.sh

# The portal's browser test (tests/e2e/controller/portal.rs) drives Debian's chromium with selenium:
# installed here on a fresh machine (apt-get, and a venv in ~/.cache/tollgate/venv-browser), once.
step "chromium and selenium"
time bash tests/browser/ensure.sh

# The proxy's cluster-wide limit tests start their own redis-server on a free loopback port (and stop it).
step "redis-server"
if ! command -v redis-server >/dev/null; then
  # Without a policy, the package would start a Redis service on port 6379 and leave it running.
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
redis-server --version

# The SDK compatibility tests (proxy/tests/it/sdk) make their own venv with the official openai and
# anthropic packages on first use: proxy/tests/python/ensure_venv.sh, cached in ~/.cache/tollgate/venv.

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# Property tests draw random cases. Under CI they draw the same cases every run (a fixed seed, printed here),
# so that a red run can be replayed with the same PROPTEST_RNG_SEED and a green one stays green until the code
# changes; set PROPTEST_RNG_SEED yourself to pick another. Runs outside CI keep random seeds and keep exploring.
if [ -n "${CI:-}" ]; then export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261206}"; fi
step "cargo test${PROPTEST_RNG_SEED:+ (PROPTEST_RNG_SEED=$PROPTEST_RNG_SEED)}"
cargo test --workspace

# Last, as it is the slowest (about 2.5 minutes) and needs root: the chart on a real node, with images built
# from the Dockerfiles around the debug binaries the step above built (README: The chart on a real node).
# --workspace, not -p tollgate-e2e: the same feature resolution as the step above, so nothing is rebuilt.
step "the chart on a real node"
cargo test --workspace --test cluster -- --ignored --nocapture
