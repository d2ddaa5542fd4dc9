#!/usr/bin/env bash
# Set up a fresh machine: virtual environment with pinned packages, and the Fashion-MNIST data.
# Idempotent; used by the README's commands and by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${UEB_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[test,analysis,ray]"
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${UEB_DATA:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
      || echo "setup: could not install dataset-fashion-mnist; pass --data-root DIR --download instead" >&2
  else
    echo "setup: Fashion-MNIST not found; run 'sudo apt-get install dataset-fashion-mnist' or use --download" >&2
  fi
fi
