"""The SFT worker: one data-parallel rank holding the policy in the actor's DeepSpeed engine, trained on targets.

The engine is built exactly as the RL actor's (`rlhf.workers.engine`), log-probs come from the same fused kernel
(`rlhf.workers.logprob`), and the update runs through the same loop (`rlhf.workers.update_loop`) with a token-mean
NLL over the target tokens, so the gradient does not depend on how the batch is split into micro-batches and ranks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from rlhf.workers.base import Collect, Mode, Worker, device_of, dispatch, use_deterministic_algorithms
from rlhf.workers.engine import (
    TORCH_DTYPES,
    build_engine,
    deepspeed_config,
    load_engine,
    lr_schedule,
    save_engine,
    save_hf_model,
)
from rlhf.workers.logprob import response_log_probs
from rlhf.workers.lora import ADAPTER_DIR, wrap_with_lora
from rlhf.workers.update_loop import Aggregator, MicroBatchLoss, UpdateSpec, split_micro_batches, train_mini_batches
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.algorithms import aggregate_loss
from rlhf.batch import Batch
from rlhf.padding_free import setup_padding_free
from rlhf.sft_config import SFTConfig

logger = logging.getLogger(__name__)


class SFTWorker(Worker):
    """One rank of supervised fine-tuning: train on (prompt, target) batches, generate greedily, save HF weights."""

    def __init__(self, role: str, rank: int, world_size: int, cfg: SFTConfig, device: str) -> None:
        super().__init__(role, rank, world_size)
        self.cfg = cfg
        self.device = device_of(device)
        self.generator = torch.Generator().manual_seed(cfg.trainer.seed + 1000 * rank)  # checkpointed, unused
        torch.manual_seed(cfg.trainer.seed + rank)
        if cfg.trainer.deterministic:
            use_deterministic_algorithms()

    @dispatch(Mode.ALL, Collect.NONE)
    def init_model(self, total_steps: int) -> None:
        """Load the HF model and wrap it in the actor's DeepSpeed engine (after torch.distributed is joined);
        `total_steps` optimizer steps is the run's length for a decaying learning rate."""
        cfg, s = self.cfg, self.cfg.sft
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=TORCH_DTYPES[cfg.model.dtype])
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if s.lora.enabled:  # only the adapters train (and enter the optimizer); the base stays frozen
            model = wrap_with_lora(model, s.lora, cfg.model.gradient_checkpointing)
        self.engine = build_engine(
            model,
            deepspeed_config(
                cfg.optim,
                mini_batch_seqs=s.batch_size,
                micro_batch_size=s.micro_batch_size_per_device,
                world_size=self.world_size,
                zero_stage=s.zero_stage,
                dtype=cfg.model.dtype,
                offload_params=s.offload_params,
                offload_optimizer=s.offload_optimizer,
            ),
            lr_scheduler=lr_schedule(cfg.optim, total_steps),
            fused_head=s.fused_kernels,
        )
        self.layout = setup_padding_free(cfg.model.padding_free, model)

    def model_devices(self) -> dict[str, str]:
        return {"model": str(next(self.model.parameters()).device)}

    @property
    def model(self) -> torch.nn.Module:
        return self.engine.module

    def _log_probs(self, micro: Batch) -> torch.Tensor:
        s = self.cfg.sft
        log_probs, _ = response_log_probs(
            self.model,
            micro.to(self.device),
            1.0,
            fused=s.fused_kernels,
            backend=s.kernel_backend,
            padding_free=self.layout,
        )
        return log_probs

    @dispatch(Mode.DP, Collect.FIRST)
    def sft_step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step on this rank's share of the batch (gradient accumulation over micro-batches).

        Args:
            batch: input_ids / attention_mask / position_ids [B, P+R] (prompt left-padded, target right-padded),
                responses and response_mask [B, R].

        Returns:
            train/loss (mean NLL per target token over the whole batch), train/grad_norm, train/lr,
            train/skipped_update, train/num_tokens; global over ranks (rank 0's speak for all).
        """
        spec = UpdateSpec(
            prefix="train/", mini_batch_size=len(batch), epochs=1, loss_agg_mode="token-mean", norm_length=1
        )
        s = self.cfg.sft
        metrics, _ = train_mini_batches(
            self.engine,
            batch,
            self.micro_batch_loss,
            lambda mini: [
                micro
                for _, micro in split_micro_batches(
                    mini, s.micro_batch_size_per_device, s.max_tokens_per_micro_batch, self.layout, self.world_size
                )
            ],
            spec,
            self.world_size,
            None,
        )
        return metrics

    def micro_batch_loss(self, micro: Batch, agg: Aggregator) -> MicroBatchLoss:
        """Negative log-likelihood of the target tokens, normalised by the batch's global target-token count."""
        micro = micro.to(self.device)
        loss = agg(-self._log_probs(micro), micro["response_mask"])
        return MicroBatchLoss(
            loss=loss, sums={"train/loss": loss.item(), "train/num_tokens": float(micro["response_mask"].sum())}
        )

    @dispatch(Mode.DP, Collect.SUM)
    @torch.no_grad()
    def eval_loss(self, batch: Batch) -> tuple[float, float]:
        """(summed NLL of the target tokens, number of target tokens) on this rank's share, no gradient."""
        self.engine.eval()
        nll, count = 0.0, 0.0
        s = self.cfg.sft
        parts = split_micro_batches(
            batch, s.micro_batch_size_per_device, s.max_tokens_per_micro_batch, self.layout, self.world_size
        )
        for _, micro in parts:
            micro = micro.to(self.device)
            mask = micro["response_mask"]
            nll += float(aggregate_loss(-self._log_probs(micro), mask, "token-mean", global_num_tokens=1.0))
            count += mask.sum().item()
        return nll, count

    @dispatch(Mode.DP, Collect.CONCAT)
    @torch.no_grad()
    def generate(self, prompts: Batch) -> Batch:
        """Greedy responses to `prompts.non_tensors["prompt_ids"]`; adds `response_text` (up to the first EOS)."""
        self.engine.eval()
        prompt_ids = prompts.non_tensors["prompt_ids"]
        if not prompt_ids:
            return Batch(non_tensors={**prompts.non_tensors, "response_text": []})
        pad = self.tokenizer.pad_token_id
        length = max(len(p) for p in prompt_ids)
        input_ids = torch.tensor([[pad] * (length - len(p)) + list(p) for p in prompt_ids], device=self.device)
        attention_mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompt_ids], device=self.device)
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=self.cfg.sft.max_new_tokens,
            do_sample=False,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=pad,
            synced_gpus=self.cfg.sft.zero_stage == 3 and self.world_size > 1,  # ZeRO-3: every rank joins each forward
        )[:, length:]
        texts = []
        for row in out.tolist():
            if self.tokenizer.eos_token_id in row:
                row = row[: row.index(self.tokenizer.eos_token_id)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True))
        return Batch(non_tensors={**prompts.non_tensors, "response_text": texts}, meta=dict(prompts.meta))

    @dispatch(Mode.ALL, Collect.NONE)
    def save_hf_model(self, path: str) -> None:
        """Write the model in Hugging Face format with its tokenizer (every rank gathers under ZeRO-3; rank 0 writes)."""
        save_hf_model(self.model, self.tokenizer, path, self.cfg.sft.zero_stage, self.rank)
        if self.rank == 0:
            logger.info("saved the SFT model to %s", path)

    @dispatch(Mode.ALL, Collect.NONE)
    def save_checkpoint(self, directory: str) -> None:
        """The engine (weights, optimizer, LR schedule) under <directory>/model, every rank its shard; under LoRA also
        the adapter in PEFT format under <directory>/adapter (rank 0)."""
        save_engine(self.engine, Path(directory) / "model", self.rank, self.generator)
        if self.cfg.sft.lora.enabled and self.rank == 0:
            self.model.save_pretrained(str(Path(directory) / ADAPTER_DIR))

    @dispatch(Mode.ALL, Collect.NONE)
    def load_checkpoint(self, directory: str) -> None:
        load_engine(self.engine, Path(directory) / "model", self.rank, self.generator)
