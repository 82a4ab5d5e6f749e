"""Backward Triton kernel of the fused recurrent delta rule (see ``dnprof.kernels.recurrent``).

One program per (sequence, head, V block) walks the tokens in reverse with two K x BV fp32 tiles
in registers: the state ``h_t`` and its gradient ``dh_t``. Per token (``q`` already scaled)::

    dq_t   = scale * h_t do_t                      (partial: sums over this V block only)
    dh_t  += q_t^T do_t
    vn_t   = beta_t u_t                            (u_t = v_t - k_t h_{t-1}, saved by the forward)
    dvn_t  = k_t dh_t
    dk_t   = dh_t vn_t^T - h_{t-1} (beta_t dvn_t)  (partial)
    dv_t   = beta_t dvn_t
    dbeta_t = dvn_t . u_t                          (partial)
    h_{t-1} = h_t - k_t^T vn_t                     (or the saved fp32 checkpoint every S tokens)
    dh_{t-1} = dh_t - k_t^T dv_t

dq, dk and dbeta reduce over V. With several V blocks each block either writes its own fp32
partial and the wrapper sums them (``ATOMIC = False``: deterministic, but NV times the memory of
dq and dk in fp32), or adds into one zeroed fp32 buffer with atomics (``ATOMIC = True``: one
buffer, summation order not fixed).
"""

from __future__ import annotations

import triton
import triton.language as tl

from dnprof.kernels.recurrent_fwd import sequence_bounds


@triton.jit(do_not_specialize=["T", "NTOK"])
def recurrent_bwd_kernel(
    q,  # [B, T, H, K]
    k,  # [B, T, H, K]
    beta,  # [B, T, H]
    u,  # [B, T, H, V] fp32 residuals from the forward
    ckpt,  # [slots, H, V, K] fp32 states saved every S tokens, then the final state (transposed)
    dht,  # [N, H, K, V] gradient of the final state (read if USE_DHT)
    do,  # [B, T, H, V]
    dq,  # [NV, B, T, H, K] partials (or [B, T, H, K] when NV == 1)
    dk,  # [NV, B, T, H, K]
    dv,  # [B, T, H, V]
    dbeta,  # [NV, B, T, H]
    dh0,  # [N, H, K, V] (written if USE_DH0)
    cu_seqlens,
    ck_offsets,
    scale,
    T,
    NTOK,  # B * T: stride between V-block partials, in tokens
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    S: tl.constexpr,
    USE_DHT: tl.constexpr,
    USE_DH0: tl.constexpr,
    IS_VARLEN: tl.constexpr,
    ATOMIC: tl.constexpr,
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
    # The tiles are held transposed, [BV, BK] (V down, K across), and the saved states are stored
    # that way ([V, K], K contiguous), so the compiler spreads K over lanes and warps and keeps V
    # within each thread: the two reductions over V per token (dq, dk) then stay in registers and
    # only the one over K (dvn) crosses lanes. (With V across lanes, dq and dk cost 5 shuffles per
    # row held, several hundred per token.)
    m_h = m_v[:, None] & m_k[None, :]
    o_h = o_v[:, None] + o_k[None, :] * V  # in a user state [K, V]
    o_hs = o_v[:, None] * K + o_k[None, :]  # in a saved state [V, K]
    state_base = (i_n.to(tl.int64) * H + i_h) * K * V

    last = eos - 1  # the walk starts at the last token of the sequence
    if ATOMIC:
        part = 0  # every V block adds into the same buffer
    else:
        part = i_v.to(tl.int64) * NTOK  # first token of this V block's partials
    p_q = q + (last * H + i_h) * K + o_k
    p_k = k + (last * H + i_h) * K + o_k
    p_u = u + (last * H + i_h) * V + o_v
    p_do = do + (last * H + i_h) * V + o_v
    p_dv = dv + (last * H + i_h) * V + o_v
    p_dq = dq + ((part + last) * H + i_h) * K + o_k
    p_dk = dk + ((part + last) * H + i_h) * K + o_k
    p_b = beta + last * H + i_h
    p_db = dbeta + (part + last) * H + i_h

    last_slot = ck_base + tl.cdiv(L, S)  # the final state follows the sequence's checkpoints
    b_h = tl.load(ckpt + (last_slot * H + i_h) * K * V + o_hs, mask=m_h, other=0.0)
    b_dh = tl.zeros([BV, BK], dtype=tl.float32)
    if USE_DHT:
        b_dh += tl.load(dht + state_base + o_h, mask=m_h, other=0.0).to(tl.float32)

    b_q = tl.load(p_q, mask=m_k, other=0.0).to(tl.float32) * scale
    b_k = tl.load(p_k, mask=m_k, other=0.0).to(tl.float32)
    b_u = tl.load(p_u, mask=m_v, other=0.0)
    b_do = tl.load(p_do, mask=m_v, other=0.0).to(tl.float32)
    b_b = tl.load(p_b).to(tl.float32)
    i = L - 1  # token index inside the sequence, walking down to 0
    while i >= 0:  # a while loop: the interpreter cannot take a loaded loop bound in range()
        more = i > 0
        n_q = tl.load(p_q - H * K, mask=m_k & more, other=0.0)
        n_k = tl.load(p_k - H * K, mask=m_k & more, other=0.0)
        n_u = tl.load(p_u - H * V, mask=m_v & more, other=0.0)
        n_do = tl.load(p_do - H * V, mask=m_v & more, other=0.0)
        n_b = tl.load(p_b - H, mask=more, other=0.0)

        b_dq = tl.sum(b_h * b_do[:, None], 0) * scale
        b_dh += b_do[:, None] * b_q[None, :]
        b_vn = b_u * b_b
        b_dvn = tl.sum(b_dh * b_k[None, :], 1)
        b_db = tl.sum(b_dvn * b_u, 0)
        b_du = b_dvn * b_b
        if i % S == 0:
            # Exact fp32 state before this token: stops rounding drift from the subtractions below.
            slot = ck_base + i // S
            b_hp = tl.load(ckpt + (slot * H + i_h) * K * V + o_hs, mask=m_h, other=0.0)
        else:
            b_hp = b_h - b_vn[:, None] * b_k[None, :]
        b_dk = tl.sum(b_dh * b_vn[:, None] - b_hp * b_du[:, None], 0)
        b_dh -= b_du[:, None] * b_k[None, :]
        b_h = b_hp

        if ATOMIC:
            tl.atomic_add(p_dq, b_dq, mask=m_k, sem="relaxed")
            tl.atomic_add(p_dk, b_dk, mask=m_k, sem="relaxed")
            tl.atomic_add(p_db, b_db, sem="relaxed")
        else:
            tl.store(p_dq, b_dq.to(p_dq.dtype.element_ty), mask=m_k)
            tl.store(p_dk, b_dk.to(p_dk.dtype.element_ty), mask=m_k)
            tl.store(p_db, b_db.to(p_db.dtype.element_ty))
        tl.store(p_dv, b_du.to(p_dv.dtype.element_ty), mask=m_v)

        p_q -= H * K
        p_k -= H * K
        p_u -= H * V
        p_do -= H * V
        p_dv -= H * V
        p_dq -= H * K
        p_dk -= H * K
        p_b -= H
        p_db -= H
        b_q = n_q.to(tl.float32) * scale
        b_k = n_k.to(tl.float32)
        b_u = n_u
        b_do = n_do.to(tl.float32)
        b_b = n_b.to(tl.float32)
        i -= 1

    if USE_DH0:
        tl.store(dh0 + state_base + o_h, b_dh.to(dh0.dtype.element_ty), mask=m_h)
