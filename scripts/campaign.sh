#!/usr/bin/env bash
# The committed smoke campaign on Fashion-MNIST (CPU, 2 cores: about 6 h; `--preset smoke`, which is not the default
# since the protocol study chose smoke-600), then everything derived from it:
# the regression suite's expected numbers (with the same cells re-measured under emulated machines), the
# leaderboard, correlation, speed and gallery figures. Finished cells are skipped, so it resumes.
# Committed results come from a clean tree: the script refuses to start when the code differs from HEAD.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_results_env.sh campaign
METHODS=(em em-cw sc random tap sem rem)      # the campaign and the regression suite
NEW_METHODS=(asr hypo ntga ar ops cuda)       # the campaign (issue 12); not in the regression suite yet
DEFENSES=(none at1 at2 at4 crop-flip cutout mixup cutmix jpeg10)
# issue 13: low-pass filters at 3 and 5 (@lowpass), oproj, UEraser, the ISS grid (@iss) and compositions
NEW_DEFENSES=(@lowpass oproj ueraser-lite ueraser-max jpeg10+crop-flip @iss jpeg10+at4 grayscale+cutout)
PARTIAL_METHODS=(em sem rem ops)  # issue 13: partial protection
EXPECTED_ONLY=('*/none' 'clean/at4' 'sem/at4' 'rem/at4')

# 1. every method x defense on seeds 0-2, and the regression suite's cells (every method under none; clean, SEM
#    and REM under at4) on seeds 3 and 4 too
"$PY" -m benchmarks.run --preset smoke --methods "${METHODS[@]}" --defense "${DEFENSES[@]}" --seeds 0 1 2 --no-progress \
      --cache-dir "$CACHE"
"$PY" -m benchmarks.run --preset smoke --methods "${NEW_METHODS[@]}" --defense "${DEFENSES[@]}" --seeds 0 1 2 --no-progress \
      --cache-dir "$CACHE"
# the defenses of issue 13 (the committed cells ran as two one-thread processes side by side: OMP_NUM_THREADS=1, or
# --workers 2 for the ISS grid and the two compositions after jpeg10+crop-flip),
# and partial protection: 20 to 80 % of the training set protected, with the clean-rest controls
"$PY" -m benchmarks.run --preset smoke --methods "${METHODS[@]}" "${NEW_METHODS[@]}" --defense "${NEW_DEFENSES[@]}" --seeds 0 1 2 \
      --no-progress --cache-dir "$CACHE"
"$PY" -m benchmarks.run --preset smoke --methods "${PARTIAL_METHODS[@]}" --defense none --fractions 0.2 0.4 0.6 0.8 --seeds 0 1 2 \
      --no-progress --cache-dir "$CACHE"
"$PY" -m benchmarks.run --preset smoke --methods "${METHODS[@]}" --defense none --seeds 3 4 --no-progress --cache-dir "$CACHE"
"$PY" -m benchmarks.run --preset smoke --methods sem rem --defense at4 --seeds 3 4 --no-progress --cache-dir "$CACHE"
# 2. the expected cells (every method under none; clean, SEM, REM under at4) re-measured on seed 0 under three
#    emulated machines, one thread each, two at a time (one per core): one thread; oneDNN limited to SSE4.1; ATen's
#    kernels without vectorisation
MACHINES=("one-thread|OMP_NUM_THREADS=1" "onednn-sse41-1t|ONEDNN_MAX_CPU_ISA=SSE41"
          "aten-default-1t|ATEN_CPU_CAPABILITY=default")
machine_args=()
pids=()
for spec in "${MACHINES[@]}"; do
  IFS='|' read -r name setting <<<"$spec"
  if ((${#pids[@]} == 2)); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  emulate smoke "$name" 1 OMP_NUM_THREADS=1 "$setting" &
  pids+=($!)
  machine_args+=(--machine "$name=results/machines/$name")
done
for pid in "${pids[@]}"; do wait "$pid"; done
# 3. poison variants for the correlation study (seed 0, at4): SEM's sampling radius rho_r
"$PY" -m benchmarks.run --preset smoke --methods sem --defense at4 --sweep sem.sample_radius=0,2,6 --no-progress --cache-dir "$CACHE"
# 4. the regression suite's reference numbers and tolerances
"$PY" -m benchmarks.expected --results-dir results/cells --name smoke-fashion-mnist --only "${EXPECTED_ONLY[@]}" \
      "${machine_args[@]}" --command "bash scripts/campaign.sh (steps 1 and 2)"
# 5. leaderboard and figures
"$PY" -m benchmarks.leaderboard
"$PY" -m analysis.correlation --defense at4
"$PY" -m analysis.correlation --defense none
"$PY" -m analysis.speed
"$PY" -m analysis.gallery --preset smoke --methods em sc tap sem rem asr hypo ntga ar ops cuda --cache-dir "$CACHE"
