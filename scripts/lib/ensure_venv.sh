#!/usr/bin/env bash
# Sourced by the scripts that make the test suite's Python venvs (proxy/tests/python/ensure_venv.sh,
# ensure_mcp_venv.sh, tests/browser/ensure.sh), all outside the repository.
#
#   ensure_venv VENV CHECK SPEC...
#
# Leaves VENV able to run the Python line CHECK, installing the pip SPECs when it cannot: a venv that
# only lacks a package is topped up, a missing one is made. A lock (VENV.lock) keeps parallel first
# runs from building the same venv twice. Fails loudly: a missing python3 or a failed install must fail
# the tests, not skip them. Progress goes to stderr.
ensure_venv() {
  local venv="$1" check="$2"
  shift 2
  if "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    return 0
  fi
  command -v python3 >/dev/null || { echo "python3 is required to make $venv" >&2; exit 1; }
  mkdir -p "$(dirname "$venv")"
  exec 9>"$venv.lock"
  flock 9
  if ! "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    if [ ! -x "$venv/bin/python" ]; then
      rm -rf "$venv"
      python3 -m venv "$venv" >&2
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >&2
  fi
  exec 9>&-
  "$venv/bin/python" -c "$check" >&2
}
