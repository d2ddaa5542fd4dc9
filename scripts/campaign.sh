#!/usr/bin/env bash
# The committed smoke campaign on Fashion-MNIST (CPU, about 80 min on 2 cores), then everything derived
# from it: the regression suite's expected numbers, the leaderboard, correlation, speed and gallery figures.
# Finished cells in results/cells are skipped, so an interrupted campaign resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY="${UEB_VENV:-.venv}/bin/python"
CACHE=${UEB_CACHE:-$HOME/.cache/uebench/noise}
CAMPAIGN=(--methods em em-cw sc random tap sem rem
          --defense none at1 at2 at4 crop-flip cutout mixup cutmix jpeg10 --seeds 0 1 2)

# 1. every method x defense x seed
"$PY" -m benchmarks.run "${CAMPAIGN[@]}" --no-progress --cache-dir "$CACHE"
# 2. poison variants for the correlation study (seed 0, at4): SEM sampling radius rho_r and surrogate radius rho_a
"$PY" -m benchmarks.run --methods sem --defense at4 --sweep sem.sample_radius=0,2,4,6 --no-progress --cache-dir "$CACHE"
"$PY" -m benchmarks.run --methods sem --defense at4 --sweep sem.adv_radius=0,1,2,4 --no-progress --cache-dir "$CACHE"
# 3. the regression suite's reference numbers: the cheap cells and the headline at4 cells
"$PY" -m benchmarks.expected --results-dir results/cells --name smoke-fashion-mnist \
      --only '*/none' 'clean/at4' 'sem/at4' 'rem/at4' \
      --command "python -m benchmarks.run ${CAMPAIGN[*]} --results-dir DIR"
# 4. leaderboard and figures
"$PY" -m benchmarks.leaderboard
"$PY" -m analysis.correlation --defense at4
"$PY" -m analysis.correlation --defense none
"$PY" -m analysis.speed
"$PY" -m analysis.gallery --methods em sc tap sem rem --cache-dir "$CACHE"
