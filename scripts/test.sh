#!/usr/bin/env bash
# The test command of the README: set up (idempotent), lint, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${UEB_VENV:-.venv}
"$VENV/bin/ruff" check .
"$VENV/bin/python" -m pytest "$@"
