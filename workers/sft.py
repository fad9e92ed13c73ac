"""The SFT worker: one data-parallel rank holding the policy in the actor's DeepSpeed engine, trained on targets.

The engine is built exactly as the RL actor's (`rlhf.workers.engine`), log-probs come from the same fused kernel
(`rlhf.workers.logprob`), and the loss is normalised the same way: divided by the response-token count of the whole
batch across all micro-batches and ranks, so the gradient does not depend on how the batch is split.
"""

from __future__ import annotations

import logging

import torch
from rlhf.workers.base import Mode, Worker, dispatch
from rlhf.workers.engine import (
    TORCH_DTYPES,
    backward_global,
    build_engine,
    deepspeed_config,
    gathered_state_dict,
    global_sum,
)
from rlhf.workers.logprob import response_log_probs
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.batch import Batch
from rlhf.sft_config import SFTConfig

logger = logging.getLogger(__name__)


def masked_nll(log_probs: torch.Tensor, response_mask: torch.Tensor, num_tokens: float) -> torch.Tensor:
    """Summed negative log-likelihood of the target tokens divided by a global token count.

    Args:
        log_probs: [B, R] float32 log-prob of each response token.
        response_mask: [B, R] 1 on target tokens, 0 on padding (prompt tokens are not in R at all).
        num_tokens: target tokens in the whole batch on all ranks (not just this micro-batch).
    """
    return -(log_probs * response_mask).sum() / max(num_tokens, 1.0)


class SFTWorker(Worker):
    """One rank of supervised fine-tuning: train on (prompt, target) batches, generate greedily, save HF weights."""

    def __init__(self, role: str, rank: int, world_size: int, cfg: SFTConfig, device: str) -> None:
        super().__init__(role, rank, world_size)
        self.cfg = cfg
        self.device = torch.device("cuda", 0) if device == "cuda" else torch.device("cpu")
        torch.manual_seed(cfg.trainer.seed + rank)
        if cfg.trainer.deterministic:
            torch.use_deterministic_algorithms(True)

    @dispatch(Mode.ALL)
    def init_model(self) -> None:
        """Load the HF model and wrap it in the actor's DeepSpeed engine (after torch.distributed is joined)."""
        cfg, s = self.cfg, self.cfg.sft
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=TORCH_DTYPES[cfg.model.dtype])
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.engine = build_engine(
            model,
            deepspeed_config(
                cfg.optim,
                mini_batch_seqs=s.batch_size,
                micro_batch_size=s.micro_batch_size_per_device,
                world_size=self.world_size,
                zero_stage=s.zero_stage,
                dtype=cfg.model.dtype,
            ),
        )

    @property
    def model(self) -> torch.nn.Module:
        return self.engine.module

    def _log_probs(self, micro: Batch) -> torch.Tensor:
        s = self.cfg.sft
        log_probs, _ = response_log_probs(
            self.model, micro.to(self.device), 1.0, fused=s.fused_kernels, backend=s.kernel_backend
        )
        return log_probs

    @dispatch(Mode.DP)
    def sft_step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step on this rank's share of the batch (gradient accumulation over micro-batches).

        Args:
            batch: input_ids / attention_mask / position_ids [B, P+R] (prompt left-padded, target right-padded),
                responses and response_mask [B, R].

        Returns:
            train/loss (mean NLL per target token over the whole batch, the same on every rank), train/grad_norm,
            train/lr, train/num_tokens.
        """
        self.engine.train()
        (num_tokens,) = global_sum(self.world_size, batch["response_mask"].sum().item())
        loss_sum = 0.0
        for micro in batch.chunk_by_size(self.cfg.sft.micro_batch_size_per_device):
            loss = masked_nll(self._log_probs(micro), micro["response_mask"].to(self.device), num_tokens)
            backward_global(self.engine, loss, self.world_size)  # steps the optimizer at the last micro-batch
            loss_sum += loss.item()
        (loss_total,) = global_sum(self.world_size, loss_sum)
        grad_norm = self.engine.get_global_grad_norm()
        return {
            "train/loss": loss_total,
            "train/grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
            "train/lr": self.engine.get_lr()[0],
            "train/num_tokens": num_tokens,
        }

    @dispatch(Mode.DP)
    @torch.no_grad()
    def eval_loss(self, batch: Batch) -> tuple[float, float]:
        """(summed NLL of the target tokens, number of target tokens) on this rank's share, no gradient."""
        self.engine.eval()
        nll, count = 0.0, 0.0
        for micro in batch.chunk_by_size(self.cfg.sft.micro_batch_size_per_device):
            mask = micro["response_mask"].to(self.device)
            nll += masked_nll(self._log_probs(micro), mask, 1.0).item()
            count += mask.sum().item()
        return nll, count

    @dispatch(Mode.DP)
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

    @dispatch(Mode.RANK0)
    def save_hf_model(self, path: str) -> None:
        """Write the model in Hugging Face format with its tokenizer (every rank gathers under ZeRO-3; rank 0 writes)."""
        weights = dict(gathered_state_dict(self.model, self.cfg.sft.zero_stage))
        if self.rank == 0:
            self.model.save_pretrained(path, state_dict=weights)
            self.tokenizer.save_pretrained(path)
            logger.info("saved the SFT model to %s", path)
