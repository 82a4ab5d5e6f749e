"""Fused recurrent DeltaNet in Triton: ``h_t = h_{t-1} + k_t^T beta_t (v_t - k_t h_{t-1})``, ``o_t = (scale q_t) h_t``.

Layout and calling convention follow fla (``q, k [B, T, H, K]``, ``v [B, T, H, V]``,
``beta [B, T, H]``, ``initial_state [N, H, K, V]`` fp32, packed ``cu_seqlens`` with ``B = 1``).

Forward (``recurrent_fwd_kernel``): one program per (sequence, head, V block of width BV) holds the
K x BV slice of the state in fp32 registers for all T steps (K <= 256 is held whole; V blocks are
independent because the update never mixes state columns). Token t+1's inputs are loaded while
token t is computed.

What the backward needs and how it gets it. The reverse pass needs every forward state h_{t-1}.
Inverting the update (solving ``h_t = (I - beta k^T k) h_{t-1} + ...`` for h_{t-1}) divides by
``1 - beta ||k||^2``, which vanishes as beta -> 1 for unit keys: unusable. Instead, when a backward
will follow, the forward stores

* ``u_t = v_t - k_t h_{t-1}`` per token, fp32, ``[B, T, H, V]`` (the size of v in fp32), and
* an exact fp32 copy of the state every ``S = config.checkpoint`` tokens (``ceil(T / S)`` states
  per sequence and head) plus the final state, transposed (``[V, K]``) because the backward holds
  its tiles that way (K across lanes, V within threads: its reductions over V stay in registers),

and the backward rebuilds ``h_{t-1} = h_t - k_t^T (beta_t u_t)``. That subtracts the very rank-one
term the forward added (``beta_t u_t`` is recomputed bit-identically from the stored u_t), so it
is a plain difference, not an inversion: rounding errors add up without amplification, and the
checkpoint reload every S tokens resets them, bounding the drift to S steps of fp32 rounding. The
backward thus needs one reverse pass in a single launch, no per-step state storage and no second
forward, and its memory is ``T/S`` states per sequence and head instead of T. With u_t stored,
the backward needs no v and no extra reduction for the residual. A forward without autograd
(inference, ``torch.no_grad``) stores none of this.

The backward tiles V on its own (``config.bwd_BV``, ``config.bwd_num_warps``): u and the saved
states do not depend on the forward's tiling, and the two kernels are fastest at different ones.
Gradients that reduce over V (dq, dk, dbeta) are added into one fp32 buffer with atomics
(``config.atomic``, the default: summation order not fixed) or written per V block in fp32 and
summed here (bitwise reproducible, but NV times the memory).
``use_qk_l2norm_in_kernel`` normalises q and k with differentiable fp32 torch ops before the kernel.
"""

from __future__ import annotations

import math

import torch
import triton

from dnprof.kernels.recurrent_bwd import recurrent_bwd_kernel
from dnprof.kernels.recurrent_fwd import recurrent_fwd_kernel
from dnprof.kernels.validation import backward_can_follow, check_delta_inputs
from dnprof.reference import l2norm
from dnprof.variants.recurrent_config import RecurrentConfig

__all__ = ["fused_recurrent_delta_rule", "recurrent_fwd", "recurrent_bwd", "RecurrentConfig"]

Tensor = torch.Tensor


def _checkpoint_slots(T: int, N: int, S: int, cu_seqlens: Tensor | None, device: torch.device) -> tuple[int, Tensor | None]:
    """Total saved-state slots (``ceil(len / S)`` checkpoints + the final state per sequence) and,
    for packed sequences, each sequence's first slot."""
    if cu_seqlens is None:
        return N * (math.ceil(T / S) + 1), None
    bounds = [int(x) for x in cu_seqlens.tolist()]
    counts = [math.ceil((b - a) / S) + 1 for a, b in zip(bounds[:-1], bounds[1:])]
    starts = [0]
    for c in counts[:-1]:
        starts.append(starts[-1] + c)
    return sum(counts), torch.tensor(starts, dtype=torch.int64, device=device)


def recurrent_fwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    scale: float,
    initial_state: Tensor | None,
    cu_seqlens: Tensor | None,
    config: RecurrentConfig,
    save_for_backward: bool,
    store_final_state: bool,
    out_dtype: torch.dtype,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """Launch the forward on contiguous, checked inputs; returns ``(o, ht, u, ckpt, ck_offsets)``."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    BK = triton.next_power_of_2(K)
    BV = config.BV
    NV = triton.cdiv(V, BV)
    S = config.checkpoint
    dev = q.device
    o = torch.empty(B, T, H, V, dtype=out_dtype, device=dev)
    ht = torch.empty(N, H, K, V, dtype=torch.float32, device=dev) if store_final_state else None
    u = ckpt = ck_offsets = None
    if save_for_backward:
        u = torch.empty(B, T, H, V, dtype=torch.float32, device=dev)
        slots, ck_offsets = _checkpoint_slots(T, N, S, cu_seqlens, dev)
        ckpt = torch.empty(slots, H, V, K, dtype=torch.float32, device=dev)
    recurrent_fwd_kernel[(N * H, NV)](
        q, k, v, beta, o, initial_state, ht, u, ckpt, cu_seqlens, ck_offsets,
        float(scale), T,
        H=H, K=K, V=V, BK=BK, BV=BV, S=S,
        USE_H0=initial_state is not None,
        STORE_HT=store_final_state,
        SAVE=save_for_backward,
        IS_VARLEN=cu_seqlens is not None,
        num_warps=config.num_warps,
        num_stages=1,
    )
    return o, ht, u, ckpt, ck_offsets


def recurrent_bwd(
    q: Tensor,
    k: Tensor,
    beta: Tensor,
    u: Tensor,
    ckpt: Tensor,
    do: Tensor,
    dht: Tensor | None,
    scale: float,
    cu_seqlens: Tensor | None,
    ck_offsets: Tensor | None,
    config: RecurrentConfig,
    h0_dtype: torch.dtype | None,
    v_dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Launch the reverse pass; returns ``(dq, dk, dv, dbeta, dh0)`` in the dtypes of q, k, v, beta and h0."""
    B, T, H, K = q.shape
    V = u.shape[-1]
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    BK = triton.next_power_of_2(K)
    BV = config.bwd_BV
    NV = triton.cdiv(V, BV)
    dev = q.device
    # One V block writes the finished gradient in the input dtype; several write fp32 partials
    # (summed below) or, with config.atomic, add into one zeroed fp32 buffer.
    atomic = NV > 1 and config.atomic
    if NV == 1:
        dq = torch.empty(B, T, H, K, dtype=q.dtype, device=dev)
        dk = torch.empty(B, T, H, K, dtype=k.dtype, device=dev)
        dbeta = torch.empty(B, T, H, dtype=torch.float32, device=dev)
    elif atomic:
        dq = torch.zeros(B, T, H, K, dtype=torch.float32, device=dev)
        dk = torch.zeros(B, T, H, K, dtype=torch.float32, device=dev)
        dbeta = torch.zeros(B, T, H, dtype=torch.float32, device=dev)
    else:
        dq = torch.empty(NV, B, T, H, K, dtype=torch.float32, device=dev)
        dk = torch.empty(NV, B, T, H, K, dtype=torch.float32, device=dev)
        dbeta = torch.empty(NV, B, T, H, dtype=torch.float32, device=dev)
    dv = torch.empty(B, T, H, V, dtype=v_dtype, device=dev)
    dh0 = torch.empty(N, H, K, V, dtype=h0_dtype, device=dev) if h0_dtype is not None else None
    recurrent_bwd_kernel[(N * H, NV)](
        q, k, beta, u, ckpt, dht, do, dq, dk, dv, dbeta, dh0, cu_seqlens, ck_offsets,
        float(scale), T, B * T,
        H=H, K=K, V=V, BK=BK, BV=BV, S=config.checkpoint,
        USE_DHT=dht is not None,
        USE_DH0=dh0 is not None,
        IS_VARLEN=cu_seqlens is not None,
        ATOMIC=atomic,
        num_warps=config.bwd_num_warps,
        num_stages=1,
    )
    if NV > 1 and not atomic:
        dq, dk, dbeta = dq.sum(0), dk.sum(0), dbeta.sum(0)
    return dq.to(q.dtype), dk.to(k.dtype), dv, dbeta.to(beta.dtype), dh0


class FusedRecurrentDeltaRule(torch.autograd.Function):
    """Autograd wrapper: forward saves u and state checkpoints, backward runs the reverse kernel."""

    @staticmethod
    def forward(ctx, q, k, v, beta, initial_state, scale, output_final_state, cu_seqlens, config, out_dtype):
        o, ht, u, ckpt, ck_offsets = recurrent_fwd(
            q, k, v, beta, scale, initial_state, cu_seqlens, config,
            save_for_backward=True, store_final_state=output_final_state, out_dtype=out_dtype,
        )
        ctx.save_for_backward(q, k, beta, u, ckpt, cu_seqlens, ck_offsets)
        ctx.scale = scale
        ctx.config = config
        ctx.h0_dtype = None if initial_state is None else initial_state.dtype
        ctx.v_dtype = v.dtype
        ctx.set_materialize_grads(False)
        if output_final_state:
            return o, ht
        return o, None

    @staticmethod
    def backward(ctx, do, dht):
        q, k, beta, u, ckpt, cu_seqlens, ck_offsets = ctx.saved_tensors
        if do is None:
            do = torch.zeros(*q.shape[:3], u.shape[-1], dtype=u.dtype, device=u.device)
        do = do.contiguous()
        dht = None if dht is None else dht.contiguous()
        dq, dk, dv, dbeta, dh0 = recurrent_bwd(
            q, k, beta, u, ckpt, do, dht, ctx.scale, cu_seqlens, ck_offsets, ctx.config,
            ctx.h0_dtype, ctx.v_dtype,
        )
        return dq, dk, dv, dbeta, dh0, None, None, None, None, None


def fused_recurrent_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: Tensor | None = None,
    config: RecurrentConfig | None = None,
) -> tuple[Tensor, Tensor | None]:
    """DeltaNet by its token recurrence in fused Triton kernels (fla's convention); returns ``(o, final_state)``.

    ``o`` has the input dtype, ``final_state [N, H, K, V]`` is float32 (None unless
    ``output_final_state``). Differentiable w.r.t. q, k, v, beta and initial_state. ``config``
    picks the kernel variant (when None: tuned, else shipped, else ``RecurrentConfig.default_for``).
    """
    shape = check_delta_inputs(q, k, v, beta, scale=scale, initial_state=initial_state, cu_seqlens=cu_seqlens)
    differentiable = backward_can_follow(q, k, v, beta, initial_state)
    if config is None:
        from dnprof.variants.selection import select_recurrent_config

        mode = "fwdbwd" if differentiable else "fwd"  # no backward can follow: the forward's own pick
        config = select_recurrent_config(shape.K, shape.V, shape.T, q.dtype, mode)[0]
    elif not isinstance(config, RecurrentConfig):
        raise ValueError(f"config: expected a RecurrentConfig or None, got {type(config).__name__}")
    config.validate(shape.K, shape.V)
    if scale is None:
        scale = shape.K ** -0.5
    out_dtype = v.dtype
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q.float()), l2norm(k.float())
    q, k, v, beta = (t.contiguous() for t in (q, k, v, beta))
    h0 = None if initial_state is None else initial_state.contiguous()

    if differentiable:
        return FusedRecurrentDeltaRule.apply(q, k, v, beta, h0, float(scale), output_final_state, cu_seqlens, config, out_dtype)
    o, ht, _, _, _ = recurrent_fwd(
        q, k, v, beta, float(scale), h0, cu_seqlens, config,
        save_for_backward=False, store_final_state=output_final_state, out_dtype=out_dtype,
    )
    return o, (ht if output_final_state else None)
