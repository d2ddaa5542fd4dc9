# Sourced by the scripts that write committed results (campaign.sh, study.sh): set up, then PY and CACHE; refuses to
# go on when the code differs from HEAD, since committed results come from a clean tree. $1: the script's name.
bash scripts/setup.sh
PY="${UEB_VENV:-.venv}/bin/python"
CACHE=${UEB_CACHE:-$HOME/.cache/uebench/noise}
if [ "$("$PY" -c 'from benchmarks.env import source_state; print(source_state()["dirty"])')" != False ]; then
  echo "$1: the code differs from HEAD (git status); commit first: committed results come from a clean tree" >&2
  exit 2
fi
