"""dnprof: Triton kernels for DeltaNet (the delta rule), verified against float64 and autotuned per GPU.

The kernels follow fla's calling convention (``[B, T, H, D]`` inputs, ``beta [B, T, H]``,
``initial_state [N, H, K, V]``), so switching between fla and dnprof is a change of import.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "chunk_delta_rule", "fused_recurrent_delta_rule"]


def __getattr__(name: str):
    """Import the kernels lazily: ``import dnprof`` must not touch Triton or a GPU."""
    if name == "chunk_delta_rule":
        from dnprof.kernels.chunk import chunk_delta_rule

        return chunk_delta_rule
    if name == "fused_recurrent_delta_rule":
        from dnprof.kernels.recurrent import fused_recurrent_delta_rule

        return fused_recurrent_delta_rule
    raise AttributeError(f"module 'dnprof' has no attribute {name!r}")
