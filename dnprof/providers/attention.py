"""Causal softmax attention providers: torch SDPA backends and the flash-attn package.

All take ``[B, T, H, D]`` like the DeltaNet kernels; SDPA gets them transposed (as views) to
``[B, H, T, D]``. Each is checked against ``causal_softmax_attention`` in float64: o, and for
fwdbwd dq, dk, dv of a random upstream gradient.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable

import torch
import torch.nn.functional as F

from dnprof.bench.equivalence import passes, relative_error, tolerance_for
from dnprof.bench.inputs import make_delta_inputs
from dnprof.bench.timing import causal_attention_flops
from dnprof.bench.verify import VerifyResult
from dnprof.providers.base import Inputs, Provider, Resolved, Shape
from dnprof.reference import causal_softmax_attention

Tensor = torch.Tensor
AttentionFn = Callable[[Tensor, Tensor, Tensor], Tensor]

#: Most float64 attention-score elements (B * H * T^2) a verification builds; B is reduced to fit.
VERIFY_SCORE_ELEMENTS = 2**28


def sdpa_backend_fn(backend: str) -> AttentionFn:
    """Causal SDPA restricted to one backend (``FLASH_ATTENTION``, ``CUDNN_ATTENTION``, ``MATH``)."""

    def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(getattr(SDPBackend, backend)):
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return o.transpose(1, 2)

    attend.__name__ = f"sdpa_{backend.lower()}"
    return attend


def _sdpa_requirement(backend: str) -> Callable[[str], str | None]:
    def check(device: str) -> str | None:
        try:
            from torch.nn.attention import SDPBackend
        except ImportError:
            return "this torch has no torch.nn.attention (needs torch >= 2.3)"
        if not hasattr(SDPBackend, backend):
            return f"this torch ({torch.__version__}) has no SDPA {backend} backend"
        return None

    return check


def _flash_attn_pkg_requirement(device: str) -> str | None:
    if importlib.util.find_spec("flash_attn") is None:
        return "the flash-attn package is not installed: pip install flash-attn"
    if device == "cuda" and not torch.cuda.is_available():
        return "needs a CUDA GPU (none is visible)"
    try:
        importlib.import_module("flash_attn")
    except Exception as exc:
        return f"flash-attn failed to import: {type(exc).__name__}: {exc}"
    return None


def flash_attn_pkg_fn(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """``flash_attn.flash_attn_func(q, k, v, causal=True)`` on ``[B, T, H, D]``."""
    from flash_attn import flash_attn_func

    return flash_attn_func(q, k, v, causal=True)


class AttentionProvider(Provider):
    """Causal softmax attention computed by ``fn(q, k, v) -> o`` (all ``[B, T, H, D]``)."""

    computes = "attention"

    def __init__(self, name: str, description: str, fn: AttentionFn, half_only: bool = False, **kwargs) -> None:
        super().__init__(name, description, **kwargs)
        self.fn = fn
        self.half_only = half_only

    def shape_problem(self, shape: Shape) -> str | None:
        """FlashAttention kernels take fp16/bf16 only and head dims up to 256."""
        if self.half_only and shape.dtype not in (torch.float16, torch.bfloat16):
            return f"{self.name} takes fp16 or bf16 inputs, not {shape.dtype_name}"
        if self.half_only and max(shape.K, shape.V) > 256:
            return f"{self.name} supports head dims up to 256"
        return None

    def resolve(self, shape: Shape, mode: str) -> Resolved:
        """The attention function itself."""
        return Resolved(fn=self.fn)

    def make_inputs(self, shape: Shape, seed: int = 0, requires_grad: bool = False) -> Inputs:
        """q, k (unit norm), v as for DeltaNet at the same seed, and an upstream gradient for o."""
        d = make_delta_inputs(
            shape.B, shape.T, shape.H, shape.K, shape.V, dtype=shape.dtype, device=shape.device,
            seed=seed, initial_state=False, requires_grad=requires_grad,
        )
        return Inputs(args={"q": d.q, "k": d.k, "v": d.v}, leaves=["q", "k", "v"], grad_outputs=[d.do])

    def call(self, resolved: Resolved, inputs: Inputs) -> tuple[Tensor, ...]:
        """``o = fn(q, k, v)``."""
        a = inputs.args
        return (resolved.fn(a["q"], a["k"], a["v"]),)

    def verify_shape(self, shape: Shape, max_T: int | None = None) -> Shape:
        """As for every provider, and B further reduced so the float64 scores stay within budget."""
        vs = super().verify_shape(shape, max_T)
        B = max(1, min(vs.B, VERIFY_SCORE_ELEMENTS // (vs.H * vs.T * vs.T)))
        return vs.replace(B=B)

    def verify(self, shape: Shape, mode: str, resolved: Resolved, seed: int = 0) -> VerifyResult:
        """o (and dq, dk, dv for fwdbwd) against float64 causal softmax attention."""
        grads = mode == "fwdbwd"
        tol = tolerance_for(shape.dtype)
        inputs = self.make_inputs(shape, seed=seed, requires_grad=grads)
        leaves = inputs.leaf_tensors()
        ref_leaves = [t.detach().double().requires_grad_(grads) for t in leaves]
        (o,) = self.call(resolved, inputs)
        o_ref = causal_softmax_attention(*ref_leaves)
        errors = {"o": relative_error(o, o_ref)}
        if grads:
            do = inputs.grad_outputs[0]
            got = torch.autograd.grad(o, leaves, do)
            want = torch.autograd.grad(o_ref, ref_leaves, do.double())
            for name, g, w in zip(("dq", "dk", "dv"), got, want):
                errors[name] = relative_error(g, w)
        failed = [n for n, e in errors.items() if not passes(e, tol)]
        return VerifyResult(errors=errors, tolerance=tol, failed=failed)

    def flops(self, shape: Shape, mode: str, resolved: Resolved) -> float | None:
        """Causal attention FLOPs (QK^T and PV over half the square; fwd+bwd 3.5x)."""
        return causal_attention_flops(shape.B, shape.T, shape.H, shape.K, shape.V, mode)


def attention_providers() -> list[AttentionProvider]:
    """flash-attn, cudnn-attn, flash-attn-pkg (GPU) and sdpa-math (CPU by default, GPU on request)."""
    return [
        AttentionProvider("flash-attn", "torch SDPA, FlashAttention backend, causal",
                          sdpa_backend_fn("FLASH_ATTENTION"), half_only=True,
                          requirement=_sdpa_requirement("FLASH_ATTENTION")),
        AttentionProvider("cudnn-attn", "torch SDPA, cuDNN backend, causal", sdpa_backend_fn("CUDNN_ATTENTION"),
                          half_only=True, requirement=_sdpa_requirement("CUDNN_ATTENTION")),
        AttentionProvider("flash-attn-pkg", "flash_attn.flash_attn_func, causal", flash_attn_pkg_fn,
                          half_only=True, requirement=_flash_attn_pkg_requirement),
        AttentionProvider("sdpa-math", "torch SDPA, math backend (unfused), causal", sdpa_backend_fn("MATH"),
                          devices=("cuda", "cpu"), default_devices=("cpu",), requirement=_sdpa_requirement("MATH")),
    ]
