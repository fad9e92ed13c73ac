#!/usr/bin/env bash
# The checks that need a GPU (the CPU suite skips them): the fused log-prob kernels' GPU tests (Triton), then one
# timed DeepSpeed actor step on Qwen2.5-0.5B's shape under ZeRO-2 and ZeRO-3 with the fused kernels, and ZeRO-2
# through full logits for comparison. Each step prints one JSON line (step time, tokens/s, MFU, peak memory).
#   bash scripts/gpu_check.sh            (PYTHON=... to pick the interpreter; OUT=dir to keep the JSON files)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: these checks need a GPU'"
"$PY" -m pytest -q -m gpu tests/kernels
export DS_ACCELERATOR=cuda
"$PY" scripts/gpu_actor_step.py --zero-stage 2 --out "$OUT/zero2_fused.json"
"$PY" scripts/gpu_actor_step.py --zero-stage 3 --out "$OUT/zero3_fused.json"
"$PY" scripts/gpu_actor_step.py --zero-stage 2 --no-fused --out "$OUT/zero2_logits.json"
