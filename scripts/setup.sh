#!/usr/bin/env bash
# Set up a fresh machine: virtual environment with pinned packages, the Fashion-MNIST data and Chromium (for
# the browser test of the leaderboard page). Idempotent; used by the README's commands and by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${UEB_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[test,analysis,ray]"

# System packages: installed quietly when running as root with apt-get; a missing one never fails the set-up.
apt_updated=
apt_install() {  # apt-get install ARGS...; non-zero when not root, without apt-get, or when it fails
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  if [ -z "$apt_updated" ]; then
    apt-get update -qq >/dev/null || return 1
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${UEB_DATA:-}" ]; then
  apt_install dataset-fashion-mnist \
    || echo "setup: Fashion-MNIST not installed; run 'sudo apt-get install dataset-fashion-mnist' or pass --data-root DIR --download" >&2
fi
if ! command -v chromium >/dev/null && [ -z "${UEB_CHROMIUM:-}" ]; then
  apt_install --no-install-recommends chromium \
    || echo "setup: chromium not installed ('sudo apt-get install chromium'); the leaderboard's browser test will be skipped" >&2
fi
