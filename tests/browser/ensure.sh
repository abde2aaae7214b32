#!/usr/bin/env bash
# Provides what the portal's browser test needs: Debian's chromium and chromium-driver (installed with
# apt-get when /usr/bin/chromium is missing) and a venv with the `selenium` PyPI package, outside the
# repository in ${XDG_CACHE_HOME:-~/.cache}/tollgate/venv-browser. Prints the venv's python on stdout;
# progress goes to stderr. Fails loudly: a missing browser must fail the test, not skip it.
set -euo pipefail
log() { echo "[browser] $*" >&2; }

if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
  log "installing chromium and chromium-driver with apt-get (first run only)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
fi
/usr/bin/chromium --version >&2

# shellcheck source=scripts/lib/ensure_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/ensure_venv.sh"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/tollgate/venv-browser"
ensure_venv "$venv" "import selenium, importlib.metadata as m; assert int(m.version('selenium').split('.')[0]) >= 4" \
  'selenium>=4.20,<5'
echo "$venv/bin/python"
