"""Typed configuration of supervised fine-tuning (SFT): the schema `sft_schema` and the checks before launch.

SFT shares the RL run's sections where they mean the same thing (`model`, `optim`, `data`, `trainer`) and adds
`sft` for what only SFT has. Every key of a shared section is either read by SFT (`SFT_READS`) or refused when set
(`SFT_REFUSES`, with where the setting belongs instead), so a misplaced setting never goes silently unused; a test
checks that every field of the shared sections is in exactly one of the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rlhf.config import (
    COUNT,
    POSITIVE_INT,
    DataConfig,
    KernelBackend,
    ModelConfig,
    OptimConfig,
    TrainerConfig,
    ZeroStage,
)
from rlhf.config_checks import check_cluster_layout, check_offload, check_run_names, model_context_length, require
from rlhf.lora_config import LoRAConfig, check_lora, model_config_for
from rlhf.models.tiny import TinyModelSpec
from rlhf.packing import validate_token_budget
from rlhf.schema import ConfigError, build, check_fields, hydra_schema


@dataclass
class SFTParams:
    """What only SFT has: batch sizes, steps and the target column."""

    batch_size: Annotated[int, POSITIVE_INT] = 64
    """Sequences per optimizer step, global over ranks."""
    micro_batch_size_per_device: Annotated[int, POSITIVE_INT] = 32
    """Sequences per forward/backward on one rank (gradient accumulation; when max_tokens_per_micro_batch is unset)."""
    max_tokens_per_micro_batch: Annotated[int, POSITIVE_INT] | None = None
    """Token budget of one forward on a rank; micro-batches then hold as many sequences as fit. None: fixed-size."""
    total_steps: Annotated[int, POSITIVE_INT] = 200
    """Optimizer steps."""
    epochs: Annotated[int, COUNT] = 0
    """If > 0, stop after this many passes over the data, whichever comes first (0: no limit)."""
    max_length: Annotated[int, POSITIVE_INT] = 32
    """Prompt + response tokens (EOS included); longer rows are dropped, and counted."""
    response_key: str = "auto"
    """Target column: auto (`response` if the row has it, else reward_model.ground_truth) or a dotted key."""
    append_eos: bool = True
    """End every target with the tokenizer's EOS, so the model learns to stop."""
    zero_stage: ZeroStage = 1
    """DeepSpeed ZeRO stage, as actor.zero_stage."""
    fused_kernels: bool = True
    """Log-probs from hidden states without full logits, as actor.fused_kernels."""
    kernel_backend: KernelBackend = "auto"
    """Fused kernel backend, as actor.kernel_backend."""
    offload_params: bool = False
    """DeepSpeed parameter offload, as actor.offload_params (needs sft.zero_stage=3)."""
    offload_optimizer: bool = False
    """DeepSpeed optimizer offload, as actor.offload_optimizer (needs sft.zero_stage >= 1)."""
    max_new_tokens: Annotated[int, POSITIVE_INT] = 16
    """Greedy validation: tokens generated per held-out prompt."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """LoRA: train low-rank adapters on a frozen base (rank 0: full fine-tuning), as actor.lora."""


@dataclass
class SFTConfig:
    """The whole SFT run (`python -m rlhf.sft_main`)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model to fine-tune."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4))
    """The optimizer (SFT takes far larger steps than RL)."""
    sft: SFTParams = field(default_factory=SFTParams)
    """What only SFT has."""
    data: DataConfig = field(default_factory=DataConfig)
    """(prompt, target) rows: verl files or the built-in task."""
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(project_name="rlhf_sft"))
    """The run: devices, logging, validation, checkpoints."""


# Keys of the shared sections that SFT reads.
SFT_READS = frozenset(
    {
        *(f"model.{k}" for k in ("path", "build_tiny", "dtype", "gradient_checkpointing", "padding_free")),
        *(
            f"data.{k}"
            for k in (
                "train_files",
                "val_files",
                "prompt_key",
                "builtin_task",
                "builtin_dir",
                "builtin_num_train",
                "builtin_num_val",
                "builtin_min_digits",
                "builtin_max_digits",
                "val_batch_size",
                "max_prompt_length",
                "shuffle",
            )
        ),
        *(
            f"trainer.{k}"
            for k in (
                "project_name",
                "experiment_name",
                "device",
                "nnodes",
                "num_devices_per_node",
                "cpus_per_worker",
                "memory_gb_per_worker",
                "ray_address",
                "placement_timeout_s",
                "runtime_env.pip",
                "runtime_env.env_vars",
                "logger",
                "log_level",
                "output_dir",
                "test_freq",
                "val_before_train",
                "save_freq",
                "keep_last",
                "resume",
                "max_consecutive_skipped_updates",
                "max_restarts",
                "deterministic",
                "seed",
            )
        ),
    }
)
# Keys of the shared sections that mean nothing to SFT, with where the setting belongs instead (None: nowhere).
SFT_REFUSES: dict[str, str | None] = {
    "data.train_batch_size": "sft.batch_size",
    "trainer.total_steps": "sft.total_steps",
    "trainer.val_num_samples": None,
}


def register_sft_schema() -> None:
    """Make `sft_schema` available to recipes (`defaults: [sft_schema, _self_]`)."""
    ConfigStore.instance().store(name="sft_schema", node=hydra_schema(SFTConfig))


def to_typed_sft(cfg: DictConfig) -> SFTConfig:
    """Hydra's composed config as the typed dataclasses; a key the schema does not have fails, naming it."""
    return build(SFTConfig, OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate_sft(cfg: SFTConfig) -> None:
    """Check everything that can be checked in the driver before any worker starts.

    Raises:
        ValueError: naming the config key, the value received and what would be valid.
    """
    s, t = cfg.sft, cfg.trainer
    defaults = SFTConfig()
    for key, instead in SFT_REFUSES.items():
        value = _get(cfg, key)
        hint = f"; set {instead} instead" if instead else ""
        require(value == _get(defaults, key), f"{key}={value!r} is not used by SFT{hint}")
    check_fields(cfg)
    check_run_names(t)
    check_offload("sft", s.zero_stage, s.offload_params, s.offload_optimizer)
    check_cluster_layout(t)
    require(
        s.response_key == "auto" or bool(s.response_key.strip(".")),
        f"sft.response_key={s.response_key!r} must be 'auto' or a dotted column name like extra_info.answer",
    )
    world = t.nnodes * t.num_devices_per_node
    require(
        s.batch_size % world == 0,
        f"sft.batch_size={s.batch_size} must be a positive multiple of the {world} ranks "
        "(trainer.nnodes x trainer.num_devices_per_node)",
    )
    per_rank = s.batch_size // world
    require(
        per_rank % s.micro_batch_size_per_device == 0,
        f"sft.micro_batch_size_per_device={s.micro_batch_size_per_device} must divide the {per_rank} sequences "
        f"of a batch on each rank (sft.batch_size={s.batch_size} / {world} ranks)",
    )
    try:
        validate_token_budget("sft.max_tokens_per_micro_batch", s.max_tokens_per_micro_batch, s.max_length)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    _validate_paths(cfg)
    if s.lora.enabled:
        check_lora(
            s.lora, "sft.lora", s.zero_stage, "sft.zero_stage", model_config_for(cfg.model.path, cfg.model.build_tiny)
        )


def _validate_paths(cfg: SFTConfig) -> None:
    m, d = cfg.model, cfg.data
    if not m.build_tiny:
        require(
            bool(m.path) and (model_context_length(m.path) is not None),
            f"model.path={m.path!r} has no config.json (set model.build_tiny=true to build the local tiny model there)",
        )
    for key, files in (("data.train_files", d.train_files), ("data.val_files", d.val_files)):
        for f in files:
            require(Path(f).is_file(), f"{key}: file {f!r} does not exist")
    context = model_context_length(m.path)
    if context is None and m.build_tiny:
        context = TinyModelSpec().max_position_embeddings
    if context is not None:
        require(
            cfg.sft.max_length <= context,
            f"sft.max_length={cfg.sft.max_length} exceeds the model's context of {context} tokens "
            f"(max_position_embeddings in {m.path}/config.json)",
        )
        total = d.max_prompt_length + cfg.sft.max_new_tokens
        require(
            total <= context,
            f"data.max_prompt_length + sft.max_new_tokens = {d.max_prompt_length} + {cfg.sft.max_new_tokens} = "
            f"{total} exceeds the model's context of {context} tokens",
        )
