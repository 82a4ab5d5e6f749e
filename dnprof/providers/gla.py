"""The GLA family: gated linear attention with a log-space forget gate ``g [B, T, H, K]``.

Inputs are DeltaNet's q, k, v at the same seed plus ``g = logsigmoid(randn)``. The check runs
``gla_recurrent`` in float64 in segments under activation checkpointing, so a long verification
keeps only one state per segment instead of one per token.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from dnprof.bench.equivalence import passes, relative_error, tolerance_for
from dnprof.bench.inputs import make_delta_inputs
from dnprof.bench.verify import VerifyResult
from dnprof.providers.base import Inputs, Provider, Resolved, Shape
from dnprof.reference import gla_recurrent

Tensor = torch.Tensor

#: Tokens per checkpointed segment of the float64 GLA reference.
REFERENCE_SEGMENT = 64


def make_gate(shape: Shape, seed: int = 0) -> Tensor:
    """``g = logsigmoid(randn) [B, T, H, K]`` in the input dtype: a decay in (0, 1) in log space."""
    gen = torch.Generator(device="cpu").manual_seed(seed + 7919)
    x = torch.randn(shape.B, shape.T, shape.H, shape.K, generator=gen, dtype=torch.float32)
    return F.logsigmoid(x).to(device=shape.device, dtype=shape.dtype)


def gla_reference_checkpointed(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, initial_state: Tensor | None = None, segment: int = REFERENCE_SEGMENT
) -> tuple[Tensor, Tensor]:
    """``gla_recurrent`` in float64 over segments of ``segment`` tokens, each under checkpointing."""
    q, k, v, g = (x.double() for x in (q, k, v, g))
    B, T, H, K = q.shape
    h = (torch.zeros(B, H, K, v.shape[-1], dtype=torch.float64, device=q.device)
         if initial_state is None else initial_state.double())
    scale = K**-0.5

    def run(qs: Tensor, ks: Tensor, vs: Tensor, gs: Tensor, hs: Tensor) -> tuple[Tensor, Tensor]:
        return gla_recurrent(qs, ks, vs, gs, scale=scale, initial_state=hs, output_final_state=True)

    outs = []
    for start in range(0, T, segment):
        sl = slice(start, min(start + segment, T))
        o, h = checkpoint(run, q[:, sl], k[:, sl], v[:, sl], g[:, sl], h, use_reentrant=False)
        outs.append(o)
    return torch.cat(outs, dim=1), h


class GLAProvider(Provider):
    """A GLA kernel ``fn(q, k, v, g, scale=None, initial_state=None, output_final_state=False)``."""

    computes = "gla"

    def __init__(self, name: str, description: str, loader: Callable[[], Callable], **kwargs) -> None:
        super().__init__(name, description, **kwargs)
        self._loader = loader

    def resolve(self, shape: Shape, mode: str) -> Resolved:
        """The loaded kernel."""
        return Resolved(fn=self._loader())

    def make_inputs(self, shape: Shape, seed: int = 0, requires_grad: bool = False) -> Inputs:
        """q, k (unit norm), v, the gate g, and an upstream gradient for o."""
        d = make_delta_inputs(
            shape.B, shape.T, shape.H, shape.K, shape.V, dtype=shape.dtype, device=shape.device,
            seed=seed, initial_state=False, requires_grad=requires_grad,
        )
        g = make_gate(shape, seed).requires_grad_(requires_grad)
        return Inputs(args={"q": d.q, "k": d.k, "v": d.v, "g": g}, leaves=["q", "k", "v", "g"], grad_outputs=[d.do])

    def call(self, resolved: Resolved, inputs: Inputs) -> tuple[Tensor, ...]:
        """The training form: ``o, _ = fn(q, k, v, g)``."""
        a = inputs.args
        o, _ = resolved.fn(a["q"], a["k"], a["v"], a["g"], output_final_state=False)
        return (o,)

    def verify(self, shape: Shape, mode: str, resolved: Resolved, seed: int = 0) -> VerifyResult:
        """o and final state (and dq, dk, dv, dg, dh0 for fwdbwd) against float64, with an initial state."""
        grads = mode == "fwdbwd"
        tol = tolerance_for(shape.dtype)
        inputs = self.make_inputs(shape, seed=seed, requires_grad=grads)
        gen = torch.Generator(device="cpu").manual_seed(seed + 104729)
        h0 = (0.5 * torch.randn(shape.B, shape.H, shape.K, shape.V, generator=gen)).to(shape.device)
        dht = torch.randn(shape.B, shape.H, shape.K, shape.V, generator=gen).to(shape.device)
        h0.requires_grad_(grads)
        leaves = inputs.leaf_tensors() + [h0]
        ref_leaves = [t.detach().double().requires_grad_(grads) for t in leaves]
        a = inputs.args
        o, ht = resolved.fn(a["q"], a["k"], a["v"], a["g"], initial_state=h0, output_final_state=True)
        o_ref, ht_ref = gla_reference_checkpointed(*ref_leaves[:4], initial_state=ref_leaves[4])
        errors = {"o": relative_error(o, o_ref), "ht": relative_error(ht, ht_ref)}
        if grads:
            do = inputs.grad_outputs[0]
            got = torch.autograd.grad((o * do).sum() + (ht * dht).sum(), leaves, allow_unused=True)
            want = torch.autograd.grad((o_ref * do.double()).sum() + (ht_ref * dht.double()).sum(), ref_leaves)
            for name, gg, w in zip(("dq", "dk", "dv", "dg", "dh0"), got, want):
                errors[name] = relative_error(torch.zeros_like(w) if gg is None else gg, w)
        failed = [n for n, e in errors.items() if not passes(e, tol)]
        return VerifyResult(errors=errors, tolerance=tol, failed=failed)
