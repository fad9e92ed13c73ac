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
from rlhf.workers.base import Collect, Mode, Worker, device_of, dispatch, memory_metrics, use_deterministic_algorithms
from rlhf.workers.engine import save_hf_model
from rlhf.workers.lora import adapter_weights, num_bytes
from rlhf.workers.reference import AdapterDisabledReference, ReferencePolicy
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
            use_deterministic_algorithms()

    @dispatch(Mode.ALL, Collect.NONE)
    def init_model(self) -> None:
        """Build the DeepSpeed actor, then vLLM (after torch.distributed, which vLLM leaves intact), then the ref."""
        # vLLM is imported here, in the worker, so the driver (which imports this class for Ray) never pays its
        # ~8 s import.
        from rlhf.workers.agent_rollout import AgentRollout  # noqa: PLC0415
        from rlhf.workers.rollout import VLLMRollout  # noqa: PLC0415

        self.tokenizer = AutoTokenizer.from_pretrained(self.cfg.model.path)
        self.actor = Actor(self.cfg, self.rank, self.world_size, self.device)
        self.rollout = VLLMRollout(self.cfg, self.device, self.tokenizer.pad_token_id)
        # Multi-turn episodes on the same engine (through the policy's adapter under LoRA); tool workers start here.
        self.agent = (
            AgentRollout(self.cfg, self.rollout.llm, self.tokenizer, self.rollout.lora_request)
            if self.cfg.agent.enable
            else None
        )
        self.ref: ReferencePolicy | AdapterDisabledReference | None = None
        if self.need_ref and self.cfg.actor.lora.enabled:  # the frozen base is the reference: no second copy
            self.ref = AdapterDisabledReference(self.cfg, self.actor.model, self.device, self.world_size)
        elif self.need_ref:
            self.ref = ReferencePolicy(self.cfg, self.device, self.world_size)
        self.num_syncs = 0
        if self.cfg.actor.lora.enabled:
            self._push_weights()  # vLLM generates through the adapter path from the first step on

    def model_devices(self) -> dict[str, str]:
        devices = {"actor": str(next(self.actor.model.parameters()).device)}
        if isinstance(self.ref, ReferencePolicy):  # (under LoRA the reference is the actor's own model)
            devices["ref"] = str(next(self.ref.model.parameters()).device)
        return devices

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

    @dispatch(Mode.DP, Collect.CONCAT, balance=True)
    def compute_log_prob(self, batch: Batch) -> Batch:
        self.rollout.sleep()
        return self.actor.compute_log_prob(batch)

    @dispatch(Mode.DP, Collect.CONCAT, balance=True)
    def compute_ref_log_prob(self, batch: Batch) -> Batch:
        if self.ref is None:
            raise RuntimeError(
                "no reference model: it is only built when a KL term is on (algorithm.use_kl_loss / use_kl_in_reward)"
            )
        return self.ref.compute_log_prob(batch)

    @dispatch(Mode.DP, Collect.CONCAT, balance=True)
    def update_actor(self, batch: Batch) -> Batch:
        """Train on this rank's shard. Returns the on-policy old_log_probs / entropy when the batch had none (else no
        rows) and, in meta["metrics"], the update's metrics: global over ranks, so rank 0's speak for all."""
        self.rollout.sleep()
        metrics, outputs = self.actor.update(batch)
        outputs.meta["metrics"] = {**metrics, **memory_metrics(self.device)}
        return outputs

    @dispatch(Mode.ALL, Collect.FIRST)
    def sync_weights(self) -> dict[str, float]:
        """Push the actor's weights into this rank's vLLM engine; returns perf/update_weights_bytes (per rank)."""
        self.rollout.wake_up()
        return {"perf/update_weights_bytes": float(self._push_weights())}

    def _push_weights(self) -> int:
        """Actor -> vLLM: the LoRA adapter (adapter sync), else weights (all, or under LoRA the merged adapted
        layers). Returns the bytes handed over."""
        start = time.perf_counter()
        if self.rollout.adapter is not None:
            adapter = adapter_weights(self.actor.model)
            self.rollout.load_adapter(adapter)
            kind, sent = "the LoRA adapter", num_bytes(adapter.tensors)
        else:
            weights = self.actor.state_dict_for_sync()
            self.rollout.sync_weights(weights)
            kind = "merged adapted layers" if self.cfg.actor.lora.enabled else "full weights"
            sent = num_bytes(weights)
        self.num_syncs += 1
        log = logger.info if self.num_syncs == 1 else logger.debug
        log("weight sync %d: %s, %.2f MB in %.3f s", self.num_syncs, kind, sent / 2**20, time.perf_counter() - start)
        return sent

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
        self._push_weights()
