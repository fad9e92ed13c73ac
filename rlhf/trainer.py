"""The RL loop on the controller: one method per stage, reading like the algorithm.

One GRPO step (PPO adds values and a critic update):
    1. generate      n responses per prompt with vLLM (its log-probs kept as rollout_log_probs)
    2. reward        token_level_scores from the reward worker group
    3. old log-prob  the actor's log-probs (and entropy) of the sampled tokens
    4. ref log-prob  the frozen reference's log-probs, only when a KL term is on
    5. advantages    KL-in-reward (optional), then the configured estimator
    6. update        PPO epochs over mini-batches on the actor group
    7. sync          actor weights -> vLLM, so the next rollout is on-policy
Every stage is timed as `timing_s/<stage>`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import ray
import torch
from tqdm import tqdm
from transformers import AutoConfig, AutoTokenizer

from rlhf.algorithms import AdvantageInputs, apply_kl_penalty, get_advantage_fn, make_kl_controller
from rlhf.batch import Batch
from rlhf.cluster import ActorRolloutRefGroup, RewardGroup, create_groups, resolve_device, start_ray
from rlhf.config import RLHFConfig
from rlhf.data import PromptDataLoader
from rlhf.metrics import data_metrics, throughput_metrics, validation_metrics
from rlhf.prompts import load_split, resolve_data_files, rows_to_batch
from rlhf.tracking import Tracker

logger = logging.getLogger(__name__)


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[f"timing_s/{stage}"] = time.perf_counter() - start


def group_ids(uids: list[str]) -> torch.Tensor:
    """[B] long: one integer per distinct prompt uid, in order of first appearance."""
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(u, len(index)) for u in uids], dtype=torch.long)


class RLTrainer:
    """setup -> fit -> cleanup. The driver owns data, algorithm state and logging; workers own models."""

    def __init__(self, cfg: RLHFConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.global_step = 0
        self.tracker: Tracker | None = None
        self.policy: ActorRolloutRefGroup | None = None
        self.reward: RewardGroup | None = None

    def setup(self) -> None:
        cfg = self.cfg
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        train_files, val_files = resolve_data_files(cfg.data, cfg.trainer.seed)
        self.train_rows = load_split(train_files, self.tokenizer, cfg.data.max_prompt_length)
        self.val_rows = load_split(val_files, self.tokenizer, cfg.data.max_prompt_length) if val_files else []
        self.loader = PromptDataLoader(
            self.train_rows, cfg.data.train_batch_size, shuffle=cfg.data.shuffle, seed=cfg.trainer.seed
        )
        self.kl_ctrl = make_kl_controller(cfg.algorithm.kl_ctrl)
        self.num_devices = cfg.trainer.nnodes * cfg.trainer.num_devices_per_node
        model_config = AutoConfig.from_pretrained(cfg.model.path)
        self.num_params = _approx_num_params(model_config)
        device = resolve_device(cfg.trainer.device)
        self.device_name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
        start_ray(cfg)
        self.policy, self.reward = create_groups(cfg, need_ref=cfg.algorithm.needs_ref())
        self.tracker = Tracker(
            cfg.trainer.logger, cfg.trainer.project_name, cfg.trainer.experiment_name, self.run_dir, asdict(cfg)
        )

    def fit(self) -> dict[str, float]:
        """Run `trainer.total_steps` RL steps; returns the last step's metrics."""
        t = self.cfg.trainer
        metrics: dict[str, float] = {}
        for _ in tqdm(range(self.global_step, t.total_steps), desc="RL steps", initial=self.global_step,
                      total=t.total_steps, dynamic_ncols=True):
            metrics = self.train_step()
            if t.test_freq > 0 and (self.global_step % t.test_freq == 0 or self.global_step == t.total_steps):
                metrics.update(self.validate())
            self.tracker.log(metrics, step=self.global_step)
        self.policy.save_hf_model(str(self.run_dir / "final_model"))
        return metrics

    def train_step(self) -> dict[str, float]:
        """Advance the global step on the next batch of prompts from the loader."""
        self.global_step += 1
        rows = self.loader.next_batch()
        prompts = rows_to_batch(rows, self.tokenizer, self.cfg.data.max_prompt_length, self.global_step,
                                self.cfg.trainer.seed)
        return self.step(prompts)

    def step(self, prompts: Batch) -> dict[str, float]:
        """One RL step on a batch of prompts; returns its metrics."""
        timings: dict[str, float] = {}
        with timed(timings, "step"):
            with timed(timings, "gen"):  # 1. generate
                batch = self.policy.generate(prompts)
            with timed(timings, "reward"):  # 2. reward
                batch.update(self.reward.compute_score(batch))
            with timed(timings, "old_log_prob"):  # 3. old log-prob
                batch.update(self.policy.compute_log_prob(batch))
            if self.cfg.algorithm.needs_ref():
                with timed(timings, "ref"):  # 4. ref log-prob
                    batch.update(self.policy.compute_ref_log_prob(batch))
            with timed(timings, "adv"):  # 5. advantages
                adv_metrics = self.compute_advantages(batch)
            with timed(timings, "update_actor"):  # 6. update
                actor_metrics = self.policy.update_actor(batch)
            with timed(timings, "sync_weights"):  # 7. sync
                self.policy.sync_weights()
        metrics = {**data_metrics(batch), **adv_metrics, **actor_metrics, **timings}
        metrics.update(throughput_metrics(batch, timings["timing_s/step"], self.num_devices, self.num_params,
                                          self.device_name))
        return metrics

    def compute_advantages(self, batch: Batch) -> dict[str, float]:
        """token_level_rewards (scores minus the KL penalty when it is in the reward), then advantages/returns."""
        algo, metrics = self.cfg.algorithm, {}
        if algo.use_kl_in_reward:
            rewards, metrics = apply_kl_penalty(
                batch["token_level_scores"], batch["old_log_probs"], batch["ref_log_probs"], batch["response_mask"],
                self.kl_ctrl.value, algo.kl_penalty,
            )
            self.kl_ctrl.update(metrics["actor/reward_kl_penalty"], n_steps=len(batch))
        else:
            rewards = batch["token_level_scores"]
        batch["token_level_rewards"] = rewards
        inputs = AdvantageInputs(
            token_level_rewards=rewards,
            response_mask=batch["response_mask"],
            group_ids=group_ids(batch.non_tensors["uid"]),
            values=batch.tensors.get("values"),
        )
        batch["advantages"], batch["returns"] = get_advantage_fn(algo.advantage)(inputs, algo)
        return metrics

    def validate(self) -> dict[str, float]:
        """Greedy responses on the held-out split: val/<source>/acc/mean@1."""
        if not self.val_rows:
            return {}
        parts = []
        for start in range(0, len(self.val_rows), self.cfg.data.val_batch_size):
            rows = self.val_rows[start : start + self.cfg.data.val_batch_size]
            prompts = rows_to_batch(rows, self.tokenizer, self.cfg.data.max_prompt_length, -1, self.cfg.trainer.seed)
            responses = self.policy.generate(prompts, temperature=0.0, n=1)
            responses.update(self.reward.compute_score(responses))
            parts.append(responses)
        batch = Batch.concat(parts)
        columns = ["prompt", "response", "ground_truth", "score"]
        scores = batch["token_level_scores"].sum(-1).tolist()
        table = [
            [self.tokenizer.decode(p), r, g, s]
            for p, r, g, s in zip(batch.non_tensors["prompt_ids"], batch.non_tensors["response_text"],
                                  batch.non_tensors["ground_truth"], scores)
        ][:16]
        self.tracker.log_table("val/generations", columns, table, step=self.global_step)
        return validation_metrics(batch)

    def cleanup(self) -> None:
        if self.tracker is not None:
            self.tracker.finish()
        if self.reward is not None:
            self.reward.close()
        if ray.is_initialized():
            ray.shutdown()


def _approx_num_params(config: object) -> int:
    """Parameters of a decoder-only transformer from its config (for MFU); 0 when the shape is unknown."""
    try:
        h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size  # type: ignore[attr-defined]
        inter = config.intermediate_size  # type: ignore[attr-defined]
    except AttributeError:
        return 0
    return layers * (4 * h * h + 3 * h * inter) + vocab * h
