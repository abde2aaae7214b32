#!/usr/bin/env bash
# Provides the trace tests' OpenTelemetry Collector, building it only when it is absent or stale:
#   otelcol  built from the go.opentelemetry.io/collector modules of release v0.161.0 (stable modules v1.67.0)
#            with the OTLP receiver and contrib's file exporter (wrapper module in otelcol/ beside this script)
# It lands in ${TOLLGATE_CACHE:-~/.cache/tollgate}/bin, outside the repository.
# Prints the binary's path on stdout; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
bin="$cache/bin"
mkdir -p "$bin"

log() { echo "[collector] $*" >&2; }

dir="$here/otelcol"
# The binary is reused only if its stamp matches the inputs it was built from.
stamp="$(cat "$dir/go.mod" "$dir/go.sum" "$dir/main.go" "$here/ensure.sh" | sha256sum | cut -c1-16)"
if [[ ! -x "$bin/otelcol" || "$(cat "$bin/otelcol.stamp" 2>/dev/null)" != "$stamp" ]]; then
  log "building otelcol from otelcol/go.mod (first run only; several minutes on 2 cores)"
  started=$SECONDS
  (cd "$dir" && CGO_ENABLED=0 nice go build -trimpath -ldflags "-s -w" -o "$bin/otelcol.tmp" .)
  mv "$bin/otelcol.tmp" "$bin/otelcol"
  echo "$stamp" >"$bin/otelcol.stamp"
  log "built otelcol in $((SECONDS - started))s"
fi

echo "$bin/otelcol"
