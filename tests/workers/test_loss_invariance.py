"""The same global batch on 1 or 2 ranks, 1 to 8 micro-batches (fixed-size or token-budget, so ranks may hold
different sizes), padded / trimmed / packed forwards and ZeRO-1 or -2 gives the same update (real DeepSpeed, SGD).

With SGD (lr=1) the weight change is the gradient itself, so equal weights after one step mean equal gradients.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from update_runs import updated_weights

pytestmark = pytest.mark.slow

MODES = ["token-mean", "seq-mean-token-sum-norm"]
# (ranks, micro-batch size per rank, token budget or 0, padding-free layout, ZeRO stage)
LAYOUTS = [
    (1, 8, 0, "off", 1),
    (1, 2, 0, "off", 1),
    (2, 4, 0, "trim", 2),
    (2, 1, 0, "pack", 1),
    (2, 4, 24, "trim", 1),  # token-budget micro-batches: sizes vary within and across ranks
    (1, 8, 24, "pack", 2),
]


@pytest.fixture(scope="module")
def updates(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple, dict[str, torch.Tensor]]:
    """Weights after the update for every (layout, mode): one launch per world size runs all of its cases."""
    tmp_path = tmp_path_factory.mktemp("loss_invariance")
    results = {}
    for world in (1, 2):
        keys = [(layout, mode) for layout in LAYOUTS if layout[0] == world for mode in MODES]
        cases = [
            (micro, mode, [f"model.padding_free={pf}", f"actor.zero_stage={zero}"]
             + ([f"actor.max_tokens_per_micro_batch={budget}"] if budget else []))
            for (_, micro, budget, pf, zero), mode in keys
        ]  # fmt: skip
        results.update(zip(keys, updated_weights(tiny_model_dir, tmp_path, world, cases), strict=True))
    return results


@pytest.mark.parametrize("mode", MODES)
def test_update_is_independent_of_ranks_and_micro_batches(
    mode: str, updates: dict[tuple, dict[str, torch.Tensor]], tiny_model_dir: Path
) -> None:
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    reference = updates[(LAYOUTS[0], mode)]
    moved = max((reference[k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-4, "the update did not change the weights"
    for layout in LAYOUTS[1:]:
        other = updates[(layout, mode)]
        for key in reference:
            torch.testing.assert_close(
                other[key],
                reference[key],
                atol=1e-5,
                rtol=1e-4,
                msg=lambda m, w=f"{key} differs for (ranks, micro, budget, layout, zero) = {layout}": f"{w}: {m}",
            )
