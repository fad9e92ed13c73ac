"""Typed configuration of supervised fine-tuning (SFT): the schema `sft_schema` and the checks before launch.

SFT shares the RL run's sections where they mean the same thing (`model`, `optim`, `data`, `trainer`) and adds
`sft` for what only SFT has. Keys of the shared sections that SFT does not read are rejected by `validate_sft` when
set, so a misplaced setting (e.g. `trainer.total_steps` instead of `sft.total_steps`) fails instead of being ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rlhf.config import DataConfig, ModelConfig, OptimConfig, TrainerConfig, model_context_length
from rlhf.models.tiny import TinyModelSpec


@dataclass
class SFTParams:
    batch_size: int = 64  # sequences per optimizer step, global over ranks
    micro_batch_size_per_device: int = 32  # sequences per forward/backward on one rank (gradient accumulation)
    total_steps: int = 200  # optimizer steps
    epochs: int = 0  # if > 0, stop after this many passes over the data, whichever comes first
    max_length: int = 32  # prompt + response tokens (EOS included); longer rows are dropped, and counted
    response_key: str = "auto"  # auto: `response` if the row has it, else reward_model.ground_truth; or a dotted key
    append_eos: bool = True  # end every target with the tokenizer's EOS, so the model learns to stop
    zero_stage: int = 2  # DeepSpeed ZeRO stage, as actor.zero_stage
    fused_kernels: bool = True  # log-probs from hidden states without full logits, as actor.fused_kernels
    kernel_backend: str = "auto"  # auto | torch | triton | naive, as actor.kernel_backend
    max_new_tokens: int = 16  # greedy validation: tokens generated per held-out prompt


@dataclass
class SFTConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4))  # SFT takes far larger steps than RL
    sft: SFTParams = field(default_factory=SFTParams)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(project_name="rlhf_sft"))


# Keys of the shared sections that mean nothing to SFT, with where the setting belongs instead (None: nowhere).
UNUSED_KEYS: dict[str, str | None] = {
    "data.train_batch_size": "sft.batch_size",
    "trainer.total_steps": "sft.total_steps",
    "trainer.save_freq": None,
    "trainer.keep_last": None,
    "trainer.resume": None,
    "trainer.max_restarts": None,
    "trainer.max_consecutive_skipped_updates": None,
}


def register_sft_schema() -> None:
    """Make `sft_schema` available to recipes (`defaults: [sft_schema, _self_]`)."""
    ConfigStore.instance().store(name="sft_schema", node=SFTConfig)


def to_typed_sft(cfg: DictConfig) -> SFTConfig:
    """Turn Hydra's composed config into dataclasses (type errors name the key)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SFTConfig), cfg))  # type: ignore[return-value]


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


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
    for key, instead in UNUSED_KEYS.items():
        value = _get(cfg, key)
        hint = f"; set {instead} instead" if instead else ""
        _require(value == _get(defaults, key), f"{key}={value!r} is not used by SFT{hint}")
    _require(s.total_steps >= 1, f"sft.total_steps={s.total_steps} must be >= 1")
    _require(s.epochs >= 0, f"sft.epochs={s.epochs} must be >= 0 (0: no limit)")
    _require(s.max_length >= 2, f"sft.max_length={s.max_length} must be >= 2 (a prompt token and a target token)")
    _require(s.max_new_tokens >= 1, f"sft.max_new_tokens={s.max_new_tokens} must be >= 1")
    _require(s.zero_stage in (0, 1, 2, 3), f"sft.zero_stage={s.zero_stage} must be 0, 1, 2 or 3")
    _require(
        s.kernel_backend in ("auto", "torch", "triton", "naive"),
        f"sft.kernel_backend={s.kernel_backend!r} must be one of auto, torch, triton, naive",
    )
    _require(
        not (s.zero_stage == 3 and s.fused_kernels),
        "sft.fused_kernels=true reads the LM head weight directly, which ZeRO-3 partitions; "
        "set sft.fused_kernels=false with sft.zero_stage=3",
    )
    _require(
        s.response_key == "auto" or bool(s.response_key.strip(".")),
        f"sft.response_key={s.response_key!r} must be 'auto' or a dotted column name like extra_info.answer",
    )
    _require(cfg.optim.lr > 0, f"optim.lr={cfg.optim.lr} must be > 0")
    _require(cfg.model.dtype in ("float32", "bfloat16"), f"model.dtype={cfg.model.dtype!r} must be float32 or bfloat16")
    _require(t.device in ("auto", "cpu", "cuda"), f"trainer.device={t.device!r} must be one of auto, cpu, cuda")
    _require(t.test_freq >= 0, f"trainer.test_freq={t.test_freq} must be >= 0 (0: validate only at the end)")
    bad_loggers = sorted(set(t.logger) - {"console", "wandb", "jsonl"})
    _require(not bad_loggers, f"trainer.logger has unknown backends {bad_loggers}; choose from console, wandb, jsonl")
    world = t.nnodes * t.num_devices_per_node
    _require(world >= 1, f"trainer.nnodes x trainer.num_devices_per_node = {world} must be >= 1")
    _require(
        s.batch_size >= 1 and s.batch_size % world == 0,
        f"sft.batch_size={s.batch_size} must be a positive multiple of the {world} ranks "
        "(trainer.nnodes x trainer.num_devices_per_node)",
    )
    per_rank = s.batch_size // world
    _require(
        s.micro_batch_size_per_device >= 1 and per_rank % s.micro_batch_size_per_device == 0,
        f"sft.micro_batch_size_per_device={s.micro_batch_size_per_device} must divide the {per_rank} sequences "
        f"of a batch on each rank (sft.batch_size={s.batch_size} / {world} ranks)",
    )
    _validate_paths(cfg)


def _validate_paths(cfg: SFTConfig) -> None:
    m, d = cfg.model, cfg.data
    if not m.build_tiny:
        _require(
            bool(m.path) and (model_context_length(m.path) is not None),
            f"model.path={m.path!r} has no config.json (set model.build_tiny=true to build the local tiny model there)",
        )
    for key, files in (("data.train_files", d.train_files), ("data.val_files", d.val_files)):
        for f in files:
            _require(Path(f).is_file(), f"{key}: file {f!r} does not exist")
    context = model_context_length(m.path)
    if context is None and m.build_tiny:
        context = TinyModelSpec().max_position_embeddings
    if context is not None:
        _require(
            cfg.sft.max_length <= context,
            f"sft.max_length={cfg.sft.max_length} exceeds the model's context of {context} tokens "
            f"(max_position_embeddings in {m.path}/config.json)",
        )
        total = d.max_prompt_length + cfg.sft.max_new_tokens
        _require(
            total <= context,
            f"data.max_prompt_length + sft.max_new_tokens = {d.max_prompt_length} + {cfg.sft.max_new_tokens} = "
            f"{total} exceeds the model's context of {context} tokens",
        )
