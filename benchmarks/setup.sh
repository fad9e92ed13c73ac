#!/usr/bin/env bash
# Create .bench/trl-venv with TRL's pinned stack (requirements/bench-trl.txt) for the cross-framework benchmark.
# Our side runs in the project's .venv (bash scripts/setup.sh). Idempotent: a stamp of the pin file's hash skips the
# install when nothing changed.
#   bash benchmarks/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${TRL_VENV:-.bench/trl-venv}
REQS=requirements/bench-trl.txt
STAMP="$VENV/.bench-trl-setup"
WANT=$(sha256sum "$REQS" | cut -d' ' -f1)

[ -x "$VENV/bin/python" ] || { mkdir -p "$(dirname "$VENV")"; "$PYTHON" -m venv "$VENV"; }
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "bench setup: installing TRL's stack from $REQS into $VENV"
  # The pin file is a full freeze (torch==2.13.0+cpu is the CPU wheel; if pip cannot find it, point
  # PIP_EXTRA_INDEX_URL at PyTorch's CPU wheel index): install exactly it, without resolving again, then check it.
  "$VENV/bin/python" -m pip install --quiet --no-deps -r "$REQS"
  "$VENV/bin/python" -m pip check
  echo "$WANT" > "$STAMP"
else
  echo "bench setup: TRL stack already installed in $VENV"
fi
