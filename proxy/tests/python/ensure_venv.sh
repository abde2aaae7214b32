#!/usr/bin/env bash
# Creates (once) the Python virtualenv the SDK compatibility test uses, with the official `openai`
# package, outside the repository. Prints the venv's python on stdout. Fails loudly: a missing python3
# or a failed install must fail the test, not skip it.
set -euo pipefail
venv="${TOLLGATE_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tollgate/venv}"
if ! "$venv/bin/python" -c 'import openai' >/dev/null 2>&1; then
  command -v python3 >/dev/null || { echo "python3 is required for the OpenAI SDK test" >&2; exit 1; }
  mkdir -p "$(dirname "$venv")"
  # A lock so that parallel first runs do not build the same venv twice.
  exec 9>"$(dirname "$venv")/venv.lock"
  flock 9
  if ! "$venv/bin/python" -c 'import openai' >/dev/null 2>&1; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'openai>=1.40' >&2
  fi
fi
"$venv/bin/python" -c 'import openai' >&2
echo "$venv/bin/python"
