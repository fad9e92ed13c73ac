"""trainer.deterministic: deterministic kernels on, torch's NaN fill of new tensors off (it cost 15x per update)."""

from __future__ import annotations

import torch
from rlhf.workers.base import use_deterministic_algorithms


def test_deterministic_mode_skips_the_uninitialized_memory_fill() -> None:
    was_enabled, was_filling = (
        torch.are_deterministic_algorithms_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    try:
        use_deterministic_algorithms()
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
        assert not torch.isnan(torch.empty(1024)).all()  # what the fill would have written everywhere
    finally:
        torch.use_deterministic_algorithms(was_enabled)
        torch.utils.deterministic.fill_uninitialized_memory = was_filling
