#!/usr/bin/env bash
# Creates (once) a virtualenv with one line of the official MCP Python SDK (PyPI `mcp`), outside the
# repository, and prints its python on stdout. `$1` is the line: `1` (`mcp<2`, the 2025-11-25 era with
# `initialize` and sessions) or `2` (`mcp>=2,<3`, the stateless 2026-07-28 revision). Each line has its
# own venv, since the two cannot be installed side by side. Fails loudly: a missing python3 or a failed
# install must fail the tests, not skip them.
set -euo pipefail
line="${1:?usage: ensure_mcp_venv.sh 1|2}"
case "$line" in
  1) spec='mcp>=1.20,<2' ;;
  2) spec='mcp>=2,<3' ;;
  *) echo "unknown MCP SDK line $line (1 or 2)" >&2; exit 2 ;;
esac
venv="${XDG_CACHE_HOME:-$HOME/.cache}/tollgate/venv-mcp$line"
check="import mcp, importlib.metadata as m; v = m.version('mcp'); assert v.split('.')[0] == '$line', v"
if ! "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
  command -v python3 >/dev/null || { echo "python3 is required for the MCP SDK tests" >&2; exit 1; }
  mkdir -p "$(dirname "$venv")"
  # A lock so that parallel first runs do not build the same venv twice.
  exec 9>"$venv.lock"
  flock 9
  if ! "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$spec" >&2
  fi
fi
"$venv/bin/python" -c "$check" >&2
echo "$venv/bin/python"
