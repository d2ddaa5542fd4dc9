# Sourced by the scripts that write committed results (campaign.sh, study.sh): set up, then PY and CACHE; refuses to
# go on when the code differs from HEAD, since committed results come from a clean tree. $1: the script's name.
bash scripts/setup.sh
PY="${UEB_VENV:-.venv}/bin/python"
CACHE=${UEB_CACHE:-$HOME/.cache/uebench/noise}
if [ "$("$PY" -c 'from benchmarks.env import source_state; print(source_state()["dirty"])')" != False ]; then
  echo "$1: the code differs from HEAD (git status); commit first: committed results come from a clean tree" >&2
  exit 2
fi

# emulate PRESET NAME WORKERS VARIABLE=VALUE...: seed 0 of the regression cells (every method of the caller's METHODS
# under none; SEM and REM under at4) on an emulated machine (the variables: threads, ATen's or oneDNN's instruction
# set), into results/machines/NAME and from a noise cache of its own, so the noise is generated on that machine too
emulate() {
  local preset=$1 name=$2 workers=$3
  shift 3
  for part in "--methods ${METHODS[*]} --defense none" "--methods sem rem --defense at4"; do
    # shellcheck disable=SC2086  # $part is a list of arguments
    env "$@" "$PY" -m benchmarks.run --preset "$preset" --seeds 0 --no-progress --workers "$workers" $part \
        --results-dir "results/machines/$name" --cache-dir "$CACHE-$name"
  done
}
