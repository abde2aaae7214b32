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
# shellcheck source=scripts/lib/ensure_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../scripts/lib/ensure_venv.sh"
ensure_venv "$venv" "import mcp, importlib.metadata as m; v = m.version('mcp'); assert v.split('.')[0] == '$line', v" "$spec"
echo "$venv/bin/python"
