"""LoRA under ZeRO-1 and ZeRO-2 with 2 ranks (real DeepSpeed, gloo, SGD): the adapters' update equals the 1-rank
update however the batch is split, and the frozen base does not move.

With SGD (lr=1) the change of a weight is its gradient, so equal adapters after one step mean equal gradients.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from update_runs import updated_weights

pytestmark = pytest.mark.slow

LORA = ["actor.lora.rank=4", "actor.lora.alpha=8"]
LAYOUTS = [(1, 8, 2), (2, 4, 2), (2, 1, 1)]  # (ranks, micro-batch size per rank, ZeRO stage)


def lora_cases(world: int) -> list[tuple[int, str, list[str]]]:
    return [(micro, "token-mean", [*LORA, f"actor.zero_stage={zero}"]) for w, micro, zero in LAYOUTS if w == world]


def test_lora_update_is_the_same_on_1_or_2_ranks_under_zero_1_and_2(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    (reference,) = updated_weights(tiny_model_dir, tmp_path, 1, lora_cases(1))
    adapters = [k for k in reference if ".lora_" in k]
    assert len(adapters) == 2 * 7 * 2  # 2 layers x 7 linear layers x (A, B)
    # PEFT starts B at zero, so the first step moves B (A's gradient is B^T-weighted: zero).
    moved = max(reference[k].abs().max().item() for k in adapters if ".lora_B." in k)
    assert moved > 1e-4, "the update did not change the adapters"
    for key, value in reference.items():
        if ".lora_" not in key:
            assert torch.equal(value, base[key.removeprefix("base_model.model.").replace(".base_layer.", ".")]), key
    two_ranks = updated_weights(tiny_model_dir, tmp_path, 2, lora_cases(2))
    for (world, micro, zero), other in zip(LAYOUTS[1:], two_ranks, strict=True):
        for key in adapters:
            torch.testing.assert_close(
                other[key],
                reference[key],
                atol=1e-5,
                rtol=1e-4,
                msg=lambda m, w=f"{key} differs for {world} ranks x micro-batch {micro}, ZeRO-{zero}": f"{w}: {m}",
            )
