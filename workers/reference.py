"""The reference policy for the KL term: a frozen copy of the initial model, or under LoRA the policy's own frozen
base with its adapter disabled (no second copy of the weights)."""

from __future__ import annotations

import torch
from peft import PeftModel
from rlhf.workers.engine import TORCH_DTYPES
from rlhf.workers.logprob import response_log_probs
from torch import nn
from transformers import AutoModelForCausalLM

from rlhf.batch import Batch
from rlhf.config import RLHFConfig


def _ref_log_probs(model: nn.Module, batch: Batch, cfg: RLHFConfig, device: torch.device) -> Batch:
    """ref_log_probs [B, R] float32, in micro-batches of ref.log_prob_micro_batch_size."""
    chunks = []
    for micro in batch.chunk_by_size(cfg.ref.log_prob_micro_batch_size):
        log_probs, _ = response_log_probs(
            model,
            micro.to(device),
            cfg.rollout.temperature,
            fused=cfg.actor.fused_kernels,
            backend=cfg.actor.kernel_backend,
        )
        chunks.append(log_probs.float().cpu())
    return Batch({"ref_log_probs": torch.cat(chunks)})


class ReferencePolicy:
    """No optimizer, no gradients: log-probs only."""

    def __init__(self, cfg: RLHFConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=TORCH_DTYPES[cfg.model.dtype])
        self.model.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def compute_log_prob(self, batch: Batch) -> Batch:
        """ref_log_probs [B, R] float32."""
        return _ref_log_probs(self.model, batch, self.cfg, self.device)


class AdapterDisabledReference:
    """LoRA: the reference is the policy with its adapter switched off, which is exactly the frozen base model.

    PEFT initialises the adapter to zero, so the base is the initial policy, as a separate reference copy would be.
    """

    def __init__(self, cfg: RLHFConfig, policy: PeftModel, device: torch.device) -> None:
        self.cfg, self.policy, self.device = cfg, policy, device

    @torch.no_grad()
    def compute_log_prob(self, batch: Batch) -> Batch:
        """ref_log_probs [B, R] float32 from the base weights (dropout off, as for the policy's old log-probs)."""
        was_training = self.policy.training
        self.policy.eval()
        try:
            with self.policy.disable_adapter():
                return _ref_log_probs(self.policy, batch, self.cfg, self.device)
        finally:
            self.policy.train(was_training)
