"""One actor update step with DeepSpeed on one device, timed, with its MFU and peak memory (no Ray, no vLLM).

    python scripts/gpu_actor_step.py                                   # Qwen2.5-0.5B shape, bf16, CUDA, fused kernels
    python scripts/gpu_actor_step.py --preset qwen2.5-7b --zero-stage 3 --batch 8 --micro-batch 1
    python scripts/gpu_actor_step.py --no-fused                         # the same step through full logits
    python scripts/gpu_actor_step.py --preset tiny --device cpu         # a smoke test on a CPU-only machine

The model has the preset's exact shape with random weights (no hub here), written to a temporary folder and loaded
by the real `rlhf.workers.actor.Actor` (DeepSpeed ZeRO, the fused log-prob head, the shared update loop) in a
torch.distributed world of one rank. Random prompts and responses of fixed lengths stand in for a rollout; old
log-probs come from the actor itself and advantages are random. After `--warmup` steps, `--steps` optimizer steps
are timed; MFU = the step's FLOPs (verl's count: 6 x params x tokens + attention) over its time and the device's
dense bf16 peak (rlhf.metrics.PEAK_TFLOPS; none on CPU). Prints one JSON line (also written to --out).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import Qwen2Config, Qwen2ForCausalLM

from rlhf.algorithms.config import AlgorithmConfig
from rlhf.batch import Batch
from rlhf.config import ActorConfig, DataConfig, ModelConfig, OptimConfig, RLHFConfig, RolloutConfig, TrainerConfig
from rlhf.metrics import PEAK_TFLOPS, update_flops
from rlhf.sequences import assemble

logger = logging.getLogger("gpu_actor_step")

# Qwen2.5 shapes (config.json of the released models); tiny is this project's test model shape.
PRESETS = {
    "qwen2.5-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864, vocab_size=151_936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                         intermediate_size=8960, vocab_size=151_936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                       intermediate_size=18_944, vocab_size=152_064, tie_word_embeddings=False),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=512, vocab_size=82, tie_word_embeddings=True),
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="qwen2.5-0.5b")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if cuda else "cpu")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default=None, help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--batch", type=int, default=16, help="sequences per optimizer step")
    p.add_argument("--micro-batch", type=int, default=4, help="sequences per forward/backward")
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--response-len", type=int, default=1536)
    p.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], default=2)
    p.add_argument("--no-fused", action="store_true", help="full logits instead of the fused log-prob kernel")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    args = p.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    if args.batch % args.micro_batch:
        p.error(f"--micro-batch={args.micro_batch} must divide --batch={args.batch}")
    if args.device == "cuda" and not cuda:
        p.error("--device cuda but no CUDA device is visible (use --device cpu for a smoke test)")
    return args


def build_model(preset: str, dtype: str, context: int, folder: Path) -> int:
    """Write a randomly initialised model of `preset`'s shape to `folder`; returns its parameter count."""
    config = Qwen2Config(**PRESETS[preset], max_position_embeddings=context, torch_dtype=dtype)
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def make_config(args: argparse.Namespace, model_dir: Path) -> RLHFConfig:
    """One optimizer step per update: the whole batch is one PPO mini-batch of `--batch` sequences (n = 1)."""
    return RLHFConfig(
        model=ModelConfig(path=str(model_dir), dtype=args.dtype, gradient_checkpointing=args.gradient_checkpointing),
        actor=ActorConfig(
            optim=OptimConfig(lr=1e-6),
            ppo_mini_batch_size=args.batch,
            micro_batch_size_per_device=args.micro_batch,
            zero_stage=args.zero_stage,
            fused_kernels=not args.no_fused,
            log_prob_micro_batch_size=args.micro_batch,
        ),
        rollout=RolloutConfig(n=1, max_response_length=args.response_len),
        data=DataConfig(train_batch_size=args.batch, max_prompt_length=args.prompt_len),
        algorithm=AlgorithmConfig(use_kl_loss=False),
        trainer=TrainerConfig(device=args.device, nnodes=1, num_devices_per_node=1),
    )


def random_batch(args: argparse.Namespace, vocab: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, vocab, (args.batch, args.prompt_len), generator=g).tolist()
    responses = torch.randint(0, vocab, (args.batch, args.response_len), generator=g).tolist()
    return assemble(prompts, responses, args.prompt_len, args.response_len, pad_id=0)


def init_single_rank(device: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    if device == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=0, world_size=1)


def run(args: argparse.Namespace) -> dict[str, float | str]:
    if args.device == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from rlhf.workers.actor import Actor  # noqa: PLC0415 (DeepSpeed reads DS_ACCELERATOR when it is imported)

    init_single_rank(args.device)
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        num_params = build_model(args.preset, args.dtype, args.prompt_len + args.response_len, Path(tmp))
        cfg = make_config(args, Path(tmp))
        actor = Actor(cfg, rank=0, world_size=1, device=device)
    batch = random_batch(args, PRESETS[args.preset]["vocab_size"])
    batch.update(actor.compute_log_prob(batch).select(["old_log_probs"]))
    batch["advantages"] = torch.randn(batch["responses"].shape, generator=torch.Generator().manual_seed(1))
    batch["rollout_log_probs"] = batch["old_log_probs"]
    for _ in range(args.warmup):
        actor.update(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        metrics, _ = actor.update(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step_s = sorted(times)[len(times) // 2]
    h, layers = PRESETS[args.preset]["hidden_size"], PRESETS[args.preset]["num_hidden_layers"]
    lengths = batch["attention_mask"].sum(-1).tolist()
    flops = update_flops(num_params, 6 * h * layers, lengths, passes=1)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    peak = next((tflops for key, tflops in PEAK_TFLOPS.items() if key in name), None)
    result: dict[str, float | str] = {
        "device": name,
        "preset": args.preset,
        "params_m": num_params / 1e6,
        "dtype": args.dtype,
        "zero_stage": args.zero_stage,
        "fused_kernels": not args.no_fused,
        "tokens_per_step": float(sum(lengths)),
        "step_s_median": step_s,
        "tokens_per_s": sum(lengths) / step_s,
        "tflops_per_s": flops / step_s / 1e12,
        "mfu": flops / step_s / (peak * 1e12) if peak else float("nan"),
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else float("nan"),
        "grad_norm": metrics["actor/grad_norm"],
    }
    dist.destroy_process_group()
    return result


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args()
    result = run(args)
    line = json.dumps(result)
    if args.out is not None:
        args.out.write_text(line + "\n")
    print(line)  # noqa: T201 (the script's result)


if __name__ == "__main__":
    main()
