"""Log-probs and entropy of sampled tokens straight from hidden states, never holding [tokens, vocab] logits.

    from rlhf.kernels import fused_log_probs

    log_probs, entropy = fused_log_probs(hidden, lm_head.weight, targets, temperature=0.7)  # [B, S] each
    (-(log_probs * advantages).mean() - 0.01 * entropy.mean()).backward()  # grads reach hidden and lm_head.weight

Backends: triton_logprobs.py (CUDA), torch_logprobs.py (chunked torch, CPU path and reference), naive.py (tests);
both fused backends go through the one autograd wrapper in autograd.py.
"""

from torch import Tensor

from . import torch_logprobs
from .autograd import apply_fused
from .checks import check_options, check_tensors, resolve_backend
from .naive import naive_log_probs

try:  # triton is optional: CPU-only installs run the chunked torch path
    from . import triton_logprobs
except ImportError:
    triton_logprobs = None

__all__ = ["fused_log_probs"]


def fused_log_probs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    temperature: float = 1.0,
    bias: Tensor | None = None,
    *,
    compute_entropy: bool = True,
    backend: str = "auto",
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor | None]:
    """Log p(targets) and entropy per token under softmax((hidden @ weight.T + bias) / temperature).

    Differentiable: gradients from both outputs reach hidden, weight and bias, returned in their dtype.
    Softmax statistics are accumulated in float32 whatever the input dtype.

    Args:
        hidden: [T, d] or [B, S, d] contiguous, float32 / bfloat16 / float16 (e.g. the last hidden states).
        weight: [V, d] contiguous lm_head weight, hidden's dtype and device.
        targets: hidden.shape[:-1] int64 token ids in [0, V).
        temperature: > 0; the sampling temperature, so that log-probs match the rollout's distribution.
        bias: optional [V] lm_head bias.
        compute_entropy: False skips the entropy (a little less work) and returns None for it.
        backend: "auto" (Triton on CUDA when importable, else "torch"), "torch", "triton" or "naive".
        chunk_size: tokens per chunk; peak extra memory ~ 2 x chunk_size x V x 4 bytes on the torch path and
            chunk_size x V x itemsize in the Triton backward. 1024 keeps it ~1.2 GB at V = 151,936.

    Returns:
        log_probs: targets.shape float32, all <= 0.
        entropy: targets.shape float32, or None when compute_entropy is False.

    Raises:
        ValueError: on a bad argument, naming it and the value received (e.g. `temperature=0 must be > 0 ...`).
    """
    check_tensors(hidden, weight, targets, bias)
    check_options(temperature, backend, chunk_size)
    interpreted = triton_logprobs is not None and triton_logprobs.INTERPRETED
    chosen = resolve_backend(backend, hidden.device, triton_logprobs is not None, interpreted)
    if chosen == "naive":
        return naive_log_probs(hidden, weight, targets, temperature, bias, compute_entropy)

    flat_hidden = hidden.view(-1, hidden.shape[-1])  # [T, d]; a view, so gradients flow back to [B, S, d]
    flat_targets = targets.view(-1)
    # Zero tokens: the torch path handles it (its chunk loops run zero times); a Triton grid cannot be empty.
    backend_module = triton_logprobs if chosen == "triton" and flat_targets.numel() > 0 else torch_logprobs
    log_probs, entropy = apply_fused(
        backend_module, flat_hidden, weight, flat_targets, float(temperature), bias, compute_entropy, chunk_size
    )
    return log_probs.view(targets.shape), (None if entropy is None else entropy.view(targets.shape))
