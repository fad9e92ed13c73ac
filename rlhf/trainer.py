"""The RL loop on the controller: one method per stage, reading like the algorithm.

One step (GRPO shown; PPO adds the critic's values and update):
    1. generate      n responses per prompt with vLLM (its log-probs kept as rollout_log_probs)
    2. reward        rule functions and/or a reward model -> token_level_scores
    3. old log-prob  the actor's log-probs (and entropy) of the sampled tokens
    4. ref log-prob  the frozen reference's log-probs, only when a KL term is on
    5. values        the critic's values, only for GAE
    6. advantages    KL-in-reward (optional), then the configured estimator
    7. update        critic, then actor (after the critic's warm-up), PPO epochs over mini-batches
    8. sync          actor weights -> vLLM, so the next rollout is on-policy (with async_training.max_staleness=k,
                     only when the rollout would otherwise fall more than k updates behind)
Every stage is timed as `timing_s/<stage>`. Generation runs through `RolloutPipeline`: with a staleness bound the
next batches generate (on split rollout workers) while this one trains.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import ray
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import AutoConfig, AutoTokenizer

from rlhf.agent.env import row_tool_schemas
from rlhf.agent.runtime import resolve_plugins
from rlhf.algorithms import AdvantageInputs, apply_kl_penalty, get_advantage_fn, make_kl_controller
from rlhf.batch import Batch, group_ids
from rlhf.checkpoint import (
    STEP_METRICS,
    CheckpointError,
    CheckpointManager,
    CheckpointMeta,
    ResumePoint,
    capture_rng_state,
    restore_rng_state,
)
from rlhf.cluster import Groups, create_groups
from rlhf.config import RLHFConfig
from rlhf.data import PromptDataLoader
from rlhf.data.tokenize import ToolsOf
from rlhf.dynamic_sampling import fill_with_informative_groups
from rlhf.metrics import approx_num_params, data_metrics, mfu_metrics, throughput_metrics, update_flops
from rlhf.prompts import load_split, resolve_data_files, rows_to_batch
from rlhf.ray_setup import resolve_device, start_ray
from rlhf.rewards import check_data_sources
from rlhf.rollout_client import make_rollout_client
from rlhf.rollout_pipeline import RolloutPipeline
from rlhf.schema import ConfigError
from rlhf.scoring import Scorer
from rlhf.tracking import Tracker
from rlhf.validation import TABLE_COLUMNS, Validator
from rlhf.workers.group import WorkerDiedError

logger = logging.getLogger(__name__)

PIPELINE_STATE = "rollout_pipeline.pt"


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the block's wall time to `timings["timing_s/<stage>"]` (repeated stages accumulate)."""
    start = time.perf_counter()
    yield
    key = f"timing_s/{stage}"
    timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


class RLTrainer:
    """setup -> fit -> cleanup. The driver owns data, algorithm state and logging; workers own models."""

    def __init__(self, cfg: RLHFConfig, run_dir: Path, resume: str) -> None:
        """`resume` is `trainer.resume` on a first attempt and "auto" after an automatic restart."""
        self.cfg, self.run_dir, self.resume = cfg, run_dir, resume
        self.global_step = 0
        self.num_prompt_batches = 0  # batches drawn from the loader (>= global_step with dynamic sampling)
        self.consecutive_skipped = 0  # NaN/inf updates in a row
        self.stop_signal: int | None = None  # set by SIGINT/SIGTERM: finish the step, checkpoint, stop
        self.checkpoints = CheckpointManager(run_dir / "checkpoints", cfg.trainer.keep_last)
        self.tracker: Tracker | None = None
        self.groups: Groups | None = None

    def setup(self) -> None:
        cfg = self.cfg
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        train_files, val_files = resolve_data_files(cfg.data, cfg.trainer.seed)
        d = cfg.data
        # Agent rollouts: prompts are rendered with each row's tool schemas (the chat template shows them).
        self.tools_of: ToolsOf | None = None
        if cfg.agent.enable:
            registry, _ = resolve_plugins(cfg.agent)
            self.tools_of = lambda row: row_tool_schemas(row, registry)
        split = dict(prompt_key=d.prompt_key, tools_of=self.tools_of)
        try:  # data problems are the user's input: reported like config errors, before Ray starts
            self.train_rows = load_split(train_files, self.tokenizer, d.max_prompt_length, **split)
            val_rows = load_split(val_files, self.tokenizer, d.max_prompt_length, **split)
            if cfg.reward.rule_weight > 0:  # rule functions score every row: each data_source needs one
                check_data_sources({r["data_source"] for r in self.train_rows + val_rows}, cfg.reward.function)
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(str(e)) from e
        self.validator = Validator(cfg, self.tokenizer, val_rows, tools_of=self.tools_of)
        self.loader = PromptDataLoader(
            self.train_rows, cfg.data.train_batch_size, shuffle=cfg.data.shuffle, seed=cfg.trainer.seed
        )
        self.kl_ctrl = make_kl_controller(cfg.algorithm.kl_ctrl)
        self.old_log_prob_from_update = old_log_prob_from_update(cfg)
        self.num_devices = cfg.trainer.nnodes * cfg.trainer.num_devices_per_node
        model_config = AutoConfig.from_pretrained(cfg.model.path)
        self.num_params = approx_num_params(model_config)
        # verl's attention term: 6 x hidden x layers FLOPs per pair of tokens of one sequence (forward + backward).
        self.attention_flops = (
            6 * getattr(model_config, "hidden_size", 0) * getattr(model_config, "num_hidden_layers", 0)
        )
        device = resolve_device(cfg.trainer.device)
        self.device_name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
        self.checkpoint_meta = CheckpointMeta.of_model(cfg.model.path, self.num_devices, cfg.actor.lora.rank)
        checkpoint = self.checkpoints.resolve(self.resume, self.checkpoint_meta)  # verified before Ray starts
        a = cfg.async_training
        start_ray(
            cfg.trainer, self.run_dir, extra_cpus=a.num_rollout_workers * cfg.trainer.cpus_per_worker * a.is_split
        )
        self.groups = create_groups(cfg, self.run_dir)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        self.rollout_client = make_rollout_client(self.groups, a)  # split: the engines get the (resumed) weights
        self.scorer = Scorer(cfg, self.groups, self.rollout_client.generate)
        self.pipeline = RolloutPipeline(
            self.rollout_client,
            self.next_prompts,
            a.max_staleness,
            steps_left=lambda: cfg.trainer.total_steps - self.global_step,
        )
        if checkpoint is not None and (checkpoint.path / PIPELINE_STATE).is_file():
            self.pipeline.load_state_dict(torch.load(checkpoint.path / PIPELINE_STATE, weights_only=False))
        self.tracker = Tracker(
            cfg.trainer.logger,
            cfg.trainer.project_name,
            cfg.trainer.experiment_name,
            self.run_dir,
            asdict(cfg),
            resume_step=self.global_step if checkpoint is not None else None,
        )
        if checkpoint is not None and (checkpoint.path / STEP_METRICS).is_file():
            self.tracker.restore_row(json.loads((checkpoint.path / STEP_METRICS).read_text()), self.global_step)

    def fit(self) -> dict[str, float]:
        """Run `trainer.total_steps` RL steps; returns the last step's metrics.

        SIGINT/SIGTERM finish the current step, write a checkpoint and return early.
        """
        t = self.cfg.trainer
        metrics: dict[str, float] = {}
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        if t.val_before_train and t.test_freq > 0 and self.global_step == 0:
            self.tracker.log(self.validate(), step=0)
        try:
            # Log lines go through tqdm.write, so the progress bar is never torn by them.
            with logging_redirect_tqdm():
                for _ in tqdm(
                    range(self.global_step, t.total_steps),
                    desc="RL steps",
                    initial=self.global_step,
                    total=t.total_steps,
                    dynamic_ncols=True,
                ):
                    metrics = self.train_step()
                    self._check_health(metrics)
                    if t.test_freq > 0 and (self.global_step % t.test_freq == 0 or self.global_step == t.total_steps):
                        metrics.update(self.validate())
                    stopping = self.stop_signal is not None
                    if stopping or (
                        t.save_freq > 0 and (self.global_step % t.save_freq == 0 or self.global_step == t.total_steps)
                    ):
                        metrics["timing_s/save_checkpoint"] = self.save_checkpoint(metrics)
                    self.tracker.log(metrics, step=self.global_step)
                    if stopping:
                        logger.warning("stopped on signal %d after step %d", self.stop_signal, self.global_step)
                        return metrics
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.groups.policy.save_hf_model(str(self.run_dir / "final_model"))
        return metrics

    def _request_stop(self, signum: int, frame: object) -> None:
        if self.stop_signal is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.stop_signal = signum
        logger.warning("signal %d: finishing the current step, then checkpointing (send again to abort)", signum)

    def _check_health(self, metrics: dict[str, float]) -> None:
        """A NaN/inf update was skipped by the optimizer; too many in a row stop the run."""
        if metrics.get("actor/skipped_update", 0.0) > 0:
            self.consecutive_skipped += 1
            logger.warning(
                "step %d: non-finite loss or gradient (grad_norm=%s): update skipped (%d in a row)",
                self.global_step,
                metrics.get("actor/grad_norm"),
                self.consecutive_skipped,
            )
            if self.consecutive_skipped >= self.cfg.trainer.max_consecutive_skipped_updates:
                raise RuntimeError(
                    f"{self.consecutive_skipped} consecutive updates had a NaN/inf loss or gradient (up to step "
                    f"{self.global_step}); stopping (trainer.max_consecutive_skipped_updates="
                    f"{self.cfg.trainer.max_consecutive_skipped_updates})"
                )
        else:
            self.consecutive_skipped = 0

    def save_checkpoint(self, step_metrics: dict[str, float]) -> float:
        """Workers write their engines and the HF policy, the driver its state and the step's metrics row (a run
        killed after the save but before the row was logged gets the row back on resume); see rlhf.checkpoint.
        Returns the seconds the save took."""

        def write(directory: Path) -> None:
            self.groups.policy.save_checkpoint(str(directory))
            if self.groups.critic is not None:
                self.groups.critic.save_checkpoint(str(directory / "critic"))
            state = {
                "global_step": self.global_step,
                "num_prompt_batches": self.num_prompt_batches,
                "consecutive_skipped": self.consecutive_skipped,
                "loader": self.loader.state_dict(),
                "kl_ctrl": self.kl_ctrl.state_dict(),
            }
            (directory / "trainer_state.json").write_text(json.dumps(state, indent=2))
            (directory / STEP_METRICS).write_text(json.dumps(step_metrics, default=float))
            torch.save(capture_rng_state(), directory / "controller_rng.pt")
            torch.save(self.pipeline.state_dict(), directory / PIPELINE_STATE)  # generations ahead (async runs)

        start = time.perf_counter()
        self.checkpoints.save(self.global_step, write, self.checkpoint_meta)
        return time.perf_counter() - start

    def load_checkpoint(self, point: ResumePoint) -> None:
        """Workers load their engines from `point`, the driver its own state (already read and verified)."""
        try:
            self.groups.policy.load_checkpoint(str(point.path))
            if self.groups.critic is not None:
                self.groups.critic.load_checkpoint(str(point.path / "critic"))
        except WorkerDiedError as e:
            raise CheckpointError(self.checkpoints.load_failure(point.path, e)) from e
        state = point.trainer_state
        self.global_step = state["global_step"]
        self.num_prompt_batches = state["num_prompt_batches"]
        self.consecutive_skipped = state["consecutive_skipped"]
        self.loader.load_state_dict(state["loader"])
        self.kl_ctrl.load_state_dict(state["kl_ctrl"])
        restore_rng_state(point.controller_rng)
        logger.info("resumed from %s at step %d", point.path, self.global_step)

    def next_prompts(self) -> Batch:
        """The loader's next batch; its index (not the step: DAPO may draw several per step) names uids and seeds."""
        self.num_prompt_batches += 1
        rows = self.loader.next_batch()
        d = self.cfg.data
        return rows_to_batch(
            rows,
            self.tokenizer,
            d.max_prompt_length,
            self.num_prompt_batches,
            self.cfg.trainer.seed,
            prompt_key=d.prompt_key,
            tools_of=self.tools_of,
        )

    def train_step(self) -> dict[str, float]:
        """Advance the global step on the next batch the pipeline generated from the loader's prompts."""
        self.global_step += 1
        return self.step()

    def step(self) -> dict[str, float]:
        """One RL step on the next generated batch; returns its metrics."""
        g, algo = self.groups, self.cfg.algorithm
        timings: dict[str, float] = {}
        metrics: dict[str, float] = {}
        with timed(timings, "step"):
            batch, rollout_metrics = self.rollout(timings)  # 1-2. generate (or take the batch generated ahead), score
            update_actor = self.global_step > self.cfg.critic.warmup_steps or g.critic is None
            if not (update_actor and self.old_log_prob_from_update):
                with timed(timings, "old_log_prob"):  # 3. old log-prob (else the update's own forward gives them)
                    batch.update(g.policy.compute_log_prob(batch))
            if algo.needs_ref():
                with timed(timings, "ref"):  # 4. ref log-prob
                    batch.update(g.policy.compute_ref_log_prob(batch))
            if g.critic is not None:
                with timed(timings, "values"):  # 5. values
                    batch.update(g.critic.compute_values(batch))
            with timed(timings, "adv"):  # 6. advantages
                metrics.update(self.compute_advantages(batch))
            if g.critic is not None:
                with timed(timings, "update_critic"):  # 7. update
                    metrics.update(g.critic.update_critic(batch))
            if update_actor:
                with timed(timings, "update_actor"):
                    result = g.policy.update_actor(batch)
                metrics.update(result.meta["metrics"])
                if len(result):  # on-policy: old_log_probs and entropy from the update's forward
                    batch.update(Batch(result.tensors))
            metrics.update(self.pipeline.finish_step(update_actor, timings))  # 8. sync (as the staleness bound needs)
        step_s = timings["timing_s/step"]
        metrics["async/idle_frac/actor"] = timings.get("timing_s/wait_rollout", 0.0) / step_s
        metrics["async/idle_frac/rollout"] = min(1.0, rollout_metrics.get("timing_s/wait_train", 0.0) / step_s)
        metrics.update({**data_metrics(batch), **rollout_metrics, **timings})
        metrics.update(throughput_metrics(batch, timings, self.num_devices))
        if "timing_s/update_actor" in timings:
            lengths = batch["attention_mask"].sum(-1).tolist()
            flops = update_flops(self.num_params, self.attention_flops, lengths, self.cfg.actor.ppo_epochs)
            metrics.update(mfu_metrics(flops, timings["timing_s/update_actor"], self.num_devices, self.device_name))
        metrics["training/global_step"] = float(self.global_step)
        metrics["training/epoch"] = float(self.loader.epoch)
        return metrics

    def rollout(self, timings: dict[str, float]) -> tuple[Batch, dict[str, float]]:
        """Take the pipeline's next batch and score it; with DAPO dynamic sampling (synchronous only), keep
        generating until enough groups carry a signal."""
        ds = self.cfg.algorithm.dynamic_sampling
        with timed(timings, "gen"):
            prompts, batch, async_metrics = self.pipeline.take(timings)
        batch = self.score_generated(prompts, batch, timings)
        if not ds.enable:
            return batch, async_metrics
        batch, dapo_metrics = fill_with_informative_groups(
            batch,
            lambda: self.generate_and_score(self.next_prompts(), timings),
            self.cfg.data.train_batch_size,
            ds.max_num_gen_batches,
        )
        return batch, {**async_metrics, **dapo_metrics}

    def generate_and_score(self, prompts: Batch, timings: dict[str, float]) -> Batch:
        """n responses per prompt, generated now (DAPO's refill rounds), scored as `score_generated` does."""
        with timed(timings, "gen"):
            batch = self.rollout_client.generate(prompts)
        batch["policy_version"] = torch.full((len(batch),), self.pipeline.engine_version, dtype=torch.long)
        return self.score_generated(prompts, batch, timings)

    def score_generated(self, prompts: Batch, batch: Batch, timings: dict[str, float]) -> Batch:
        """token_level_scores of the generated `batch` (rlhf.scoring), and ReMax's greedy baseline."""
        with timed(timings, "reward"):
            batch = self.scorer.score_generated(batch)
        if self.cfg.algorithm.advantage == "remax":
            with timed(timings, "gen_baseline"):
                batch["baseline_scores"] = self.scorer.remax_baseline(prompts)
        return batch

    def compute_advantages(self, batch: Batch) -> dict[str, float]:
        """token_level_rewards (scores minus the KL penalty when it is in the reward), then advantages/returns."""
        algo, metrics = self.cfg.algorithm, {}
        if algo.use_kl_in_reward:
            rewards, metrics = apply_kl_penalty(
                batch["token_level_scores"],
                batch["old_log_probs"],
                batch["ref_log_probs"],
                batch["response_mask"],
                self.kl_ctrl.value,
                algo.kl_penalty,
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
            baseline_scores=batch.tensors.get("baseline_scores"),
        )
        batch["advantages"], batch["returns"] = get_advantage_fn(algo.advantage)(inputs, algo)
        return metrics

    def validate(self) -> dict[str, float]:
        """Held-out accuracy (greedy mean@1, sampled mean/best/maj@k) and a table of generations to the tracker."""
        start = time.perf_counter()
        self.pipeline.sync({})  # with a staleness bound the engines may lag: validate the current policy
        metrics, table = self.validator.run(
            lambda prompts, temperature, n: self.rollout_client.generate(prompts, temperature=temperature, n=n),
            self.scorer.score,
        )
        if table:
            self.tracker.log_table("val/generations", TABLE_COLUMNS, table, step=self.global_step)
        metrics["timing_s/testing"] = time.perf_counter() - start
        return metrics

    def cleanup(self) -> None:
        if self.tracker is not None:
            self.tracker.finish()
        if self.groups is not None:
            self.groups.reward.close()
        if ray.is_initialized():
            ray.shutdown()


def old_log_prob_from_update(cfg: RLHFConfig) -> bool:
    """Whether the old log-probs can come from the actor update's own forward (issue 13: no redundant pass).

    Only when that forward runs the very policy that sampled the batch, before any optimizer step: one PPO epoch
    and one mini-batch per RL step. The advantages must not need the old log-probs (KL in the reward does), and
    `actor.recompute_old_log_prob=always` keeps the separate pass.
    """
    a = cfg.actor
    return (
        a.recompute_old_log_prob == "auto"
        and a.ppo_epochs == 1
        and cfg.data.train_batch_size == a.ppo_mini_batch_size
        and not cfg.algorithm.use_kl_in_reward
    )
