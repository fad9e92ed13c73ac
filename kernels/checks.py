"""Input validation for `fused_log_probs`: every check runs before any kernel launch and names the bad argument."""

import math

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BACKENDS = ("auto", "torch", "triton", "naive")


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"Tensor(shape={tuple(x.shape)}, dtype={x.dtype}, device={x.device})"
    return f"{type(x).__name__} {x!r}"


def _check_contiguous(name: str, x: Tensor) -> None:
    if not x.is_contiguous():
        raise ValueError(
            f"{name} with shape {tuple(x.shape)} and strides {x.stride()} must be contiguous; pass {name}.contiguous()"
        )


def check_tensors(hidden: Tensor, weight: Tensor, targets: Tensor, bias: Tensor | None) -> None:
    """Check dtype, shape, contiguity and device of the tensor arguments.

    Args:
        hidden: [T, d] or [B, S, d], float32 / bfloat16 / float16.
        weight: [V, d], same dtype and device as hidden.
        targets: hidden.shape[:-1], int64 (torch.long), values in [0, V).
        bias: None or [V], same dtype and device as hidden.

    Raises:
        ValueError: naming the first bad argument and the value received.
    """
    for name, x in (("hidden", hidden), ("weight", weight), ("targets", targets)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {_describe(x)}")
    if bias is not None and not isinstance(bias, Tensor):
        raise ValueError(f"bias must be a torch.Tensor or None, got {_describe(bias)}")

    if hidden.dim() not in (2, 3):
        raise ValueError(f"hidden must be [T, d] or [B, S, d], got shape {tuple(hidden.shape)}")
    if hidden.dtype not in FLOAT_DTYPES:
        raise ValueError(f"hidden.dtype={hidden.dtype} must be one of {FLOAT_DTYPES}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1] or weight.shape[0] == 0:
        raise ValueError(
            f"weight must be [V, d] with V >= 1 and d = hidden.shape[-1] = {hidden.shape[-1]}, got shape {tuple(weight.shape)}"
        )
    if hidden.shape[-1] == 0:
        raise ValueError(f"hidden has hidden size d=0 (shape {tuple(hidden.shape)}); d must be >= 1")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight.dtype={weight.dtype} must equal hidden.dtype={hidden.dtype}")
    if targets.dtype != torch.long:
        raise ValueError(f"targets.dtype={targets.dtype} must be torch.long (int64)")
    if tuple(targets.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"targets.shape={tuple(targets.shape)} must equal hidden.shape[:-1]={tuple(hidden.shape[:-1])}"
        )
    if bias is not None:
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias.shape={tuple(bias.shape)} must be [V]=({weight.shape[0]},)")
        if bias.dtype != hidden.dtype:
            raise ValueError(f"bias.dtype={bias.dtype} must equal hidden.dtype={hidden.dtype}")

    named = [("hidden", hidden), ("weight", weight), ("targets", targets)]
    if bias is not None:
        named.append(("bias", bias))
    for name, x in named:
        if x.device != hidden.device:
            raise ValueError(f"{name}.device={x.device} must equal hidden.device={hidden.device}")
        _check_contiguous(name, x)

    # One reduction over [T] ints; out-of-range ids would otherwise read out of bounds inside the kernels.
    if targets.numel() > 0:
        low, high = torch.stack(torch.aminmax(targets)).tolist()  # one device sync
        if low < 0 or high >= weight.shape[0]:
            raise ValueError(f"targets must lie in [0, V={weight.shape[0]}), got values in [{low}, {high}]")


def check_options(temperature: float, backend: str, chunk_size: int) -> None:
    """Check the scalar options.

    Raises:
        ValueError: e.g. `temperature=0 must be > 0`.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a Python float > 0, got {_describe(temperature)}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 and finite")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} must be one of {BACKENDS}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be an int >= 1")


def resolve_backend(backend: str, device: torch.device, has_triton: bool, triton_interpreted: bool) -> str:
    """Turn `backend` into the implementation to run: "torch", "triton" or "naive".

    "auto" picks Triton for CUDA tensors when triton imports, and the chunked torch path otherwise.

    Raises:
        ValueError: backend="triton" when triton is missing, or on CPU tensors outside the Triton interpreter.
    """
    if backend == "auto":
        return "triton" if device.type == "cuda" and has_triton else "torch"
    if backend == "triton":
        if not has_triton:
            raise ValueError("backend='triton' but triton is not importable; use backend='torch' or install triton")
        if device.type != "cuda" and not triton_interpreted:
            raise ValueError(
                f"backend='triton' needs CUDA tensors, got device {device}; set TRITON_INTERPRET=1 before triton is "
                "imported to run the kernels on CPU under the interpreter, or use backend='torch'"
            )
    return backend
