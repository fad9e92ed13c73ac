"""Benchmark LoRA against full fine-tuning on the 25M-parameter model: memory, step time and weight-sync time.

    python scripts/bench_lora.py --steps 3 --warmup 1 [--rank 16] [--threads 2]

Each variant (full fine-tuning; LoRA with adapter sync; LoRA with merged sync) runs in its own process holding one
policy rank exactly as a colocated worker does (DeepSpeed ZeRO-2 actor, in-process vLLM, the reference), without
Ray: per GRPO step it generates, computes old and reference log-probs, updates on random advantages (the reward does
not differ between variants) and syncs the weights into vLLM. Reported per variant: the process's peak RSS, its RSS
after building the models, the parameters the optimizer holds, the bytes of the reference copy that LoRA avoids, mean
seconds per stage over the measured steps, and the bytes and seconds of one weight sync.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Before DeepSpeed and vLLM are imported: CPU DeepSpeed, vLLM in this process (as in a colocated worker).
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tests/recipes.py composes a recipe as the entry point does

import psutil  # noqa: E402
import torch  # noqa: E402
from rlhf.workers.base import free_port  # noqa: E402
from rlhf.workers.hybrid import ActorRolloutRefWorker  # noqa: E402
from rlhf.workers.reference import ReferencePolicy  # noqa: E402

from recipes import compose_recipe  # noqa: E402
from rlhf.data import make_arith_rows  # noqa: E402
from rlhf.models.tiny import TinyModelSpec, build_tiny_model  # noqa: E402
from rlhf.prompts import rows_to_batch  # noqa: E402

# The 25M-parameter model of the issue: 8 layers of d=512 (8 heads, 4 KV heads), MLP 1536, character vocabulary.
SPEC_25M = dict(hidden_size=512, intermediate_size=1536, num_layers=8, num_heads=8, num_kv_heads=4)
VARIANTS = {
    "full": [],
    "lora-adapter": ["actor.lora.sync=adapter"],
    "lora-merged": ["actor.lora.sync=merged"],
}
STAGES = ("gen", "old_log_prob", "ref", "update_actor", "sync")


def run_variant(model_dir: Path, variant: str, args: argparse.Namespace) -> dict[str, float]:
    """One variant in a fresh process (so its peak RSS is its own); returns its measurements."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--child", variant, "--model-dir", str(model_dir), "--out", out.name]
        command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--rank", str(args.rank)]
        subprocess.run(command, env=env, check=True)
        return json.loads(Path(out.name).read_text())


def child(args: argparse.Namespace) -> None:
    """Measure one variant in this process (`--child`)."""
    lora = [] if args.child == "full" else [f"actor.lora.rank={args.rank}", f"actor.lora.alpha={2 * args.rank}"]
    cfg = compose_recipe(
        "grpo_arith_tiny",
        [
            f"model.path={args.model_dir}",
            "model.build_tiny=false",
            "trainer.num_devices_per_node=1",
            "data.train_batch_size=8",
            "actor.ppo_mini_batch_size=8",
            "actor.micro_batch_size_per_device=8",
            "rollout.n=4",
            "rollout.max_response_length=32",
            *lora,
            *VARIANTS[args.child],
        ],
    )
    worker = ActorRolloutRefWorker("actor_rollout_ref", 0, 1, cfg, "cpu", need_ref=True)
    worker.init_distributed("127.0.0.1", free_port(), "gloo")
    worker.init_model()
    ref = worker.ref.model if isinstance(worker.ref, ReferencePolicy) else None  # LoRA: no copy
    result: dict[str, float] = {
        "rss_after_init_gb": psutil.Process().memory_info().rss / 2**30,
        "trainable_params": float(sum(p.numel() for p in worker.actor.model.parameters() if p.requires_grad)),
        "ref_copy_bytes": float(sum(p.numel() * p.element_size() for p in ref.parameters())) if ref else 0.0,
    }
    timings: dict[str, list[float]] = {stage: [] for stage in STAGES}
    sync_bytes = 0.0
    for step in range(args.warmup + args.steps):
        rows = make_arith_rows(8, seed=step, min_digits=1, max_digits=2)
        prompts = rows_to_batch(rows, worker.tokenizer, cfg.data.max_prompt_length, step + 1, cfg.trainer.seed)
        marks = [time.perf_counter()]
        batch = worker.generate(prompts)
        marks.append(time.perf_counter())
        batch.update(worker.compute_log_prob(batch))
        marks.append(time.perf_counter())
        batch.update(worker.compute_ref_log_prob(batch))
        marks.append(time.perf_counter())
        noise = torch.randn(batch["response_mask"].shape, generator=torch.Generator().manual_seed(step))
        batch["advantages"] = noise * batch["response_mask"]
        worker.update_actor(batch)
        marks.append(time.perf_counter())
        sync_bytes = worker.sync_weights()["perf/update_weights_bytes"]
        marks.append(time.perf_counter())
        if step >= args.warmup:
            for stage, start, end in zip(STAGES, marks[:-1], marks[1:], strict=True):
                timings[stage].append(end - start)
    result.update({f"{stage}_s": statistics.mean(values) for stage, values in timings.items()})
    result["step_s"] = sum(result[f"{stage}_s"] for stage in STAGES)
    result["sync_bytes"] = sync_bytes
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    Path(args.out).write_text(json.dumps(result))


def table(results: dict[str, dict[str, float]]) -> str:
    """Markdown: one column per variant."""
    rows = [
        ("peak RSS (GiB)", "peak_rss_gb", "{:.2f}"),
        ("RSS after building the models (GiB)", "rss_after_init_gb", "{:.2f}"),
        ("parameters in the optimizer", "trainable_params", "{:,.0f}"),
        ("reference copy (MB)", "ref_copy_bytes", "{:.1f}"),
        ("step: gen + log-probs + ref + update + sync (s)", "step_s", "{:.3f}"),
        *((f"  {stage} (s)", f"{stage}_s", "{:.3f}") for stage in STAGES),
        ("bytes per sync (MB)", "sync_bytes", "{:.2f}"),
    ]
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key, fmt in rows:
        scale = 1e-6 if key.endswith("bytes") else 1.0
        lines.append(f"| {label} | " + " | ".join(fmt.format(results[n][key] * scale) for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (alpha = 2 x rank), all linear layers")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each variant's process")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    model_dir = build_tiny_model(Path(tempfile.gettempdir()) / "rlhf-bench-25m", TinyModelSpec(**SPEC_25M))
    results = {variant: run_variant(model_dir, variant, args) for variant in args.variants}
    print(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
