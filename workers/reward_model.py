"""The reward-model worker group: a sequence-classification model scoring (prompt, response) in batches.

The reward model may use its own tokenizer: the text (decoded prompt + response text) is re-encoded with it.
Sequences are right-padded and scored at their last real token, which is where the classification head's score
of a causal model lives.
"""

from __future__ import annotations

import logging

import torch
from rlhf.workers.base import Collect, Mode, Worker, device_of, dispatch
from rlhf.workers.engine import TORCH_DTYPES
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlhf.batch import Batch
from rlhf.config import RLHFConfig

logger = logging.getLogger(__name__)


class RewardModelWorker(Worker):
    """Scores responses with `reward.model_path`; returns rm_scores [B] float32."""

    def __init__(
        self, role: str, rank: int, world_size: int, cfg: RLHFConfig, policy_tokenizer_path: str, device: str
    ) -> None:
        super().__init__(role, rank, world_size)
        self.cfg = cfg
        self.device = device_of(device)  # CUDA: the GPU Ray reserved for this worker, seen as cuda:0
        path = cfg.reward.model_path
        self.policy_tokenizer = AutoTokenizer.from_pretrained(policy_tokenizer_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, dtype=TORCH_DTYPES[cfg.model.dtype]
        )
        self.model.to(self.device).eval().requires_grad_(False)

    def model_devices(self) -> dict[str, str]:
        return {"reward_model": str(next(self.model.parameters()).device)}

    @dispatch(Mode.DP, Collect.CONCAT)
    @torch.no_grad()
    def compute_rm_score(self, batch: Batch) -> Batch:
        texts = [
            self.policy_tokenizer.decode(prompt, skip_special_tokens=True) + response
            for prompt, response in zip(
                batch.non_tensors["prompt_ids"], batch.non_tensors["response_text"], strict=True
            )
        ]
        scores = []
        for start in range(0, len(texts), self.cfg.reward.rm_micro_batch_size):
            chunk = texts[start : start + self.cfg.reward.rm_micro_batch_size]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, padding_side="right")
            enc = enc.to(self.device)
            logits = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits  # [b, 1]
            scores.append(logits[:, 0].float().cpu())
        return Batch({"rm_scores": torch.cat(scores)})
