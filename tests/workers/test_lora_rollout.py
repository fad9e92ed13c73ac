"""LoRA weight sync into the in-process vLLM on CPU, both ways (the adapter; the merged adapted layers): after an
update, vLLM's log-probs of its samples equal the trainer's within 1e-3, and each sync sends what it should."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rlhf.workers.base import free_port

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("lora_policy_worker.py")
# Tiny model, rank 8 on all linear layers: A [8, in] and B [out, 8] per layer, 2 layers, fp32.
ADAPTED = {"q_proj": (128, 128), "k_proj": (128, 64), "v_proj": (128, 64), "o_proj": (128, 128),
           "gate_proj": (128, 512), "up_proj": (128, 512), "down_proj": (512, 128)}  # fmt: skip
ADAPTER_BYTES = 4 * 2 * sum(8 * (i + o) for i, o in ADAPTED.values())
MERGED_BYTES = 4 * 2 * sum(i * o for i, o in ADAPTED.values())


def run_policy(model_dir: Path, tmp_path: Path, sync: str) -> dict[str, float]:
    out = tmp_path / f"{sync}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WORKER.parents[1]), str(WORKER.parent)])}
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(model_dir), str(out), sync, str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("sync", ["adapter", "merged"])
def test_lora_sync_keeps_vllm_and_trainer_log_probs_equal(tiny_model_dir: Path, tmp_path: Path, sync: str) -> None:
    result = run_policy(tiny_model_dir, tmp_path, sync)
    assert result["gap_before"] < 1e-3, result
    # The update moved the policy far from the base (the reference) ...
    assert result["ref_vs_policy_before"] == 0.0 and result["ref_vs_policy_after"] > 1e-2, result
    # ... and vLLM generated with the updated policy: only then can its log-probs match the trainer's.
    assert result["gap_after"] < 1e-3, result
    assert result["bytes"] == (ADAPTER_BYTES if sync == "adapter" else MERGED_BYTES)
    assert result["adapter_bytes"] == ADAPTER_BYTES
    assert result["has_ref_copy"] == 0.0  # the reference is the policy with its adapter disabled
