#!/usr/bin/env bash
# The README's quick start: set up, then benchmark EM, SC and random noise on Fashion-MNIST (smoke, CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${UEB_VENV:-.venv}
exec "$VENV/bin/python" -m benchmarks.run --methods em sc random --defense none at4 "$@"
