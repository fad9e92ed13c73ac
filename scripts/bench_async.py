"""Benchmark issue 11: split placement with max_staleness 1 against 0, and colocated synchronous, on the same cores.

    python scripts/bench_async.py --repeats 3 --steps 8 --train-batch-size 16 --n 4 --response-length 32

Each mode is a real run (`python -m rlhf.main --config-name grpo_arith_tiny`, the locally built tiny model, the
dense digit reward of the e2e tests). Modes run one after another, interleaved (A B C A B C ...), so a machine whose
load drifts slows every mode alike. Per run: the mean step time over the steps after the first (start-up and the
first generation excluded) and tokens/s (prompt + response tokens of every sample over that time). Reported per
mode: the median over repeats, with min and max, as a Markdown table (paste into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rlhf.models.tiny import build_tiny_model

logger = logging.getLogger("bench_async")
ROOT = Path(__file__).resolve().parents[1]
REWARD = ROOT / "tests" / "e2e" / "reward_fns.py"
SPLIT = ["async_training.placement=split", "async_training.num_rollout_workers=1", "trainer.num_devices_per_node=1"]
MODES = {
    "colocated, 2 ranks": ["trainer.num_devices_per_node=2"],
    "split 1+1, max_staleness=0": [*SPLIT, "async_training.max_staleness=0"],
    "split 1+1, max_staleness=1": [*SPLIT, "async_training.max_staleness=1"],
}


def run_mode(model: Path, work: Path, steps: int, num_sequences: int, overrides: list[str]) -> dict[str, float]:
    """One run; its mean step time and tokens/s over steps 2..N (`num_sequences` samples per step)."""
    out = work / "out"
    args = [
        sys.executable, "-m", "rlhf.main", "--config-name", "grpo_arith_tiny",
        f"model.path={model}", "model.build_tiny=false", f"data.builtin_dir={work / 'data'}",
        f"reward.function={REWARD}:digit_fraction", "trainer.test_freq=0", "trainer.logger=[jsonl]",
        f"trainer.output_dir={out}", f"trainer.total_steps={steps}", "algorithm.rollout_is=token", *overrides,
    ]  # fmt: skip
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"run failed ({' '.join(overrides)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "rlhf" / "grpo_arith_tiny" / "metrics.jsonl").read_text().splitlines()]
    measured = rows[1:]
    seconds = sum(r["timing_s/step"] for r in measured)
    tokens = sum((r["response_length/mean"] + r["prompt_length/mean"]) * num_sequences for r in measured)
    return {"step_s": seconds / len(measured), "tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--train-batch-size", type=int, default=16, help="prompts per step (one optimizer step)")
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--response-length", type=int, default=32, help="rollout.max_response_length")
    parser.add_argument("overrides", nargs="*", help="more hydra overrides for every mode")
    args = parser.parse_args()
    workload = [
        f"data.train_batch_size={args.train_batch_size}",
        f"actor.ppo_mini_batch_size={args.train_batch_size}",
        f"rollout.n={args.n}",
        f"rollout.max_response_length={args.response_length}",
        *args.overrides,
    ]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="bench_async_") as tmp:
        model = build_tiny_model(Path(tmp) / "tiny-qwen2")
        for repeat in range(args.repeats):
            for i, (mode, extra) in enumerate(MODES.items()):
                work = Path(tmp) / f"r{repeat}_m{i}"
                result = run_mode(model, work, args.steps, args.train_batch_size * args.n, [*extra, *workload])
                logger.info("repeat %d, %s: %.3f s/step, %.0f tokens/s", repeat, mode, result["step_s"],
                            result["tokens_per_s"])  # fmt: skip
                results[mode].append(result)
    print(f"workload: {' '.join(workload)}; {args.steps} steps per run, {args.repeats} repeats, interleaved")
    base = statistics.median(r["tokens_per_s"] for r in results["split 1+1, max_staleness=0"])
    print("| mode | s/step median (min-max) | tokens/s median (min-max) | vs split staleness 0 |")
    print("|---|---|---|---|")
    for mode, runs in results.items():
        step = [r["step_s"] for r in runs]
        tps = [r["tokens_per_s"] for r in runs]
        print(
            f"| {mode} | {statistics.median(step):.3f} ({min(step):.3f}-{max(step):.3f}) | "
            f"{statistics.median(tps):.0f} ({min(tps):.0f}-{max(tps):.0f}) | {statistics.median(tps) / base:.2f}x |"
        )


if __name__ == "__main__":
    main()
