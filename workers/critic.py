"""The critic: a value model (the policy's architecture with a 1-label token-classification head) for PPO/GAE.

The value of response token t is read at the position that predicts it (the state before the action), as the
actor reads log-probs. Trained with the clipped value loss, globally normalised like the actor's loss.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from rlhf.workers.base import Collect, Mode, Worker, device_of, dispatch
from rlhf.workers.engine import TORCH_DTYPES, build_engine, deepspeed_config, load_engine, save_engine
from rlhf.workers.update_loop import Aggregator, MicroBatchLoss, UpdateSpec, train_mini_batches
from transformers import AutoConfig, AutoModelForTokenClassification

from rlhf.algorithms import compute_value_loss
from rlhf.batch import Batch
from rlhf.config import RLHFConfig

logger = logging.getLogger(__name__)


class Critic:
    """Value model training on one data-parallel rank."""

    def __init__(self, cfg: RLHFConfig, rank: int, world_size: int, device: torch.device) -> None:
        self.cfg, self.rank, self.world_size, self.device = cfg, rank, world_size, device
        c = cfg.critic
        path = c.model_path or cfg.model.path
        # No dropout: values must be deterministic between compute_values and the update (PPO value clipping).
        config = AutoConfig.from_pretrained(path, num_labels=1, classifier_dropout=0.0)
        model = AutoModelForTokenClassification.from_pretrained(
            path, config=config, dtype=TORCH_DTYPES[cfg.model.dtype]
        )
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
        )
        self.generator = torch.Generator().manual_seed(cfg.trainer.seed + 2000 + rank)

    def _values(self, batch: Batch) -> torch.Tensor:
        """[B, R] float32 values of the states before each response token."""
        batch = batch.to(self.device)
        num_response = batch["responses"].shape[1]
        logits = self.engine(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        ).logits  # [B, P+R, 1]
        return logits[:, -num_response - 1 : -1, 0].float() * batch["response_mask"]

    @torch.no_grad()
    def compute_values(self, batch: Batch) -> Batch:
        self.engine.eval()
        chunks = [
            self._values(micro).cpu() for micro in batch.chunk_by_size(self.cfg.critic.micro_batch_size_per_device)
        ]
        return Batch({"values": torch.cat(chunks)})

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
        return train_mini_batches(
            self.engine,
            batch,
            self.micro_batch_loss,
            lambda mini: mini.chunk_by_size(c.micro_batch_size_per_device),
            spec,
            self.world_size,
            self.generator if self.cfg.actor.shuffle else None,
        )

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

    @dispatch(Mode.DP, Collect.CONCAT)
    def compute_values(self, batch: Batch) -> Batch:
        return self.critic.compute_values(batch)

    @dispatch(Mode.DP, Collect.FIRST)
    def update_critic(self, batch: Batch) -> dict[str, float]:
        """Metrics are reduced over ranks inside the update: rank 0's speak for all."""
        return self.critic.update(batch)

    @dispatch(Mode.ALL, Collect.NONE)
    def save_checkpoint(self, directory: str) -> None:
        self.critic.save_checkpoint(Path(directory))

    @dispatch(Mode.ALL, Collect.NONE)
    def load_checkpoint(self, directory: str) -> None:
        self.critic.load_checkpoint(Path(directory))
