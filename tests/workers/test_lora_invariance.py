"""LoRA under ZeRO-1 and ZeRO-2 with 2 ranks (real DeepSpeed, gloo, SGD): the adapters' update equals the 1-rank
update however the batch is split, and the frozen base does not move.

With SGD (lr=1) the change of a weight is its gradient, so equal adapters after one step mean equal gradients.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rlhf.workers.base import free_port

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("actor_update_worker.py")
LORA = ["actor.lora.rank=4", "actor.lora.alpha=8"]
LAYOUTS = [(1, 8, 2), (2, 4, 2), (2, 1, 1)]  # (ranks, micro-batch size per rank, ZeRO stage)


def lora_update(model_dir: Path, tmp_path: Path, world: int, micro: int, zero: int) -> dict[str, torch.Tensor]:
    out, port = tmp_path / f"w{world}_m{micro}_z{zero}.pt", str(free_port())
    env = {**os.environ, "PYTHONPATH": str(WORKER.parents[1]), "OMP_NUM_THREADS": "1"}
    args = [str(model_dir), str(out), str(world), str(micro), "token-mean", port]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *args, str(rank), *LORA, f"actor.zero_stage={zero}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(world)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    return torch.load(out)


def test_lora_update_is_the_same_on_1_or_2_ranks_under_zero_1_and_2(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    reference = lora_update(tiny_model_dir, tmp_path, *LAYOUTS[0])
    adapters = [k for k in reference if ".lora_" in k]
    assert len(adapters) == 2 * 7 * 2  # 2 layers x 7 linear layers x (A, B)
    # PEFT starts B at zero, so the first step moves B (A's gradient is B^T-weighted: zero).
    moved = max(reference[k].abs().max().item() for k in adapters if ".lora_B." in k)
    assert moved > 1e-4, "the update did not change the adapters"
    for key, value in reference.items():
        if ".lora_" not in key:
            assert torch.equal(value, base[key.removeprefix("base_model.model.").replace(".base_layer.", ".")]), key
    for world, micro, zero in LAYOUTS[1:]:
        other = lora_update(tiny_model_dir, tmp_path, world, micro, zero)
        for key in adapters:
            torch.testing.assert_close(
                other[key],
                reference[key],
                atol=1e-5,
                rtol=1e-4,
                msg=lambda m, w=f"{key} differs for {world} ranks x micro-batch {micro}, ZeRO-{zero}": f"{w}: {m}",
            )
