"""Validation on the held-out split: greedy accuracy (mean@1) and, optionally, k samples per prompt (pass@k).

Prompts are scored with the same reward path as training; a response counts as correct when its score is > 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import PreTrainedTokenizerBase

from rlhf.batch import Batch
from rlhf.config import RLHFConfig
from rlhf.metrics import sampled_validation_metrics, validation_metrics
from rlhf.prompts import rows_to_batch

# generate(prompts, temperature, n) -> responses; score(responses) -> Batch with token_level_scores
GenerateFn = Callable[[Batch, float, int], Batch]
ScoreFn = Callable[[Batch], Batch]
TABLE_COLUMNS = ["prompt", "response", "ground_truth", "score"]


class Validator:
    def __init__(self, cfg: RLHFConfig, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]]) -> None:
        self.cfg, self.tokenizer, self.rows = cfg, tokenizer, rows

    def run(self, generate: GenerateFn, score: ScoreFn) -> tuple[dict[str, float], list[list[Any]]]:
        """Metrics (val/<source>/acc/mean@1, and pass@k / mean@k when trainer.val_num_samples=k > 0) and a table
        of the first greedy generations (prompt, response, ground truth, score)."""
        if not self.rows:
            return {}, []
        greedy = self._responses(generate, score, temperature=0.0, n=1)
        metrics = validation_metrics(greedy)
        k = self.cfg.trainer.val_num_samples
        if k > 0:
            sampled = self._responses(generate, score, temperature=self.cfg.rollout.temperature, n=k)
            metrics.update(sampled_validation_metrics(sampled, k))
        nt = greedy.non_tensors
        scores = greedy["token_level_scores"].sum(-1).tolist()
        table = [
            [self.tokenizer.decode(p), r, gt, s]
            for p, r, gt, s in zip(nt["prompt_ids"], nt["response_text"], nt["ground_truth"], scores, strict=True)
        ][:16]
        return metrics, table

    def _responses(self, generate: GenerateFn, score: ScoreFn, temperature: float, n: int) -> Batch:
        parts = []
        size = self.cfg.data.val_batch_size
        for index, start in enumerate(range(0, len(self.rows), size)):
            # Negative batch indices keep validation uids and seeds apart from training's.
            prompts = rows_to_batch(
                self.rows[start : start + size],
                self.tokenizer,
                self.cfg.data.max_prompt_length,
                -1 - index,
                self.cfg.trainer.seed,
            )
            responses = generate(prompts, temperature, n)
            responses.update(score(responses))
            parts.append(responses)
        return Batch.concat(parts)
