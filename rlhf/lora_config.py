"""LoRA settings shared by RL (`actor.lora`) and SFT (`sft.lora`), and the start-up checks that need the model.

A rank of 0 means full fine-tuning. With a rank, PEFT wraps the policy in low-rank adapters: only the adapters are
trained and held by the optimizer, the base stays frozen, the reference is the same model with its adapter disabled
and vLLM receives the adapter (or merged weights) at each sync (`rlhf.workers.lora`). Target modules are checked
here, in the driver, against the model's own module names (built on the meta device, so no weights are read).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from rlhf.models.tiny import TinyModelSpec, build_tokenizer, tiny_config
from rlhf.schema import ConfigError, OneOrMany, Range

ALL_LINEAR = "all-linear"
# vLLM's LoRA buffers come in these ranks (vllm.config.lora.MaxLoRARanks); an adapter is padded up to the next one.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
AdapterSync = Literal["auto", "adapter", "merged"]


@dataclass
class LoRAConfig:
    """Low-rank adapters (PEFT LoRA): train only the adapters, keep the base weights frozen."""

    rank: Annotated[int, Range(ge=0)] = 0
    """Adapter rank r; 0 turns LoRA off (full fine-tuning)."""
    alpha: Annotated[float, Range(gt=0)] = 16.0
    """Scale numerator: an adapter's update B @ A is multiplied by alpha / rank."""
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0
    """Dropout on the adapters' input while training (above 0 the update's log-probs differ from the old ones)."""
    target_modules: Annotated[list[str], OneOrMany()] = field(default_factory=lambda: [ALL_LINEAR])
    """Linear layers to adapt, by name or dotted suffix (q_proj, mlp.down_proj), or all-linear: every one in the decoder."""

    @property
    def enabled(self) -> bool:
        return self.rank > 0


@dataclass
class ActorLoRAConfig(LoRAConfig):
    """LoRA on the RL policy, plus how the rollout engine receives it."""

    sync: AdapterSync = "auto"
    """Weight sync: adapter (vLLM's LoRA: only the adapter's tensors), merged (adapted layers merged, reloaded as weights), auto: adapter when vLLM can take the rank."""

    def resolved_sync(self) -> Literal["adapter", "merged"]:
        """`sync` with auto decided: the adapter unless vLLM has no LoRA buffer of this rank."""
        if self.sync != "auto":
            return self.sync
        return "adapter" if self.rank <= VLLM_LORA_RANKS[-1] else "merged"


def vllm_max_lora_rank(rank: int) -> int:
    """The smallest LoRA rank vLLM allocates that holds `rank`."""
    return next(r for r in VLLM_LORA_RANKS if r >= rank)


def model_config_for(model_path: str, build_tiny: bool) -> PretrainedConfig:
    """The policy's HF config: from `model_path`, or the tiny model's when it is still to be built there."""
    if build_tiny and not (Path(model_path) / "config.json").exists():
        return tiny_config(build_tokenizer(), TinyModelSpec())
    return AutoConfig.from_pretrained(model_path)


def linear_module_names(config: PretrainedConfig) -> tuple[list[str], list[str]]:
    """Full names of the model's linear layers that LoRA may adapt, and of the modules it may not (LM head, embeddings).

    The model is built on the meta device: no memory, no weights read.
    """
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    adaptable, refused = [], []
    for name, module in model.named_modules():
        if module is head or isinstance(module, torch.nn.Embedding):
            refused.append(name)
        elif isinstance(module, torch.nn.Linear):
            adaptable.append(name)
    return adaptable, refused


def matches(target: str, module_name: str) -> bool:
    """PEFT's rule for a name in `target_modules`: the module's full name, or a suffix of it at a dot."""
    return module_name == target or module_name.endswith("." + target)


def check_lora(lora: LoRAConfig, key: str, zero_stage: int, zero_key: str, config: PretrainedConfig) -> None:
    """Refuse what LoRA cannot do here, naming the keys: ZeRO-3, unknown or unsupported target modules.

    Args:
        lora: the section (enabled).
        key: its config path, e.g. "actor.lora".
        zero_stage, zero_key: the DeepSpeed stage of the same model and its key.
        config: the policy's HF config (`model_config_for`).

    Raises:
        ConfigError: naming the key, the value and what would be valid (for targets: the model's linear layers).
    """
    if zero_stage == 3:
        raise ConfigError(
            f"{key}.rank={lora.rank} with {zero_key}=3 is not supported: ZeRO-3 partitions the frozen base weights, "
            f"which merging the adapter (merged sync, the exported model) reads whole, and it saves little with LoRA "
            f"since only the adapter is in the optimizer; use {zero_key}=2 or 1"
        )
    targets = lora.target_modules
    if ALL_LINEAR in targets:
        if len(targets) > 1:
            raise ConfigError(f"{key}.target_modules={targets!r}: {ALL_LINEAR} stands alone (it adapts every linear)")
        return
    if not targets:
        raise ConfigError(f"{key}.target_modules is empty: name the linear layers to adapt, or use {ALL_LINEAR}")
    adaptable, refused = linear_module_names(config)
    leaf_names = sorted({name.rsplit(".", 1)[-1] for name in adaptable})
    for target in targets:
        if any(matches(target, name) for name in refused):
            raise ConfigError(
                f"{key}.target_modules has {target!r}: LoRA on the LM head or the embeddings is not supported (the "
                f"fused log-prob kernel reads the head's weight directly, without an adapter); adapt the decoder's "
                f"linear layers: {leaf_names}"
            )
        if not any(matches(target, name) for name in adaptable):
            raise ConfigError(
                f"{key}.target_modules has {target!r}, which is no linear layer of the model ({config.model_type}); "
                f"its linear layers are named {leaf_names} (or use {ALL_LINEAR})"
            )
