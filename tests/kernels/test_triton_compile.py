"""The Triton kernels compile for an H100 (sm_90) in compiled mode, without needing a GPU.

The interpreter tests check the numerics but not what only the compiler sees (constexpr branches, dtypes, layouts);
this runs the real frontend and backend down to a cubin with the ptxas bundled in the triton wheel.
"""

import pytest
import torch

triton = pytest.importorskip("triton")
from rlhf.kernels import triton_logprobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

pytestmark = pytest.mark.skipif(
    triton_logprobs is None or triton_logprobs.INTERPRETED, reason="kernels were decorated in interpreter mode"
)
SCALARS = {"T": "i32", "V": "i32", "d": "i32", "cols_per_split": "i32", "inv_temp": "fp32"}
INPUT_POINTERS = {"h_ptr", "w_ptr", "b_ptr", "dz_ptr"}  # the rest are float32, except y_ptr (int64 targets)
TRITON_DTYPES = {torch.bfloat16: "bf16", torch.float32: "fp32"}


def compile_for_h100(kernel, dtype: torch.dtype, flags: dict):
    """Compile with exactly the launch options the wrapper uses for `dtype` on CUDA."""
    launch, _ = triton_logprobs._launch_options(dtype)
    options = {"num_warps": launch.pop("num_warps"), "num_stages": launch.pop("num_stages")}
    constexprs = {**launch, **flags}
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in SCALARS:
            signature[name] = SCALARS[name]
        elif name in INPUT_POINTERS:
            signature[name] = f"*{TRITON_DTYPES[dtype]}"
        else:
            signature[name] = "*i64" if name == "y_ptr" else "*fp32"
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("flag", [False, True], ids=["no-entropy", "entropy"])
def test_kernels_compile_for_sm90(dtype, with_bias, flag):
    forward = compile_for_h100(triton_logprobs._forward_kernel, dtype, {"HAS_BIAS": with_bias, "COMPUTE_ENTROPY": flag})
    backward = compile_for_h100(
        triton_logprobs._backward_kernel, dtype, {"HAS_BIAS": with_bias, "HAS_GRAD_ENTROPY": flag}
    )
    for compiled in (forward, backward):
        assert compiled.asm["cubin"], "no cubin produced"
        assert compiled.metadata.shared <= 228 * 1024, "exceeds H100 shared memory per block"
