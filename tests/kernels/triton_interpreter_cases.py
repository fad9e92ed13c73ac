"""Triton kernels on CPU under the Triton interpreter, against the naive reference.

TRITON_INTERPRET=1 only takes effect for kernels decorated after it is set, i.e. if it is set before rlhf.kernels
(hence triton_logprobs) is first imported; setting it later in a process that already imported them does nothing
(verified with triton 3.9), and it must stay set while the kernels run. So this module is not collected by default
(no test_ prefix): test_triton_interpreter.py runs it in a fresh `python -m pytest` subprocess, and it can also be
run on its own: `TRITON_INTERPRET=1 pytest tests/kernels/triton_interpreter_cases.py`.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before torch / triton / rlhf.kernels are imported

import pytest  # noqa: E402
import torch  # noqa: E402
from rlhf.kernels import fused_log_probs, triton_logprobs  # noqa: E402
from test_fused_log_probs import LOGIT_SCALES, assert_matches, make_inputs, run  # noqa: E402

pytestmark = pytest.mark.skipif(
    triton_logprobs is None or not triton_logprobs.INTERPRETED,
    reason="rlhf.kernels was imported before TRITON_INTERPRET=1 was set; run this module in a fresh process",
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("temperature", [0.6, 1.0, 1.5])
@pytest.mark.parametrize("scale", list(LOGIT_SCALES))
def test_matches_naive_ragged_shape(scale, temperature, with_bias, dtype):
    """T=37 (not a multiple of BLOCK_T=16 nor of the chunk), V=300 (not a multiple of BLOCK_V=64; 3 vocabulary
    splits of 128, the last partial), d=40 (not a multiple of BLOCK_K=32)."""
    inputs = make_inputs(37, 40, 300, dtype, with_bias, LOGIT_SCALES[scale])
    expected = run("naive", *inputs[:3], temperature, inputs[3])
    actual = run("triton", *inputs[:3], temperature, inputs[3], chunk_size=24)
    assert_matches(actual, expected, dtype)
    assert (actual[0] <= 0).all(), "log-probs must never be positive"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("num_tokens,hidden_size,vocab", [(1, 16, 50), (32, 32, 128)], ids=["T=1", "exact-tiles"])
def test_matches_naive_edge_shapes(num_tokens, hidden_size, vocab, dtype):
    inputs = make_inputs(num_tokens, hidden_size, vocab, dtype, with_bias=True)
    expected = run("naive", *inputs[:3], 0.6, inputs[3])
    actual = run("triton", *inputs[:3], 0.6, inputs[3], chunk_size=16)
    assert_matches(actual, expected, dtype)


@pytest.mark.parametrize("grad_from", [("ent",), ("lp",)])
def test_gradient_from_a_single_output(grad_from):
    inputs = make_inputs(21, 32, 150, torch.float32, with_bias=True)
    expected = run("naive", *inputs[:3], 1.5, inputs[3], grad_from=grad_from)
    actual = run("triton", *inputs[:3], 1.5, inputs[3], grad_from=grad_from)
    assert_matches(actual, expected, torch.float32)
    assert all(g.abs().max() > 0 for g in actual[2])


def test_three_dimensional_input_and_broadcast_upstream_gradient():
    """[B, S, d] input; `.sum()` sends stride-0 upstream gradients, which the kernel must not index as dense."""
    hidden, weight, targets, _ = make_inputs(9, 32, 130, torch.float32, with_bias=False, batch=2)
    grads = []
    for backend in ("naive", "triton"):
        log_probs, entropy = fused_log_probs(hidden, weight, targets, 1.0, backend=backend, chunk_size=8)
        assert log_probs.shape == entropy.shape == (2, 9)
        grads.append(torch.autograd.grad(log_probs.sum() - 0.1 * entropy.sum(), [hidden, weight]))
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


def test_without_entropy_and_without_grad():
    hidden, weight, targets, _ = make_inputs(17, 32, 100, torch.bfloat16, with_bias=False)
    log_probs, entropy = fused_log_probs(hidden, weight, targets, backend="triton", compute_entropy=False)
    assert entropy is None
    (grad_hidden,) = torch.autograd.grad(log_probs.sum(), [hidden])
    ref, _ = fused_log_probs(hidden, weight, targets, backend="naive", compute_entropy=False)
    (ref_grad,) = torch.autograd.grad(ref.sum(), [hidden])
    torch.testing.assert_close(log_probs, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad_hidden.float(), ref_grad.float(), rtol=1.6e-2, atol=1e-2 * ref_grad.abs().max())
    with torch.no_grad():
        log_probs, entropy = fused_log_probs(hidden, weight, targets, backend="triton")
    assert not log_probs.requires_grad and entropy.shape == (17,)
