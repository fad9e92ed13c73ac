"""The one update loop: epochs x mini-batches (one optimizer step each) x micro-batches (gradient accumulation).

The actor, the critic and SFT all train through `train_mini_batches`; each supplies only its micro-batch loss.

Loss normalisation is global: every micro-batch's loss is divided by the token (or sequence) count of the whole
mini-batch on all ranks (the aggregator built here from `loss_agg_mode`), micro-batch gradients are summed, and the
loss handed to DeepSpeed is multiplied by the world size to undo its data-parallel averaging. The gradient therefore
does not depend on how a mini-batch is split into micro-batches or ranks (tests/workers/test_loss_invariance.py).
The optimizer-step boundary is set explicitly on the last micro-batch, so the number of micro-batches may vary.
Metrics are reduced the same way: `sums` add up to the mini-batch value, `means` are token-weighted, `maxes`/`mins`
take the extreme over micro-batches and ranks; every rank returns the same numbers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import deepspeed
import torch
import torch.distributed as dist
from rlhf.workers.engine import begin_micro_batch
from torch import Tensor

from rlhf.algorithms import aggregation_counts, make_loss_aggregator
from rlhf.batch import Batch
from rlhf.packing import restore_order, token_budget_micro_batches

Aggregator = Callable[[Tensor, Tensor], Tensor]


@dataclass
class MicroBatchLoss:
    """What a role's loss function returns for one micro-batch."""

    loss: Tensor
    """Scalar to backpropagate, already normalised by the mini-batch's global counts (built with `agg`)."""
    sums: dict[str, float] = field(default_factory=dict)
    """Metrics (full names, e.g. "actor/pg_loss") normalised like the loss: their sum over micro-batches and ranks is the mini-batch's value."""
    means: dict[str, float] = field(default_factory=dict)
    """Means over this micro-batch's response tokens, combined weighted by each micro-batch's share of tokens."""
    maxes: dict[str, float] = field(default_factory=dict)
    """Maxima over this micro-batch; -inf when it has no response token (every micro-batch reports the same keys)."""
    mins: dict[str, float] = field(default_factory=dict)
    """Minima over this micro-batch; +inf when it has no response token."""
    rows: dict[str, Tensor] = field(default_factory=dict)
    """Per-row outputs [b, R] of this micro-batch (e.g. the detached log-probs of an on-policy update), returned by
    `train_mini_batches` in the caller's row order."""


LossFn = Callable[[Batch, Aggregator], MicroBatchLoss]
# The tensor train_mini_batches adds to a shard: each row's index in the caller's order, carried into micro-batches.
ROW = "_row"
SplitFn = Callable[[Batch], list[Batch]]


@dataclass(frozen=True)
class UpdateSpec:
    """How one role splits and normalises its update."""

    prefix: str
    """Prefix of the loop's own metrics (grad_norm, skipped_update, lr), e.g. "actor/"."""
    mini_batch_size: int
    """Rows of this rank's shard per optimizer step."""
    epochs: int
    """Passes over the shard."""
    loss_agg_mode: str
    """`algorithm.loss_agg_mode` (SFT: token-mean)."""
    norm_length: int
    """Constant divisor of seq-mean-token-sum-norm (the max response length)."""


def global_sum(world_size: int, *values: float) -> list[float]:
    """Sum each value over the data-parallel ranks (one all-reduce)."""
    t = torch.tensor(values, dtype=torch.float64)
    if world_size > 1:
        dist.all_reduce(t)
    return t.tolist()


def _global_reduce(world_size: int, values: dict[str, float], op: dist.ReduceOp) -> dict[str, float]:
    """Reduce a dict of floats over ranks with `op` (every rank must hold the same keys)."""
    keys = sorted(values)
    if world_size > 1 and keys:
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(t, op=op)
        return dict(zip(keys, t.tolist(), strict=True))
    return {k: values[k] for k in keys}


def _extremes(world_size: int, values: dict[str, float], op: dist.ReduceOp) -> dict[str, float]:
    """Max/min over ranks; +-inf marks "no value here" (a micro-batch without response tokens) and is dropped."""
    return {k: v for k, v in _global_reduce(world_size, values, op).items() if math.isfinite(v)}


def split_micro_batches(
    batch: Batch, size: int, max_tokens: int | None, layout: str, world_size: int
) -> list[tuple[list[int], Batch]]:
    """A rank's rows as micro-batches: `size` rows each, or as many as fit `max_tokens` (the same count on every rank).

    Args:
        size: rows per micro-batch when there is no token budget.
        max_tokens: the token budget (`*.max_tokens_per_micro_batch`), or None.
        layout: the forward's padding-free layout ("pack" costs the sum of lengths; "trim"/"none" rows x longest).
        world_size: data-parallel ranks; with a budget they agree on the largest count (an all-reduce), because
            collective optimizer steps and ZeRO-3 gathers need every rank to run as many forwards.

    Returns:
        (original row indices, micro-batch) pairs; every row exactly once.
    """
    if max_tokens is None:
        groups = [list(range(i, min(i + size, len(batch)))) for i in range(0, len(batch), size)]
        return [(group, batch.index(group)) for group in groups]
    lengths = [max(1, int(n)) for n in batch["attention_mask"].sum(-1).tolist()]
    mode = "pack" if layout == "pack" else "trim"
    groups = token_budget_micro_batches(lengths, max_tokens, mode=mode) if lengths else []
    if world_size > 1:  # every rank takes part, even one with no rows
        count = torch.tensor([len(groups)], dtype=torch.long)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        if len(groups) < int(count) <= len(lengths):
            groups = token_budget_micro_batches(lengths, max_tokens, mode=mode, min_num=int(count))
    return [(group, batch.index(group)) for group in groups]


@torch.no_grad()
def forward_micro_batches(
    batch: Batch,
    fn: Callable[[Batch], dict[str, Tensor]],
    size: int,
    max_tokens: int | None,
    layout: str,
    world_size: int,
) -> Batch:
    """`fn` (a no-gradient forward returning [b, ...] tensors) over `batch` in micro-batches, results in row order."""
    parts = split_micro_batches(batch, size, max_tokens, layout, world_size)
    if not parts:
        return Batch()
    outputs = [fn(micro) for _, micro in parts]
    groups = [group for group, _ in parts]
    return Batch({key: restore_order([out[key] for out in outputs], groups) for key in outputs[0]})


def mini_batches(batch: Batch, mini_size: int, epochs: int, generator: torch.Generator | None) -> Iterator[Batch]:
    """`epochs` passes over `batch` in mini-batches of `mini_size` rows, reshuffled each pass if a generator is given."""
    for _ in range(epochs):
        order = torch.randperm(len(batch), generator=generator) if generator is not None else torch.arange(len(batch))
        yield from batch.index(order).chunk_by_size(mini_size)


def optimizer_step(
    engine: deepspeed.DeepSpeedEngine,
    mini: Batch,
    loss_fn: LossFn,
    split: SplitFn,
    spec: UpdateSpec,
    world_size: int,
    row_outputs: dict[str, list[tuple[Tensor, Tensor]]] | None = None,
) -> dict[str, float]:
    """Gradient accumulation over the micro-batches of `mini`, then one optimizer step; returns its metrics.

    `row_outputs` collects each micro-batch's per-row outputs with their `ROW` indices.
    """
    num_tokens, num_seqs = global_sum(world_size, *aggregation_counts(mini["response_mask"]))
    agg = make_loss_aggregator(
        spec.loss_agg_mode, global_num_tokens=num_tokens, global_num_seqs=num_seqs, norm_length=spec.norm_length
    )
    sums: dict[str, float] = defaultdict(float)
    maxes: dict[str, float] = {}
    mins: dict[str, float] = {}
    micro_batches = split(mini)
    for index, micro in enumerate(micro_batches):
        engine.set_gradient_accumulation_boundary(index == len(micro_batches) - 1)
        begin_micro_batch(engine)
        out = loss_fn(micro, agg)
        engine.backward(out.loss * world_size, scale_wrt_gas=False)
        share = float(micro["response_mask"].sum()) / max(num_tokens, 1.0)
        for key, value in out.sums.items():
            sums[key] += value
        for key, value in out.means.items():
            sums[key] += value * share
        for key, value in out.maxes.items():
            maxes[key] = max(maxes.get(key, -math.inf), value)
        for key, value in out.mins.items():
            mins[key] = min(mins.get(key, math.inf), value)
        if row_outputs is not None:
            for key, value in out.rows.items():
                row_outputs[key].append((micro[ROW], value.detach().cpu()))
    engine.step()  # the boundary was set on the last micro-batch: exactly one optimizer step
    metrics = _global_reduce(world_size, sums, dist.ReduceOp.SUM)
    metrics.update(_extremes(world_size, maxes, dist.ReduceOp.MAX))
    metrics.update(_extremes(world_size, mins, dist.ReduceOp.MIN))
    grad_norm = engine.get_global_grad_norm()
    grad_norm = float(grad_norm) if grad_norm is not None else math.nan
    out_metrics = dict(metrics)
    out_metrics[spec.prefix + "grad_norm"] = grad_norm
    # DeepSpeed's ZeRO optimizers skip the step (and zero the gradients) when the gradient norm is NaN/inf.
    out_metrics[spec.prefix + "skipped_update"] = float(not math.isfinite(grad_norm))
    out_metrics[spec.prefix + "lr"] = engine.get_lr()[0]
    return out_metrics


def train_mini_batches(
    engine: deepspeed.DeepSpeedEngine,
    batch: Batch,
    loss_fn: LossFn,
    split: SplitFn,
    spec: UpdateSpec,
    world_size: int,
    generator: torch.Generator | None,
) -> tuple[dict[str, float], Batch]:
    """`spec.epochs` passes over this rank's `batch` in mini-batches, one optimizer step each.

    Args:
        batch: this rank's shard; every rank must hold the same number of rows (the optimizer steps are collective).
        loss_fn: the role's micro-batch loss.
        split: a mini-batch -> its micro-batches (equal counts on every rank; see `split_micro_batches`).
        generator: reshuffles rows between mini-batches each epoch; None keeps the order.

    Returns:
        Metrics averaged over the optimizer steps (the same on every rank), and a Batch of the per-row outputs the
        loss reported (`MicroBatchLoss.rows`, from the last epoch) in `batch`'s row order (empty if none).
    """
    engine.train()
    batch = Batch(dict(batch.tensors), dict(batch.non_tensors), dict(batch.meta))
    batch[ROW] = torch.arange(len(batch))
    per_step: dict[str, list[float]] = defaultdict(list)
    row_outputs: dict[str, list[tuple[Tensor, Tensor]]] = defaultdict(list)
    for mini in mini_batches(batch, spec.mini_batch_size, spec.epochs, generator):
        for key, value in optimizer_step(engine, mini, loss_fn, split, spec, world_size, row_outputs).items():
            per_step[key].append(value)
    outputs = Batch()
    for key, parts in row_outputs.items():
        values = torch.cat([v for _, v in parts])
        rows = torch.cat([r for r, _ in parts])
        ordered = values.new_zeros((len(batch), *values.shape[1:]))
        ordered[rows] = values  # rows are asked for in one-epoch updates only (each row appears once)
        outputs[key] = ordered
    return {k: sum(v) / len(v) for k, v in per_step.items()}, outputs
