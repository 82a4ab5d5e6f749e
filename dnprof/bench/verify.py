"""Check a DeltaNet kernel against the float64 reference: output, final state and every gradient.

The reference runs on the kernel's own (already rounded) inputs, upcast to float64, so the error
measures the kernel and not the input rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from dnprof.bench.equivalence import passes, relative_error, tolerance_for
from dnprof.bench.inputs import DeltaInputs, make_delta_inputs
from dnprof.reference import chunk_delta_rule_reference, recurrent_delta_rule

DeltaKernel = Callable[..., tuple[torch.Tensor, "torch.Tensor | None"]]

#: Names of the checked quantities, in report order.
FWD_KEYS = ("o", "ht")
GRAD_KEYS = ("dq", "dk", "dv", "dbeta", "dh0")


@dataclass
class VerifyResult:
    """Relative errors per quantity against float64, the tolerance used, and the verdict."""

    errors: dict[str, float]
    tolerance: float
    failed: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def max_error(self) -> float:
        return max(self.errors.values()) if self.errors else 0.0


def _reference(inputs: DeltaInputs, use_l2: bool, reference: str) -> tuple[torch.Tensor, torch.Tensor]:
    leaves = [t.detach().double().requires_grad_(True) for t in inputs.leaves()]
    q, k, v, beta = leaves[:4]
    h0 = leaves[4] if len(leaves) > 4 else None
    kwargs = dict(
        initial_state=h0,
        output_final_state=True,
        use_qk_l2norm_in_kernel=use_l2,
        cu_seqlens=inputs.cu_seqlens,
        dtype=torch.float64,
    )
    if reference == "recurrent":
        o, ht = recurrent_delta_rule(q, k, v, beta, **kwargs)
    else:  # the chunkwise form equals the recurrent one to 1e-10 and is far faster at long T
        o, ht = chunk_delta_rule_reference(q, k, v, beta, chunk_size=64, **kwargs)
    return leaves, o, ht


def verify_delta_kernel(
    kernel: DeltaKernel,
    B: int,
    T: int,
    H: int,
    K: int,
    V: int | None = None,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    mode: str = "fwdbwd",
    seed: int = 0,
    cu_seqlens: list[int] | None = None,
    use_qk_l2norm_in_kernel: bool = False,
    tolerance: float | None = None,
    reference: str = "auto",
) -> VerifyResult:
    """Run ``kernel`` (fla's calling convention) on fresh inputs and compare it with float64.

    ``mode`` is ``fwd`` (o and final state) or ``fwdbwd`` (also dq, dk, dv, dbeta, dh0 for a random
    upstream gradient on o and on the final state). ``reference`` is ``recurrent``, ``chunk`` or
    ``auto`` (recurrent for T <= 256, else the float64 chunkwise form).
    """
    if mode not in ("fwd", "fwdbwd"):
        raise ValueError(f"mode: expected 'fwd' or 'fwdbwd', got {mode!r}")
    tol = tolerance_for(dtype) if tolerance is None else tolerance
    grads = mode == "fwdbwd"
    inputs = make_delta_inputs(
        B, T, H, K, V, dtype=dtype, device=device, seed=seed, requires_grad=grads, cu_seqlens=cu_seqlens
    )
    ref_kind = ("recurrent" if T <= 256 else "chunk") if reference == "auto" else reference
    ref_leaves, o_ref, ht_ref = _reference(inputs, use_qk_l2norm_in_kernel, ref_kind)

    o, ht = kernel(
        inputs.q,
        inputs.k,
        inputs.v,
        inputs.beta,
        initial_state=inputs.initial_state,
        output_final_state=True,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        cu_seqlens=inputs.cu_seqlens,
    )
    errors = {"o": relative_error(o, o_ref), "ht": relative_error(ht, ht_ref)}
    if grads:
        do, dht = inputs.do, inputs.dht.to(device)
        ((o * do).sum() + (ht * dht).sum()).backward()
        ((o_ref * do.double()).sum() + (ht_ref * dht.double()).sum()).backward()
        for name, got, want in zip(GRAD_KEYS, inputs.leaves(), ref_leaves):
            errors[name] = relative_error(got.grad, want.grad)
    failed = [name for name, err in errors.items() if not passes(err, tol)]
    return VerifyResult(errors=errors, tolerance=tol, failed=failed)
