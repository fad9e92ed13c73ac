"""Naive log-probs and entropy: full [tokens, vocab] logits, log_softmax, gather. The reference for tests and benchmarks."""

import torch
from torch import Tensor


def naive_log_probs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    temperature: float = 1.0,
    bias: Tensor | None = None,
    compute_entropy: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Log-prob of each target token and entropy of each row, through ordinary autograd.

    Holds several [..., V] float32 tensors at once (logits, log-softmax, probabilities and their gradients): about
    5 x T x V x 4 bytes at peak in forward + backward, which is the cost the chunked paths avoid.

    Args:
        hidden: [T, d] or [B, S, d], any float dtype; upcast to float32.
        weight: [V, d] lm_head weight.
        targets: hidden.shape[:-1] int64 token ids.
        temperature: logits are divided by it.
        bias: optional [V].
        compute_entropy: when False the entropy is not computed and None is returned.

    Returns:
        log_probs: targets.shape float32, log p(targets) under softmax((hidden @ weight.T + bias) / temperature).
        entropy: targets.shape float32, or None.
    """
    logits = hidden.float() @ weight.float().t()  # [..., V]
    if bias is not None:
        logits = logits + bias.float()
    logits = logits / temperature
    log_softmax = torch.log_softmax(logits, dim=-1)  # [..., V]
    log_probs = log_softmax.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_softmax.exp() * log_softmax).sum(-1) if compute_entropy else None
    return log_probs, entropy
