"""Typed configuration: the one home of every default, and the checks that run before any worker starts.

Hydra composes the recipe YAML over these dataclasses (registered as the schema `rlhf_schema`), so an unknown key
fails at compose time; `validate` then checks what YAML types cannot express (batch sizes that divide, paths that
exist, lengths that fit the model's context) and names the key at fault.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rlhf.algorithms.config import AlgorithmConfig
from rlhf.models.tiny import TinyModelSpec


@dataclass
class ModelConfig:
    path: str = "models/tiny-qwen2"  # HF folder; the tiny one is built by `build_tiny` when missing
    build_tiny: bool = False  # build the local tiny model at `path` if it is not there (no hub needed)
    dtype: str = "float32"  # float32 | bfloat16 for training and rollout weights
    gradient_checkpointing: bool = False  # trade compute for activation memory on big models


@dataclass
class OptimConfig:
    name: str = "AdamW"  # AdamW, Adam, or any torch.optim class name (e.g. SGD), passed to DeepSpeed
    lr: float = 1e-6  # verl's GRPO default; the tiny recipe raises it
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0  # linear warm-up of the learning rate over optimizer steps
    grad_clip: float = 1.0  # max global gradient norm (0 disables)


@dataclass
class ActorConfig:
    optim: OptimConfig = field(default_factory=OptimConfig)
    ppo_mini_batch_size: int = 8  # prompts per optimizer step (x rollout.n sequences), global over ranks
    micro_batch_size_per_device: int = 4  # sequences per forward/backward on one rank
    ppo_epochs: int = 1  # passes over the rollout batch per step
    shuffle: bool = True  # shuffle sequences between mini-batches each epoch
    zero_stage: int = 2  # DeepSpeed ZeRO stage: 2 shards optimizer + gradients, 3 also parameters
    fused_kernels: bool = True  # log-probs/entropy from hidden states without full [tokens, vocab] logits
    kernel_backend: str = "auto"  # auto | torch | triton | naive (auto: triton on CUDA, chunked torch on CPU)
    log_prob_micro_batch_size: int = 16  # sequences per forward when computing old/ref log-probs


@dataclass
class CriticConfig:
    """The value model for PPO/GAE: a token-classification head (1 label) on the policy's architecture."""

    model_path: str | None = None  # None: start from model.path with a fresh value head
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5))  # critics learn faster than policies
    micro_batch_size_per_device: int = 4  # sequences per forward/backward on one rank
    ppo_epochs: int = 1  # passes over the rollout batch per step (mini-batches follow the actor's)
    warmup_steps: int = 0  # first RL steps that train only the critic, leaving the actor unchanged
    zero_stage: int = 2


@dataclass
class RolloutConfig:
    n: int = 4  # responses sampled per prompt (the GRPO group size)
    temperature: float = 1.0  # applied identically by vLLM and by the trainer's log-probs
    top_p: float = 1.0  # nucleus sampling; <1 makes trainer and vLLM log-probs differ by design
    max_response_length: int = 16  # tokens generated per response
    kv_cache_gb: int = 1  # CPU: whole GiB of RAM for vLLM's KV cache (VLLM_CPU_KVCACHE_SPACE)
    gpu_memory_utilization: float = 0.5  # CUDA: fraction of device memory vLLM may take
    enforce_eager: bool = True  # skip CUDA graph capture (start-up time vs decode speed)
    free_cache_engine: bool = True  # CUDA: vLLM sleeps (frees KV cache and weights) while the actor trains


@dataclass
class RefConfig:
    log_prob_micro_batch_size: int = 16  # sequences per forward of the frozen reference model


@dataclass
class RewardConfig:
    function: str | None = None  # "pkg.module:fn" or "path/file.py:fn"; None = built-in by data_source
    num_workers: int = 1  # Ray actors in the reward group
    num_processes: int = 2  # processes per reward actor running the functions (0 = inline, no timeout)
    timeout_s: float = 10.0  # a call running longer scores 0 and counts in reward/timeouts
    rule_weight: float = 1.0  # weight of the rule-function score (0: reward model only)
    model_path: str | None = None  # a sequence-classification reward model (1 label); None: rules only
    rm_weight: float = 1.0  # weight of the reward model's score in the sum
    rm_micro_batch_size: int = 16  # sequences per reward-model forward


@dataclass
class DataConfig:
    train_files: list[str] = field(default_factory=list)  # parquet/jsonl with verl columns; empty = built-in
    val_files: list[str] = field(default_factory=list)
    builtin_task: str = "arith"  # generated when train_files is empty
    builtin_dir: str = "data/arith"  # where the built-in task is written
    builtin_num_train: int = 2000
    builtin_num_val: int = 200
    builtin_min_digits: int = 1
    builtin_max_digits: int = 2
    train_batch_size: int = 8  # prompts per RL step (x rollout.n responses)
    val_batch_size: int = 64
    max_prompt_length: int = 32  # longer prompts are dropped before training (counted in the log)
    shuffle: bool = True


@dataclass
class TrainerConfig:
    project_name: str = "rlhf"
    experiment_name: str = "default"
    total_steps: int = 10  # RL steps (each: generate, score, update, sync)
    device: str = "auto"  # auto | cpu | cuda
    nnodes: int = 1
    num_devices_per_node: int = 2  # actor ranks per node (CPU: processes; CUDA: GPUs)
    cpus_per_worker: float = 1.0  # CPU cores reserved per actor rank (its vLLM and torch threads)
    ray_address: str | None = None  # None: $RAY_ADDRESS if set, else a local Ray instance started here
    logger: list[str] = field(default_factory=lambda: ["console"])  # any of console, wandb, jsonl
    output_dir: str = "outputs"  # runs go to <output_dir>/<project>/<experiment>
    test_freq: int = 0  # validate every N steps and at the end (0: never)
    val_num_samples: int = 0  # k > 0: also sample k responses per held-out prompt for pass@k and mean@k
    val_before_train: bool = True  # with test_freq > 0, validate at step 0 so curves start from the initial policy
    save_freq: int = 0  # checkpoint every N steps and at the end (0: no checkpoints)
    keep_last: int = 3  # complete checkpoints kept (older ones are deleted; 0 keeps all)
    resume: str = "auto"  # auto: newest complete checkpoint of this run dir, if any | never | <checkpoint dir>
    max_restarts: int = 0  # after a worker dies: restart the groups and resume from the last checkpoint, N times
    max_consecutive_skipped_updates: int = 3  # stop the run after this many NaN/inf updates in a row
    deterministic: bool = False  # deterministic torch kernels in the workers (exact resume on CPU)
    seed: int = 1

    def run_dir(self) -> Path:
        """<output_dir>/<project>/<experiment>, absolute so that workers (other working directories) write there."""
        return (Path(self.output_dir) / self.project_name / self.experiment_name).resolve()


@dataclass
class RLHFConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    ref: RefConfig = field(default_factory=RefConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    data: DataConfig = field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def register_schema() -> None:
    """Make `rlhf_schema` available to recipes (`defaults: [rlhf_schema, ...]`)."""
    ConfigStore.instance().store(name="rlhf_schema", node=RLHFConfig)


def to_typed(cfg: DictConfig) -> RLHFConfig:
    """Turn Hydra's composed config into dataclasses (type errors name the key)."""
    merged = OmegaConf.merge(OmegaConf.structured(RLHFConfig), cfg)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def model_context_length(model_path: str) -> int | None:
    """max_position_embeddings from the model's config.json, or None if it is not there yet."""
    config_file = Path(model_path) / "config.json"
    if not config_file.exists():
        return None
    return json.loads(config_file.read_text()).get("max_position_embeddings")


def validate(cfg: RLHFConfig) -> None:
    """Check everything that can be checked in the driver, in seconds, before any worker starts.

    Raises:
        ValueError: naming the config key, the value received and what would be valid.
    """
    t, a, r, d = cfg.trainer, cfg.actor, cfg.rollout, cfg.data
    _require(t.total_steps >= 0, f"trainer.total_steps={t.total_steps} must be >= 0")
    _require(t.device in ("auto", "cpu", "cuda"), f"trainer.device={t.device!r} must be one of auto, cpu, cuda")
    _require(t.nnodes >= 1, f"trainer.nnodes={t.nnodes} must be >= 1")
    _require(t.num_devices_per_node >= 1, f"trainer.num_devices_per_node={t.num_devices_per_node} must be >= 1")
    bad_loggers = sorted(set(t.logger) - {"console", "wandb", "jsonl"})
    _require(not bad_loggers, f"trainer.logger has unknown backends {bad_loggers}; choose from console, wandb, jsonl")
    _require(r.n >= 1, f"rollout.n={r.n} must be >= 1")
    _require(r.temperature > 0, f"rollout.temperature={r.temperature} must be > 0")
    _require(0 < r.top_p <= 1, f"rollout.top_p={r.top_p} must be in (0, 1]")
    _require(r.max_response_length >= 1, f"rollout.max_response_length={r.max_response_length} must be >= 1")
    _require(d.max_prompt_length >= 1, f"data.max_prompt_length={d.max_prompt_length} must be >= 1")
    _require(a.zero_stage in (0, 1, 2, 3), f"actor.zero_stage={a.zero_stage} must be 0, 1, 2 or 3")
    _require(a.ppo_epochs >= 1, f"actor.ppo_epochs={a.ppo_epochs} must be >= 1")
    _require(
        a.kernel_backend in ("auto", "torch", "triton", "naive"),
        f"actor.kernel_backend={a.kernel_backend!r} must be one of auto, torch, triton, naive",
    )
    _require(cfg.model.dtype in ("float32", "bfloat16"), f"model.dtype={cfg.model.dtype!r} must be float32 or bfloat16")
    _require(
        not (a.zero_stage == 3 and a.fused_kernels),
        "actor.fused_kernels=true reads the LM head weight directly, which ZeRO-3 partitions; "
        "set actor.fused_kernels=false with actor.zero_stage=3",
    )
    rw = cfg.reward
    _require(
        rw.rule_weight > 0 or rw.model_path is not None,
        "reward.rule_weight=0 and no reward.model_path: nothing would score the responses",
    )
    _require(cfg.critic.ppo_epochs >= 1, f"critic.ppo_epochs={cfg.critic.ppo_epochs} must be >= 1")
    _require(cfg.critic.zero_stage in (0, 1, 2, 3), f"critic.zero_stage={cfg.critic.zero_stage} must be 0, 1, 2 or 3")
    _validate_batch_sizes(cfg)
    _validate_paths(cfg)
    cfg.algorithm.validate()


def _validate_batch_sizes(cfg: RLHFConfig) -> None:
    t, a, r, d = cfg.trainer, cfg.actor, cfg.rollout, cfg.data
    world = t.nnodes * t.num_devices_per_node
    _require(d.train_batch_size >= 1, f"data.train_batch_size={d.train_batch_size} must be >= 1")
    _require(a.ppo_mini_batch_size >= 1, f"actor.ppo_mini_batch_size={a.ppo_mini_batch_size} must be >= 1")
    _require(
        d.train_batch_size % world == 0,
        f"data.train_batch_size={d.train_batch_size} must be divisible by the number of actor ranks "
        f"(trainer.nnodes x trainer.num_devices_per_node = {world})",
    )
    _require(
        d.train_batch_size % a.ppo_mini_batch_size == 0,
        f"data.train_batch_size={d.train_batch_size} must be divisible by actor.ppo_mini_batch_size={a.ppo_mini_batch_size}",
    )
    mini_seqs = a.ppo_mini_batch_size * r.n
    _require(
        mini_seqs % world == 0,
        f"actor.ppo_mini_batch_size x rollout.n = {mini_seqs} sequences must be divisible by {world} actor ranks",
    )
    per_rank = mini_seqs // world
    _require(
        a.micro_batch_size_per_device >= 1 and per_rank % a.micro_batch_size_per_device == 0,
        f"actor.micro_batch_size_per_device={a.micro_batch_size_per_device} must divide the {per_rank} sequences "
        f"of a mini-batch on each rank (actor.ppo_mini_batch_size={a.ppo_mini_batch_size} x rollout.n={r.n} / {world} ranks)",
    )
    if cfg.algorithm.needs_critic():
        c = cfg.critic.micro_batch_size_per_device
        _require(
            c >= 1 and per_rank % c == 0,
            f"critic.micro_batch_size_per_device={c} must divide the {per_rank} sequences of a mini-batch on each rank",
        )
    if cfg.algorithm.overlong.enable:
        _require(
            cfg.algorithm.overlong.buffer_len <= r.max_response_length,
            f"algorithm.overlong.buffer_len={cfg.algorithm.overlong.buffer_len} must be <= "
            f"rollout.max_response_length={r.max_response_length}",
        )


def _validate_paths(cfg: RLHFConfig) -> None:
    m, d, r = cfg.model, cfg.data, cfg.rollout
    if not m.build_tiny:
        _require(
            Path(m.path).is_dir(),
            f"model.path={m.path!r} does not exist (set model.build_tiny=true to build the local tiny model there)",
        )
    for key, path in (("critic.model_path", cfg.critic.model_path), ("reward.model_path", cfg.reward.model_path)):
        _require(path is None or Path(path).is_dir(), f"{key}={path!r} does not exist")
    for key, files in (("data.train_files", d.train_files), ("data.val_files", d.val_files)):
        for f in files:
            _require(os.path.isfile(f), f"{key}: file {f!r} does not exist")
    context = model_context_length(m.path)
    if context is None and m.build_tiny:
        context = TinyModelSpec().max_position_embeddings
    if context is not None:
        total = d.max_prompt_length + r.max_response_length
        _require(
            total <= context,
            f"data.max_prompt_length + rollout.max_response_length = {d.max_prompt_length} + "
            f"{r.max_response_length} = {total} exceeds the model's context of {context} tokens "
            f"(max_position_embeddings in {m.path}/config.json)",
        )
