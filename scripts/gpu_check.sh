#!/usr/bin/env bash
# The checks that need a GPU (the CPU suite skips them): the fused log-prob kernels' GPU tests (Triton), packed
# micro-batches on CUDA against the padded path (sdpa_segments in fp32, flash-attention varlen in bf16 if installed),
# the kernel benchmark against naive full logits at Qwen2.5 shapes (V=151,936, d=896 and 3,584, T=4k-32k, bf16; wall
# time and peak memory per backend), then one timed DeepSpeed actor step on Qwen2.5-0.5B's shape under ZeRO-2 and
# ZeRO-3 with the fused kernels, and ZeRO-2 through full logits for comparison (one JSON line each: step time,
# tokens/s, MFU, peak memory). Not included: Liger-Kernel's fused linear cross-entropy as a third backend.
#   bash scripts/gpu_check.sh            (PYTHON=... to pick the interpreter; OUT=dir to keep the JSON files)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: these checks need a GPU'"
"$PY" -m pytest -q -m gpu tests/kernels tests/workers/test_logprob_padding_free.py
"$PY" scripts/bench_kernels.py --device cuda --tokens 4096 8192 32768 | tee "$OUT/kernels.md"
export DS_ACCELERATOR=cuda
"$PY" scripts/gpu_actor_step.py --zero-stage 2 --out "$OUT/zero2_fused.json"
"$PY" scripts/gpu_actor_step.py --zero-stage 3 --out "$OUT/zero3_fused.json"
"$PY" scripts/gpu_actor_step.py --zero-stage 2 --no-fused --out "$OUT/zero2_logits.json"
