#!/usr/bin/env bash
# Creates (once) the Python virtualenv the SDK compatibility tests use, with the official `openai` and
# `anthropic` packages (and `openapi-spec-validator` for the routes' OpenAPI documents), outside the repository. Prints the venv's python on stdout. Fails loudly: a
# missing python3 or a failed install must fail the tests, not skip them.
set -euo pipefail
venv="${TOLLGATE_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tollgate/venv}"
# The check names what the tests use, so that a venv made for older tests is topped up, not trusted.
check='import openapi_spec_validator; from openai.resources.responses import Responses; from anthropic.types import ThinkingBlock'
# shellcheck source=scripts/lib/ensure_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../../scripts/lib/ensure_venv.sh"
ensure_venv "$venv" "$check" 'openai>=1.66' 'anthropic>=0.49' 'openapi-spec-validator>=0.7'
echo "$venv/bin/python"
