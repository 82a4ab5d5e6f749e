"""``torch-chunk``: the paper's chunkwise algorithm in plain PyTorch, the "no custom kernel" baseline.

It runs ``dnprof.reference.chunk_delta_rule_reference`` on the device. PyTorch has no half-precision
triangular solve, so bf16/fp16 inputs are computed in float32 and the output cast back to the input
dtype (recorded as ``compute_dtype`` in the row); fp32 inputs compute in fp32.
"""

from __future__ import annotations

import torch

from dnprof.providers.base import Resolved, Shape
from dnprof.providers.deltanet import DeltaNetProvider
from dnprof.reference import chunk_delta_rule_reference

TORCH_CHUNK_SIZE = 64


def compute_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs (no half triangular solve in torch), else the input dtype."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def torch_chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = TORCH_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The PyTorch chunkwise delta rule in fla's calling convention (o in the input dtype, state in fp32)."""
    o, ht = chunk_delta_rule_reference(
        q, k, v, beta, chunk_size=chunk_size, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        cu_seqlens=cu_seqlens, dtype=compute_dtype_for(q.dtype),
    )
    return o.to(q.dtype), (None if ht is None else ht.float())


class TorchChunkProvider(DeltaNetProvider):
    """PyTorch eager chunkwise DeltaNet on the device (float64 only in its verification)."""

    def __init__(self) -> None:
        super().__init__("torch-chunk", "PyTorch chunkwise delta rule (no custom kernel)",
                         devices=("cuda", "cpu"))

    def resolve(self, shape: Shape, mode: str) -> Resolved:
        """The PyTorch function, chunk size 64, with its compute dtype recorded."""
        compute = compute_dtype_for(shape.dtype)
        return Resolved(
            fn=torch_chunk_delta_rule, variant=f"c{TORCH_CHUNK_SIZE}", chunk_size=TORCH_CHUNK_SIZE,
            extra={"compute_dtype": str(compute).replace("torch.", "")},
        )
