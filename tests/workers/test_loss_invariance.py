"""The same global batch on 1 or 2 ranks, 1 to 8 micro-batches (fixed-size or token-budget, so ranks may hold
different sizes), padded / trimmed / packed forwards and ZeRO-1 or -2 gives the same update (real DeepSpeed, SGD).

With SGD (lr=1) the weight change is the gradient itself, so equal weights after one step mean equal gradients.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("actor_update_worker.py")
# (ranks, micro-batch size per rank, token budget or 0, padding-free layout, ZeRO stage)
LAYOUTS = [
    (1, 8, 0, "off", 1),
    (1, 2, 0, "off", 1),
    (2, 4, 0, "trim", 2),
    (2, 1, 0, "pack", 1),
    (2, 4, 24, "trim", 1),  # token-budget micro-batches: sizes vary within and across ranks
    (1, 8, 24, "pack", 2),
]


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def updated_weights(
    model_dir: Path, tmp_path: Path, world: int, micro: int, budget: int, layout: str, zero: int, mode: str
) -> dict[str, torch.Tensor]:
    out, port = tmp_path / f"w{world}_m{micro}_t{budget}_{layout}_z{zero}_{mode}.pt", free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(WORKER.parents[1]), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(model_dir),
                str(out),
                str(world),
                str(micro),
                mode,
                port,
                str(rank),
                f"model.padding_free={layout}",
                f"actor.zero_stage={zero}",
                *([f"actor.max_tokens_per_micro_batch={budget}"] if budget else []),
            ],  # fmt: skip
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(world)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    return torch.load(out)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum-norm"])
def test_update_is_independent_of_ranks_and_micro_batches(mode: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    reference = updated_weights(tiny_model_dir, tmp_path, *LAYOUTS[0], mode)
    moved = max((reference[k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-4, "the update did not change the weights"
    for layout in LAYOUTS[1:]:
        other = updated_weights(tiny_model_dir, tmp_path, *layout, mode)
        for key in reference:
            torch.testing.assert_close(
                other[key],
                reference[key],
                atol=1e-5,
                rtol=1e-4,
                msg=lambda m, w=f"{key} differs for (ranks, micro, budget, layout, zero) = {layout}": f"{w}: {m}",
            )
