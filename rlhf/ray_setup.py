"""Ray start-up, device choice and worker environments, shared by the RL and SFT drivers (no vLLM import here).

`start_ray` joins a running cluster ($RAY_ADDRESS, or `trainer.ray_address`) or starts a local one sized to the job,
bound to loopback and recorded in the run dir (`rlhf.local_ray`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import ray
import torch

from rlhf.config import TrainerConfig
from rlhf.local_ray import start_local_ray
from rlhf.logs import LOG_LEVEL_ENV

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
        LOG_LEVEL_ENV: trainer.log_level,
        "VLLM_LOGGING_LEVEL": "WARNING",  # vLLM configures its own logger from this at import
    }
    if kv_cache_gb is not None:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # vLLM in the worker's process: weight sync without copies
    if device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"
        # DeepSpeed JIT-builds its shared-memory allreduce op on CPU; scripts/setup.sh builds it into the venv once.
        env["TORCH_EXTENSIONS_DIR"] = torch_extensions_dir()
        if kv_cache_gb is not None:
            env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gb)
    return env


def torch_extensions_dir() -> str:
    """Where torch keeps JIT-built ops: $TORCH_EXTENSIONS_DIR, else beside this Python environment, so two
    environments never rebuild each other's ops (torch rebuilds when the sources' paths differ)."""
    return os.environ.get("TORCH_EXTENSIONS_DIR") or str(Path(sys.prefix) / "torch_extensions")


def start_ray(trainer: TrainerConfig, run_dir: Path | None = None) -> None:
    """Connect to a cluster if one is named, else start a local Ray instance sized to the job.

    A cluster is joined with Ray's own settings (bind addresses, token authentication) untouched. A local instance
    listens on loopback only, and its processes are recorded in `<run_dir>/.ray_instance.json`: they are ended if
    this driver dies without shutting Ray down, and a re-run with the same run dir ends what a killed run left.

    Args:
        trainer: the trainer config (`ray_address`, and the job size for the local instance's CPUs).
        run_dir: where the record of a local instance lives; None: `trainer.run_dir()`.
    """
    if ray.is_initialized():
        return
    address = trainer.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        logger.info("connected to Ray cluster at %s", address)
        return
    world = trainer.nnodes * trainer.num_devices_per_node
    num_cpus = max(os.cpu_count() or 1, int(world * trainer.cpus_per_worker) + 1)
    start_local_ray(num_cpus, run_dir if run_dir is not None else trainer.run_dir())
