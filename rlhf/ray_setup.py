"""Ray start-up, device choice and worker environments, shared by the RL and SFT drivers (no vLLM import here).

`start_ray` joins a running cluster ($RAY_ADDRESS, or `trainer.ray_address`) or starts a local one sized to the job.
"""

from __future__ import annotations

import logging
import os

import ray
import torch

from rlhf.config import TrainerConfig

logger = logging.getLogger(__name__)


def resolve_device(requested: str) -> str:
    """`trainer.device=auto` picks CUDA when the driver sees a GPU, else CPU."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu or auto")
    return requested


def worker_env(trainer: TrainerConfig, device: str, kv_cache_gb: int | None = None) -> dict[str, str]:
    """Environment variables every worker needs before it imports DeepSpeed (and vLLM, when `kv_cache_gb` is set)."""
    env = {
        "TOKENIZERS_PARALLELISM": "false",
        # One thread per reserved core: vLLM-CPU with OMP_NUM_THREADS unset is ~6x slower on a 2-core VM.
        "OMP_NUM_THREADS": str(max(1, int(trainer.cpus_per_worker))),
        "PYTHONUNBUFFERED": "1",
    }
    if kv_cache_gb is not None:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # vLLM in the worker's process: weight sync without copies
    if device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"
        if kv_cache_gb is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gb)
    return env


def start_ray(trainer: TrainerConfig) -> None:
    """Connect to a cluster if one is named, else start a local Ray sized to the job."""
    if ray.is_initialized():
        return
    address = trainer.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        logger.info("connected to Ray cluster at %s", address)
        return
    world = trainer.nnodes * trainer.num_devices_per_node
    num_cpus = max(os.cpu_count() or 1, int(world * trainer.cpus_per_worker) + 1)
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    logger.info("started a local Ray instance with %d CPUs", num_cpus)
