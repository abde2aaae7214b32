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

venv="${XDG_CACHE_HOME:-$HOME/.cache}/tollgate/venv-browser"
check="import selenium, importlib.metadata as m; assert int(m.version('selenium').split('.')[0]) >= 4"
if ! "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
  command -v python3 >/dev/null || { echo "python3 is required for the browser test" >&2; exit 1; }
  mkdir -p "$(dirname "$venv")"
  # A lock so that parallel first runs do not build the same venv twice.
  exec 9>"$venv.lock"
  flock 9
  if ! "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'selenium>=4.20,<5' >&2
  fi
fi
echo "$venv/bin/python"
