"""Supervised fine-tuning on the controller: (prompt, target) rows -> batches -> the SFT worker group.

The rows are the RL run's verl rows; the target of a row is `sft.response_key` (by default its `response` column if
it has one, else `reward_model.ground_truth`) followed by EOS. The loss covers the target tokens only. A target may
also be a tool-use trace (a list of chat messages): its assistant turns are trained and the tool results between
them are attended to but not trained, tokenised as the agent loop does (rlhf.agent.traces). The worker
group reuses the actor's DeepSpeed engine, the metrics go through the RL run's `Tracker`, and the final model is
written in Hugging Face format to `<run_dir>/final_model`, ready for `model.path` of an RL run or for vLLM.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from rlhf.agent.observation import ObservationFormatter
from rlhf.agent.traces import encode_trace, is_trace
from rlhf.batch import Batch
from rlhf.checkpoint import (
    CheckpointError,
    CheckpointManager,
    CheckpointMeta,
    ResumePoint,
    capture_rng_state,
    restore_rng_state,
)
from rlhf.config import RewardConfig
from rlhf.data import PromptDataLoader, encode_prompts
from rlhf.metrics import validation_metrics
from rlhf.prompts import load_split, resolve_data_files, rows_to_batch
from rlhf.ray_setup import check_shared_storage, rank_pool, resolve_device, runtime_env, start_ray, worker_env
from rlhf.rewards import RewardItem, check_data_sources
from rlhf.rewards.scoring import score_one
from rlhf.schema import ConfigError
from rlhf.sequences import assemble, right_pad
from rlhf.sft_config import SFTConfig
from rlhf.tracking import Tracker
from rlhf.workers.group import WorkerDiedError, WorkerGroup
from rlhf.workers.sft import SFTWorker

logger = logging.getLogger(__name__)

# A validation answer is correct when it earns the full rule reward (SFT scores with the built-in functions).
FULL_SCORE = RewardConfig().full_score


def sft_target(row: dict[str, Any], response_key: str) -> str | list[dict[str, Any]]:
    """The text the model learns to answer `row`'s prompt with (before EOS), or a tool-use trace (chat messages).

    Args:
        row: a verl row.
        response_key: "auto" (`response` if present, else `reward_model.ground_truth`) or a dotted column name.

    Raises:
        ValueError: the row has no such column.
    """
    if response_key == "auto":
        response_key = "response" if row.get("response") is not None else "reward_model.ground_truth"
    value: Any = row
    for part in response_key.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            raise ValueError(f"sft.response_key={response_key!r}: row has no {part!r} (row keys: {sorted(row)})")
        value = value[part]
    return value if is_trace(value) else str(value)


def encode_examples(
    rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, cfg: SFTConfig
) -> list[dict[str, list[int]]]:
    """Token ids of each row's prompt (chat template) and target (+ EOS), and the target's loss mask (0 on the
    tool results of a trace); rows over `sft.max_length` are dropped."""
    prompts = encode_prompts(rows, tokenizer, cfg.data.max_prompt_length, prompt_key=cfg.data.prompt_key)
    formatter: ObservationFormatter | None = None
    examples, num_dropped = [], 0
    for row, prompt_ids in zip(rows, prompts, strict=True):
        value = sft_target(row, cfg.sft.response_key)
        if isinstance(value, list):
            # Observations rendered with the agent loop's default settings (agent.observation_* defaults).
            formatter = formatter or ObservationFormatter(tokenizer)
            target, loss_mask = encode_trace(value, tokenizer, formatter)
        else:
            target = tokenizer(value, add_special_tokens=False)["input_ids"]
            loss_mask = [1] * len(target)
        if cfg.sft.append_eos:
            target, loss_mask = [*target, tokenizer.eos_token_id], [*loss_mask, 1]
        if len(prompt_ids) + len(target) > cfg.sft.max_length or not target:
            num_dropped += 1
            continue
        examples.append({"prompt_ids": list(prompt_ids), "response_ids": target, "loss_mask": loss_mask})
    if num_dropped:
        logger.warning(
            "dropped %d of %d rows longer than sft.max_length=%d tokens (or with an empty target)",
            num_dropped,
            len(rows),
            cfg.sft.max_length,
        )
    return examples


def collate(examples: list[dict[str, list[int]]], pad_id: int) -> Batch:
    """The rollout's layout (`rlhf.sequences.assemble`), padded to this batch's longest prompt and target.

    Returns:
        Batch with input_ids / attention_mask / position_ids [B, P+R], responses and response_mask [B, R] (the
        examples' loss masks where they have one: tool results in a trace are attended to, not trained).
    """
    prompts = [e["prompt_ids"] for e in examples]
    targets = [e["response_ids"] for e in examples]
    batch = assemble(prompts, targets, max(map(len, prompts)), max(map(len, targets)), pad_id)
    if all("loss_mask" in e for e in examples):
        batch["response_mask"] = right_pad(
            [e["loss_mask"] for e in examples], batch["responses"].shape[1], 0.0, torch.float32
        )
    return batch


def num_sft_steps(cfg: SFTConfig, num_examples: int) -> int:
    """sft.total_steps, capped at sft.epochs passes over the data when that is set."""
    if cfg.sft.epochs > 0:
        return min(cfg.sft.total_steps, cfg.sft.epochs * (num_examples // cfg.sft.batch_size))
    return cfg.sft.total_steps


class SFTGroup(WorkerGroup):
    """Typed wrappers over `SFTWorker`'s dispatched methods."""

    worker_cls = SFTWorker

    def init_model(self, total_steps: int) -> None:
        self.call(SFTWorker.init_model, total_steps)

    def sft_step(self, batch: Batch) -> dict[str, float]:
        return self.call(SFTWorker.sft_step, batch)

    def eval_loss(self, batch: Batch) -> tuple[float, float]:
        return self.call(SFTWorker.eval_loss, batch)

    def generate(self, prompts: Batch) -> Batch:
        return self.call(SFTWorker.generate, prompts)

    def save_hf_model(self, path: str) -> None:
        self.call(SFTWorker.save_hf_model, path)

    def save_checkpoint(self, directory: str) -> None:
        self.call(SFTWorker.save_checkpoint, directory)

    def load_checkpoint(self, directory: str) -> None:
        self.call(SFTWorker.load_checkpoint, directory)


class SFTTrainer:
    """setup -> fit -> cleanup; checkpoints and resume work as in RL (`rlhf.checkpoint`)."""

    def __init__(self, cfg: SFTConfig, run_dir: Path, resume: str = "auto") -> None:
        """`resume` is `trainer.resume` on a first attempt and "auto" after an automatic restart."""
        self.cfg, self.run_dir, self.resume = cfg, run_dir, resume
        self.step = 0
        self.consecutive_skipped = 0
        self.checkpoints = CheckpointManager(run_dir / "checkpoints", cfg.trainer.keep_last)
        self.tracker: Tracker | None = None
        self.group: SFTGroup | None = None

    def setup(self) -> None:
        cfg, t = self.cfg, self.cfg.trainer
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        train_files, val_files = resolve_data_files(cfg.data, t.seed)
        try:  # data problems are the user's input: reported like config errors, before Ray starts
            d = cfg.data
            train_rows = load_split(train_files, self.tokenizer, d.max_prompt_length, prompt_key=d.prompt_key)
            self.val_rows = load_split(val_files, self.tokenizer, d.max_prompt_length, prompt_key=d.prompt_key)
            check_data_sources({r["data_source"] for r in self.val_rows}, None)  # validation scores built-ins
            self.train_examples = encode_examples(train_rows, self.tokenizer, cfg)
            self.val_examples = encode_examples(self.val_rows, self.tokenizer, cfg) if self.val_rows else []
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(str(e)) from e
        self.loader = PromptDataLoader(self.train_examples, cfg.sft.batch_size, shuffle=cfg.data.shuffle, seed=t.seed)
        self.total_steps = num_sft_steps(cfg, len(self.train_examples))
        self.num_devices = t.nnodes * t.num_devices_per_node
        self.checkpoint_meta = CheckpointMeta.of_model(cfg.model.path, self.num_devices, cfg.sft.lora.rank)
        checkpoint = self.checkpoints.resolve(self.resume, self.checkpoint_meta)  # verified before Ray starts
        device = resolve_device(t.device)
        start_ray(t, self.run_dir)
        pool = rank_pool(t, device, "sft")
        self.group = SFTGroup(pool, "sft", dict(cfg=cfg, device=device), runtime_env(t, worker_env(t, device)))
        self.group.init_model(self.total_steps)
        self.group.check_devices(device)
        check_shared_storage(self.group, self.run_dir)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        self.tracker = Tracker(
            t.logger,
            t.project_name,
            t.experiment_name,
            self.run_dir,
            asdict(cfg),
            resume_step=self.step if checkpoint is not None else None,
        )

    def fit(self) -> dict[str, float]:
        """`total_steps` optimizer steps, validating every `trainer.test_freq` and at the end; saves the model."""
        t = self.cfg.trainer
        metrics: dict[str, float] = {}
        if t.val_before_train and t.test_freq > 0 and self.step == 0:
            self.tracker.log(self.validate(), step=0)
        with logging_redirect_tqdm():
            bar = tqdm(
                range(self.step + 1, self.total_steps + 1),
                desc="SFT steps",
                initial=self.step,
                total=self.total_steps,
                dynamic_ncols=True,
            )
            for step in bar:
                self.step = step
                start = time.perf_counter()
                batch = collate(self.loader.next_batch(), self.tokenizer.pad_token_id)
                metrics = self.group.sft_step(batch)
                self._check_health(metrics)
                elapsed = time.perf_counter() - start
                metrics["timing_s/step"] = elapsed
                metrics["perf/time_per_step"] = elapsed
                metrics["perf/throughput"] = batch["attention_mask"].sum().item() / elapsed / self.num_devices
                metrics["training/global_step"] = float(step)
                metrics["training/epoch"] = float(self.loader.epoch)
                if (t.test_freq > 0 and step % t.test_freq == 0) or step == self.total_steps:
                    metrics.update(self.validate())
                bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
                self.tracker.log(metrics, step=step)
                if t.save_freq > 0 and (step % t.save_freq == 0 or step == self.total_steps):
                    self.save_checkpoint()
        self.group.save_hf_model(str(self.run_dir / "final_model"))
        return metrics

    def _check_health(self, metrics: dict[str, float]) -> None:
        """A NaN/inf update was skipped by the optimizer; too many in a row stop the run."""
        self.consecutive_skipped = self.consecutive_skipped + 1 if metrics.get("train/skipped_update", 0) else 0
        if self.consecutive_skipped >= self.cfg.trainer.max_consecutive_skipped_updates:
            raise RuntimeError(
                f"{self.consecutive_skipped} consecutive SFT steps had a NaN/inf loss or gradient (up to step "
                f"{self.step}); stopping (trainer.max_consecutive_skipped_updates="
                f"{self.cfg.trainer.max_consecutive_skipped_updates})"
            )

    def save_checkpoint(self) -> Path:
        """The workers write the engine, the driver the step, loader position and its RNG (see rlhf.checkpoint)."""

        def write(directory: Path) -> None:
            self.group.save_checkpoint(str(directory))
            state = {"step": self.step, "loader": self.loader.state_dict()}
            (directory / "trainer_state.json").write_text(json.dumps(state, indent=2))
            torch.save(capture_rng_state(), directory / "controller_rng.pt")

        return self.checkpoints.save(self.step, write, self.checkpoint_meta)

    def load_checkpoint(self, point: ResumePoint) -> None:
        """The workers load the engine from `point`, the driver its own state (already read and verified)."""
        try:
            self.group.load_checkpoint(str(point.path))
        except WorkerDiedError as e:
            raise CheckpointError(self.checkpoints.load_failure(point.path, e)) from e
        self.step = point.trainer_state["step"]
        self.loader.load_state_dict(point.trainer_state["loader"])
        restore_rng_state(point.controller_rng)
        logger.info("resumed SFT from %s at step %d", point.path, self.step)

    def validate(self) -> dict[str, float]:
        """val/loss on the held-out targets and verl's greedy `val-core/<source>/acc/mean@1`, scored by the rule
        reward functions of the RL run (a response is correct when it earns the full reward, or its `acc`)."""
        if not self.val_rows:
            return {}
        d = self.cfg.data
        metrics = {}
        if self.val_examples:
            nll, count = self.group.eval_loss(collate(self.val_examples, self.tokenizer.pad_token_id))
            metrics["val/loss"] = nll / max(count, 1.0)
        parts = []
        for start in range(0, len(self.val_rows), d.val_batch_size):
            rows = self.val_rows[start : start + d.val_batch_size]
            prompts = rows_to_batch(rows, self.tokenizer, d.max_prompt_length, -1, 0, prompt_key=d.prompt_key)
            parts.append(self.group.generate(prompts))
        nt = Batch.concat(parts).non_tensors
        outcomes = [
            score_one(None, RewardItem(src, text, gt, info))
            for src, text, gt, info in zip(
                nt["data_source"], nt["response_text"], nt["ground_truth"], nt["extra_info"], strict=True
            )
        ]
        scores = [score for score, _, _ in outcomes]
        acc = [
            float(extra["acc"] > 0.5) if "acc" in extra else float(score >= FULL_SCORE) for score, extra, _ in outcomes
        ]
        metrics.update(validation_metrics(acc, scores, nt["uid"], nt["data_source"], nt["response_text"], n=1))
        logger.info(
            "val example: %s -> %r (ground truth %r)",
            self.tokenizer.decode(nt["prompt_ids"][0]),
            nt["response_text"][0],
            nt["ground_truth"][0],
        )
        return metrics

    def cleanup(self) -> None:
        if self.tracker is not None:
            self.tracker.finish()
        if ray.is_initialized():
            ray.shutdown()
