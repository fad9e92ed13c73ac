"""Benchmark padded vs padding-free ("trim", "pack", "segments") actor forward + backward on CPU (issue 13).

    python scripts/bench_padding_free.py --threads 2 --repeats 5

A randomly initialised Qwen2 of ~25M parameters (hidden 512, intermediate 1536, 8 layers, 8 heads / 4 KV heads,
vocab 128), fp32, sdpa attention, the fused log-prob kernel, and a PPO-like loss (sum of log-prob x advantage).
Sequences: prompt 4..32 tokens (left-padded to P=32), response 4..104 tokens (right-padded to R=104), so a padded row
is 136 positions and real lengths are 8..136.
Two cases:
- micro: one micro-batch of 32 sequences in rollout order, laid out padded [32, 136], trimmed, or packed [1, N].
- mini: a mini-batch of --mini sequences split into micro-batches: padded in chunks of 32; trim and pack by
  `token_budget_micro_batches` with the budget a padded chunk costs (32 x 136 tokens).
"pack" runs transformers' sdpa on the packed row (a block-diagonal [N, N] mask); "segments" packs the same way and
runs "sdpa_segments" (`rlhf.models.segment_attention`: sdpa once per sequence), what `model.padding_free=auto` uses.
Reported: median wall time and process CPU time (user + system, all threads) over repeats after one warm-up per
mode (modes take turns within each repeat, so a change in machine load hits all of them), and the positions the
model processed. On a shared machine compare CPU times; --threads 1 makes them robust to descheduled threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from rlhf.workers.logprob import response_log_probs
from transformers import Qwen2Config, Qwen2ForCausalLM

from rlhf.batch import Batch
from rlhf.models.segment_attention import SEGMENT_SDPA
from rlhf.packing import token_budget_micro_batches
from rlhf.sequences import assemble

PROMPT_LENGTH, RESPONSE_LENGTH, MICRO = 32, 104, 32


def build_model() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=128,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    config._attn_implementation = "sdpa"
    return Qwen2ForCausalLM(config).train()


def make_batch(num: int, seed: int) -> Batch:
    gen = torch.Generator().manual_seed(seed)

    def tokens(low: int, high: int) -> list[int]:
        n = int(torch.randint(low, high + 1, (1,), generator=gen))
        return torch.randint(2, 128, (n,), generator=gen).tolist()

    prompts = [tokens(4, PROMPT_LENGTH) for _ in range(num)]
    responses = [tokens(4, RESPONSE_LENGTH) for _ in range(num)]
    batch = assemble(prompts, responses, PROMPT_LENGTH, RESPONSE_LENGTH, pad_id=0)
    batch["advantages"] = torch.randn(num, RESPONSE_LENGTH, generator=gen)
    return batch


LAYOUTS = {"none": "none", "trim": "trim", "pack": "pack", "segments": "pack"}  # mode -> padding_free layout


def step(model: torch.nn.Module, micro_batches: list[Batch], mode: str) -> None:
    """Forward + backward over the micro-batches (gradient accumulation)."""
    model.set_attn_implementation(SEGMENT_SDPA if mode == "segments" else "sdpa")
    for micro in micro_batches:
        log_probs, _ = response_log_probs(model, micro, 1.0, fused=True, backend="torch", padding_free=LAYOUTS[mode])
        (-(log_probs * micro["advantages"] * micro["response_mask"]).sum()).backward()
    model.zero_grad(set_to_none=True)


def positions(micro_batches: list[Batch], mode: str) -> int:
    """Positions the model processes: rows x width (padded, trim) or real tokens (pack)."""
    total = 0
    for micro in micro_batches:
        lengths = micro["attention_mask"].sum(-1)
        rows, width = micro["input_ids"].shape
        total += {"none": rows * width, "trim": rows * int(lengths.max()), "pack": int(lengths.sum())}[LAYOUTS[mode]]
    return total


def split(batch: Batch, mode: str) -> list[Batch]:
    if mode == "none":
        return batch.chunk_by_size(MICRO)
    lengths = batch["attention_mask"].sum(-1).tolist()
    budget = MICRO * (PROMPT_LENGTH + RESPONSE_LENGTH)
    return [batch.index(group) for group in token_budget_micro_batches(lengths, budget, mode=LAYOUTS[mode])]


def measure(model: torch.nn.Module, cases: dict[str, list[Batch]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, cpu) seconds of one step per mode; modes take turns so a load change hits all of them."""
    times: dict[str, list[tuple[float, float]]] = {mode: [] for mode in cases}
    for mode, micro_batches in cases.items():
        step(model, micro_batches, mode)  # warm-up
    for _ in range(repeats):
        for mode, micro_batches in cases.items():
            wall, cpu = time.perf_counter(), time.process_time()
            step(model, micro_batches, mode)
            times[mode].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {mode: tuple(statistics.median(t[i] for t in ts) for i in (0, 1)) for mode, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mini", type=int, default=128, help="sequences in the mini-batch case")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model()
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; load {os.getloadavg()}")
    for case, batch in (("micro", make_batch(MICRO, seed=0)), ("mini", make_batch(args.mini, seed=1))):
        real = int(batch["attention_mask"].sum())
        print(f"{case}: {len(batch)} sequences, {real} real tokens, padded layout {batch['input_ids'].numel()}")
        cases = {mode: [batch] if case == "micro" else split(batch, mode) for mode in LAYOUTS}
        for mode, (wall, cpu) in measure(model, cases, args.repeats).items():
            print(
                f"  {mode:8s} micro-batches {len(cases[mode]):2d}  positions {positions(cases[mode], mode):6d}  "
                f"wall {wall:6.3f} s  cpu {cpu:6.3f} s"
            )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
