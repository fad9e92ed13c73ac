"""The colocated ("hybrid engine") worker: actor, rollout and reference share one process per device.

vLLM runs in this process, so the weight sync after each update is an in-memory reload. On CUDA the rollout sleeps
while the actor trains. This is the Ray actor class; the logic lives in `Actor`, `VLLMRollout`, `ReferencePolicy`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from rlhf.workers.actor import Actor
from rlhf.workers.agent_rollout import AgentRollout
from rlhf.workers.base import Collect, Mode, Worker, device_of, dispatch, memory_metrics
from rlhf.workers.engine import save_hf_model
from rlhf.workers.reference import ReferencePolicy
from rlhf.workers.rollout import VLLMRollout
from transformers import AutoTokenizer

from rlhf.batch import Batch
from rlhf.config import RLHFConfig

logger = logging.getLogger(__name__)


class ActorRolloutRefWorker(Worker):
    """One rank of the policy: trains, generates and (optionally) holds the frozen reference."""

    def __init__(self, role: str, rank: int, world_size: int, cfg: RLHFConfig, device: str, need_ref: bool) -> None:
        super().__init__(role, rank, world_size)
        self.cfg, self.need_ref = cfg, need_ref
        self.device = device_of(device)
        torch.manual_seed(cfg.trainer.seed + rank)
        if cfg.trainer.deterministic:
            torch.use_deterministic_algorithms(True)

    @dispatch(Mode.ALL, Collect.NONE)
    def init_model(self) -> None:
        """Build the DeepSpeed actor, then vLLM (after torch.distributed, which vLLM leaves intact), then the ref."""
        self.tokenizer = AutoTokenizer.from_pretrained(self.cfg.model.path)
        self.actor = Actor(self.cfg, self.rank, self.world_size, self.device)
        self.rollout = VLLMRollout(self.cfg, self.device, self.tokenizer.pad_token_id)
        # Multi-turn episodes on the same engine; tool workers start here, in this Ray actor.
        self.agent = AgentRollout(self.cfg, self.rollout.llm, self.tokenizer) if self.cfg.agent.enable else None
        self.ref = ReferencePolicy(self.cfg, self.device) if self.need_ref else None

    @dispatch(Mode.DP, Collect.CONCAT)
    def generate(self, batch: Batch, temperature: float | None = None, n: int | None = None) -> Batch:
        """n responses per prompt (episodes with agent.enable); temperature/n default to the rollout config
        (validation passes its own)."""
        r = self.cfg.rollout
        self.rollout.wake_up()
        if self.agent is not None:
            return self.agent.generate(
                batch,
                n=r.n if n is None else n,
                temperature=r.temperature if temperature is None else temperature,
                top_p=r.top_p,
            )
        out = self.rollout.generate(
            batch,
            n=r.n if n is None else n,
            temperature=r.temperature if temperature is None else temperature,
            top_p=r.top_p,
            max_tokens=r.max_response_length,
        )
        return out

    @dispatch(Mode.DP, Collect.CONCAT)
    def compute_log_prob(self, batch: Batch) -> Batch:
        self.rollout.sleep()
        return self.actor.compute_log_prob(batch)

    @dispatch(Mode.DP, Collect.CONCAT)
    def compute_ref_log_prob(self, batch: Batch) -> Batch:
        if self.ref is None:
            raise RuntimeError(
                "no reference model: it is only built when a KL term is on (algorithm.use_kl_loss / use_kl_in_reward)"
            )
        return self.ref.compute_log_prob(batch)

    @dispatch(Mode.DP, Collect.FIRST)
    def update_actor(self, batch: Batch) -> dict[str, float]:
        """Train on this rank's shard; the metrics are global (reduced over ranks), the same on every rank."""
        self.rollout.sleep()
        return {**self.actor.update(batch), **memory_metrics(self.device)}

    @dispatch(Mode.ALL, Collect.MAX)
    def sync_weights(self) -> float:
        """Push the actor's weights into this rank's vLLM engine; returns seconds taken."""
        start = time.perf_counter()
        self.rollout.wake_up()
        self.rollout.sync_weights(self.actor.state_dict_for_sync())
        return time.perf_counter() - start

    @dispatch(Mode.ALL, Collect.NONE)
    def save_hf_model(self, path: str) -> None:
        """Write the policy in Hugging Face format (every rank gathers under ZeRO-3; rank 0 writes)."""
        save_hf_model(self.actor.model, self.tokenizer, path, self.cfg.actor.zero_stage, self.rank)

    @dispatch(Mode.ALL, Collect.NONE)
    def save_checkpoint(self, directory: str) -> None:
        """Actor engine state under <directory>/actor (every rank) and the HF policy under <directory>/hf."""
        self.actor.save_checkpoint(Path(directory) / "actor")
        self.save_hf_model(str(Path(directory) / "hf"))

    @dispatch(Mode.ALL, Collect.NONE)
    def load_checkpoint(self, directory: str) -> None:
        """Restore the actor from <directory>/actor, then give vLLM the restored weights."""
        self.actor.load_checkpoint(Path(directory) / "actor")
        self.rollout.sync_weights(self.actor.state_dict_for_sync())
