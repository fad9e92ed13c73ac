"""Masked reductions over per-token tensors: the small helpers every estimator and loss shares.

All helpers treat `mask` as float weights (1 for real response tokens, 0 for padding) and never divide by zero:
an empty mask gives a mean of 0 and a variance of 0 instead of NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Added to the variance before the inverse square root in `masked_whiten` (verl's value).
WHITEN_EPS = 1e-8
# Log-ratios are clamped to +-this before exp() so a stale or broken token cannot overflow to inf (verl's bound);
# shared by the policy losses and the KL estimators.
LOG_RATIO_CLAMP = 20.0


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of `values * mask`, over all elements (`dim=None`) or along `dim`."""
    masked = values * mask
    return masked.sum() if dim is None else masked.sum(dim=dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `values` over the positions where `mask` is 1; 0 where the mask is empty.

    Args:
        values: [B, T] (or any shape matching `mask`).
        mask: same shape, float 0/1.
        dim: reduce along this dim, or over everything when None.

    Returns:
        0-d tensor when `dim` is None, else `values` reduced along `dim`.
    """
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1.0)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of `values` over the masked positions (all of them), as a 0-d tensor.

    With `unbiased=True` the Bessel correction n / (n - 1) is applied; with n <= 1 masked positions the variance
    is 0 (one point carries no spread) instead of the NaN or error of a naive formula.
    """
    mean = masked_mean(values, mask)
    count = mask.sum()
    sq_dev_sum = masked_sum((values - mean) ** 2, mask)
    if unbiased:
        return torch.where(count > 1, sq_dev_sum / (count - 1).clamp(min=1.0), torch.zeros_like(sq_dev_sum))
    return sq_dev_sum / count.clamp(min=1.0)


def masked_whiten(values: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """Normalise `values` to zero mean and unit variance over the masked positions (the whole tensor).

    `(values - mean) / sqrt(var + 1e-8)` with the unbiased masked variance, as verl's `masked_whiten`. Masked-out
    positions are transformed too; callers multiply by the mask afterwards. With `shift_mean=False` the mean is
    added back (scale only).
    """
    mean = masked_mean(values, mask)
    var = masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + WHITEN_EPS)
    return whitened if shift_mean else whitened + mean


@dataclass
class GroupStats:
    """Per-sample statistics of the sample's prompt group (GRPO-style estimators, DAPO's filter)."""

    mean: Tensor  # [B] mean score of each sample's group
    std: Tensor  # [B] unbiased std of the group (0 for a group of one)
    size: Tensor  # [B] float number of samples in the group
    is_informative: Tensor  # [B] bool: the group has >= 2 samples whose scores differ


def group_stats(scores: Tensor, group_ids: Tensor) -> GroupStats:
    """Per-sample statistics of the sample's group. scores: [B] float, group_ids: [B] long."""
    _, inverse = torch.unique(group_ids, return_inverse=True)  # [B] group index in 0..G-1
    num_groups = int(inverse.max().item()) + 1 if inverse.numel() else 0
    zeros = scores.new_zeros(num_groups)
    size = zeros.index_add(0, inverse, torch.ones_like(scores))
    mean = zeros.index_add(0, inverse, scores) / size
    sq_dev = zeros.index_add(0, inverse, (scores - mean[inverse]) ** 2)
    std = torch.sqrt(sq_dev / (size - 1).clamp(min=1.0))
    # Exact max == min test: float rounding in the mean can leave ~1e-9 residues that 1 / (std + eps) would blow up.
    group_max = zeros.scatter_reduce(0, inverse, scores, reduce="amax", include_self=False)
    group_min = zeros.scatter_reduce(0, inverse, scores, reduce="amin", include_self=False)
    is_informative = group_max > group_min
    return GroupStats(mean[inverse], std[inverse], size[inverse], is_informative[inverse])
