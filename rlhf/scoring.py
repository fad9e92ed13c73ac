"""Stage 2 of the RL step: the reward of every generated response, as token-level scores.

Sources add up on the last token the policy generated: rule functions (`reward.rule_weight`), a reward model
(`reward.rm_weight`) and the agent environment's per-turn rewards (`agent.env_reward_weight`). Two algorithms shape
the result: DAPO's overlong penalty and ReMax's greedy baseline (a second, greedy generation of the same prompts).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlhf.algorithms import overlong_reward_penalty
from rlhf.batch import Batch
from rlhf.cluster import Groups
from rlhf.config import RLHFConfig
from rlhf.sequences import last_token_index

Generate = Callable[..., Batch]
"""generate(prompts, temperature=..., n=...) -> Batch: the rollout (ReMax's baseline generates greedily)."""


class Scorer:
    """Scores generated batches with the reward groups; holds no state between steps."""

    def __init__(self, cfg: RLHFConfig, groups: Groups, generate: Generate) -> None:
        self.cfg, self.groups, self.generate = cfg, groups, generate

    def score_generated(self, batch: Batch) -> Batch:
        """`batch` with the `score` fields, token_level_scores shaped by DAPO's overlong penalty when it is on."""
        algo = self.cfg.algorithm
        batch.update(self.score(batch))
        if algo.overlong.enable:
            response_length = batch["attention_mask"][:, -batch["response_mask"].shape[1] :].sum(-1)
            penalty = overlong_reward_penalty(
                response_length.long(),  # every response token: a multi-turn response's observations count
                self.cfg.rollout.max_response_length,
                algo.overlong.buffer_len,
                algo.overlong.penalty_factor,
            )
            batch["token_level_scores"][torch.arange(len(batch)), last_token_index(batch["response_mask"])] += penalty
        return batch

    def remax_baseline(self, prompts: Batch) -> torch.Tensor:
        """[B * n]: ReMax's baseline, the reward of the greedy response to each row's prompt."""
        greedy = self.generate(prompts, temperature=0.0, n=1)
        return self.score(greedy)["token_level_scores"].sum(-1).repeat_interleave(self.cfg.rollout.n)

    def score(self, batch: Batch) -> Batch:
        """token_level_scores [B, R] = rule_weight * rule score + rm_weight * reward-model score
        + agent.env_reward_weight * environment reward, on the last model token.

        Also rule_scores [B] (the rule function's own score, for validation accuracy; the total score when no rule
        function is on) and reward_extra/* values.
        """
        g, rw, agent = self.groups, self.cfg.reward, self.cfg.agent
        if rw.rule_weight > 0:
            scored = g.reward.compute_score(batch)
            scored["rule_scores"] = scored["token_level_scores"].sum(-1)
            scored["token_level_scores"] = scored["token_level_scores"] * rw.rule_weight
        else:
            scored = Batch({"token_level_scores": torch.zeros_like(batch["response_mask"])})
        if g.reward_model is not None:
            rm_scores = g.reward_model.compute_rm_score(batch)["rm_scores"]
            last = last_token_index(batch["response_mask"])
            scored["token_level_scores"][torch.arange(len(batch)), last] += rw.rm_weight * rm_scores
            scored["rm_scores"] = rm_scores
        if "env_rewards" in batch and agent.env_reward_weight != 0:
            # Multi-turn episodes: the environment's per-turn rewards, summed, on the last token the policy generated.
            last = last_token_index(batch["response_mask"])
            scored["token_level_scores"][torch.arange(len(batch)), last] += (
                agent.env_reward_weight * batch["env_rewards"]
            )
        if "rule_scores" not in scored:  # no rule function: "correct" is judged on the total reward
            scored["rule_scores"] = scored["token_level_scores"].sum(-1)
        return scored
