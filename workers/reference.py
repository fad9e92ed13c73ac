"""The reference policy: a frozen copy of the initial model, scoring responses for the KL term."""

from __future__ import annotations

import torch
from rlhf.workers.engine import TORCH_DTYPES
from rlhf.workers.logprob import response_log_probs
from transformers import AutoModelForCausalLM

from rlhf.batch import Batch
from rlhf.config import RLHFConfig


class ReferencePolicy:
    """No optimizer, no gradients: log-probs only."""

    def __init__(self, cfg: RLHFConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=TORCH_DTYPES[cfg.model.dtype])
        self.model.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def compute_log_prob(self, batch: Batch) -> Batch:
        """ref_log_probs [B, R] float32."""
        chunks = []
        for micro in batch.chunk_by_size(self.cfg.ref.log_prob_micro_batch_size):
            log_probs, _ = response_log_probs(
                self.model,
                micro.to(self.device),
                self.cfg.rollout.temperature,
                fused=self.cfg.actor.fused_kernels,
                backend=self.cfg.actor.kernel_backend,
            )
            chunks.append(log_probs.float().cpu())
        return Batch({"ref_log_probs": torch.cat(chunks)})
