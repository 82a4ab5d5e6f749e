"""Variants seen to return wrong values on sm_90 though the Triton interpreter verifies them, refused there.

One rule set for both guards: :func:`dnprof.kernels.chunk.plan_launch` refuses such a call before any kernel
runs, and the tuner's space prunes it (``known-fault``), so neither a library call nor a tuning run can
produce the wrong values. Each rule names what was measured (docs/performance.md, changes 34 and 38); a rule is
as wide as the evidence allows to tell apart, not narrower.
"""

from __future__ import annotations

from typing import Any

from dnprof.variants.chunk_config import padded_dim


def sm90_wrong_values(cfg: Any, K: int, backward: bool) -> str | None:
    """Why chunk variant ``cfg`` at key head dim ``K`` must not run on sm_90 (``backward``: a backward
    follows the forward), or None. Seen on an H200 with Triton 3.6, bf16 (D = 64 in the twelfth lease's
    tuning, D = 256 in the thirteenth's), while the same variants pass in the interpreter and their
    neighbours (4 warps, two stages, BK = the head dim, the WY launch fused) verify."""
    Kp = padded_dim(K)
    if cfg.chunk_size == 64 and cfg.num_warps == 8 and cfg.BK >= Kp:
        return (f"chunk size 64 at 8 warps with the keys in one tile (BK {cfg.BK} >= padded head dim {Kp}) returned "
                "wrong values for the output, the final state and every gradient on sm_90 (H200, Triton 3.6, D = 64); "
                "use 4 warps")
    if cfg.chunk_size == 64 and cfg.num_warps == 8 and cfg.num_stages == 1:
        return ("chunk size 64 at 8 warps and one stage returned wrong outputs and final states (errors 0.13-0.23 "
                "or inf) or made an illegal memory access in all 8 such variants tried on sm_90 (H200, Triton 3.6, "
                "D = 256 forward); use 2 or more stages or 4 warps")
    if (cfg.chunk_size == 64 and cfg.num_warps == 8 and cfg.BV >= 128 and not cfg.fuse_wy
            and not cfg.wy_in_loop and not cfg.fuse_output):
        return ("chunk size 64 at 8 warps with BV >= 128, the WY launch split and the output apart returned a wrong "
                "output (error 0.37, the final state right) on sm_90 (H200, Triton 3.6, D = 256 forward, seen once); "
                "use fuse_wy=True or 4 warps")
    if cfg.chunk_size == 128 and not cfg.fuse_wy and not cfg.wy_in_loop and cfg.fuse_output:
        return ("chunk size 128 with the WY transform split from its inputs and the output fused made an illegal "
                "memory access in both such variants tried on sm_90 (H200, Triton 3.6, D = 256 forward); use "
                "fuse_wy=True or the output apart")
    if backward and cfg.BK < Kp <= 64:
        return (f"BK {cfg.BK} below a padded head dim of {Kp} returned wrong dk and dbeta on sm_90 (H200, Triton 3.6, "
                f"D = 64; the output, final state, dq, dv and dh0 were right); use BK = {Kp}")
    return None
