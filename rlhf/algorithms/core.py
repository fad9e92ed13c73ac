"""Masked reductions over per-token tensors: the small helpers every estimator and loss shares.

All helpers treat `mask` as float weights (1 for real response tokens, 0 for padding) and never divide by zero:
an empty mask gives a mean of 0 and a variance of 0 instead of NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Added to the variance before the inverse square root in `masked_whiten` (verl's value).
WHITEN_EPS = 1e-8


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
