"""The DeltaNet family: providers whose callable follows fla's delta-rule calling convention.

Inputs follow ``make_delta_inputs`` (keys unit-norm, beta in (0, 1), nothing zero). Timed calls use
the training form (no initial state, no final state) and verification the full form (a non-zero
initial state, the final state and its gradient), through ``verify_delta_kernel``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from dnprof.bench.inputs import make_delta_inputs
from dnprof.bench.timing import deltanet_chunk_flops
from dnprof.bench.verify import VerifyResult, verify_delta_kernel
from dnprof.providers.base import Inputs, Provider, Resolved, Shape

Tensor = torch.Tensor


@dataclass(frozen=True)
class RooflineCeilings:
    """Sustained memory bandwidth and dense matrix throughput of the reference GPU."""

    bytes_per_s: float
    flops_per_s: float


#: Measured on the H100 80GB HBM3 the guide's figures come from: 3.0 TB/s sustained HBM bandwidth
#: and 800 TFLOP/s dense bf16 tensor-core throughput. The roofline floor of every DeltaNet row uses
#: these, so on other GPUs it reads as "the H100 floor", not that GPU's own.
H100_CEILINGS = RooflineCeilings(bytes_per_s=3.0e12, flops_per_s=800e12)

#: Chunk size the roofline's FLOP count assumes (the peer's, and dnprof's default).
ROOFLINE_CHUNK = 64


def deltanet_min_bytes(shape: Shape, mode: str) -> float:
    """Bytes a DeltaNet call must move at least: read q, k, v, beta and write o (fwd); for fwd+bwd
    also read q, k, v, beta and do again and write dq, dk, dv, dbeta."""
    e = torch.empty((), dtype=shape.dtype).element_size()
    n = shape.B * shape.T * shape.H
    K, V = shape.K, shape.V
    fwd = n * e * (2 * K + 2 * V + 1)
    if mode == "fwd":
        return float(fwd)
    bwd_reads = n * e * (2 * K + V + 1 + V)  # q, k, v, beta, do
    bwd_writes = n * e * (2 * K + V + 1)  # dq, dk, dv, dbeta
    return float(fwd + bwd_reads + bwd_writes)


def deltanet_roofline_ms(shape: Shape, mode: str, ceilings: RooflineCeilings = H100_CEILINGS) -> float:
    """The floor for one DeltaNet call: the larger of its memory time and its matrix time, in ms."""
    mem_s = deltanet_min_bytes(shape, mode) / ceilings.bytes_per_s
    flops = deltanet_chunk_flops(shape.B, shape.T, shape.H, shape.K, shape.V, ROOFLINE_CHUNK, mode)
    return max(mem_s, flops / ceilings.flops_per_s) * 1e3


class DeltaNetProvider(Provider):
    """A DeltaNet kernel in fla's calling convention, loaded lazily by ``loader``."""

    computes = "deltanet"

    def __init__(
        self,
        name: str,
        description: str,
        loader: Callable[[], Callable] | None = None,
        chunk_size: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(name, description, **kwargs)
        self._loader = loader
        self._chunk_size = chunk_size

    def resolve(self, shape: Shape, mode: str) -> Resolved:
        """The loaded kernel; subclasses that choose a variant override this."""
        if self._loader is None:
            raise NotImplementedError(f"{self.name}: no kernel loader")
        return Resolved(fn=self._loader(), chunk_size=self._chunk_size)

    def make_inputs(self, shape: Shape, seed: int = 0, requires_grad: bool = False) -> Inputs:
        """q, k (unit norm), v, beta in (0, 1) and an upstream gradient for o."""
        d = make_delta_inputs(
            shape.B, shape.T, shape.H, shape.K, shape.V, dtype=shape.dtype, device=shape.device,
            seed=seed, initial_state=False, requires_grad=requires_grad,
        )
        return Inputs(args={"q": d.q, "k": d.k, "v": d.v, "beta": d.beta}, leaves=["q", "k", "v", "beta"],
                      grad_outputs=[d.do])

    def call(self, resolved: Resolved, inputs: Inputs) -> tuple[Tensor, ...]:
        """The training form: ``o, _ = fn(q, k, v, beta)``."""
        a = inputs.args
        o, _ = resolved.fn(a["q"], a["k"], a["v"], a["beta"], output_final_state=False)
        return (o,)

    def verify(self, shape: Shape, mode: str, resolved: Resolved, seed: int = 0) -> VerifyResult:
        """o and final state (and dq, dk, dv, dbeta, dh0 for fwdbwd) against float64."""
        return verify_delta_kernel(
            resolved.fn, shape.B, shape.T, shape.H, shape.K, shape.V, dtype=shape.dtype,
            device=shape.device, mode=mode, seed=seed,
        )

    def flops(self, shape: Shape, mode: str, resolved: Resolved) -> float | None:
        """Chunkwise matrix FLOPs at the kernel's chunk size (None for the recurrent form)."""
        if resolved.chunk_size is None:
            return None
        return deltanet_chunk_flops(shape.B, shape.T, shape.H, shape.K, shape.V, resolved.chunk_size, mode)

    def roofline_ms(self, shape: Shape, mode: str) -> float | None:
        """The H100 floor (see ``H100_CEILINGS``) for GPU rows; None for CPU rows."""
        return deltanet_roofline_ms(shape, mode) if shape.device == "cuda" else None
