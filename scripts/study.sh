#!/usr/bin/env bash
# The protocol study and the default protocol's campaign on Fashion-MNIST (CPU), into results/study/, then what is
# derived from them: results/protocol-study.md, results/claims/, results/figures/study/. Finished cells are skipped,
# so it resumes; the committed cells ran as two one-thread processes side by side, which is what --workers 2 does
# on a 2-core machine (the same arithmetic: one thread per process). Several hours on 2 cores; the parts are in the
# order they were run. Committed results come from a clean tree: the script refuses to start when the code differs
# from HEAD.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_results_env.sh study
run() { "$PY" -m benchmarks.run --no-progress --workers auto --cache-dir "$CACHE" --results-dir results/study/cells "$@"; }

# 1. every candidate's clean victims under none and its adversarial training (criterion (b)), seeds 0-2
for preset in smoke-600 smoke-6k smoke-aug smoke-32; do run --preset "$preset" --methods clean --defense none at4 --seeds 0 1 2; done
run --preset smoke-r16 --methods clean --defense none at8 --seeds 0 1 2
run --preset smoke-resnet --methods clean --defense none at4 --seeds 0
# 2. the mission's methods on the two candidates that met (b), seeds 0-4
run --preset smoke-600 --methods em rem sem --defense none at4 --seeds 0 1 2 3 4
run --preset smoke-r16 --methods em rem sem --defense none at8 --seeds 0 1 2 3 4
# 3. the chosen protocol's campaign (issue 14, item 4): the papers' methods under none, at1, at2, at4 and the
#    augmentation defenses, seeds 0-4; random noise and SC beside them
run --preset smoke-600 --methods em rem sem tap --defense none at1 at2 at4 crop-flip cutout mixup cutmix --seeds 0 1 2 3 4
run --preset smoke-600 --methods random sc --defense none at1 at2 at4 crop-flip cutout mixup cutmix --seeds 0 1 2 3 4
run --preset smoke-600 --methods ar ops cuda --defense none at1 at2 at4 crop-flip cutout mixup cutmix --seeds 0 1 2 3 4
run --preset smoke-600 --methods em-cw asr hypo ntga --defense none at4 at1 at2 crop-flip cutout mixup cutmix \
    --seeds 0 1 2 3 4
# 4. poison variants of the correlation study (seed 0, at4): 12 with EM, REM, SEM and TAP
run --preset smoke-600 --methods asr em-cw hypo --defense at4 --seeds 0
run --preset smoke-600 --methods sem --defense at4 --seeds 0 --sweep sem.sample_radius=0,2,6
run --preset smoke-600 --methods sem --defense at4 --seeds 0 --sweep sem.adv_radius=2,6
# 5. criterion (d): the demo's command alone on the machine, from a cold noise cache (nothing else may run)
for spec in "smoke-600 at4" "smoke-r16 at8"; do
  read -r preset at <<<"$spec"
  rm -rf "results/study/quiet/fashion-mnist/$preset" "$CACHE-quiet-$preset"
  "$PY" -m benchmarks.run --preset "$preset" --methods em rem sem --defense none "$at" --workers auto --no-progress \
      --cache-dir "$CACHE-quiet-$preset" --results-dir results/study/quiet
done
# 6. the regression tier's cells (every method under none; clean, SEM and REM under at4) re-measured on seed 0
#    under three emulated machines, each from its own noise cache: ATen's kernels without vectorisation and oneDNN
#    limited to SSE4.1 (one thread each, two processes side by side), and two threads (one process); the reference
#    runs are the campaign's, one thread each
METHODS=(em em-cw sc random tap sem rem asr hypo ntga ar ops cuda)
emulate smoke-600 aten-default-1t 2 OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=default
emulate smoke-600 onednn-sse41-1t 2 OMP_NUM_THREADS=1 ONEDNN_MAX_CPU_ISA=SSE41
emulate smoke-600 two-threads 1 OMP_NUM_THREADS=2
# 7. what is derived
"$PY" -m benchmarks.expected --results-dir results/study/cells/fashion-mnist/smoke-600 --name smoke-600-fashion-mnist \
      --only '*/none' 'clean/at4' 'sem/at4' 'rem/at4' \
      --machine aten-default-1t=results/machines/aten-default-1t --machine onednn-sse41-1t=results/machines/onednn-sse41-1t \
      --machine two-threads=results/machines/two-threads --command "bash scripts/study.sh (steps 3 and 6)"
"$PY" -m benchmarks.study --presets smoke smoke-r16 smoke-600 smoke-6k smoke-aug smoke-32 smoke-resnet \
      --results-dir results/cells results/study/cells --timing-dir results/study/quiet
"$PY" -m analysis.claims --results-dir results/study/cells
"$PY" -m analysis.claims --results-dir results/study/cells --preset smoke-r16
"$PY" -m analysis.correlation --results-dir results/study/cells --defense at4 --out-dir results/figures/study
