"""Error metric and per-dtype tolerances for checking kernels against the float64 reference."""

from __future__ import annotations

import math

import torch

#: Relative L2 tolerance ``||x - ref|| / ||ref||`` per input dtype. bf16 inputs round to 8 bits of
#: mantissa (about 4e-3 per element), fp16 to 11 bits; fp32 inputs go through tf32-or-better dots.
TOLERANCE: dict[torch.dtype, float] = {
    torch.bfloat16: 1e-2,
    torch.float16: 5e-3,
    torch.float32: 1e-3,
    torch.float64: 1e-10,
}


def tolerance_for(dtype: torch.dtype) -> float:
    """The relative-error tolerance for outputs computed from inputs of ``dtype``."""
    try:
        return TOLERANCE[dtype]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(str(d) for d in TOLERANCE)}, got {dtype}") from None


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """``||x - ref||_2 / ||ref||_2`` in float64; NaN or Inf anywhere gives ``inf`` so it never passes."""
    if x.shape != ref.shape:
        raise ValueError(f"shape mismatch: got {tuple(x.shape)}, reference {tuple(ref.shape)}")
    x64, r64 = x.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(x64).all():
        return math.inf
    denom = torch.linalg.vector_norm(r64).item()
    num = torch.linalg.vector_norm(x64 - r64).item()
    if denom == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / denom


def passes(err: float, tol: float) -> bool:
    """True when the error is finite and within tolerance (NaN compares false, so it fails)."""
    return math.isfinite(err) and err <= tol
