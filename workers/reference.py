"""The reference policy: a frozen copy of the initial model, scoring responses for the KL term."""

from __future__ import annotations

import torch
from rlhf.workers.engine import TORCH_DTYPES
from rlhf.workers.logprob import response_log_probs
from rlhf.workers.update_loop import forward_micro_batches
from transformers import AutoModelForCausalLM

from rlhf.batch import Batch
from rlhf.config import RLHFConfig
from rlhf.padding_free import resolve_padding_free


class ReferencePolicy:
    """No optimizer, no gradients: log-probs only."""

    def __init__(self, cfg: RLHFConfig, device: torch.device, world_size: int) -> None:
        self.cfg, self.device, self.world_size = cfg, device, world_size
        self.model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=TORCH_DTYPES[cfg.model.dtype])
        self.model.to(device).eval().requires_grad_(False)
        self.layout = resolve_padding_free(cfg.model.padding_free, self.model)

    @torch.no_grad()
    def compute_log_prob(self, batch: Batch) -> Batch:
        """ref_log_probs [B, R] float32."""

        def forward(micro: Batch) -> dict[str, torch.Tensor]:
            log_probs, _ = response_log_probs(
                self.model,
                micro.to(self.device),
                self.cfg.rollout.temperature,
                fused=self.cfg.actor.fused_kernels,
                backend=self.cfg.actor.kernel_backend,
                padding_free=self.layout,
            )
            return {"ref_log_probs": log_probs.float().cpu()}

        r = self.cfg.ref
        return forward_micro_batches(
            batch, forward, r.log_prob_micro_batch_size, r.max_tokens_per_micro_batch, self.layout, self.world_size
        )
