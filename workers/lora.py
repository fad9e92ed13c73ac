"""LoRA on the policy with PEFT: wrapping the model, the adapter for vLLM, merged weights, and exports.

Only the adapters require gradients, so the DeepSpeed optimizer holds only them (`engine.build_engine` passes the
trainable parameters), and the frozen base doubles as the reference policy (the adapter disabled). The rollout gets
either the adapter's tensors (vLLM's LoRA) or the adapted layers with the adapter merged in (`merged_weights`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.lora_config import ALL_LINEAR, LoRAConfig

logger = logging.getLogger(__name__)

ADAPTER = "default"  # PEFT's name for the one adapter
ADAPTER_DIR = "adapter"  # the PEFT-format adapter inside an export (<export>/adapter/adapter_config.json)
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # the file name PEFT and vLLM read


def wrap_with_lora(model: PreTrainedModel, lora: LoRAConfig, gradient_checkpointing: bool) -> PeftModel:
    """`model` with LoRA adapters on `lora.target_modules`; everything else frozen (requires_grad=False).

    PEFT initialises B to zero, so the wrapped model computes exactly the base model until the first update.
    """
    if gradient_checkpointing:
        # Checkpointed blocks recompute from their input; with the embeddings frozen that input must still carry a
        # gradient, or nothing flows back to the adapters.
        model.enable_input_require_grads()
    targets = ALL_LINEAR if lora.target_modules == [ALL_LINEAR] else list(lora.target_modules)
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    logger.info("LoRA rank %d on %s: %d trainable of %d parameters", lora.rank, targets, trainable, total)
    return peft_model


def is_lora(model: nn.Module) -> bool:
    return isinstance(model, PeftModel)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimizer holds: all of them, or only the adapters' under LoRA."""
    return [p for p in model.parameters() if p.requires_grad]


def num_bytes(tensors: list[tuple[str, torch.Tensor]] | dict[str, torch.Tensor]) -> int:
    """Total size of the tensors' data."""
    values = tensors.values() if isinstance(tensors, dict) else (t for _, t in tensors)
    return sum(t.numel() * t.element_size() for t in values)


@dataclass
class AdapterWeights:
    """One adapter as PEFT saves it: tensors under PEFT's file names and its config."""

    tensors: dict[str, torch.Tensor]
    """E.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight -> [rank, hidden]."""
    config: LoraConfig
    """Rank, alpha, target modules (adapter_config.json)."""

    def save(self, directory: Path) -> None:
        """adapter_config.json + adapter_model.safetensors, the folder layout PEFT and vLLM load."""
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(str(directory))
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(directory / ADAPTER_WEIGHTS))


def adapter_weights(model: PeftModel) -> AdapterWeights:
    """The adapter's current tensors (no copy) and config."""
    return AdapterWeights(get_peft_model_state_dict(model, adapter_name=ADAPTER), model.peft_config[ADAPTER])


@torch.no_grad()
def merged_weights(model: PeftModel, adapted_only: bool) -> list[tuple[str, torch.Tensor]]:
    """HF-named weights with each adapter merged in (W + alpha / r * B @ A); the model itself is left unchanged.

    Args:
        adapted_only: only the adapted layers' weights (all that differs from the base: enough for a rollout engine
            that already holds the base); otherwise the whole state dict (tied lm_head included), for an export.

    Returns:
        (name, tensor) pairs named as in the base model's own state_dict (`model.layers.0.self_attn.q_proj.weight`).
    """
    causal_lm = model.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    for name, module in causal_lm.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
            base = module.get_base_layer().weight
            merged[f"{name}.weight"] = base + module.get_delta_weight(ADAPTER).to(base.dtype)
    if adapted_only:
        return list(merged.items())
    weights = []
    for key, value in causal_lm.state_dict().items():
        if any(part.startswith("lora_") for part in key.split(".")):
            continue  # the adapter's own tensors
        key = key.replace(".base_layer.", ".")
        weights.append((key, merged.get(key, value.detach())))
    return weights


def save_lora_export(model: PeftModel, tokenizer: PreTrainedTokenizerBase, path: str) -> None:
    """Write the merged model in HF format at `path` (transformers and vLLM load it) and the adapter in PEFT format
    at `path/adapter` (`PeftModel.from_pretrained(base, path/adapter)`)."""
    model.get_base_model().save_pretrained(path, state_dict=dict(merged_weights(model, adapted_only=False)))
    tokenizer.save_pretrained(path)
    model.save_pretrained(str(Path(path) / ADAPTER_DIR))
