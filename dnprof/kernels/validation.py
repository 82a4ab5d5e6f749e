"""Input checks shared by every DeltaNet kernel entry point.

Each problem raises a ValueError that names the argument and what was expected, before anything
is launched, so users never see a traceback from inside Triton.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


@dataclass(frozen=True)
class DeltaShape:
    """The checked problem size: batch, tokens, heads, key and value head dims, sequences."""

    B: int
    T: int
    H: int
    K: int
    V: int
    N: int  # number of sequences (B, or len(cu_seqlens) - 1 when packed)


def interpreter_enabled() -> bool:
    """True when Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def backward_can_follow(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd will record the call: grad mode on and some input (None skipped) requires a gradient.
    Otherwise no backward can follow, and the kernels run (and pick their config) as a forward."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _fail(name: str, message: str) -> None:
    raise ValueError(f"{name}: {message}")


def check_device(t: torch.Tensor, name: str) -> None:
    """A kernel runs on a CUDA tensor, or on a CPU tensor only under the Triton interpreter."""
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu":
        if not interpreter_enabled():
            _fail(name, "is a CPU tensor; dnprof's Triton kernels need a CUDA tensor, or set TRITON_INTERPRET=1 "
                  "to run them through the Triton interpreter on the CPU")
        return
    _fail(name, f"must be on a CUDA device (or the CPU with TRITON_INTERPRET=1), got device {t.device}")


def check_delta_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    max_head_dim: int = 256,
) -> DeltaShape:
    """Check fla-convention DeltaNet inputs and return the problem size.

    ``q, k: [B, T, H, K]``, ``v: [B, T, H, V]``, ``beta: [B, T, H]``, ``initial_state: [N, H, K, V]``
    float32, ``cu_seqlens``: increasing int32/int64 offsets from 0 to T with ``B = 1``.
    """
    for name, t in (("q", q), ("k", k), ("v", v), ("beta", beta)):
        if not isinstance(t, torch.Tensor):
            _fail(name, f"expected a torch.Tensor, got {type(t).__name__}")
    if q.dim() != 4:
        _fail("q", f"expected 4 dims [B, T, H, K], got shape {tuple(q.shape)}")
    B, T, H, K = q.shape
    if k.shape != q.shape:
        _fail("k", f"expected shape {tuple(q.shape)} (same as q), got {tuple(k.shape)}")
    if v.dim() != 4 or tuple(v.shape[:3]) != (B, T, H):
        _fail("v", f"expected shape [{B}, {T}, {H}, V], got {tuple(v.shape)}")
    V = v.shape[3]
    if tuple(beta.shape) != (B, T, H):
        _fail("beta", f"expected shape [B, T, H] = [{B}, {T}, {H}], got {tuple(beta.shape)}")
    if T < 1:
        _fail("q", "expected at least one token (T >= 1)")
    for name, d in (("q/k head dim K", K), ("v head dim V", V)):
        if d < 1 or d > max_head_dim:
            _fail(name, f"must be between 1 and {max_head_dim}, got {d}")
    for name, t in (("q", q), ("k", k), ("v", v), ("beta", beta)):
        if t.dtype not in FLOAT_DTYPES:
            _fail(name, f"dtype must be bfloat16, float16 or float32, got {t.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            _fail(name, f"dtype {t.dtype} differs from q's {q.dtype}")
    for name, t in (("q", q), ("k", k), ("v", v), ("beta", beta)):
        if t.device != q.device:
            _fail(name, f"is on {t.device} but q is on {q.device}")
        check_device(t, name)
    if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
        _fail("scale", f"expected a positive float or None, got {scale!r}")

    N = B
    if cu_seqlens is not None:
        if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1:
            _fail("cu_seqlens", "expected a 1-D integer tensor of sequence offsets")
        if cu_seqlens.dtype not in (torch.int32, torch.int64):
            _fail("cu_seqlens", f"dtype must be int32 or int64, got {cu_seqlens.dtype}")
        if B != 1:
            _fail("cu_seqlens", f"packed sequences need batch size B = 1, got B = {B}")
        if cu_seqlens.device != q.device:
            _fail("cu_seqlens", f"is on {cu_seqlens.device} but q is on {q.device}")
        offsets = cu_seqlens.tolist()
        if len(offsets) < 2:
            _fail("cu_seqlens", "needs at least two offsets [0, ..., T]")
        if offsets[0] != 0 or offsets[-1] != T:
            _fail("cu_seqlens", f"must start at 0 and end at T = {T}, got {offsets[0]} .. {offsets[-1]}")
        if any(b <= a for a, b in zip(offsets[:-1], offsets[1:])):
            _fail("cu_seqlens", "must be strictly increasing (every sequence needs at least one token)")
        N = len(offsets) - 1

    if initial_state is not None:
        if not isinstance(initial_state, torch.Tensor):
            _fail("initial_state", f"expected a torch.Tensor or None, got {type(initial_state).__name__}")
        if tuple(initial_state.shape) != (N, H, K, V):
            _fail("initial_state", f"expected shape [N, H, K, V] = [{N}, {H}, {K}, {V}], got {tuple(initial_state.shape)}")
        if initial_state.dtype not in FLOAT_DTYPES:
            _fail("initial_state", f"dtype must be float32 (or another float dtype), got {initial_state.dtype}")
        if initial_state.device != q.device:
            _fail("initial_state", f"is on {initial_state.device} but q is on {q.device}")
    return DeltaShape(B=B, T=T, H=H, K=K, V=V, N=N)
