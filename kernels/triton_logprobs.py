"""Triton log-probs and entropy from hidden states: logits tiles live only in registers, never in memory.

Forward: one program per (token block, vocabulary split) computes logits tiles with tl.dot (float32 accumulation)
and keeps an online log-sum-exp (running max m, sum of exp s, sum of exp * z for the entropy) over the vocabulary
blocks of its split; a tiny torch step merges the splits. Memory: O(T x num_splits), no [T, V] tensor.
Backward, per chunk of tokens: a kernel recomputes the logits tiles and writes d(logits) [chunk, V] in the input
dtype; cuBLAS then forms dH = dlogits @ W and accumulates dW += dlogits.T @ H in float32.
Runs on CPU tensors under the Triton interpreter when TRITON_INTERPRET=1 is set before triton is imported.
"""

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction


@triton.jit
def _logits_tile(h_ptr, w_ptr, b_ptr, rows, cols, row_mask, col_mask, d, inv_temp, HAS_BIAS: tl.constexpr,
                 BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
                 UPCAST: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """z[BLOCK_T, BLOCK_V] = (H[rows] @ W[cols].T + b[cols]) * inv_temp, accumulated in float32."""
    acc = tl.zeros((BLOCK_T, BLOCK_V), dtype=tl.float32)
    ks = tl.arange(0, BLOCK_K)
    h_rows = h_ptr + rows.to(tl.int64)[:, None] * d
    w_rows = w_ptr + cols.to(tl.int64)[:, None] * d
    for k0 in range(0, d, BLOCK_K):
        k = k0 + ks
        k_mask = k < d
        h = tl.load(h_rows + k[None, :], mask=row_mask[:, None] & k_mask[None, :], other=0.0)  # [BLOCK_T, BLOCK_K]
        w = tl.load(w_rows + k[None, :], mask=col_mask[:, None] & k_mask[None, :], other=0.0)  # [BLOCK_V, BLOCK_K]
        if UPCAST:  # the interpreter's 16-bit tl.dot is wrong; float32 products of 16-bit values are exact anyway
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, tl.trans(w), acc, input_precision=PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    return acc * inv_temp


@triton.jit
def _forward_kernel(h_ptr, w_ptr, b_ptr, y_ptr, part_ptr, T, V, d, inv_temp, cols_per_split,
                    HAS_BIAS: tl.constexpr, COMPUTE_ENTROPY: tl.constexpr, BLOCK_T: tl.constexpr,
                    BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr, UPCAST: tl.constexpr,
                    PRECISION: tl.constexpr):  # fmt: skip
    """Partial (max, sum exp, sum exp * z, target logit) of one token block over one vocabulary split.

    part_ptr: [4, num_splits, T] float32.
    """
    pid_t = tl.program_id(0)
    pid_v = tl.program_id(1)
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    row_mask = rows < T
    y = tl.load(y_ptr + rows, mask=row_mask, other=-1)
    v_start = pid_v * cols_per_split
    v_end = tl.minimum(v_start + cols_per_split, V)
    run_max = tl.full((BLOCK_T,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_T,), dtype=tl.float32)
    run_sum_z = tl.zeros((BLOCK_T,), dtype=tl.float32)
    target_z = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for v0 in range(v_start, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        col_mask = cols < v_end
        z = _logits_tile(h_ptr, w_ptr, b_ptr, rows, cols, row_mask, col_mask, d, inv_temp, HAS_BIAS,
                         BLOCK_T, BLOCK_V, BLOCK_K, UPCAST, PRECISION)  # fmt: skip
        # Masked columns: -inf for the max and exp; z itself stays finite there (zero-loaded W), so e * z = 0.
        z_or_inf = tl.where(col_mask[None, :], z, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(z_or_inf, axis=1))
        rescale = tl.exp(run_max - new_max)  # 0 on the first tile (run_max = -inf)
        e = tl.exp(z_or_inf - new_max[:, None])  # [BLOCK_T, BLOCK_V]
        run_sum = run_sum * rescale + tl.sum(e, axis=1)
        if COMPUTE_ENTROPY:
            run_sum_z = run_sum_z * rescale + tl.sum(e * z, axis=1)
        target_z += tl.sum(tl.where(cols[None, :] == y[:, None], z, 0.0), axis=1)
        run_max = new_max
    split_stride = tl.num_programs(1) * T
    out = part_ptr + pid_v * T + rows
    tl.store(out, run_max, mask=row_mask)
    tl.store(out + split_stride, run_sum, mask=row_mask)
    tl.store(out + 2 * split_stride, run_sum_z, mask=row_mask)
    tl.store(out + 3 * split_stride, target_z, mask=row_mask)


@triton.jit
def _backward_kernel(h_ptr, w_ptr, b_ptr, y_ptr, lse_ptr, ent_ptr, g_lp_ptr, g_ent_ptr, dz_ptr, T, V, d, inv_temp,
                     HAS_BIAS: tl.constexpr, HAS_GRAD_ENTROPY: tl.constexpr, BLOCK_T: tl.constexpr,
                     BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr, UPCAST: tl.constexpr,
                     PRECISION: tl.constexpr):  # fmt: skip
    """dz[T, V] = (g_lp (onehot - p) - g_ent p (log p + H)) / temperature, in dz's dtype."""
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    row_mask = rows < T
    col_mask = cols < V
    z = _logits_tile(h_ptr, w_ptr, b_ptr, rows, cols, row_mask, col_mask, d, inv_temp, HAS_BIAS,
                     BLOCK_T, BLOCK_V, BLOCK_K, UPCAST, PRECISION)  # fmt: skip
    y = tl.load(y_ptr + rows, mask=row_mask, other=-1)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
    g_lp = tl.load(g_lp_ptr + rows, mask=row_mask, other=0.0)
    valid = row_mask[:, None] & col_mask[None, :]
    # Out-of-range lanes are never stored; 0 there keeps exp() from overflowing into inf * 0 = NaN.
    log_p = tl.where(valid, z - lse[:, None], 0.0)
    p = tl.exp(log_p)
    coef = g_lp[:, None]
    if HAS_GRAD_ENTROPY:
        ent = tl.load(ent_ptr + rows, mask=row_mask, other=0.0)
        g_ent = tl.load(g_ent_ptr + rows, mask=row_mask, other=0.0)
        coef = coef + g_ent[:, None] * (log_p + ent[:, None])
    dz = tl.where(cols[None, :] == y[:, None], g_lp[:, None], 0.0) - p * coef
    out = dz_ptr + rows.to(tl.int64)[:, None] * V + cols[None, :]
    tl.store(out, (dz * inv_temp).to(dz_ptr.dtype.element_ty), mask=valid)


# True when TRITON_INTERPRET=1 was set before this module was imported: kernels then run on CPU tensors in numpy.
INTERPRETED = isinstance(_forward_kernel, InterpretedFunction)


def _config(dtype: torch.dtype) -> dict:
    """Tile sizes and launch options. Not autotuned (autotuning cannot run under the interpreter)."""
    if INTERPRETED:  # small tiles and splits so that the tests' small shapes still cover every masking edge
        return dict(BLOCK_T=16, BLOCK_V=64, BLOCK_K=32, num_warps=1, num_stages=1, blocks_per_split=2)
    if dtype == torch.float32:  # exact float32 dot ("ieee", no TF32) needs smaller tiles to fit registers
        return dict(BLOCK_T=64, BLOCK_V=64, BLOCK_K=32, num_warps=4, num_stages=2, blocks_per_split=64)
    # 16-bit: 128 x 128 tensor-core tiles; 32 vocabulary blocks (4096 ids) per split -> ~37 splits at V=151,936,
    # enough programs to fill an H100 even at T = 1024.
    return dict(BLOCK_T=128, BLOCK_V=128, BLOCK_K=64, num_warps=8, num_stages=3, blocks_per_split=32)


def _launch_options(dtype: torch.dtype) -> tuple[dict, int]:
    """Keyword arguments shared by both kernels, and the vocabulary columns per forward split."""
    cfg = _config(dtype)
    cols_per_split = cfg.pop("blocks_per_split") * cfg["BLOCK_V"]
    cfg["UPCAST"] = INTERPRETED
    cfg["PRECISION"] = "ieee" if dtype == torch.float32 else "tf32"  # 16-bit inputs ignore it
    return cfg, cols_per_split


def forward(hidden, weight, bias, targets, inv_temp, compute_entropy, chunk_size):
    """Backend entry (see autograd.py): log_probs, entropy (or empty) and lse, all [T] float32.

    `chunk_size` only matters for the backward (the forward needs no [T, V] buffer at all).
    """
    num_tokens, hidden_size = hidden.shape
    vocab = weight.shape[0]
    options, cols_per_split = _launch_options(hidden.dtype)
    num_splits = triton.cdiv(vocab, cols_per_split)
    partials = torch.empty(4, num_splits, num_tokens, dtype=torch.float32, device=hidden.device)
    grid = (triton.cdiv(num_tokens, options["BLOCK_T"]), num_splits)
    _forward_kernel[grid](
        hidden, weight, hidden if bias is None else bias, targets, partials, num_tokens, vocab, hidden_size, inv_temp,
        cols_per_split, HAS_BIAS=bias is not None, COMPUTE_ENTROPY=compute_entropy, **options,
    )  # fmt: skip
    # Merge the splits' online states: each [num_splits, T].
    run_max, run_sum, run_sum_z, target_z = partials.unbind(0)
    total_max = run_max.amax(dim=0)
    rescale = torch.exp(run_max - total_max)
    total_sum = (run_sum * rescale).sum(dim=0)
    lse = total_max + total_sum.log()
    log_probs = target_z.sum(dim=0) - lse
    entropy = lse - (run_sum_z * rescale).sum(dim=0) / total_sum if compute_entropy else lse.new_empty(0)
    return log_probs, entropy, lse


def backward(hidden, weight, bias, targets, lse, entropy, grad_lp, grad_ent, inv_temp, chunk_size, needs):
    """Backend entry (see autograd.py): dH [T, d] in hidden's dtype, dW [V, d] and db [V] accumulated in float32 (None where not needed)."""
    num_tokens, hidden_size = hidden.shape
    vocab = weight.shape[0]
    need_hidden, need_weight, need_bias = needs
    device, dtype = hidden.device, hidden.dtype
    options, _ = _launch_options(dtype)
    # Incoming gradients may be expanded views (stride 0, e.g. from .sum()); the kernel indexes them densely.
    g_lp = torch.zeros(num_tokens, device=device) if grad_lp is None else grad_lp.float().contiguous()
    g_ent = None if grad_ent is None else grad_ent.float().contiguous()
    grad_hidden = torch.empty_like(hidden) if need_hidden else None
    grad_weight = torch.zeros(vocab, hidden_size, dtype=torch.float32, device=device) if need_weight else None
    grad_bias = torch.zeros(vocab, dtype=torch.float32, device=device) if need_bias else None
    dz_buf = torch.empty(min(chunk_size, num_tokens), vocab, dtype=dtype, device=device)
    # 16-bit dW partial: cuBLAS accumulates each chunk's product in float32, we add the chunks in float32.
    partial_dw = torch.empty_like(weight) if need_weight and dtype != torch.float32 else None
    for start in range(0, num_tokens, chunk_size):
        end = min(start + chunk_size, num_tokens)
        dz, h = dz_buf[: end - start], hidden[start:end]  # [c, V], [c, d]
        grid = (triton.cdiv(end - start, options["BLOCK_T"]), triton.cdiv(vocab, options["BLOCK_V"]))
        _backward_kernel[grid](
            h, weight, hidden if bias is None else bias, targets[start:end], lse[start:end],
            lse if g_ent is None else entropy[start:end], g_lp[start:end], g_lp if g_ent is None else g_ent[start:end],
            dz, end - start, vocab, hidden_size, inv_temp, HAS_BIAS=bias is not None,
            HAS_GRAD_ENTROPY=g_ent is not None, **options,
        )  # fmt: skip
        if need_hidden:
            torch.mm(dz, weight, out=grad_hidden[start:end])
        if need_weight and partial_dw is None:
            grad_weight.addmm_(dz.t(), h)
        elif need_weight:
            grad_weight += torch.mm(dz.t(), h, out=partial_dw)
        if need_bias:
            grad_bias += dz.sum(dim=0, dtype=torch.float32)
    return grad_hidden, grad_weight, grad_bias
