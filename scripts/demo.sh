#!/usr/bin/env bash
# The README's quick start: set up, then the mission's comparison on Fashion-MNIST (CPU): clean, EM, REM and SEM,
# without a defense and under adversarial training at half the noise radius, on the protocol the study chose (smoke-r16: both radii doubled, so the papers' at4 is at8 here;
# results/protocol-study.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${UEB_VENV:-.venv}
exec "$VENV/bin/python" -m benchmarks.run --preset smoke-r16 --methods em rem sem --defense none at8 "$@"
