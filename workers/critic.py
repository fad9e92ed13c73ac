"""The critic: a value model (the policy's architecture with a 1-label token-classification head) for PPO/GAE.

The value of response token t is read at the position that predicts it (the state before the action), as the
actor reads log-probs. Trained with the clipped value loss, globally normalised like the actor's loss.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from rlhf.workers.base import Collect, Mode, Worker, device_of, dispatch
from rlhf.workers.engine import (
    TORCH_DTYPES,
    build_engine,
    deepspeed_config,
    load_engine,
    lr_schedule,
    rl_optimizer_steps,
    save_engine,
)
from rlhf.workers.update_loop import (
    Aggregator,
    MicroBatchLoss,
    UpdateSpec,
    forward_micro_batches,
    split_micro_batches,
    train_mini_batches,
)
from transformers import AutoConfig, AutoModelForTokenClassification

from rlhf.algorithms import compute_value_loss
from rlhf.batch import Batch
from rlhf.config import RLHFConfig
from rlhf.padding_free import response_values, setup_padding_free

logger = logging.getLogger(__name__)


class Critic:
    """Value model training on one data-parallel rank."""

    def __init__(self, cfg: RLHFConfig, rank: int, world_size: int, device: torch.device) -> None:
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, device
        c = cfg.critic
        path = c.model_path or cfg.model.path
        # No dropout: values must be deterministic between compute_values and the update (PPO value clipping).
        config = AutoConfig.from_pretrained(path, num_labels=1)
        # Set after loading: transformers 5 drops `classifier_dropout` passed as a kwarg for Qwen2 (dropout stays 0.1).
        config.classifier_dropout = 0.0
        model = AutoModelForTokenClassification.from_pretrained(
            path, config=config, dtype=TORCH_DTYPES[cfg.model.dtype]
        )
        if getattr(getattr(model, "dropout", None), "p", 0.0) != 0.0:
            raise RuntimeError(f"the critic's value head kept dropout {model.dropout.p}; values must be deterministic")
        self.engine = build_engine(
            model,
            deepspeed_config(
                c.optim,
                mini_batch_seqs=cfg.actor.ppo_mini_batch_size * cfg.rollout.n,
                micro_batch_size=c.micro_batch_size_per_device,
                world_size=world_size,
                zero_stage=c.zero_stage,
                dtype=cfg.model.dtype,
                offload_params=c.offload_params,
                offload_optimizer=c.offload_optimizer,
            ),
            lr_scheduler=lr_schedule(c.optim, rl_optimizer_steps(cfg, c.ppo_epochs)),
        )
        self.generator = torch.Generator().manual_seed(cfg.trainer.seed + 2000 + rank)
        self.layout = setup_padding_free(cfg.model.padding_free, model)

    def _values(self, batch: Batch) -> torch.Tensor:
        """[B, R] float32 values of the states before each response token (0 on padding)."""
        return response_values(self.engine, batch.to(self.device), padding_free=self.layout)

    @torch.no_grad()
    def compute_values(self, batch: Batch) -> Batch:
        self.engine.eval()
        c = self.cfg.critic
        return forward_micro_batches(
            batch,
            lambda micro: {"values": self._values(micro).cpu()},
            c.micro_batch_size_per_device,
            c.max_tokens_per_micro_batch,
            self.layout,
            self.world_size,
        )

    def update(self, batch: Batch) -> dict[str, float]:
        """Clipped value regression onto `returns`: PPO epochs over the actor's mini-batches (see `update_loop`)."""
        c = self.cfg.critic
        spec = UpdateSpec(
            prefix="critic/",
            mini_batch_size=self.cfg.actor.ppo_mini_batch_size * self.cfg.rollout.n // self.world_size,
            epochs=c.ppo_epochs,
            loss_agg_mode=self.cfg.algorithm.loss_agg_mode,
            norm_length=self.cfg.rollout.max_response_length,
        )
        metrics, _ = train_mini_batches(
            self.engine,
            batch,
            self.micro_batch_loss,
            lambda mini: [
                micro
                for _, micro in split_micro_batches(
                    mini, c.micro_batch_size_per_device, c.max_tokens_per_micro_batch, self.layout, self.world_size
                )
            ],
            spec,
            self.world_size,
            self.generator if self.cfg.actor.shuffle else None,
        )
        return metrics

    def micro_batch_loss(self, micro: Batch, agg: Aggregator) -> MicroBatchLoss:
        """The clipped value loss of one micro-batch (`rlhf.algorithms.compute_value_loss`)."""
        micro = micro.to(self.device)
        loss, metrics = compute_value_loss(
            self._values(micro),
            micro["values"],
            micro["returns"],
            micro["response_mask"],
            self.cfg.algorithm.cliprange_value,
            agg,
        )
        means = {k: float(v) for k, v in metrics.items() if k != "critic/vf_loss"}
        return MicroBatchLoss(loss=loss, sums={"critic/vf_loss": loss.item()}, means=means)

    def save_checkpoint(self, directory: Path) -> None:
        save_engine(self.engine, directory, self.rank, self.generator)

    def load_checkpoint(self, directory: Path) -> None:
        load_engine(self.engine, directory, self.rank, self.generator)


class CriticWorker(Worker):
    """One rank of the critic group (its own torch.distributed world, sharing the policy's resource bundles)."""

    def __init__(self, role: str, rank: int, world_size: int, cfg: RLHFConfig, device: str) -> None:
        super().__init__(role, rank, world_size)
        self.cfg = cfg
        self.device = device_of(device)

    @dispatch(Mode.ALL, Collect.NONE)
    def init_model(self) -> None:
        self.critic = Critic(self.cfg, self.rank, self.world_size, self.device)

    def model_devices(self) -> dict[str, str]:
        return {"critic": str(next(self.critic.engine.module.parameters()).device)}

    @dispatch(Mode.DP, Collect.CONCAT, balance=True)
    def compute_values(self, batch: Batch) -> Batch:
        return self.critic.compute_values(batch)

    @dispatch(Mode.DP, Collect.FIRST, balance=True)
    def update_critic(self, batch: Batch) -> dict[str, float]:
        """Metrics are reduced over ranks inside the update: rank 0's speak for all."""
        return self.critic.update(batch)

    @dispatch(Mode.ALL, Collect.NONE)
    def save_checkpoint(self, directory: str) -> None:
        self.critic.save_checkpoint(Path(directory))

    @dispatch(Mode.ALL, Collect.NONE)
    def load_checkpoint(self, directory: str) -> None:
        self.critic.load_checkpoint(Path(directory))
