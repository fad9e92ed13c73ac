"""Validation on the held-out split: greedy accuracy (mean@1) and, optionally, k samples per prompt (mean/best/maj@k).

Prompts are scored with the same reward path as training. A response is correct when the reward function says so
through an `acc` value in its dict return (as verl's rewards do), else when its rule score reaches the task's full
reward (`reward.full_score`): partial credit, such as a format bonus, never counts as a correct answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rlhf.batch import Batch
from rlhf.config import RLHFConfig
from rlhf.data.tokenize import ToolsOf
from rlhf.metrics import agent_metrics, validation_metrics
from rlhf.prompts import rows_to_batch

# generate(prompts, temperature, n) -> responses; score(responses) -> Batch with token_level_scores, rule_scores
GenerateFn = Callable[[Batch, float, int], Batch]
ScoreFn = Callable[[Batch], Batch]
TABLE_COLUMNS = ["prompt", "response", "ground_truth", "score", "correct"]


def correctness(scored: Batch, full_score: float) -> torch.Tensor:
    """[B] float 0/1: the reward function's own `acc` where it returns one, else rule score >= full_score.

    Args:
        scored: holds `rule_scores` [B] (before reward.rule_weight) and, if the function returned it,
            `reward_extra/acc` [B] (NaN on items that lacked it).
    """
    by_score = (scored["rule_scores"] >= full_score).float()
    if "reward_extra/acc" not in scored:
        return by_score
    acc = scored["reward_extra/acc"]
    return torch.where(torch.isnan(acc), by_score, (acc > 0.5).float())


class Validator:
    def __init__(
        self,
        cfg: RLHFConfig,
        tokenizer: PreTrainedTokenizerBase,
        rows: list[dict[str, Any]],
        tools_of: ToolsOf | None = None,
    ) -> None:
        """`tools_of`: each row's tool schemas, rendered into its prompt (agent rollouts)."""
        self.cfg, self.tokenizer, self.rows, self.tools_of = cfg, tokenizer, rows, tools_of

    def run(self, generate: GenerateFn, score: ScoreFn) -> tuple[dict[str, float], list[list[Any]]]:
        """Metrics (verl's `val-core/<source>/acc/mean@1`, and mean/best/maj@k when trainer.val_num_samples=k > 0)
        and a table of the first greedy generations (prompt, response, ground truth, score, correct)."""
        if not self.rows:
            return {}, []
        greedy = self._responses(generate, score, temperature=0.0, n=1)
        metrics = self._metrics(greedy, n=1)
        if "agent_num_turns" in greedy:  # multi-turn episodes: how the greedy policy used its turns and tools
            metrics.update({f"val-aux/{k}": v for k, v in agent_metrics(greedy).items() if k.startswith("agent/")})
        k = self.cfg.trainer.val_num_samples
        if k > 0:
            sampled = self._responses(generate, score, temperature=self.cfg.rollout.temperature, n=k)
            metrics.update(self._metrics(sampled, n=k))
        nt = greedy.non_tensors
        scores = greedy["token_level_scores"].sum(-1).tolist()
        shown = nt.get("trajectory_text", nt["response_text"])  # a multi-turn episode: every turn and observation
        table = [
            [self.tokenizer.decode(p), r, gt, s, bool(c)]
            for p, r, gt, s, c in zip(
                nt["prompt_ids"], shown, nt["ground_truth"], scores, greedy["acc"].tolist(), strict=True
            )
        ][:16]
        return metrics, table

    def _metrics(self, responses: Batch, n: int) -> dict[str, float]:
        nt = responses.non_tensors
        return validation_metrics(
            responses["acc"].tolist(),
            responses["token_level_scores"].sum(-1).tolist(),
            nt["uid"],
            nt["data_source"],
            nt["response_text"],
            n,
        )

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
                prompt_key=self.cfg.data.prompt_key,
                tools_of=self.tools_of,
            )
            responses = generate(prompts, temperature, n)
            responses.update(score(responses))
            responses["acc"] = correctness(responses, self.cfg.reward.full_score)
            parts.append(responses)
        return Batch.concat(parts)
