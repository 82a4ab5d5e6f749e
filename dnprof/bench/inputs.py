"""Fresh random inputs for DeltaNet kernels, drawn the way the standards ask.

Keys are L2-normalised, beta lies in (0, 1), the initial state is non-zero float32, and nothing
is zero: zeros hide unwritten outputs and can run faster than real data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dnprof.reference import l2norm


@dataclass
class DeltaInputs:
    """One set of DeltaNet inputs in fla's layout, plus upstream gradients for a backward."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    beta: torch.Tensor
    initial_state: torch.Tensor | None
    do: torch.Tensor
    dht: torch.Tensor | None
    cu_seqlens: torch.Tensor | None = None

    def leaves(self) -> list[torch.Tensor]:
        """The tensors that gradients are taken with respect to, in a fixed order."""
        out = [self.q, self.k, self.v, self.beta]
        if self.initial_state is not None:
            out.append(self.initial_state)
        return out


def make_delta_inputs(
    B: int,
    T: int,
    H: int,
    K: int,
    V: int | None = None,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    seed: int = 0,
    initial_state: bool = True,
    requires_grad: bool = False,
    cu_seqlens: list[int] | None = None,
) -> DeltaInputs:
    """Draw q, k (unit norm), v, beta in (0, 1), a non-zero fp32 initial state and upstream grads.

    With ``cu_seqlens`` the batch is packed (``B`` must be 1) and one initial state is drawn
    per sequence.
    """
    V = K if V is None else V
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float32).to(device)

    q = randn(B, T, H, K).to(dtype)
    k = l2norm(randn(B, T, H, K)).to(dtype)
    v = randn(B, T, H, V).to(dtype)
    beta = torch.sigmoid(randn(B, T, H)).clamp(1e-3, 1 - 1e-3).to(dtype)
    n_states = B if cu_seqlens is None else len(cu_seqlens) - 1
    h0 = 0.5 * randn(n_states, H, K, V) if initial_state else None
    do = randn(B, T, H, V).to(dtype)
    dht = randn(n_states, H, K, V)
    cu = None if cu_seqlens is None else torch.tensor(cu_seqlens, dtype=torch.int32, device=device)
    tensors = [q, k, v, beta] + ([h0] if h0 is not None else [])
    if requires_grad:
        for t in tensors:
            t.requires_grad_(True)
    return DeltaInputs(q, k, v, beta, h0, do, dht, cu)
