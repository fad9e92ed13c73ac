"""The actor: the policy model in a DeepSpeed ZeRO engine, its log-probs, and the PPO-style update.

Losses are normalised over the whole mini-batch on all ranks (see `rlhf.workers.engine`), so the gradient does not
depend on how the mini-batch is split into micro-batches and ranks.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from rlhf.workers.engine import (
    TORCH_DTYPES,
    backward_global,
    build_engine,
    deepspeed_config,
    gathered_state_dict,
    global_sum,
    load_engine,
    mini_batches,
    save_engine,
)
from rlhf.workers.logprob import response_log_probs
from transformers import AutoModelForCausalLM

from rlhf.algorithms import (
    aggregation_counts,
    get_policy_loss_fn,
    kl_estimate,
    load_plugin_modules,
    make_loss_aggregator,
    rollout_importance_weights,
)
from rlhf.batch import Batch
from rlhf.config import RLHFConfig

logger = logging.getLogger(__name__)

GLOBAL_LOSSES = ("actor/pg_loss", "actor/entropy", "actor/kl_loss")


class Actor:
    """Policy training on one data-parallel rank."""

    def __init__(self, cfg: RLHFConfig, rank: int, world_size: int, device: torch.device) -> None:
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, device
        load_plugin_modules(cfg.algorithm.plugin_modules)  # user estimators / losses registered in this process too
        model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=TORCH_DTYPES[cfg.model.dtype])
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        a = cfg.actor
        self.engine = build_engine(
            model,
            deepspeed_config(
                a.optim,
                mini_batch_seqs=a.ppo_mini_batch_size * cfg.rollout.n,
                micro_batch_size=a.micro_batch_size_per_device,
                world_size=world_size,
                zero_stage=a.zero_stage,
                dtype=cfg.model.dtype,
            ),
        )
        self.generator = torch.Generator().manual_seed(cfg.trainer.seed + 1000 * rank)

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
        )

    @torch.no_grad()
    def compute_log_prob(self, batch: Batch) -> Batch:
        """old_log_probs [B, R] and entropy [B, R] under the current policy (no gradient)."""
        self.engine.eval()
        log_probs, entropies = [], []
        for micro in batch.chunk_by_size(self.cfg.actor.log_prob_micro_batch_size):
            lp, ent = self._log_probs(micro, compute_entropy=True)
            log_probs.append(lp.float().cpu())
            entropies.append(ent.float().cpu())
        return Batch({"old_log_probs": torch.cat(log_probs), "entropy": torch.cat(entropies)})

    def update(self, batch: Batch) -> dict[str, float]:
        """PPO epochs over mini-batches of this rank's share of the rollout batch.

        Args:
            batch: this rank's rows with input_ids, attention_mask, position_ids, responses, response_mask,
                old_log_probs, advantages [B, R]; ref_log_probs if the KL loss is on; rollout_log_probs for the
                rollout importance-sampling correction.

        Returns:
            Metrics averaged over optimizer steps (losses are global, identical on every rank).
        """
        a = self.cfg.actor
        self.engine.train()
        mini_size = a.ppo_mini_batch_size * self.cfg.rollout.n // self.world_size
        metrics: dict[str, list[float]] = defaultdict(list)
        for mini in mini_batches(batch, mini_size, a.ppo_epochs, self.generator if a.shuffle else None):
            for key, value in self._update_mini_batch(mini).items():
                metrics[key].append(value)
        return {k: sum(v) / len(v) for k, v in metrics.items()}

    def _update_mini_batch(self, mini: Batch) -> dict[str, float]:
        """Gradient accumulation over micro-batches, then one optimizer step (DeepSpeed's boundary)."""
        algo = self.cfg.algorithm
        num_tokens, num_seqs = global_sum(self.world_size, *aggregation_counts(mini["response_mask"]))
        agg = make_loss_aggregator(
            algo.loss_agg_mode,
            global_num_tokens=num_tokens,
            global_num_seqs=num_seqs,
            norm_length=self.cfg.rollout.max_response_length,
        )
        sums: dict[str, float] = defaultdict(float)
        micro_batches = mini.chunk_by_size(self.cfg.actor.micro_batch_size_per_device)
        for micro in micro_batches:
            loss, metrics = self.micro_batch_loss(micro.to(self.device), agg)
            backward_global(self.engine, loss, self.world_size)
            for key, value in metrics.items():
                # Losses are globally normalised: their sum over micro-batches and ranks is the mini-batch loss.
                # Ratios (clip fractions, IS weights) are averaged over micro-batches and ranks instead.
                sums[key] += value if key in GLOBAL_LOSSES else value / (len(micro_batches) * self.world_size)
        keys = sorted(sums)
        out = dict(zip(keys, global_sum(self.world_size, *(sums[k] for k in keys)), strict=True))
        grad_norm = self.engine.get_global_grad_norm()
        out["actor/grad_norm"] = float(grad_norm) if grad_norm is not None else math.nan
        # DeepSpeed's ZeRO optimizer skips the step (and zeroes the gradients) when the gradient norm is NaN/inf.
        out["actor/skipped_update"] = float(not math.isfinite(out["actor/grad_norm"]))
        out["actor/lr"] = self.engine.get_lr()[0]
        return out

    def micro_batch_loss(
        self, micro: Batch, agg: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The actor loss of one micro-batch: policy loss - entropy bonus + KL loss, each aggregated by `agg`."""
        algo = self.cfg.algorithm
        mask = micro["response_mask"]
        log_probs, entropy = self._log_probs(micro, compute_entropy=True)
        advantages = micro["advantages"]
        metrics: dict[str, float] = {}
        if algo.rollout_is is not None:
            # Truncated importance sampling between vLLM's sampling distribution and the trainer's.
            weights, is_metrics = rollout_importance_weights(
                micro["old_log_probs"], micro["rollout_log_probs"], mask, algo.rollout_is, algo.rollout_is_threshold
            )
            advantages = advantages * weights
            metrics.update({k: float(v) for k, v in is_metrics.items()})
        pg_loss, pg_metrics = get_policy_loss_fn(algo.policy_loss)(
            micro["old_log_probs"], log_probs, advantages, mask, algo, agg
        )
        entropy_loss = agg(entropy, mask)
        loss = pg_loss - algo.entropy_coeff * entropy_loss
        if algo.use_kl_loss:
            kl_loss = agg(kl_estimate(log_probs, micro["ref_log_probs"], algo.kl_loss_type), mask)
            loss = loss + algo.kl_loss_coef * kl_loss
            metrics["actor/kl_loss"] = kl_loss.item()
        metrics.update({k: float(v) for k, v in pg_metrics.items()})
        metrics["actor/pg_loss"] = pg_loss.item()
        metrics["actor/entropy"] = entropy_loss.item()
        return loss, metrics

    def save_checkpoint(self, directory: Path) -> None:
        save_engine(self.engine, directory, self.rank, self.generator)

    def load_checkpoint(self, directory: Path) -> None:
        load_engine(self.engine, directory, self.rank, self.generator)

    def state_dict_for_sync(self) -> list[tuple[str, torch.Tensor]]:
        """Full HF-named weights for the rollout engine, including a tied lm_head."""
        return gathered_state_dict(self.model, self.cfg.actor.zero_stage)
