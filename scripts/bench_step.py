"""Benchmark RL steps of a recipe: per-stage time, generation tokens/s, orchestration overhead, and vLLM alone.

    python scripts/bench_step.py --config-name grpo_arith_tiny --steps 5 [hydra overrides...]

Runs `--warmup` + `--steps` real steps (Ray + vLLM + DeepSpeed), averages the stage timings of the measured steps,
then shuts Ray down and times one vLLM engine generating the same prompt batches outside the framework
(same model, n, temperature, max tokens). Orchestration overhead = step time minus generation, log-prob,
update and weight-sync time (what the controller, Ray and reward scoring add).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# vLLM in this process for the baseline, like the framework's colocated rollout.
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from vllm import LLM, SamplingParams  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402

from rlhf.config import RLHFConfig, register_schema, to_typed  # noqa: E402
from rlhf.config_checks import validate  # noqa: E402
from rlhf.data import PromptDataLoader  # noqa: E402
from rlhf.models.tiny import build_tiny_model  # noqa: E402
from rlhf.prompts import rows_to_batch  # noqa: E402
from rlhf.trainer import RLTrainer  # noqa: E402

logger = logging.getLogger("bench_step")
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
WORK_STAGES = ("gen", "old_log_prob", "ref", "update_actor", "sync_weights")


def measure_framework(cfg: RLHFConfig, warmup: int, steps: int) -> tuple[list[dict[str, float]], list]:
    trainer = RLTrainer(cfg, cfg.trainer.run_dir(), resume="never")
    trainer.setup()
    try:
        records, prompt_batches = [], []
        for i in range(warmup + steps):
            metrics = trainer.train_step()
            if i >= warmup:
                records.append(metrics)
        # The same prompt batches again, from a fresh loader, for the vLLM-alone baseline.
        loader = PromptDataLoader(
            trainer.train_rows, cfg.data.train_batch_size, shuffle=cfg.data.shuffle, seed=cfg.trainer.seed
        )
        for step in range(1, warmup + steps + 1):
            batch = rows_to_batch(loader.next_batch(), trainer.tokenizer, cfg.data.max_prompt_length, step, 0)
            if step > warmup:
                prompt_batches.append(batch.non_tensors["prompt_ids"])
        return records, prompt_batches
    finally:
        trainer.cleanup()


def measure_vllm_alone(cfg: RLHFConfig, prompt_batches: list[list[list[int]]]) -> list[float]:
    """Seconds per batch for one in-process vLLM engine on all of this machine's cores."""
    r = cfg.rollout
    llm = LLM(
        model=cfg.model.path,
        dtype=cfg.model.dtype,
        seed=cfg.trainer.seed,
        enforce_eager=r.enforce_eager,
        max_model_len=cfg.data.max_prompt_length + r.max_response_length,
        logprobs_mode="processed_logprobs",
    )
    times = []
    for b, prompts in enumerate([prompt_batches[0], *prompt_batches]):  # first batch again as warm-up
        expanded = [p for p in prompts for _ in range(r.n)]
        params = [
            SamplingParams(
                n=1, temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_response_length, logprobs=0, seed=i
            )
            for i in range(len(expanded))
        ]
        start = time.perf_counter()
        llm.generate([TokensPrompt(prompt_token_ids=p) for p in expanded], params, use_tqdm=False)
        if b > 0:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-name", default="grpo_arith_tiny")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true", help="skip the vLLM-alone measurement")
    parser.add_argument("--baseline-spec", help=argparse.SUPPRESS)  # internal: run only the vLLM-alone part
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.baseline_spec:
        spec = json.loads(Path(args.baseline_spec).read_text())
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RLHFConfig), spec["cfg"]))
        print(statistics.mean(measure_vllm_alone(cfg, spec["prompts"])))
        return

    register_schema()
    with initialize_config_dir(config_dir=str(RECIPES), version_base=None):
        cfg = to_typed(compose(config_name=args.config_name, overrides=list(args.overrides)))
    validate(cfg)
    if cfg.model.build_tiny:
        build_tiny_model(cfg.model.path)

    records, prompt_batches = measure_framework(cfg, args.warmup, args.steps)
    mean = {k: statistics.mean(r[k] for r in records) for k in records[0] if k.startswith("timing_s/")}
    step = mean["timing_s/step"]
    work = sum(mean.get(f"timing_s/{s}", 0.0) for s in WORK_STAGES)
    gen_tokens = statistics.mean(r["response_length/mean"] for r in records) * cfg.data.train_batch_size * cfg.rollout.n
    print(f"\n## {args.config_name} {' '.join(args.overrides)}: {args.steps} steps after {args.warmup} warm-up")
    print("| stage | mean s | share of step |\n|---|---|---|")
    for key in sorted(mean, key=mean.get, reverse=True):
        print(f"| {key} | {mean[key]:.3f} | {mean[key] / step:.1%} |")
    print(
        f"\nstep time: {step:.3f} s; generation: {gen_tokens / mean['timing_s/gen']:.0f} tokens/s "
        f"({gen_tokens:.0f} response tokens per step); throughput: "
        f"{statistics.mean(r['perf/throughput'] for r in records):.0f} tokens/s/device"
    )
    print(f"orchestration overhead: {step - work:.3f} s = {(step - work) / step:.1%} of the step")
    if not args.no_baseline:
        ranks = cfg.trainer.nnodes * cfg.trainer.num_devices_per_node
        threads = str(max(1, int(cfg.trainer.cpus_per_worker)))
        layouts = [(ranks, threads, "the framework's layout"), (1, threads, "one engine"), (1, None, "one engine")]
        for num_procs, omp, label in layouts:
            alone = vllm_alone(cfg, prompt_batches, num_procs, omp)
            print(
                f"vLLM alone, {label}: {num_procs} process(es), OMP_NUM_THREADS={omp or 'unset'}: {alone:.3f} s "
                f"per batch; rollout stage / vLLM alone = {mean['timing_s/gen'] / alone:.2f}x"
            )


def vllm_alone(cfg: RLHFConfig, prompt_batches: list, num_procs: int, omp_threads: str | None) -> float:
    """Seconds per batch for `num_procs` fresh vLLM processes each generating its share of every batch at once
    (the slowest process counts, as the slowest rank does in the framework)."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for rank in range(num_procs):
            shards = [batch[rank::num_procs] for batch in prompt_batches]
            spec = Path(tmp) / f"spec{rank}.json"
            spec.write_text(json.dumps({"cfg": OmegaConf.to_container(OmegaConf.structured(cfg)), "prompts": shards}))
            env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
            if omp_threads is not None:
                env["OMP_NUM_THREADS"] = omp_threads
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--baseline-spec", str(spec)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        outputs = [p.communicate()[0] for p in procs]
        if any(p.returncode for p in procs):
            raise RuntimeError(f"vLLM baseline process failed: {[p.returncode for p in procs]}")
        return max(float(out.strip().splitlines()[-1]) for out in outputs)


if __name__ == "__main__":
    main()
