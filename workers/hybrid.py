"""The colocated ("hybrid engine") worker: actor, rollout and reference share one process per device.

vLLM runs in this process, so the weight sync after each update is an in-memory reload. On CUDA the rollout sleeps
while the actor trains. This is the Ray actor class; the logic lives in `Actor`, `VLLMRollout`, `ReferencePolicy`.
With split placement (`async_training.placement=split`) the same worker runs without vLLM, and rank 0 broadcasts the
weights to the rollout group (`rlhf.workers.rollout_worker`) over `rlhf.workers.weight_transfer`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rlhf.workers.actor import Actor
from rlhf.workers.base import Collect, Mode, Worker, device_of, dispatch, memory_metrics, use_deterministic_algorithms
from rlhf.workers.engine import save_hf_model
from rlhf.workers.lora import adapter_weights, num_bytes
from rlhf.workers.reference import AdapterDisabledReference, ReferencePolicy
from rlhf.workers.weight_transfer import SyncLink, open_link, send_weights, tensor_specs
from transformers import AutoTokenizer

from rlhf.batch import Batch
from rlhf.config import RLHFConfig

if TYPE_CHECKING:  # vLLM is imported in the worker only (init_model)
    from rlhf.workers.rollout import VLLMRollout

logger = logging.getLogger(__name__)


class ActorRolloutRefWorker(Worker):
    """One rank of the policy: trains, generates and (optionally) holds the frozen reference."""

    def __init__(
        self,
        role: str,
        rank: int,
        world_size: int,
        cfg: RLHFConfig,
        device: str,
        need_ref: bool,
        colocate_rollout: bool = True,
    ) -> None:
        """`colocate_rollout=False` (split placement): no vLLM here; rank 0 sends the weights to the rollout group."""
        super().__init__(role, rank, world_size)
        self.cfg, self.need_ref, self.colocate_rollout = cfg, need_ref, colocate_rollout
        self.weight_link: SyncLink | None = None
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
        self.rollout = (
            VLLMRollout(self.cfg, self.device, self.tokenizer.pad_token_id) if self.colocate_rollout else None
        )
        # Multi-turn episodes on the same engine (through the policy's adapter under LoRA); tool workers start here.
        self.agent = (
            AgentRollout(self.cfg, self.rollout.llm, self.tokenizer, self.rollout.lora_request)
            if self.cfg.agent.enable and self.rollout is not None
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
        rollout = self._own_rollout()
        rollout.wake_up()
        if self.agent is not None:
            return self.agent.generate(
                batch,
                n=r.n if n is None else n,
                temperature=r.temperature if temperature is None else temperature,
                top_p=r.top_p,
            )
        return rollout.sample(batch, temperature=temperature, n=n)

    def _own_rollout(self) -> VLLMRollout:
        if self.rollout is None:
            raise RuntimeError(
                "this policy worker has no vLLM engine (async_training.placement=split): generation runs in the "
                "rollout group"
            )
        return self.rollout

    def _rollout_sleep(self) -> None:
        if self.rollout is not None:
            self.rollout.sleep()

    @dispatch(Mode.DP, Collect.CONCAT, balance=True)
    def compute_log_prob(self, batch: Batch) -> Batch:
        self._rollout_sleep()
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
        self._rollout_sleep()
        metrics, outputs = self.actor.update(batch)
        outputs.meta["metrics"] = {**metrics, **memory_metrics(self.device)}
        return outputs

    @dispatch(Mode.ALL, Collect.FIRST)
    def sync_weights(self) -> dict[str, float]:
        """Push the actor's weights into this rank's vLLM engine; returns perf/update_weights_bytes (per rank)."""
        self._own_rollout().wake_up()
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

    @dispatch(Mode.ALL, Collect.FIRST)
    def open_weight_sender(self, host: str, port: int, sync_world_size: int, timeout_s: float, peers: str) -> list:
        """Split placement: rank 0 joins the sync world as its rank 0 (the rollout workers join at the same time).
        Returns rank 0's list of TensorSpec (names, shapes, dtypes), which the receivers rebuild tensors from."""
        weights = self.actor.state_dict_for_sync()  # every rank: a ZeRO-3 gather is a collective
        if self.rank != 0:
            return []
        self.weight_link = open_link(host, port, 0, sync_world_size, self.device, timeout_s, peers)
        return tensor_specs(weights)

    @dispatch(Mode.ALL, Collect.FIRST)
    def send_weights(self, bucket_bytes: int) -> dict[str, float]:
        """Split placement: broadcast the actor's weights to the rollout workers (rank 0; every rank gathers under
        ZeRO-3). Returns perf/update_weights_bytes."""
        weights = self.actor.state_dict_for_sync()
        if self.rank != 0:
            return {}
        assert self.weight_link is not None, "open_weight_sender must run before send_weights"
        return {"perf/update_weights_bytes": float(send_weights(self.weight_link, weights, bucket_bytes))}

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
        if self.rollout is not None:  # (split placement: the trainer syncs the rollout group after loading)
            self._push_weights()
