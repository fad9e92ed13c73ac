"""DeepSpeed engines shared by the actor, the critic and SFT: config, construction, weights out, save and load.

The update loop itself (mini-batches, micro-batches, global loss normalisation) is in `update_loop.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import deepspeed
import torch
from deepspeed.accelerator import get_accelerator
from deepspeed.runtime.base_optimizer import ZeROOptimizer
from rlhf.workers.logprob import attach_fused_head, register_zero3_head
from rlhf.workers.lora import is_lora, save_lora_export, trainable_parameters
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from transformers import (
    PreTrainedTokenizerBase,
    get_constant_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
)

from rlhf.checkpoint import capture_rng_state, restore_rng_state
from rlhf.config import OptimConfig, RLHFConfig

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def deepspeed_config(
    optim: OptimConfig,
    *,
    mini_batch_seqs: int,
    micro_batch_size: int,
    world_size: int,
    zero_stage: int,
    dtype: str,
    offload_params: bool = False,
    offload_optimizer: bool = False,
) -> dict[str, Any]:
    """DeepSpeed config for one rank (sizes were validated to divide evenly; offload_params needs ZeRO-3 and
    offload_optimizer ZeRO >= 1, which validation checks naming the keys)."""
    params: dict[str, Any] = {"lr": optim.lr, "weight_decay": optim.weight_decay}
    if optim.name in ("AdamW", "Adam"):
        # torch_adam: DeepSpeed's fused CPU Adam needs a C++ build; torch's implementation is exact and portable.
        params.update(betas=list(optim.betas), torch_adam=True)
    config: dict[str, Any] = {
        "train_batch_size": mini_batch_seqs,
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": mini_batch_seqs // (micro_batch_size * world_size),
        "optimizer": {"type": optim.name, "params": params},
        "gradient_clipping": optim.grad_clip,
        "zero_optimization": {"stage": zero_stage, **offload_config(offload_params, offload_optimizer)},
        # ZeRO shards any torch optimizer correctly; DeepSpeed only vouches for its own list by default.
        "zero_allow_untested_optimizer": True,
        # With optimizer offload the step runs on CPU with torch's AdamW (exact, no C++ build) rather than
        # DeepSpeed's compiled CPUAdam, which DeepSpeed would otherwise insist on.
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": dtype == "bfloat16"},
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    return config


def rl_optimizer_steps(cfg: RLHFConfig, ppo_epochs: int) -> int:
    """Optimizer steps a worker plans over the run: every RL step runs `ppo_epochs` passes of
    train_batch_size / ppo_mini_batch_size mini-batches (the length a decaying learning rate spans)."""
    return cfg.trainer.total_steps * ppo_epochs * (cfg.data.train_batch_size // cfg.actor.ppo_mini_batch_size)


def lr_schedule(optim: OptimConfig, total_optimizer_steps: int) -> Callable[[Optimizer], LambdaLR] | None:
    """The learning rate over optimizer steps, as transformers' schedules (which TRL and verl follow) define it: a
    linear warm-up from 0 over `optim.warmup_steps` (the first step runs at lr 0), then the peak (constant) or a half
    cosine down to min_lr_ratio x lr at step `total_optimizer_steps` (cosine). None: a constant lr, no scheduler.
    DeepSpeed builds it on its optimizer, steps it once per optimizer step and saves it in checkpoints."""
    if optim.lr_schedule == "cosine":
        return partial(
            get_cosine_with_min_lr_schedule_with_warmup,
            num_warmup_steps=optim.warmup_steps,
            num_training_steps=total_optimizer_steps,
            min_lr_rate=optim.min_lr_ratio,
        )
    if optim.warmup_steps > 0:
        return partial(get_constant_schedule_with_warmup, num_warmup_steps=optim.warmup_steps)
    return None


def offload_config(offload_params: bool, offload_optimizer: bool) -> dict[str, Any]:
    """DeepSpeed's `offload_param` / `offload_optimizer` entries: parameters and/or optimizer state in CPU memory
    between uses (pinned when the accelerator is a GPU, for faster copies)."""
    target = {"device": "cpu", "pin_memory": get_accelerator().device_name() != "cpu"}
    entries: dict[str, Any] = {}
    if offload_params:
        entries["offload_param"] = dict(target)
    if offload_optimizer:
        entries["offload_optimizer"] = dict(target)
    return entries


def build_engine(
    model: nn.Module,
    ds_config: dict[str, Any],
    fused_head: bool = False,
    lr_scheduler: Callable[[Optimizer], LambdaLR] | None = None,
) -> deepspeed.DeepSpeedEngine:
    """Wrap `model` in a DeepSpeed engine with `lr_scheduler` (see `lr_schedule`); the optimizer gets only the
    parameters that require gradients (under LoRA: the adapters). `fused_head` prepares a causal LM for the fused
    log-prob path (under ZeRO-3 the LM head's weight is then gathered for it, see `rlhf.workers.logprob`)."""
    if fused_head:
        attach_fused_head(model)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=trainable_parameters(model), config=ds_config, lr_scheduler=lr_scheduler
    )
    if fused_head and ds_config["zero_optimization"]["stage"] == 3:
        register_zero3_head(engine.module)
    return engine


def gathered_state_dict(model: nn.Module, zero_stage: int) -> list[tuple[str, torch.Tensor]]:
    """Full HF-named weights (tied lm_head included), gathered across ranks under ZeRO-3."""
    if zero_stage == 3:
        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            return [(k, v.detach().clone()) for k, v in model.state_dict().items()]
    return [(k, v.detach()) for k, v in model.state_dict().items()]


def begin_micro_batch(engine: deepspeed.DeepSpeedEngine) -> None:
    """DeepSpeed's per-micro-batch bookkeeping, which `engine.forward()` does and our loss functions (calling the
    model's modules directly, e.g. the decoder for the fused path) would skip. ZeRO-3 counts micro-steps there: without
    it, each micro-batch's gradient overwrote the previous one's instead of adding to it."""
    if isinstance(engine.optimizer, ZeROOptimizer):
        engine.optimizer.clear_backward_seen_flag()


def save_hf_model(model: nn.Module, tokenizer: PreTrainedTokenizerBase, path: str, zero_stage: int, rank: int) -> None:
    """Write `model` in Hugging Face format with its tokenizer: every rank gathers (ZeRO-3), rank 0 writes.

    Under LoRA (never with ZeRO-3) the export is the merged model plus the adapter in `<path>/adapter`.
    """
    if is_lora(model):
        if rank == 0:
            save_lora_export(model, tokenizer, path)
        return
    weights = dict(gathered_state_dict(model, zero_stage))
    if rank == 0:
        model.save_pretrained(path, state_dict=weights)
        tokenizer.save_pretrained(path)


def save_engine(engine: deepspeed.DeepSpeedEngine, directory: Path, rank: int, generator: torch.Generator) -> None:
    """DeepSpeed checkpoint (weights, optimizer, LR schedule; every rank writes its shard) + this rank's RNG state.

    Under LoRA the frozen base is left out: it is `model.path`, and the checkpoint holds the adapter and its optimizer.
    """
    engine.save_checkpoint(
        str(directory), tag="ds", save_latest=False, exclude_frozen_parameters=is_lora(engine.module)
    )
    torch.save({"rng": capture_rng_state(), "generator": generator.get_state()}, directory / f"rank{rank}_state.pt")


def load_engine(engine: deepspeed.DeepSpeedEngine, directory: Path, rank: int, generator: torch.Generator) -> None:
    """Inverse of `save_engine`."""
    load_path, _ = engine.load_checkpoint(
        str(directory),
        tag="ds",
        load_optimizer_states=True,
        load_lr_scheduler_states=True,
        load_module_strict=not is_lora(engine.module),  # LoRA: the checkpoint holds only the adapter
    )
    if load_path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint under {directory}")
    state = torch.load(directory / f"rank{rank}_state.pt", weights_only=False)
    restore_rng_state(state["rng"])
    generator.set_state(state["generator"])
