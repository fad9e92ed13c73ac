"""The reward worker group: rule functions scored in worker processes, so a slow function never blocks the driver.

Each sample's score goes on its last response token (`token_level_scores` [B, R]); per-sample error and timeout
flags travel as tensors so that data-parallel gathering adds them up.
"""

from __future__ import annotations

import logging

import torch
from rlhf.workers.base import Collect, Mode, Worker, dispatch

from rlhf.batch import Batch
from rlhf.config import RLHFConfig
from rlhf.rewards import RewardItem, RewardRunner
from rlhf.sequences import last_token_index

logger = logging.getLogger(__name__)


class RewardWorker(Worker):
    """Scores responses with the configured rule function (or the built-in one for each data source)."""

    def __init__(self, role: str, rank: int, world_size: int, cfg: RLHFConfig) -> None:
        super().__init__(role, rank, world_size)
        r = cfg.reward
        self.runner = RewardRunner(r.function, num_workers=r.num_processes, timeout_s=r.timeout_s)

    @dispatch(Mode.DP, Collect.CONCAT)
    def compute_score(self, batch: Batch) -> Batch:
        """token_level_scores [B, R] float32, reward_error / reward_timeout [B] float32 flags, extra reward metrics."""
        nt = batch.non_tensors
        items = [
            RewardItem(data_source=src, solution_str=text, ground_truth=truth, extra_info=extra)
            for src, text, truth, extra in zip(
                nt["data_source"], nt["response_text"], nt["ground_truth"], nt["extra_info"], strict=True
            )
        ]
        result = self.runner.score(items)
        response_mask = batch["response_mask"]
        scores = torch.zeros_like(response_mask, dtype=torch.float32)
        # The score belongs to the last generated token; an empty response scores at index 0.
        scores[torch.arange(len(batch)), last_token_index(response_mask)] = torch.tensor(
            result.scores, dtype=torch.float32
        )
        out = Batch({"token_level_scores": scores})
        out["reward_error"] = torch.tensor(result.error_flags, dtype=torch.float32)
        out["reward_timeout"] = torch.tensor(result.timeout_flags, dtype=torch.float32)
        for key, values in result.extra.items():
            out[f"reward_extra/{key}"] = torch.tensor(values, dtype=torch.float32)
        if result.first_traceback:
            logger.warning("reward function failed on a sample (scored 0):\n%s", result.first_traceback)
        return out

    @dispatch(Mode.ALL, Collect.NONE)
    def close(self) -> None:
        self.runner.close()
