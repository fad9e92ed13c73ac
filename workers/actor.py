"""The actor: the policy model in a DeepSpeed ZeRO engine, its log-probs, and the PPO-style update.

Loss normalisation is global: every micro-batch's loss is divided by the token (or sequence) count of the whole
mini-batch across all ranks, and micro-batch gradients are summed. DeepSpeed averages gradients over data-parallel
ranks, so the loss handed to `backward` is multiplied by the world size. Splitting a mini-batch into more
micro-batches or more ranks therefore leaves the gradient unchanged.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import deepspeed
import torch
import torch.distributed as dist
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
from rlhf.workers.logprob import response_log_probs

logger = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def deepspeed_config(cfg: RLHFConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config for one actor rank, derived from the typed config (validated to divide evenly)."""
    a = cfg.actor
    mini_seqs = a.ppo_mini_batch_size * cfg.rollout.n  # global sequences per optimizer step
    grad_accum = mini_seqs // (a.micro_batch_size_per_device * world_size)
    config: dict[str, Any] = {
        "train_batch_size": mini_seqs,
        "train_micro_batch_size_per_gpu": a.micro_batch_size_per_device,
        "gradient_accumulation_steps": grad_accum,
        "optimizer": {
            "type": "AdamW",
            # torch_adam: DeepSpeed's fused CPU Adam needs a C++ build; torch's AdamW is exact and portable.
            "params": {"lr": a.optim.lr, "betas": list(a.optim.betas), "weight_decay": a.optim.weight_decay,
                       "torch_adam": True},
        },
        "gradient_clipping": a.optim.grad_clip,
        "zero_optimization": {"stage": a.zero_stage},
        "bf16": {"enabled": cfg.model.dtype == "bfloat16"},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    if a.optim.warmup_steps > 0:
        config["scheduler"] = {
            "type": "WarmupLR",
            "params": {"warmup_min_lr": 0.0, "warmup_max_lr": a.optim.lr, "warmup_num_steps": a.optim.warmup_steps,
                       "warmup_type": "linear"},
        }
    return config


class Actor:
    """Policy training on one data-parallel rank."""

    def __init__(self, cfg: RLHFConfig, rank: int, world_size: int, device: torch.device) -> None:
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, device
        load_plugin_modules(cfg.algorithm.plugin_modules)  # user estimators / losses registered in this process too
        model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=TORCH_DTYPES[cfg.model.dtype])
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=model.parameters(), config=deepspeed_config(cfg, world_size)
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
        for _ in range(a.ppo_epochs):
            order = torch.randperm(len(batch), generator=self.generator) if a.shuffle else torch.arange(len(batch))
            for mini in batch.index(order).chunk_by_size(mini_size):
                for key, value in self._update_mini_batch(mini).items():
                    metrics[key].append(value)
        return {k: sum(v) / len(v) for k, v in metrics.items()}

    def _global_sum(self, *values: float) -> list[float]:
        """Sum each value over data-parallel ranks (one all-reduce)."""
        t = torch.tensor(values, dtype=torch.float64)
        if self.world_size > 1:
            dist.all_reduce(t)
        return t.tolist()

    def _update_mini_batch(self, mini: Batch) -> dict[str, float]:
        a, algo = self.cfg.actor, self.cfg.algorithm
        num_tokens, num_seqs = self._global_sum(*aggregation_counts(mini["response_mask"]))
        agg = make_loss_aggregator(
            algo.loss_agg_mode,
            global_num_tokens=num_tokens,
            global_num_seqs=num_seqs,
            norm_length=self.cfg.rollout.max_response_length,
        )
        policy_loss_fn = get_policy_loss_fn(algo.policy_loss)
        sums: dict[str, float] = defaultdict(float)
        micro_batches = mini.chunk_by_size(a.micro_batch_size_per_device)
        for micro in micro_batches:
            micro = micro.to(self.device)
            mask = micro["response_mask"]
            log_probs, entropy = self._log_probs(micro, compute_entropy=True)
            advantages = micro["advantages"]
            if algo.rollout_is is not None:
                weights, _ = rollout_importance_weights(
                    micro["old_log_probs"], micro["rollout_log_probs"], mask, algo.rollout_is, algo.rollout_is_threshold
                )
                advantages = advantages * weights
            pg_loss, pg_metrics = policy_loss_fn(micro["old_log_probs"], log_probs, advantages, mask, algo, agg)
            entropy_loss = agg(entropy, mask)
            loss = pg_loss - algo.entropy_coeff * entropy_loss
            if algo.use_kl_loss:
                kl_loss = agg(kl_estimate(log_probs, micro["ref_log_probs"], algo.kl_loss_type), mask)
                loss = loss + algo.kl_loss_coef * kl_loss
                sums["actor/kl_loss"] += kl_loss.item()
            # DeepSpeed averages gradients over ranks; the loss is already normalised globally, so undo the average.
            self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
            self.engine.step()
            sums["actor/pg_loss"] += pg_loss.item()
            sums["actor/entropy"] += entropy_loss.item()
            for key, value in pg_metrics.items():
                sums[key] += float(value) / len(micro_batches) / self.world_size
        keys = sorted(sums)
        out = dict(zip(keys, self._global_sum(*(sums[k] for k in keys))))
        grad_norm = self.engine.get_global_grad_norm()
        out["actor/grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
        out["actor/lr"] = self.engine.get_lr()[0]
        return out

    def state_dict_for_sync(self) -> list[tuple[str, torch.Tensor]]:
        """Full (gathered) HF-named weights for the rollout engine, including a tied lm_head."""
        if self.cfg.actor.zero_stage == 3:
            params = list(self.model.parameters())
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                return [(k, v.detach().clone()) for k, v in self.model.state_dict().items()]
        return [(k, v.detach()) for k, v in self.model.state_dict().items()]
