#!/usr/bin/env bash
# Creates (once) the Python virtualenv the SDK compatibility tests use, with the official `openai` and
# `anthropic` packages (and `openapi-spec-validator` for the routes' OpenAPI documents), outside the repository. Prints the venv's python on stdout. Fails loudly: a
# missing python3 or a failed install must fail the tests, not skip them.
set -euo pipefail
venv="${TOLLGATE_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tollgate/venv}"
# The check names what the tests use, so that a venv made for older tests is topped up, not trusted.
check='import openapi_spec_validator; from openai.resources.responses import Responses; from anthropic.types import ThinkingBlock'
if ! "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
  command -v python3 >/dev/null || { echo "python3 is required for the SDK tests" >&2; exit 1; }
  mkdir -p "$(dirname "$venv")"
  # A lock so that parallel first runs do not build the same venv twice.
  exec 9>"$(dirname "$venv")/venv.lock"
  flock 9
  if ! "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    # An existing venv only lacking a package is topped up rather than rebuilt.
    if [ ! -x "$venv/bin/python" ]; then
      rm -rf "$venv"
      python3 -m venv "$venv" >&2
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'openai>=1.66' 'anthropic>=0.49' 'openapi-spec-validator>=0.7' >&2
  fi
fi
"$venv/bin/python" -c "$check" >&2
echo "$venv/bin/python"
