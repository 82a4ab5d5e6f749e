"""Forward Triton kernel of the fused recurrent delta rule (see ``dnprof.kernels.recurrent``).

One program per (sequence, head, V block) walks the tokens in order with the K x BV slice of the
fp32 state in registers. The delta rule never mixes state columns (``k h`` reduces over K only),
so V blocks are independent. When a backward will follow it also writes, in fp32, the residual
``u_t = v_t - k_t h_{t-1}`` of every token, an exact copy of the state every ``S`` tokens and the
final state (these two transposed, ``[V, K]``, the layout the backward holds them in).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def sequence_bounds(i_n, cu_seqlens, ck_offsets, T, S: tl.constexpr, IS_VARLEN: tl.constexpr):
    """(first token, end token, first checkpoint slot) of sequence ``i_n``, packed or ``[B, T]``."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        ck_base = tl.load(ck_offsets + i_n).to(tl.int64)
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T
        ck_base = i_n.to(tl.int64) * (tl.cdiv(T, S) + 1)
    return bos, eos, ck_base


@triton.jit(do_not_specialize=["T"])
def recurrent_fwd_kernel(
    q,  # [B, T, H, K]  any float dtype
    k,  # [B, T, H, K]
    v,  # [B, T, H, V]
    beta,  # [B, T, H]
    o,  # [B, T, H, V]  output dtype
    h0,  # [N, H, K, V]  initial state (read if USE_H0)
    ht,  # [N, H, K, V]  fp32 final state (written if STORE_HT)
    u,  # [B, T, H, V]  fp32 residuals (written if SAVE)
    ckpt,  # [slots, H, V, K] fp32 state every S tokens, then the final one, transposed (if SAVE)
    cu_seqlens,  # [N + 1] token offsets (read if IS_VARLEN)
    ck_offsets,  # [N] first checkpoint slot of each sequence (read if IS_VARLEN)
    scale,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    S: tl.constexpr,
    USE_H0: tl.constexpr,
    STORE_HT: tl.constexpr,
    SAVE: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_nh = tl.program_id(0)
    i_v = tl.program_id(1)
    i_n = i_nh // H
    i_h = i_nh % H
    bos, eos, ck_base = sequence_bounds(i_n, cu_seqlens, ck_offsets, T, S, IS_VARLEN)
    L = (eos - bos).to(tl.int32)

    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    m_h = m_k[:, None] & m_v[None, :]
    o_h = o_k[:, None] * V + o_v[None, :]  # offsets inside one user state [K, V]
    o_hs = o_k[:, None] + o_v[None, :] * K  # inside a saved state, transposed [V, K] for the backward
    state_base = (i_n.to(tl.int64) * H + i_h) * K * V

    p_q = q + (bos * H + i_h) * K + o_k
    p_k = k + (bos * H + i_h) * K + o_k
    p_v = v + (bos * H + i_h) * V + o_v
    p_o = o + (bos * H + i_h) * V + o_v
    if SAVE:
        p_u = u + (bos * H + i_h) * V + o_v
    p_b = beta + bos * H + i_h

    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + state_base + o_h, mask=m_h, other=0.0).to(tl.float32)

    # Loads for step i + 1 are issued before step i's arithmetic so their latency hides behind it.
    b_q = tl.load(p_q, mask=m_k, other=0.0).to(tl.float32) * scale
    b_k = tl.load(p_k, mask=m_k, other=0.0).to(tl.float32)
    b_v = tl.load(p_v, mask=m_v, other=0.0).to(tl.float32)
    b_b = tl.load(p_b).to(tl.float32)
    i = 0
    while i < L:  # a while loop: the interpreter cannot take a loaded loop bound in range()
        more = i + 1 < L
        n_q = tl.load(p_q + H * K, mask=m_k & more, other=0.0)
        n_k = tl.load(p_k + H * K, mask=m_k & more, other=0.0)
        n_v = tl.load(p_v + H * V, mask=m_v & more, other=0.0)
        n_b = tl.load(p_b + H, mask=more, other=0.0)

        if SAVE:
            if i % S == 0:
                # offsets built here, not before the loop, so they hold no registers between saves
                slot = ck_base + i // S
                r_k = tl.arange(0, BK)
                r_v = i_v * BV + tl.arange(0, BV)
                p_s = ckpt + (slot * H + i_h) * K * V + r_k[:, None] + r_v[None, :] * K
                tl.store(p_s, b_h, mask=(r_k[:, None] < K) & (r_v[None, :] < V))
        b_u = b_v - tl.sum(b_h * b_k[:, None], 0)
        b_vn = b_u * b_b
        b_h += b_k[:, None] * b_vn[None, :]
        b_o = tl.sum(b_h * b_q[:, None], 0)
        tl.store(p_o, b_o.to(p_o.dtype.element_ty), mask=m_v)
        if SAVE:
            tl.store(p_u, b_u, mask=m_v)

        p_q += H * K
        p_k += H * K
        p_v += H * V
        p_o += H * V
        if SAVE:
            p_u += H * V
        p_b += H
        b_q = n_q.to(tl.float32) * scale
        b_k = n_k.to(tl.float32)
        b_v = n_v.to(tl.float32)
        b_b = n_b.to(tl.float32)
        i += 1

    if STORE_HT:
        tl.store(ht + state_base + o_h, b_h, mask=m_h)
    if SAVE:
        slot = ck_base + tl.cdiv(L, S)
        tl.store(ckpt + (slot * H + i_h) * K * V + o_hs, b_h, mask=m_h)
