"""Which sequences go together: length-balanced data-parallel shards and token-budget micro-batches.

Pure index arithmetic over sequence lengths (issue 13). Balancing follows the Karmarkar-Karp largest differencing
method, as verl's `get_seqlen_balanced_partitions`; the padding-free layout of one micro-batch is in
`rlhf.padding_free`.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence

import torch

MICRO_BATCH_MODES = ("trim", "pack")


def balanced_partitions(lengths: Sequence[int], k: int, *, equal_size: bool) -> list[list[int]]:
    """Split indices 0..n-1 into `k` parts whose length sums are as equal as the heuristic finds (deterministic).

    Karmarkar-Karp for k parts: every state is k partial parts; the two states with the largest spread are merged,
    pairing the heaviest part of one with the lightest of the other, until one state is left. With `equal_size`
    the initial states are k items of consecutive length rank, one per part, so every part ends with n/k items.

    Args:
        lengths: n non-negative sequence lengths.
        k: number of parts (>= 1).
        equal_size: every part gets exactly n/k indices (n must divide by k).

    Returns:
        k lists of indices, each sorted ascending; together they hold every index exactly once. Without
        `equal_size` a part is empty only when n < k (for positive lengths).

    Raises:
        ValueError: k < 1, a negative length, or `equal_size` with n not divisible by k.
    """
    n = len(lengths)
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    if any(length < 0 for length in lengths):
        raise ValueError(f"lengths must be >= 0, got {min(lengths)}")
    if equal_size and n % k:
        raise ValueError(f"equal_size needs the number of sequences ({n}) to be divisible by k={k}")
    order = sorted(range(n), key=lambda i: (lengths[i], i))
    groups = [order[j : j + k] for j in range(0, n, k)] if equal_size else [[i] for i in order]
    tie = itertools.count()  # ties pop the older state first, and tuples never compare their part lists

    def state(parts: list[tuple[int, list[int]]]) -> tuple[int, int, list[tuple[int, list[int]]]]:
        """A heap entry: k parts (sum, indices) heaviest first; the largest spread pops first."""
        parts = sorted(parts, key=lambda part: -part[0])  # stable: equal sums keep their order
        return parts[-1][0] - parts[0][0], next(tie), parts

    heap = [state([(lengths[i], [i]) for i in group] + [(0, []) for _ in range(k - len(group))]) for group in groups]
    heapq.heapify(heap)
    while len(heap) > 1:
        heavy, light = heapq.heappop(heap)[2], heapq.heappop(heap)[2]
        merged = [(heavy[i][0] + light[k - 1 - i][0], heavy[i][1] + light[k - 1 - i][1]) for i in range(k)]
        heapq.heappush(heap, state(merged))
    parts = [sorted(indices) for _, indices in heap[0][2]] if heap else [[] for _ in range(k)]
    return sorted(parts, key=lambda part: part[0] if part else n)


def token_budget_micro_batches(
    lengths: Sequence[int], max_tokens: int, *, mode: str, min_num: int = 1
) -> list[list[int]]:
    """Group one rank's sequences into micro-batches whose cost stays within a token budget.

    Cost is what the forward actually processes: the sum of lengths when the micro-batch is packed into one row
    ("pack"), and rows x longest row when each row is trimmed to the micro-batch's longest sequence ("trim").
    "trim" walks the sequences longest first and fills each micro-batch greedily, which is the fewest groups for
    that cost and keeps padding low. "pack" tries k = max(min_num, ceil(total / max_tokens)) length-balanced parts
    and raises k until every part fits. Data-parallel ranks must run the same number of micro-batches (DeepSpeed
    steps at the last one): take the max of `len(result)` over ranks and call again with it as `min_num`.

    Args:
        lengths: n >= 1 real-token counts (attention_mask sums), each >= 1.
        max_tokens: the budget (e.g. `actor.max_tokens_per_micro_batch`).
        mode: "trim" or "pack".
        min_num: at least this many micro-batches (<= n), so ranks can agree on a common count.

    Returns:
        Micro-batches as lists of indices into `lengths`; every index exactly once, none empty.

    Raises:
        ValueError: an unknown mode, empty or non-positive lengths, min_num out of [1, n], or one sequence
            longer than `max_tokens`.
    """
    if mode not in MICRO_BATCH_MODES:
        raise ValueError(f"mode={mode!r} must be one of {MICRO_BATCH_MODES}")
    n = len(lengths)
    if n == 0 or min(lengths) < 1:
        raise ValueError(f"need at least one sequence, each of >= 1 token; got lengths {list(lengths)[:8]}...")
    if not 1 <= min_num <= n:
        raise ValueError(f"min_num={min_num} must be in [1, {n}] (the number of sequences)")
    longest = max(lengths)
    if longest > max_tokens:
        raise ValueError(f"a sequence of {longest} tokens exceeds the micro-batch token budget max_tokens={max_tokens}")
    if mode == "pack":
        k = max(min_num, math.ceil(sum(lengths) / max_tokens))
        while True:  # ends by k = n at the latest: one sequence per part always fits
            parts = balanced_partitions(lengths, k, equal_size=False)
            if all(sum(lengths[i] for i in part) <= max_tokens for part in parts):
                return parts
            k += 1
    groups: list[list[int]] = []
    for i in sorted(range(n), key=lambda i: (-lengths[i], i)):
        # The first index of a group is its longest sequence.
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= max_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    while len(groups) < min_num:  # halving the group with the most rows keeps every cost within the budget
        widest = max(range(len(groups)), key=lambda g: len(groups[g]))
        group = groups.pop(widest)
        half = (len(group) + 1) // 2
        groups[widest:widest] = [group[:half], group[half:]]
    return groups


def dp_balanced_order(lengths: Sequence[int], num_ranks: int) -> list[int]:
    """A row order after which `Batch.split(num_ranks)` gives every rank the same count and nearly the same tokens.

    Args:
        lengths: n sequence lengths (attention_mask sums); n must divide by num_ranks.
        num_ranks: data-parallel world size.

    Returns:
        A permutation of 0..n-1: `batch.index(order)` then consecutive chunks of n/num_ranks rows.
    """
    return [i for part in balanced_partitions(lengths, num_ranks, equal_size=True) for i in part]


def restore_order(parts: Sequence[torch.Tensor], index_groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """Concatenate per-micro-batch results and put the rows back in the original order.

    Args:
        parts: results of each micro-batch, [len(group), ...] each, in the order of `index_groups`.
        index_groups: the original row indices of each micro-batch (as from `token_budget_micro_batches`).

    Returns:
        [n, ...] with row i the result for original row i.
    """
    order = torch.tensor([i for group in index_groups for i in group], dtype=torch.long)
    rows = torch.cat(list(parts))
    out = torch.empty_like(rows)
    out[order.to(rows.device)] = rows
    return out


def validate_token_budget(key: str, max_tokens: int | None, longest_allowed: int) -> None:
    """Start-up check of a token budget against the longest sequence the config allows.

    Args:
        key: the config key, named in the error (e.g. "actor.max_tokens_per_micro_batch").
        max_tokens: its value; None means fixed-size micro-batches, nothing to check.
        longest_allowed: data.max_prompt_length + rollout.max_response_length (or the SFT equivalent).

    Raises:
        ValueError: the budget cannot hold one sequence of the longest allowed length.
    """
    if max_tokens is None:
        return
    if max_tokens < longest_allowed:
        raise ValueError(
            f"{key}={max_tokens} is smaller than the longest sequence the config allows ({longest_allowed} tokens: "
            f"max prompt + max response length); set it to at least {longest_allowed} or leave it unset"
        )
