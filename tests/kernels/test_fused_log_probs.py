"""fused_log_probs against the naive full-logits reference: chunked torch path on CPU, Triton on CUDA, input checks.

The Triton kernels on CPU (interpreter) are tested by test_triton_interpreter.py in a subprocess.
"""

import math

import pytest
import torch
from rlhf.kernels import fused_log_probs, triton_logprobs
from rlhf.kernels.checks import resolve_backend
from rlhf.kernels.naive import naive_log_probs

# (rtol, atol as a fraction of the reference's max |value|). Both paths accumulate in float32, so 16-bit forward
# outputs agree to float32 rounding; 16-bit gradients differ by bf16 rounding of the result (and, in Triton, of
# d(logits) before the dW / dH matmuls).
TOLERANCES = {
    torch.float32: {"out": (1e-5, 2e-6), "grad": (1e-4, 1e-5)},
    torch.bfloat16: {"out": (1e-5, 2e-6), "grad": (1.6e-2, 1e-2)},
}
# Logit scales: "flat" -> near-uniform softmax, "peaked" -> near one-hot (logits of hundreds).
LOGIT_SCALES = {"flat": 1e-3, "normal": 1.0, "peaked": 60.0}


def make_inputs(num_tokens, hidden_size, vocab, dtype, with_bias, scale=1.0, batch=None, seed=0, device="cpu"):
    """hidden [T, d] (or [B, T, d]), weight [V, d] scaled so logits have std ~ scale, targets, bias (all leaves)."""
    gen = torch.Generator().manual_seed(seed)
    lead = (num_tokens,) if batch is None else (batch, num_tokens)
    hidden = torch.randn(*lead, hidden_size, generator=gen)
    weight = torch.randn(vocab, hidden_size, generator=gen) * (scale / math.sqrt(hidden_size))
    bias = torch.randn(vocab, generator=gen) * scale if with_bias else None
    targets = torch.randint(0, vocab, lead, generator=gen)

    def leaf(x):
        return None if x is None else x.to(device=device, dtype=dtype).requires_grad_()

    return leaf(hidden), leaf(weight), targets.to(device), leaf(bias)


def run(backend, hidden, weight, targets, temperature, bias, chunk_size=16, grad_from=("lp", "ent")):
    """Outputs and gradients of sum(g_lp * log_probs) + sum(g_ent * entropy) with fixed random g's."""
    log_probs, entropy = fused_log_probs(
        hidden, weight, targets, temperature, bias, backend=backend, chunk_size=chunk_size
    )
    gen = torch.Generator().manual_seed(1)
    g_lp = torch.randn(targets.shape, generator=gen).to(hidden.device)
    g_ent = torch.randn(targets.shape, generator=gen).to(hidden.device)
    loss = 0.0
    if "lp" in grad_from:
        loss = loss + (log_probs * g_lp).sum()
    if "ent" in grad_from:
        loss = loss + (entropy * g_ent).sum()
    params = [x for x in (hidden, weight, bias) if x is not None]
    return log_probs, entropy, torch.autograd.grad(loss, params)


def assert_matches(actual, expected, dtype):
    """Compare (log_probs, entropy, grads) tuples with the dtype's tolerances."""
    (lp, ent, grads), (lp_ref, ent_ref, grads_ref) = actual, expected
    # Output errors scale with the logits' magnitude (float32 rounding of z), of which max |log p| is a proxy.
    logit_scale = max(lp_ref.abs().max().item(), 1.0) if lp_ref.numel() else 1.0
    for kind, pairs in (("out", [(lp, lp_ref), (ent, ent_ref)]), ("grad", zip(grads, grads_ref, strict=True))):
        rtol, atol_fraction = TOLERANCES[dtype][kind]
        for got, want in pairs:
            assert got.dtype == want.dtype and got.shape == want.shape
            scale = logit_scale if kind == "out" else want.abs().max().item()
            torch.testing.assert_close(got.float(), want.float(), rtol=rtol, atol=atol_fraction * scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("temperature", [0.6, 1.0, 1.5])
@pytest.mark.parametrize("scale", list(LOGIT_SCALES))
@pytest.mark.parametrize(
    "num_tokens,hidden_size,vocab,chunk_size",
    [(1, 16, 50, 4), (37, 40, 300, 16), (64, 32, 257, 64), (20, 24, 128, 1000)],
    ids=["T=1", "T%chunk!=0", "T=chunk*1", "chunk>T"],
)
def test_torch_matches_naive(num_tokens, hidden_size, vocab, chunk_size, scale, temperature, with_bias, dtype):
    inputs = make_inputs(num_tokens, hidden_size, vocab, dtype, with_bias, LOGIT_SCALES[scale])
    expected = run("naive", *inputs[:3], temperature, inputs[3])
    actual = run("torch", *inputs[:3], temperature, inputs[3], chunk_size=chunk_size)
    assert_matches(actual, expected, dtype)
    assert (actual[0] <= 0).all(), "log-probs must never be positive"
    assert (actual[1] >= -1e-5).all() and (actual[1] <= math.log(vocab) + 1e-4).all()


@pytest.mark.parametrize("grad_from", [("ent",), ("lp",)])
def test_gradient_from_a_single_output(grad_from):
    inputs = make_inputs(29, 32, 200, torch.float32, with_bias=True)
    expected = run("naive", *inputs[:3], 0.7, inputs[3], grad_from=grad_from)
    actual = run("torch", *inputs[:3], 0.7, inputs[3], grad_from=grad_from)
    assert_matches(actual, expected, torch.float32)
    assert all(g.abs().max() > 0 for g in actual[2]), "each parameter must receive a gradient"


def test_three_dimensional_input():
    hidden, weight, targets, bias = make_inputs(7, 24, 150, torch.float32, with_bias=False, batch=3)
    expected = run("naive", hidden, weight, targets, 1.5, bias)
    actual = run("torch", hidden, weight, targets, 1.5, bias, chunk_size=4)
    assert actual[0].shape == actual[1].shape == (3, 7) and actual[2][0].shape == (3, 7, 24)
    assert_matches(actual, expected, torch.float32)


def test_flat_distribution_is_uniform():
    hidden, weight, targets, _ = make_inputs(9, 16, 100, torch.float32, with_bias=False)
    log_probs, entropy = fused_log_probs(hidden, torch.zeros_like(weight), targets, backend="torch", chunk_size=4)
    torch.testing.assert_close(log_probs, torch.full((9,), -math.log(100)))
    torch.testing.assert_close(entropy, torch.full((9,), math.log(100)))


def test_without_entropy():
    hidden, weight, targets, _ = make_inputs(11, 16, 90, torch.float32, with_bias=False)
    log_probs, entropy = fused_log_probs(hidden, weight, targets, compute_entropy=False, chunk_size=4)
    assert entropy is None
    (grad_hidden,) = torch.autograd.grad(log_probs.sum(), [hidden])
    ref, _ = naive_log_probs(hidden, weight, targets, compute_entropy=False)
    (ref_grad,) = torch.autograd.grad(ref.sum(), [hidden])
    torch.testing.assert_close(log_probs, ref)
    torch.testing.assert_close(grad_hidden, ref_grad)


def test_zero_tokens():
    hidden, weight, targets, _ = make_inputs(0, 16, 90, torch.float32, with_bias=False)
    log_probs, entropy = fused_log_probs(hidden, weight, targets)
    assert log_probs.shape == entropy.shape == (0,)
    (grad_weight,) = torch.autograd.grad(log_probs.sum() + entropy.sum(), [weight])
    assert (grad_weight == 0).all()


def test_no_grad_forward_only():
    hidden, weight, targets, _ = make_inputs(13, 16, 90, torch.float32, with_bias=False)
    with torch.no_grad():
        log_probs, entropy = fused_log_probs(hidden, weight, targets, chunk_size=4)
    ref_lp, ref_ent = naive_log_probs(hidden, weight, targets)
    assert not log_probs.requires_grad
    torch.testing.assert_close(log_probs, ref_lp.detach())
    torch.testing.assert_close(entropy, ref_ent.detach())


def test_auto_backend_selection():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", cpu, has_triton=True, triton_interpreted=False) == "torch"
    assert resolve_backend("auto", cuda, has_triton=True, triton_interpreted=False) == "triton"
    assert resolve_backend("auto", cuda, has_triton=False, triton_interpreted=False) == "torch"
    assert resolve_backend("naive", cpu, has_triton=False, triton_interpreted=False) == "naive"
    with pytest.raises(ValueError, match="triton is not importable"):
        resolve_backend("triton", cuda, has_triton=False, triton_interpreted=False)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        resolve_backend("triton", cpu, has_triton=True, triton_interpreted=False)


def _bad_inputs():
    """(name, kwargs overrides, error regex): each must raise ValueError before any compute."""
    h, w, y, b = make_inputs(6, 8, 20, torch.float32, with_bias=True)
    return [
        ("temperature=0", {"temperature": 0}, r"temperature=0 must be > 0"),
        ("temperature<0", {"temperature": -1.0}, r"temperature=-1.0 must be > 0"),
        ("temperature=nan", {"temperature": float("nan")}, r"temperature=nan must be > 0"),
        ("temperature=tensor", {"temperature": torch.tensor(1.0)}, r"temperature must be a Python float"),
        ("hidden 1-D", {"hidden": h[0].detach()}, r"hidden must be \[T, d\] or \[B, S, d\], got shape \(8,\)"),
        ("hidden int", {"hidden": h.detach().long()}, r"hidden.dtype=torch.int64"),
        ("weight d", {"weight": w.detach()[:, :4]}, r"weight must be \[V, d\].*got shape \(20, 4\)"),
        ("weight dtype", {"weight": w.detach().double()}, r"weight.dtype=torch.float64"),
        ("targets int32", {"targets": y.int()}, r"targets.dtype=torch.int32"),
        ("targets shape", {"targets": y[:3]}, r"targets.shape=\(3,\) must equal"),
        (
            "targets range",
            {"targets": torch.full_like(y, 20)},
            r"targets must lie in \[0, V=20\), got values in \[20, 20\]",
        ),
        ("negative target", {"targets": y - 100}, r"targets must lie in \[0, V=20\)"),
        ("bias shape", {"bias": b.detach()[:5]}, r"bias.shape=\(5,\) must be \[V\]"),
        ("bias type", {"bias": [0.0] * 20}, r"bias must be a torch.Tensor or None, got list"),
        ("hidden strided", {"hidden": h.detach().t().contiguous().t()}, r"hidden with shape \(6, 8\).*contiguous"),
        ("weight strided", {"weight": w.detach().t().contiguous().t()}, r"weight with shape \(20, 8\).*contiguous"),
        ("backend", {"backend": "cuda"}, r"backend='cuda' must be one of"),
        ("chunk_size", {"chunk_size": 0}, r"chunk_size=0 must be an int >= 1"),
    ], dict(hidden=h, weight=w, targets=y, bias=b)


@pytest.mark.parametrize("case", range(len(_bad_inputs()[0])), ids=[c[0] for c in _bad_inputs()[0]])
def test_bad_inputs_raise(case):
    cases, good = _bad_inputs()
    _, overrides, pattern = cases[case]
    with pytest.raises(ValueError, match=pattern):
        fused_log_probs(**{**good, **overrides})


@pytest.mark.skipif(triton_logprobs is None or triton_logprobs.INTERPRETED, reason="needs compiled-mode triton")
def test_triton_on_cpu_without_interpreter_raises():
    hidden, weight, targets, _ = make_inputs(4, 8, 20, torch.float32, with_bias=False)
    with pytest.raises(ValueError, match=r"backend='triton' needs CUDA tensors, got device cpu"):
        fused_log_probs(hidden, weight, targets, backend="triton")


needs_cuda_triton = pytest.mark.skipif(
    not torch.cuda.is_available() or triton_logprobs is None or triton_logprobs.INTERPRETED,
    reason="needs CUDA and compiled-mode triton",
)


@pytest.mark.gpu
@needs_cuda_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("scale", list(LOGIT_SCALES))
@pytest.mark.parametrize("num_tokens,vocab", [(1, 1000), (300, 5003), (1030, 20000)])
def test_triton_matches_naive_cuda(num_tokens, vocab, scale, with_bias, dtype):
    inputs = make_inputs(num_tokens, 136, vocab, dtype, with_bias, LOGIT_SCALES[scale], device="cuda")
    for temperature in (0.6, 1.0, 1.5):
        expected = run("naive", *inputs[:3], temperature, inputs[3])
        actual = run("triton", *inputs[:3], temperature, inputs[3], chunk_size=512)
        assert_matches(actual, expected, dtype)
        assert (actual[0] <= 0).all()


@pytest.mark.gpu
@needs_cuda_triton
def test_triton_matches_naive_cuda_qwen_shape():
    """Qwen2.5-0.5B lm_head: T=4096, d=896, V=151,936 in bfloat16."""
    inputs = make_inputs(4096, 896, 151_936, torch.bfloat16, with_bias=False, scale=3.0, device="cuda")
    expected = run("naive", *inputs[:3], 0.7, inputs[3])
    actual = run("triton", *inputs[:3], 0.7, inputs[3], chunk_size=1024)
    assert_matches(actual, expected, torch.bfloat16)
    assert (actual[0] <= 0).all()
