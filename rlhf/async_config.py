"""The `async_training:` section: where the rollout runs and how far it may run ahead of the trainer (issue 11).

`placement=colocated` (the default) keeps today's hybrid engine: vLLM in the actor's processes, weights reloaded in
memory. `placement=split` puts vLLM on its own Ray actors; after an update, trainer rank 0 broadcasts the weights to
them over a collective (gloo on CPU, NCCL on CUDA) in bounded buckets. `max_staleness=k > 0` lets generation of the
next batches run while the trainer updates, on weights at most k updates old. (`async` itself is a Python keyword,
so the section is named `async_training`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from rlhf.algorithms.registry import ADVANTAGE_ESTIMATORS
from rlhf.schema import ConfigError, Range

if TYPE_CHECKING:
    from rlhf.config import RLHFConfig


@dataclass
class AsyncTrainingConfig:
    """Placement of the rollout and the bound on how stale the samples the trainer learns from may be."""

    placement: Literal["colocated", "split"] = "colocated"
    """colocated: vLLM inside each actor process (hybrid engine); split: vLLM on its own Ray actors and devices."""
    num_rollout_workers: Annotated[int, Range(ge=1)] = 1
    """split only: rollout processes (each one vLLM engine on one device, trainer.cpus_per_worker CPUs on CPU)."""
    max_staleness: Annotated[int, Range(ge=0)] = 0
    """Updates the sampling weights may lag the trainer's (0: synchronous; 1: one-step off-policy); needs split."""
    sync_timeout_s: Annotated[float, Range(gt=0)] = 120.0
    """split only: a weight sync (either side) taking longer fails with WeightSyncError naming both sides."""
    sync_bucket_mb: Annotated[float, Range(gt=0)] = 64.0
    """split only: weights are broadcast in buckets of about this size, so neither side holds a second full copy."""

    @property
    def is_split(self) -> bool:
        return self.placement == "split"


def check_async_training(cfg: RLHFConfig) -> None:
    """Start-up checks of `async_training.*` against the rest of the config (after the algorithm's plugins loaded).

    Raises:
        ConfigError: naming both keys of every conflict.
    """
    a = cfg.async_training
    if a.max_staleness > 0:
        _require(
            a.is_split,
            f"async_training.max_staleness={a.max_staleness} needs async_training.placement=split (got "
            f"{a.placement!r}): colocated rollout and training share one process and cannot overlap",
        )
        _require(
            not ADVANTAGE_ESTIMATORS.is_on_policy_only(cfg.algorithm.advantage),
            f"algorithm.advantage={cfg.algorithm.advantage!r} needs on-policy samples (e.g. ReMax's greedy baseline "
            f"of the current policy), but async_training.max_staleness={a.max_staleness} trains on samples up to "
            f"{a.max_staleness} updates old; set async_training.max_staleness=0 or choose another estimator",
        )
        _require(
            cfg.algorithm.rollout_is is not None,
            f"async_training.max_staleness={a.max_staleness} trains on samples of older weights: set "
            "algorithm.rollout_is=token (or sequence) so the truncated importance weight min(pi_old / pi_rollout, "
            "algorithm.rollout_is_threshold) corrects for them (algorithm.rollout_is is null)",
        )
        _require(
            not cfg.algorithm.dynamic_sampling.enable,
            f"algorithm.dynamic_sampling.enable=true with async_training.max_staleness={a.max_staleness}: DAPO's "
            "refill rounds are not pipelined; set async_training.max_staleness=0",
        )
    if not a.is_split:
        return
    for ok, key in (
        (not cfg.actor.lora.enabled, f"actor.lora.rank={cfg.actor.lora.rank}"),
        (not cfg.agent.enable, "agent.enable=true"),
        (cfg.rollout.tensor_parallel_size == 1, f"rollout.tensor_parallel_size={cfg.rollout.tensor_parallel_size}"),
    ):
        _require(
            ok,
            f"{key} is not supported with async_training.placement=split yet (split rollout engines receive full "
            "weights on one device each); use async_training.placement=colocated",
        )


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
