#!/usr/bin/env bash
# Regenerates every file derived from another one, so that none of them is edited by hand:
#   charts/tollgate/crds/*.yaml                  the CRDs, from the Rust types (crdgen)
#   charts/tollgate/files/approval-policy.yaml   a copy of crds/approval-policy.yaml
#   deploy/tollgate.yaml                         the chart rendered by deploy/render.sh
# Tests fail when a committed copy differs from what this script writes (tests/e2e/chart.rs).
# Needs helm: tests/controlplane/ensure.sh provides it (or set HELM). Run from anywhere:
#   bash charts/generate.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
helm="${HELM:-$(bash tests/controlplane/ensure.sh)/helm}"

rm -f charts/tollgate/crds/*.yaml
cargo run --quiet -p tollgate-crds --bin crdgen -- charts/tollgate/crds >/dev/null

{
  echo "# Copied from crds/approval-policy.yaml by charts/generate.sh. Do not edit."
  cat crds/approval-policy.yaml
} >charts/tollgate/files/approval-policy.yaml

bash deploy/render.sh "$helm" >deploy/tollgate.yaml
echo "regenerated charts/tollgate/crds, charts/tollgate/files/approval-policy.yaml and deploy/tollgate.yaml" >&2
