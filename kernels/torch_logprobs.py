"""Chunked torch log-probs and entropy from hidden states: the CPU path and the reference for the Triton kernels.

Tokens are processed `chunk_size` at a time, so at most two [chunk_size, V] float32 buffers are alive (plus a float32
copy of W and the float32 dW accumulator for 16-bit inputs). Backward recomputes each chunk's logits rather than
saving them: one extra matmul buys O(chunk_size x V) instead of O(T x V) memory. Each chunk takes its log-sum-exp
over the whole vocabulary in one GEMM + two passes (the Triton kernels instead go online over vocabulary blocks): on
CPU one large GEMM per chunk is faster than many narrow ones, and the chunk already bounds memory.
"""

import torch
from torch import Tensor


def _chunk_logits(h32, weight32, bias32, inv_temp: float, out: Tensor, row_shift: Tensor | None = None) -> Tensor:
    """out[c, V] = (h32 @ weight32.T + bias32) * inv_temp - row_shift[:, None], written in place; returns out."""
    if bias32 is None and row_shift is None:
        # beta=0 ignores out's old contents (NaN included), so the buffer needs no zeroing.
        return out.addmm_(h32, weight32.t(), beta=0.0, alpha=inv_temp)
    if bias32 is None:  # the shift rides on addmm's broadcast input: no extra pass over [c, V]
        return torch.addmm(row_shift[:, None], h32, weight32.t(), beta=-1.0, alpha=inv_temp, out=out)
    torch.addmm(bias32, h32, weight32.t(), beta=inv_temp, alpha=inv_temp, out=out)
    return out if row_shift is None else out.sub_(row_shift[:, None])


def _forward(hidden, weight32, bias32, targets, inv_temp, compute_entropy, chunk_size):
    """Per-token log p(y), entropy and log-sum-exp, all [T] float32."""
    num_tokens, vocab = hidden.shape[0], weight32.shape[0]
    log_probs = torch.empty(num_tokens, dtype=torch.float32, device=hidden.device)
    entropy = torch.empty_like(log_probs) if compute_entropy else log_probs.new_empty(0)
    lse = torch.empty_like(log_probs)
    rows = min(chunk_size, num_tokens)
    shifted_buf = torch.empty(rows, vocab, dtype=torch.float32, device=hidden.device)
    exp_buf = torch.empty_like(shifted_buf)
    for start in range(0, num_tokens, chunk_size):
        end = min(start + chunk_size, num_tokens)
        shifted, exp_shifted = shifted_buf[: end - start], exp_buf[: end - start]  # [c, V]
        _chunk_logits(hidden[start:end].float(), weight32, bias32, inv_temp, shifted)
        row_max = shifted.amax(dim=1, keepdim=True)  # [c, 1]
        shifted.sub_(row_max)  # z - max <= 0, so exp cannot overflow
        target_shifted = shifted.gather(1, targets[start:end, None]).squeeze(1)
        torch.exp(shifted, out=exp_shifted)
        sum_exp = exp_shifted.sum(dim=1)
        log_sum_exp = sum_exp.log()
        log_probs[start:end] = target_shifted - log_sum_exp
        lse[start:end] = row_max.squeeze(1) + log_sum_exp
        if compute_entropy:
            # H = lse - sum p z = log s - sum(e (z - max)) / s, with e = exp(z - max), s = sum e
            entropy[start:end] = log_sum_exp - exp_shifted.mul_(shifted).sum(dim=1) / sum_exp
    return log_probs, entropy, lse


def _backward(hidden, weight32, bias32, targets, lse, entropy, grad_lp, grad_ent, inv_temp, chunk_size, needs):
    """dH [T, d], dW [V, d] and db [V] in float32 (None where not needed).

    dz = g_lp (onehot - p) - g_ent p (log p + H), and d(logits) = dz / temperature.
    """
    num_tokens, vocab = hidden.shape[0], weight32.shape[0]
    need_hidden, need_weight, need_bias = needs
    device = hidden.device
    grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=device) if need_hidden else None
    grad_weight = torch.zeros(weight32.shape, dtype=torch.float32, device=device) if need_weight else None
    grad_bias = torch.zeros(vocab, dtype=torch.float32, device=device) if need_bias else None
    if grad_lp is None:
        grad_lp = torch.zeros(num_tokens, dtype=torch.float32, device=device)
    rows = min(chunk_size, num_tokens)
    log_p_buf = torch.empty(rows, vocab, dtype=torch.float32, device=device)
    grad_buf = torch.empty_like(log_p_buf)
    for start in range(0, num_tokens, chunk_size):
        end = min(start + chunk_size, num_tokens)
        log_p, grad = log_p_buf[: end - start], grad_buf[: end - start]  # [c, V]
        h32 = hidden[start:end].float()
        _chunk_logits(h32, weight32, bias32, inv_temp, log_p, row_shift=lse[start:end])  # log p
        torch.exp(log_p, out=grad)  # p
        g_lp = grad_lp[start:end].float()
        if grad_ent is None:
            grad.mul_((-inv_temp * g_lp)[:, None])
        else:
            g_ent = grad_ent[start:end].float()
            # log_p := -(g_lp + g_ent (log p + H)) / temperature, then grad := p * log_p
            row_bias = -inv_temp * (g_lp + g_ent * entropy[start:end])
            torch.addcmul(row_bias[:, None], log_p, (-inv_temp * g_ent)[:, None], out=log_p)
            grad.mul_(log_p)
        chunk_rows = torch.arange(end - start, device=device)
        grad[chunk_rows, targets[start:end]] += inv_temp * g_lp  # the onehot term
        if need_hidden:
            torch.mm(grad, weight32, out=grad_hidden[start:end])
        if need_weight:
            grad_weight.addmm_(grad.t(), h32)
        if need_bias:
            grad_bias += grad.sum(dim=0)
    return grad_hidden, grad_weight, grad_bias


def forward(hidden, weight, bias, targets, inv_temp, compute_entropy, chunk_size):
    """Backend entry (see autograd.py): 16-bit W is upcast once so logits accumulate in float32."""
    weight32 = weight.float()  # no copy for float32
    bias32 = None if bias is None else bias.float()
    return _forward(hidden, weight32, bias32, targets, inv_temp, compute_entropy, chunk_size)


def backward(hidden, weight, bias, targets, lse, entropy, grad_lp, grad_ent, inv_temp, chunk_size, needs):
    """Backend entry (see autograd.py)."""
    bias32 = None if bias is None else bias.float()
    return _backward(
        hidden, weight.float(), bias32, targets, lse, entropy, grad_lp, grad_ent, inv_temp, chunk_size, needs
    )
