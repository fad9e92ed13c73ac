"""The reference policy for the KL term: a frozen copy of the initial model, or under LoRA the policy's own frozen
base with its adapter disabled (no second copy of the weights)."""

from __future__ import annotations

import torch
from peft import PeftModel
from rlhf.workers.engine import TORCH_DTYPES
from rlhf.workers.logprob import response_log_probs
from rlhf.workers.update_loop import forward_micro_batches
from torch import nn
from transformers import AutoModelForCausalLM

from rlhf.batch import Batch
from rlhf.config import RLHFConfig
from rlhf.padding_free import setup_padding_free


def _ref_log_probs(model: nn.Module, batch: Batch, cfg: RLHFConfig, device: torch.device, world_size: int) -> Batch:
    """ref_log_probs [B, R] float32, in micro-batches of ref.log_prob_micro_batch_size (or its token budget)."""
    layout = setup_padding_free(cfg.model.padding_free, model)

    def forward(micro: Batch) -> dict[str, torch.Tensor]:
        log_probs, _ = response_log_probs(
            model,
            micro.to(device),
            cfg.rollout.temperature,
            fused=cfg.actor.fused_kernels,
            backend=cfg.actor.kernel_backend,
            padding_free=layout,
        )
        return {"ref_log_probs": log_probs.float().cpu()}

    r = cfg.ref
    return forward_micro_batches(
        batch, forward, r.log_prob_micro_batch_size, r.max_tokens_per_micro_batch, layout, world_size
    )


class ReferencePolicy:
    """No optimizer, no gradients: log-probs only."""

    def __init__(self, cfg: RLHFConfig, device: torch.device, world_size: int) -> None:
        self.cfg, self.device, self.world_size = cfg, device, world_size
        self.model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=TORCH_DTYPES[cfg.model.dtype])
        self.model.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def compute_log_prob(self, batch: Batch) -> Batch:
        """ref_log_probs [B, R] float32."""
        return _ref_log_probs(self.model, batch, self.cfg, self.device, self.world_size)


class AdapterDisabledReference:
    """LoRA: the reference is the policy with its adapter switched off, which is exactly the frozen base model.

    PEFT initialises the adapter to zero, so the base is the initial policy, as a separate reference copy would be.
    """

    def __init__(self, cfg: RLHFConfig, policy: PeftModel, device: torch.device, world_size: int) -> None:
        self.cfg, self.policy, self.device, self.world_size = cfg, policy, device, world_size

    @torch.no_grad()
    def compute_log_prob(self, batch: Batch) -> Batch:
        """ref_log_probs [B, R] float32 from the base weights (dropout off, as for the policy's old log-probs)."""
        was_training = self.policy.training
        self.policy.eval()
        try:
            with self.policy.disable_adapter():
                return _ref_log_probs(self.policy, batch, self.cfg, self.device, self.world_size)
        finally:
            self.policy.train(was_training)
