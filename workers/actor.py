"""The actor: the policy model in a DeepSpeed ZeRO engine, its log-probs, and its micro-batch loss.

The update runs through the shared loop (`rlhf.workers.update_loop`); this file only says what the actor's loss is:
the registered policy loss, minus the entropy bonus, plus the KL loss, each from `rlhf.algorithms`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from rlhf.workers.engine import (
    TORCH_DTYPES,
    build_engine,
    deepspeed_config,
    gathered_state_dict,
    load_engine,
    lr_schedule,
    rl_optimizer_steps,
    save_engine,
)
from rlhf.workers.logprob import response_log_probs
from rlhf.workers.lora import merged_weights, wrap_with_lora
from rlhf.workers.update_loop import (
    Aggregator,
    MicroBatchLoss,
    UpdateSpec,
    forward_micro_batches,
    split_micro_batches,
    train_mini_batches,
)
from transformers import AutoModelForCausalLM

from rlhf.algorithms import (
    entropy_loss,
    get_policy_loss_fn,
    kl_loss,
    load_plugin_modules,
    rollout_importance_weights,
)
from rlhf.batch import Batch
from rlhf.config import RLHFConfig
from rlhf.padding_free import setup_padding_free

logger = logging.getLogger(__name__)


class Actor:
    """Policy training on one data-parallel rank."""

    def __init__(self, cfg: RLHFConfig, rank: int, world_size: int, device: torch.device) -> None:
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, device
        load_plugin_modules(cfg.algorithm.plugin_modules)  # user estimators / losses registered in this process too
        model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=TORCH_DTYPES[cfg.model.dtype])
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        a = cfg.actor
        if a.lora.enabled:  # only the adapters train (and enter the optimizer); the base stays frozen
            model = wrap_with_lora(model, a.lora, cfg.model.gradient_checkpointing)
        self.engine = build_engine(
            model,
            deepspeed_config(
                a.optim,
                mini_batch_seqs=a.ppo_mini_batch_size * cfg.rollout.n,
                micro_batch_size=a.micro_batch_size_per_device,
                world_size=world_size,
                zero_stage=a.zero_stage,
                dtype=cfg.model.dtype,
                offload_params=a.offload_params,
                offload_optimizer=a.offload_optimizer,
            ),
            lr_scheduler=lr_schedule(a.optim, rl_optimizer_steps(cfg, a.ppo_epochs)),
            fused_head=a.fused_kernels,
        )
        self.generator = torch.Generator().manual_seed(cfg.trainer.seed + 1000 * rank)
        self.layout = setup_padding_free(cfg.model.padding_free, model)

    @property
    def model(self) -> torch.nn.Module:
        return self.engine.module

    def _log_probs(self, batch: Batch, compute_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        return response_log_probs(
            self.model,
            batch.to(self.device),
            self.cfg.rollout.temperature,
            fused=self.cfg.actor.fused_kernels,
            backend=self.cfg.actor.kernel_backend,
            compute_entropy=compute_entropy,
            padding_free=self.layout,
        )

    @torch.no_grad()
    def compute_log_prob(self, batch: Batch) -> Batch:
        """old_log_probs [B, R] and entropy [B, R] under the current policy (no gradient)."""
        self.engine.eval()

        def forward(micro: Batch) -> dict[str, torch.Tensor]:
            log_probs, entropy = self._log_probs(micro, compute_entropy=True)
            return {"old_log_probs": log_probs.float().cpu(), "entropy": entropy.float().cpu()}

        a = self.cfg.actor
        return forward_micro_batches(
            batch, forward, a.log_prob_micro_batch_size, a.max_tokens_per_micro_batch, self.layout, self.world_size
        )

    def update(self, batch: Batch) -> tuple[dict[str, float], Batch]:
        """PPO epochs over mini-batches of this rank's share of the rollout batch (see `update_loop`).

        Args:
            batch: this rank's rows with input_ids, attention_mask, position_ids, responses, response_mask,
                advantages [B, R]; old_log_probs, unless the update is exactly on-policy and takes them from its own
                forward; ref_log_probs if the KL loss is on; rollout_log_probs for rollout importance sampling.

        Returns:
            `actor/*` metrics averaged over optimizer steps (global over ranks, the same on every rank), and the
            on-policy old_log_probs and entropy [B, R] when the batch came without old_log_probs (else empty).
        """
        a = self.cfg.actor
        spec = UpdateSpec(
            prefix="actor/",
            mini_batch_size=a.ppo_mini_batch_size * self.cfg.rollout.n // self.world_size,
            epochs=a.ppo_epochs,
            loss_agg_mode=self.cfg.algorithm.loss_agg_mode,
            norm_length=self.cfg.rollout.max_response_length,
        )
        if "old_log_probs" not in batch and not (a.ppo_epochs == 1 and len(batch) == spec.mini_batch_size):
            raise ValueError(
                "old_log_probs may come from the update's own forward only in a one-epoch, one-step update"
            )
        return train_mini_batches(
            self.engine,
            batch,
            self.micro_batch_loss,
            lambda mini: [
                micro
                for _, micro in split_micro_batches(
                    mini, a.micro_batch_size_per_device, a.max_tokens_per_micro_batch, self.layout, self.world_size
                )
            ],
            spec,
            self.world_size,
            self.generator if a.shuffle else None,
        )

    def micro_batch_loss(self, micro: Batch, agg: Aggregator) -> MicroBatchLoss:
        """Policy loss - entropy_coeff x entropy + kl_loss_coef x KL(policy || ref), each aggregated by `agg`."""
        algo = self.cfg.algorithm
        micro = micro.to(self.device)
        mask = micro["response_mask"]
        log_probs, entropy = self._log_probs(micro, compute_entropy=True)
        advantages = micro["advantages"]
        out = MicroBatchLoss(loss=log_probs.new_zeros(()))
        if "old_log_probs" in micro:
            old_log_probs = micro["old_log_probs"]
        else:
            # Exactly on-policy: this forward is the policy that sampled the batch, so its detached log-probs are
            # the old ones (a separate pass would compute the same numbers again).
            old_log_probs = log_probs.detach()
            out.rows.update(old_log_probs=old_log_probs, entropy=entropy.detach())
        if algo.rollout_is is not None:
            # Truncated importance sampling between vLLM's sampling distribution and the trainer's.
            weights, is_metrics = rollout_importance_weights(
                old_log_probs, micro["rollout_log_probs"], mask, algo.rollout_is, algo.rollout_is_threshold
            )
            advantages = advantages * weights
            _route_metrics(out, is_metrics, has_tokens=bool(mask.sum() > 0))
        pg_loss, pg_metrics = get_policy_loss_fn(algo.policy_loss)(
            old_log_probs, log_probs, advantages, mask, algo, agg
        )
        entropy_term, entropy_metrics = entropy_loss(entropy, mask, agg)
        out.loss = pg_loss - algo.entropy_coeff * entropy_term
        out.sums.update({"actor/pg_loss": pg_loss.item(), "actor/entropy": entropy_metrics["actor/entropy"].item()})
        if algo.use_kl_loss:
            kl_term, kl_metrics = kl_loss(log_probs, micro["ref_log_probs"], mask, algo.kl_loss_type, agg)
            out.loss = out.loss + algo.kl_loss_coef * kl_term
            out.sums["actor/kl_loss"] = kl_metrics["actor/kl_loss"].item()
        out.means.update({k: float(v) for k, v in pg_metrics.items()})
        return out

    def save_checkpoint(self, directory: Path) -> None:
        save_engine(self.engine, directory, self.rank, self.generator)

    def load_checkpoint(self, directory: Path) -> None:
        load_engine(self.engine, directory, self.rank, self.generator)

    def state_dict_for_sync(self) -> list[tuple[str, torch.Tensor]]:
        """HF-named weights for the rollout engine: all of them (a tied lm_head included), or under LoRA only the
        adapted layers with the adapter merged in (the rest is the base the engine already holds)."""
        if self.cfg.actor.lora.enabled:
            return merged_weights(self.model, adapted_only=True)
        return gathered_state_dict(self.model, self.cfg.actor.zero_stage)


def _route_metrics(out: MicroBatchLoss, metrics: dict[str, torch.Tensor], has_tokens: bool) -> None:
    """Rollout-correction metrics: *_max and *_min reduce as extremes, the rest as token means."""
    for key, value in metrics.items():
        if key.endswith("_max"):
            out.maxes[key] = float(value) if has_tokens else -math.inf
        elif key.endswith("_min"):
            out.mins[key] = float(value) if has_tokens else math.inf
        else:
            out.means[key] = float(value)
