#!/usr/bin/env bash
# The README's quick start: set up, then the mission's comparison on Fashion-MNIST (CPU): clean, EM, REM and SEM,
# without a defense and under adversarial training at 4/255 (half the noise radius), on the embedded default
# protocol, the one the study chose (smoke-600; results/protocol-study.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${UEB_VENV:-.venv}
exec "$VENV/bin/python" -m benchmarks.run --preset smoke-600 --methods em rem sem --defense none at4 --workers auto "$@"
