"""Benchmark log-probs + entropy (forward + backward): naive full logits vs chunked torch vs Triton.

    python scripts/bench_kernels.py --device cpu --dtype float32 --tokens 2048 8192 --hidden 896 --repeats 2
    python scripts/bench_kernels.py --device cuda --dtype bfloat16        # all T in {2k, 8k, 32k}, d in {896, 3584}

Each case runs in a fresh subprocess, so one case's allocations cannot hide another's peak. Peak memory is the
extra memory of one forward + backward beyond the inputs (hidden, weight, targets, upstream gradients), gradients
included: on CUDA torch.cuda.max_memory_allocated() minus the allocation after inputs are created; on CPU the
process's peak resident set (getrusage ru_maxrss, a high-water mark) minus its resident set right after the
inputs are created and touched (/proc/self/statm); inputs are made in place so no freed temporary inflates the mark. The first
repeat sets the peak; the reported time is the median over repeats. Cases whose estimated peak exceeds
--budget-gb are skipped and listed with their estimate instead of being run.
"""

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from rlhf.kernels import fused_log_probs

log = logging.getLogger("bench_kernels")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def estimate_peak_gb(backend: str, tokens: int, hidden: int, vocab: int, dtype: torch.dtype, chunk: int) -> float:
    """Rough extra bytes of one forward + backward (for skipping cases that cannot fit), in GB."""
    size = torch.finfo(dtype).bits // 8
    grads = (tokens + vocab) * hidden * size  # dH and dW
    upcast = 0 if dtype == torch.float32 else 2 * vocab * hidden * 4  # float32 W copy and dW accumulator
    if backend == "naive":  # ~5 live [T, V] float32 tensors at the backward's peak (measured on CPU at T=2048)
        extra = 5 * tokens * vocab * 4 + grads + upcast
    elif backend == "torch":
        extra = 2 * min(chunk, tokens) * vocab * 4 + grads + upcast
    else:
        extra = min(chunk, tokens) * vocab * size + grads + vocab * hidden * (4 + size)
    return extra / 1e9


def run_case(case: dict) -> dict:
    """Time forward + backward of one backend and shape; called in the worker subprocess."""
    device, dtype = torch.device(case["device"]), DTYPES[case["dtype"]]
    tokens, hidden_size, vocab = case["tokens"], case["hidden"], case["vocab"]
    gen = torch.Generator(device=device).manual_seed(0)
    hidden = torch.randn(tokens, hidden_size, device=device, dtype=dtype, generator=gen).requires_grad_()
    # Generated in place and in dtype: a freed temporary would raise the CPU high-water mark before the baseline.
    weight = torch.randn(vocab, hidden_size, device=device, dtype=dtype, generator=gen).mul_(hidden_size**-0.5)
    weight.requires_grad_()
    targets = torch.randint(0, vocab, (tokens,), device=device, generator=gen)
    g_lp, g_ent = torch.randn(2, tokens, device=device, generator=gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = current_rss_bytes()
    times, cpu_times, peak = [], [], 0
    for _ in range(case["repeats"]):
        hidden.grad = weight.grad = None
        start, cpu_start = time.perf_counter(), time.process_time()
        log_probs, entropy = fused_log_probs(
            hidden, weight, targets, case["temperature"], backend=case["backend"], chunk_size=case["chunk_size"]
        )
        ((log_probs * g_lp).sum() + (entropy * g_ent).sum()).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
            peak = max(peak, torch.cuda.max_memory_allocated() - baseline)
        else:
            peak = max(peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        del log_probs, entropy
    return {
        "time_s": statistics.median(times),
        "cpu_s": statistics.median(cpu_times),  # all threads of this process: less sensitive to other tenants
        "peak_gb": peak / 1e9,
        "load": os.getloadavg()[0],
    }


def current_rss_bytes() -> int:
    """Resident set size now (the baseline; ru_maxrss is only the high-water mark)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def available_gb(device: str) -> float:
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return free / 1e9
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024 / 1e9


def parse_args(argv=None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[2048, 8192, 32768], help="T values")
    parser.add_argument("--hidden", type=int, nargs="+", default=[896, 3584], help="d values (Qwen2.5 0.5B / 7B)")
    parser.add_argument("--vocab", type=int, default=151_936, help="V (Qwen2.5)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if cuda else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--backends", nargs="+", default=None, help="default: naive torch (+ triton on cuda)")
    parser.add_argument("--repeats", type=int, default=2, help="timed forward + backward runs per case")
    parser.add_argument("--chunk-size", type=int, default=1024, help="tokens per chunk for torch / triton")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument(
        "--budget-gb",
        type=float,
        default=None,
        help="skip cases estimated above this (default: 75%% of memory free before each case)",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one JSON case and exit
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    args.backends = args.backends or (["naive", "torch", "triton"] if args.device == "cuda" else ["naive", "torch"])
    return args


HEADER = (
    "| backend | T | d | V | dtype | wall time (s) | CPU time (s) | peak extra memory (GB) | wall / naive "
    "| CPU / naive | memory / naive | load avg |\n" + "|---" * 12 + "|"
)


def format_row(case: dict, result: dict, naive: dict | None) -> str:
    """One markdown row; ratios against the same shape's naive result when it ran."""
    row = f"| {case['backend']} | {case['tokens']} | {case['hidden']} | {case['vocab']} | {case['dtype']} "
    if "skipped" in result:
        return row + f"| skipped: {result['skipped']} |" + " |" * 6
    row += f"| {result['time_s']:.2f} | {result['cpu_s']:.1f} | {result['peak_gb']:.2f} "
    if naive is not None and "time_s" in naive:
        row += f"| {result['time_s'] / naive['time_s']:.2f}x | {result['cpu_s'] / naive['cpu_s']:.2f}x "
        row += f"| {result['peak_gb'] / naive['peak_gb']:.1%} "
    else:
        row += "| n/a | n/a | n/a "
    return row + f"| {result['load']:.1f} |"


def bench(case: dict, budget_gb: float | None) -> dict:
    """Run one case in a fresh subprocess, or explain why it was skipped."""
    if case["backend"] == "triton" and case["device"] != "cuda":
        return {"skipped": "Triton needs CUDA (on CPU it only runs under the interpreter, which is not a benchmark)"}
    dtype = DTYPES[case["dtype"]]
    estimate = estimate_peak_gb(
        case["backend"], case["tokens"], case["hidden"], case["vocab"], dtype, case["chunk_size"]
    )
    budget = budget_gb if budget_gb is not None else 0.75 * available_gb(case["device"])  # re-read: shared machine
    if estimate > budget:
        return {"skipped": f"estimated {estimate:.1f} GB > budget {budget:.1f} GB"}
    command = [sys.executable, __file__, "--device", case["device"], "--worker", json.dumps(case)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last_line = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        return {"skipped": f"failed (exit {done.returncode}): {last_line[-200:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.worker is not None:
        print(json.dumps(run_case(json.loads(args.worker))))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = [HEADER]
    for hidden_size in args.hidden:
        for tokens in args.tokens:
            naive = None
            for backend in args.backends:
                case = dict(backend=backend, tokens=tokens, hidden=hidden_size, vocab=args.vocab, device=args.device,
                            dtype=args.dtype, repeats=args.repeats, chunk_size=args.chunk_size,
                            temperature=args.temperature)  # fmt: skip
                result = bench(case, args.budget_gb)
                naive = result if backend == "naive" else naive
                rows.append(format_row(case, result, naive))
                log.info(rows[-1])
    print("\n".join(rows))


if __name__ == "__main__":
    main()
