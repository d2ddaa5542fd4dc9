#!/usr/bin/env bash
# The GPU check: environment, the gpu test tier, the speed of one generation step (fp32 and bf16 autocast,
# eager, then compiled), an end-to-end run of the default protocol (eager, then with --compile graphs) and a
# shortened paper protocol on CUDA, within a hard time budget. Writes at most 9 files into one folder: env.json
# gpu_tests.json speed.json e2e.json e2e_compiled.json paper_short.json steps.json log.txt SUMMARY.md.
#
#   bash scripts/gpu_check.sh [--dry]
#
# On the GPU machine (no network, no venv: python3 with torch; kornia from the wheels in .whl/ and
# Fashion-MNIST in .data/fashion-mnist/, both carried), from the repository root:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:. && UEB_GPU_OUT=$OUT bash scripts/gpu_check.sh
#
# --dry rehearses every step on the CPU at tiny sizes, through the same code and into the same files
# (default folder /tmp/gpu-dry), so that the first GPU run does not fail on a typo.
#
# Environment: UEB_GPU_OUT (output folder; default results/gpu/<device>/, dry /tmp/gpu-dry),
# UEB_GPU_BUDGET_S (seconds for everything, default 450), UEB_GPU_STEPS (the steps to run, default all:
# env gpu_tests speed e2e paper_short e2e_compiled speed_compile), UEB_GPU_DATA (Fashion-MNIST folder, default
# .data/fashion-mnist; the loader falls back to /usr/share/datasets/fashion-mnist), UEB_PYTHON (interpreter;
# default .venv/bin/python where it exists, else python3).
# Every step runs under `timeout`, cut to what is left of the budget; a step that fails or runs out of
# time is recorded in steps.json and the next one runs. The summary always runs. Exit code: 0 when every
# step is ok, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
for arg in "$@"; do
  case $arg in
    --dry) DRY=1 ;;
    *) echo "usage: bash scripts/gpu_check.sh [--dry]" >&2; exit 2 ;;
  esac
done

if [ -n "${UEB_PYTHON:-}" ]; then PY=$UEB_PYTHON
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg

if [ -n "${UEB_GPU_OUT:-}" ]; then OUT=$UEB_GPU_OUT
elif [ $DRY = 1 ]; then OUT=/tmp/gpu-dry
else
  name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  slug=$(printf '%s' "${name:-unknown-gpu}" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/^-*//; s/-*$//')
  OUT=results/gpu/$slug
fi
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
for f in env.json gpu_tests.json speed.json e2e.json e2e_compiled.json paper_short.json steps.json log.txt SUMMARY.md; do
  rm -f "$OUT/$f"  # the speed suite merges into speed.json: start from nothing
done
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/uebench-gpu-check.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
export UEB_CACHE=$SCRATCH/noise-cache
DATA=${UEB_GPU_DATA:-.data/fashion-mnist}
LOG=$OUT/log.txt
BUDGET=${UEB_GPU_BUDGET_S:-450}
RESERVE=20  # seconds kept for the summary
SELECTED=" $(echo "${UEB_GPU_STEPS:-env gpu_tests speed e2e paper_short e2e_compiled speed_compile}" | tr ',' ' ') "

if [ $DRY = 1 ]; then
  MODE=(--dry)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny tensors; and the CPU may be shared
  BENCH=(UEB_BENCH_DEVICE=cpu UEB_BENCH_ARCH=tiny_cnn UEB_BENCH_BATCH=4 UEB_BENCH_ROUNDS=1 UEB_BENCH_WARMUP=0
         UEB_BENCH_COMPILE_BACKEND=aot_eager)
else
  MODE=()
  BENCH=(UEB_BENCH_DEVICE=cuda UEB_BENCH_ARCH=resnet18 UEB_BENCH_BATCH=128 UEB_BENCH_ROUNDS=5 UEB_BENCH_WARMUP=2
         UEB_BENCH_COMPILE_BACKEND=inductor)
fi
SPEED=(-m pytest tests/perf --benchmark-enable --benchmark-only -q)

STEPS=()
ALL_OK=1
write_steps() {
  local IFS=,
  printf '[%s]\n' "${STEPS[*]}" > "$OUT/steps.json"
}

# step NAME LIMIT_S COMMAND...: run COMMAND under timeout (cut to the budget left), log it, record its status
step() {
  local name=$1 limit=$2 status rc=null start=$SECONDS
  shift 2
  local left=$((BUDGET - SECONDS - RESERVE))
  if [[ $SELECTED != *" $name "* && $name != summary ]]; then
    return
  fi
  if [ "$name" != summary ] && ((limit > left)); then  # the summary always runs
    limit=$left
  fi
  if ((limit < 10)); then
    status=skipped
    echo "== $name: skipped, ${left} s of the budget left" | tee -a "$LOG"
  else
    echo "== $name (limit ${limit} s, $((SECONDS)) s so far): $*" | tee -a "$LOG"
    UEB_GPU_STEP_LIMIT=$limit timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    case $rc in
      0) status=ok ;;
      124) status=timeout ;;
      137) if ((SECONDS - start >= limit)); then status=timeout; else status=failed; fi ;;  # SIGKILL: -k or OOM
      *) status=failed ;;
    esac
  fi
  [ "$status" = ok ] || ALL_OK=0
  echo "== $name: $status (exit code $rc, $((SECONDS - start)) s)" | tee -a "$LOG"
  STEPS+=("{\"name\": \"$name\", \"status\": \"$status\", \"rc\": $rc, \"seconds\": $((SECONDS - start)), \"limit_s\": $limit}")
  write_steps
}

echo "== gpu_check: python $PY, output $OUT, budget $BUDGET s, dry $DRY" | tee -a "$LOG"
write_steps
step env 60 "$PY" -m analysis.gpu_check env --out "$OUT" "${MODE[@]}"
step gpu_tests 150 "$PY" -m analysis.gpu_check tests --out "$OUT" --scratch "$SCRATCH" "${MODE[@]}" -- \
  -m gpu tests -v -rfEs
step speed 180 env "${BENCH[@]}" UEB_BENCH_PRECISION=fp32,tf32,bf16 UEB_BENCH_COMPILE=eager \
  UEB_BENCH_JSON="$OUT/speed.json" "$PY" "${SPEED[@]}" -k test_minmin_step
step e2e 150 "$PY" -m analysis.gpu_check e2e --out "$OUT" --scratch "$SCRATCH" --data-root "$DATA" "${MODE[@]}"
step paper_short 180 "$PY" -m analysis.gpu_check paper-short --out "$OUT" --scratch "$SCRATCH" --data-root "$DATA" \
  "${MODE[@]}"
# the runner's job again with the surrogates compiled (--compile graphs; the dry run: --compile compile), beside the
# eager cells of the e2e step
step e2e_compiled 150 "$PY" -m analysis.gpu_check e2e --compiled --out "$OUT" --scratch "$SCRATCH" --data-root "$DATA" \
  "${MODE[@]}"
# last: torch.compile of the surrogate (plain, and with CUDA graphs) may take minutes; it gets what is left of the
# budget, at most 150 s
step speed_compile 150 env "${BENCH[@]}" UEB_BENCH_PRECISION=bf16 UEB_BENCH_COMPILE=compile,graphs \
  UEB_BENCH_JSON="$OUT/speed.json" "$PY" "${SPEED[@]}" -k "test_minmin_step and sem"
step summary 60 "$PY" -m analysis.gpu_summary --out "$OUT" "${MODE[@]}"
if [ ! -s "$OUT/SUMMARY.md" ]; then  # the summary itself failed: the steps at least
  { echo "# GPU check: the summary step failed"; echo; echo "See steps.json and log.txt."; echo
    echo '```'; cat "$OUT/steps.json"; echo '```'; } > "$OUT/SUMMARY.md"
fi

MAX_LOG=$((1024 * 1024))  # keep what comes back small: the head and the tail of a long log
if [ "$(wc -c < "$LOG")" -gt $MAX_LOG ]; then
  { head -c $((MAX_LOG / 4)); echo; echo "[... log cut ...]"; tail -c $((MAX_LOG * 3 / 4)) "$LOG"; } < "$LOG" > "$SCRATCH/log"
  cp "$SCRATCH/log" "$LOG"
fi
echo "== gpu_check: $((SECONDS)) s, files in $OUT"
[ $ALL_OK = 1 ]
