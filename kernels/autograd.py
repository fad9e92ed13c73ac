"""The one autograd wrapper of the fused log-prob kernels, shared by the chunked torch and the Triton backends.

A backend is a module with two functions over flat tensors (hidden [T, d], weight [V, d], bias [V] | None,
targets [T]):
    forward(hidden, weight, bias, targets, inv_temp, compute_entropy, chunk_size) -> (log_probs, entropy, lse)
    backward(hidden, weight, bias, targets, lse, entropy, grad_lp, grad_ent, inv_temp, chunk_size, needs)
        -> (grad_hidden, grad_weight, grad_bias), each None where `needs` says it is not wanted
Everything autograd-specific (saving tensors, unused outputs, dtypes of the returned gradients) lives here once.
"""

from types import ModuleType

import torch
from torch import Tensor


class FusedLogProbs(torch.autograd.Function):
    """(hidden, weight, bias | None, targets) -> (log_probs [T], entropy [T] or empty), through `backend`."""

    @staticmethod
    def forward(ctx, backend, hidden, weight, bias, targets, temperature, compute_entropy, chunk_size):
        inv_temp = 1.0 / temperature
        log_probs, entropy, lse = backend.forward(hidden, weight, bias, targets, inv_temp, compute_entropy, chunk_size)
        ctx.save_for_backward(hidden, weight, bias, targets, lse, entropy)
        ctx.backend, ctx.inv_temp, ctx.chunk_size, ctx.compute_entropy = backend, inv_temp, chunk_size, compute_entropy
        ctx.set_materialize_grads(False)  # an unused output arrives as None and its gradient work is skipped
        if not compute_entropy:
            ctx.mark_non_differentiable(entropy)
        return log_probs, entropy

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy):
        hidden, weight, bias, targets, lse, entropy = ctx.saved_tensors
        if not ctx.compute_entropy:
            grad_entropy = None
        needs = (ctx.needs_input_grad[1], ctx.needs_input_grad[2], bias is not None and ctx.needs_input_grad[3])
        if (grad_log_probs is None and grad_entropy is None) or not any(needs):
            return (None,) * 8
        grads = ctx.backend.backward(
            hidden,
            weight,
            bias,
            targets,
            lse,
            entropy,
            grad_log_probs,
            grad_entropy,
            ctx.inv_temp,
            ctx.chunk_size,
            needs,
        )
        grad_hidden, grad_weight, grad_bias = (
            None if g is None else g.to(x.dtype) for g, x in zip(grads, (hidden, weight, bias), strict=True)
        )
        return None, grad_hidden, grad_weight, grad_bias, None, None, None, None


def apply_fused(
    backend: ModuleType,
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    temperature: float,
    bias: Tensor | None,
    compute_entropy: bool,
    chunk_size: int,
) -> tuple[Tensor, Tensor | None]:
    """log_probs [T] float32 and entropy [T] float32 (None when not computed) through `backend`'s kernels."""
    log_probs, entropy = FusedLogProbs.apply(
        backend, hidden, weight, bias, targets, temperature, compute_entropy, chunk_size
    )
    return log_probs, (entropy if compute_entropy else None)
