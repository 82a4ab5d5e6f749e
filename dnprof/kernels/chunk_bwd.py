"""Backward of the chunkwise delta rule (ALGORITHM.md's equations): a reverse recurrence, two chunk-parallel launches.

``bwd_dh_kernel`` is the reverse recurrence: one program per (sequence, head, ``BV`` block) walks
the chunks backwards with the fp32 state gradient ``dh [K, BV]`` in up to four ``[BK, BV]`` slabs.
Per chunk it stores ``dh'`` (gradient of the state after the chunk), forms
``dVn = scale tril(Q K^T)^T dO + K dh'`` and steps ``dh = dh' + scale Q^T dO - W^T dVn``; after the
first chunk ``dh`` is the initial state's gradient. It needs no forward state.

The chunk-parallel part produces dq, dk, dv, dbeta through the WY transform: with
``P = tril(dO Vn^T)``, ``dW = -dVn h^T``, ``dKb = X^T dW``, ``dVb = X^T dVn``,
``dX = dW Kb^T + dVn Vb^T`` and ``G = tril(-X^T dX X^T, -1)``. Two launches:
``bwd_chunk_v_kernel`` (per chunk and head) sweeps V tiles for dv and completes ``dX`` without
``dW`` itself (``dW Kb^T = -dVn (Kb h)^T``), so ``G`` is known before any K tile; then
``bwd_chunk_k_kernel`` runs one program per (chunk, head, K tile), each with a V loop for the
state products, and writes its dq and dk tiles once, in the inputs' dtype. dbeta's parts (the V
part and one per K tile, fp32) are added by one torch reduction afterwards.
"""

from __future__ import annotations

import triton
import triton.language as tl

from dnprof.kernels.chunk_common import (chunk_beta, dot32, load_state_slabs, load_tile, loop_descs, mm,
                                         serial_program, state_ptrs, store_state_slabs, store_tile, tile_via, x_block)


@triton.jit
def _dh_step(W, b_q, b_do, b_dvn, dh, t0, eos, i_h, H, K: tl.constexpr, k0, scale,
             BT: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr, w_desc=None, TMA: tl.constexpr = False, r=0):
    """One ``[BK, BV]`` slab of ``dh = dh' + scale Q^T dO - W^T dVn`` (``b_q``: the slab's query tile; ``W``'s
    through ``w_desc`` at row ``r`` of the sequence with ``TMA``)."""
    b_w = tile_via(W, w_desc, TMA, t0, eos, r, i_h, H, K, k0, BT, BK)
    return dh + mm(tl.trans(b_q), b_do, PREC) * scale - dot32(tl.trans(b_w), b_dvn, PREC)


@triton.jit
def bwd_dh_kernel(q, k, W, do, dht, dHs, dVn, dh0, beta, seq_start, seq_chunk0, max_chunks, scale, H,
                  K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                  NKS: tl.constexpr, PREC: tl.constexpr, USE_DHT: tl.constexpr, STORE_DH0: tl.constexpr,
                  APPLY_X: tl.constexpr, XPREC: tl.constexpr, TMA: tl.constexpr = False):
    """The reverse recurrence (module docstring). ``APPLY_X`` (``wy_in_loop``): ``W`` is the fp32 ``X``
    and ``W^T dVn = K^T (diag(beta) X^T dVn)``, that product at ``XPREC``; ``beta`` is read only then.
    ``TMA``: the chunk's ``Q``, ``K``, ``dO`` and ``W`` tiles come through tensor descriptors
    (:func:`sequence_desc`) instead of per-thread masked loads (not with ``APPLY_X``)."""
    i_n, i_h, v0, bos, eos, c0 = serial_program(seq_start, seq_chunk0, V, BV)
    q_desc, k_desc, w_desc, do_desc = loop_descs(q, k, W, do, bos, eos, i_h, H, K, V, BT, BK, BV, TMA, APPLY_X)
    h1 = tl.zeros([BK, BV], dtype=tl.float32)
    h2 = h1
    h3 = h1
    h4 = h1
    if USE_DHT:
        h1, h2, h3, h4 = load_state_slabs(dht, i_n, i_h, H, K, V, v0, BK, BV, NKS)
    rows = tl.arange(0, BT)
    causal = rows[:, None] >= rows[None, :]
    n_chunks = tl.cdiv(eos - bos, BT)
    for j in range(0, max_chunks):  # pipelined; steps past a short sequence's end are masked no-ops
        i = max_chunks - 1 - j
        c = c0 + i
        r = i * BT
        t0 = bos + r
        store_state_slabs(dHs, c, i_h, H, K, V, v0, BK, BV, NKS, h1, h2, h3, h4, i < n_chunks)
        # dVn = scale tril(Q K^T)^T dO + K dh'; each query and key tile is loaded once per chunk.
        q1 = tile_via(q, q_desc, TMA, t0, eos, r, i_h, H, K, 0, BT, BK)
        k1 = tile_via(k, k_desc, TMA, t0, eos, r, i_h, H, K, 0, BT, BK)
        b_s = mm(q1, tl.trans(k1), PREC)
        b_dvn = dot32(k1, h1, PREC)
        q2 = q1
        q3 = q1
        q4 = q1
        k2 = k1
        k3 = k1
        k4 = k1
        if NKS > 1:
            q2 = tile_via(q, q_desc, TMA, t0, eos, r, i_h, H, K, BK, BT, BK)
            k2 = tile_via(k, k_desc, TMA, t0, eos, r, i_h, H, K, BK, BT, BK)
            b_s += mm(q2, tl.trans(k2), PREC)
            b_dvn += dot32(k2, h2, PREC)
        if NKS > 2:
            q3 = tile_via(q, q_desc, TMA, t0, eos, r, i_h, H, K, 2 * BK, BT, BK)
            k3 = tile_via(k, k_desc, TMA, t0, eos, r, i_h, H, K, 2 * BK, BT, BK)
            b_s += mm(q3, tl.trans(k3), PREC)
            b_dvn += dot32(k3, h3, PREC)
            q4 = tile_via(q, q_desc, TMA, t0, eos, r, i_h, H, K, 3 * BK, BT, BK)
            k4 = tile_via(k, k_desc, TMA, t0, eos, r, i_h, H, K, 3 * BK, BT, BK)
            b_s += mm(q4, tl.trans(k4), PREC)
            b_dvn += dot32(k4, h4, PREC)
        b_s = tl.where(causal, b_s, 0.0) * scale
        b_do = tile_via(do, do_desc, TMA, t0, eos, r, i_h, H, V, v0, BT, BV)
        b_dvn += dot32(tl.trans(b_s), b_do, PREC)
        store_tile(dVn, b_dvn, t0, eos, i_h, H, V, v0, BT, BV)
        # dh = dh' + scale Q^T dO - W^T dVn
        if APPLY_X:
            b_xt = x_block(W, c, i_h, H, BT, True, i < n_chunks) * chunk_beta(beta, t0, eos, i_h, H, BT)[:, None]
            b_y = tl.dot(b_xt, b_dvn, input_precision=XPREC)
            h1 += mm(tl.trans(q1), b_do, PREC) * scale - dot32(tl.trans(k1), b_y, PREC)
            if NKS > 1:
                h2 += mm(tl.trans(q2), b_do, PREC) * scale - dot32(tl.trans(k2), b_y, PREC)
            if NKS > 2:
                h3 += mm(tl.trans(q3), b_do, PREC) * scale - dot32(tl.trans(k3), b_y, PREC)
                h4 += mm(tl.trans(q4), b_do, PREC) * scale - dot32(tl.trans(k4), b_y, PREC)
        else:
            h1 = _dh_step(W, q1, b_do, b_dvn, h1, t0, eos, i_h, H, K, 0, scale, BT, BK, PREC, w_desc, TMA, r)
            if NKS > 1:
                h2 = _dh_step(W, q2, b_do, b_dvn, h2, t0, eos, i_h, H, K, BK, scale, BT, BK, PREC, w_desc, TMA, r)
            if NKS > 2:
                h3 = _dh_step(W, q3, b_do, b_dvn, h3, t0, eos, i_h, H, K, 2 * BK, scale, BT, BK, PREC, w_desc, TMA, r)
                h4 = _dh_step(W, q4, b_do, b_dvn, h4, t0, eos, i_h, H, K, 3 * BK, scale, BT, BK, PREC, w_desc, TMA, r)
    if STORE_DH0:
        store_state_slabs(dh0, i_n, i_h, H, K, V, v0, BK, BV, NKS, h1, h2, h3, h4, True)


@triton.jit
def _cc_ptrs(ptr, c, i_h, H, BT: tl.constexpr):
    """Pointers to the ``[BT, BT]`` block of chunk ``c``, head ``i_h`` of a ``[n_chunks, H, BT, BT]`` buffer."""
    rows = tl.arange(0, BT)
    return ptr + (c * H + i_h).to(tl.int64) * BT * BT + rows[:, None] * BT + rows[None, :]


@triton.jit
def _load_cc(ptr, c, i_h, H, BT: tl.constexpr):
    """The ``[BT, BT]`` block of chunk ``c``, head ``i_h`` of a ``[n_chunks, H, BT, BT]`` buffer."""
    return tl.load(_cc_ptrs(ptr, c, i_h, H, BT))


@triton.jit
def _chunk_rows(chunk_start, chunk_end, c, beta, i_h, H, BT: tl.constexpr):
    """The chunk's token offsets, their mask, its end and its beta (fp32)."""
    t0 = tl.load(chunk_start + c).to(tl.int64)
    eos = tl.load(chunk_end + c).to(tl.int64)
    offs_t = t0 + tl.arange(0, BT)
    mask_t = offs_t < eos
    b_beta = tl.load(beta + offs_t * H + i_h, mask=mask_t, other=0.0).to(tl.float32)
    return t0, eos, offs_t, mask_t, b_beta


@triton.jit
def bwd_chunk_v_kernel(k, v, beta, X, S, Hs, Vn, dVn, do, dv, dbeta_parts, chunk_start, chunk_end, T, H,
                       K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                       PREC: tl.constexpr):
    """One program per (chunk, head), sweeping V tiles: dv, dbeta's V part, and ``P`` and ``G`` into ``S``.

    ``dX = dVn (V diag(beta))^T + dW (K diag(beta))^T`` is completed here without ``dW`` itself, as
    ``dW Kb^T = -dVn (diag(beta) K h)^T`` (one ``[C, K] x [K, BV]`` product per V tile), so that
    ``G = tril(-X^T dX X^T, -1)`` is known before any K tile is processed.
    """
    c = tl.program_id(0)
    i_h = tl.program_id(1)
    NC = tl.num_programs(0).to(tl.int64)
    t0, eos, offs_t, mask_t, b_beta = _chunk_rows(chunk_start, chunk_end, c, beta, i_h, H, BT)
    rows = tl.arange(0, BT)
    b_p = tl.zeros([BT, BT], dtype=tl.float32)
    b_dx = tl.zeros([BT, BT], dtype=tl.float32)
    b_db = tl.zeros([BT], dtype=tl.float32)
    for i_v in range(0, tl.cdiv(V, BV)):
        v0 = i_v * BV
        b_do = load_tile(do, t0, eos, i_h, H, V, v0, BT, BV)
        b_vn = load_tile(Vn, t0, eos, i_h, H, V, v0, BT, BV)
        b_dvn = load_tile(dVn, t0, eos, i_h, H, V, v0, BT, BV)
        b_v = load_tile(v, t0, eos, i_h, H, V, v0, BT, BV).to(tl.float32)
        b_p += dot32(b_do, tl.trans(b_vn), PREC)
        b_dvb = dot32(tl.trans(_load_cc(X, c, i_h, H, BT)), b_dvn, PREC)
        store_tile(dv, b_dvb * b_beta[:, None], t0, eos, i_h, H, V, v0, BT, BV)
        b_db += tl.sum(b_dvb * b_v, axis=1)
        b_kh = tl.zeros([BT, BV], dtype=tl.float32)
        for i_k in range(0, tl.cdiv(K, BK)):
            k0 = i_k * BK
            p, m = state_ptrs(Hs, c, i_h, H, K, V, k0, v0, BK, BV)
            b_kh += dot32(load_tile(k, t0, eos, i_h, H, K, k0, BT, BK), tl.load(p, mask=m, other=0.0), PREC)
        b_dx += dot32(b_dvn, tl.trans(b_v - b_kh) * b_beta[None, :], PREC)
    p_ptrs = _cc_ptrs(S, c, i_h, H, BT)
    tl.store(p_ptrs, tl.where(rows[:, None] >= rows[None, :], b_p, 0.0))
    b_xt = tl.trans(_load_cc(X, c, i_h, H, BT))
    b_g = dot32(dot32(b_xt, b_dx, PREC), b_xt, PREC)
    tl.store(p_ptrs + NC * H * BT * BT, tl.where(rows[:, None] > rows[None, :], -b_g, 0.0))
    tl.store(dbeta_parts + offs_t * H + i_h, b_db, mask=mask_t)


@triton.jit
def bwd_chunk_k_kernel(q, k, beta, X, S, Hs, dHs, Vn, dVn, do, dq, dk, dbeta_parts, chunk_start, chunk_end,
                       scale, T, H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
                       BV: tl.constexpr, PREC: tl.constexpr):
    """One program per (chunk and K tile, head): that tile of dq and dk, and its part of dbeta.

    Reads ``P`` and ``G`` from the scratch ``S`` written by :func:`bwd_chunk_v_kernel`.
    """
    # Chunk-major program ids: the K tiles of one chunk run side by side and share its dO, Vn and
    # dVn tiles in L2 (with the tile index on a grid axis of its own they ran NC * H programs apart).
    NKT: tl.constexpr = (K + BK - 1) // BK
    c = tl.program_id(0) // NKT
    i_k = tl.program_id(0) % NKT
    i_h = tl.program_id(1)
    NC = (tl.num_programs(0) // NKT).to(tl.int64)
    t0, eos, offs_t, mask_t, b_beta = _chunk_rows(chunk_start, chunk_end, c, beta, i_h, H, BT)
    p_ptrs = _cc_ptrs(S, c, i_h, H, BT)
    k0 = i_k * BK
    b_q = load_tile(q, t0, eos, i_h, H, K, k0, BT, BK)
    b_k = load_tile(k, t0, eos, i_h, H, K, k0, BT, BK).to(tl.float32)
    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    b_dw = tl.zeros([BT, BK], dtype=tl.float32)
    for i_v in range(0, tl.cdiv(V, BV)):
        v0 = i_v * BV
        p, m = state_ptrs(Hs, c, i_h, H, K, V, k0, v0, BK, BV)
        b_h = tl.load(p, mask=m, other=0.0)
        p, m = state_ptrs(dHs, c, i_h, H, K, V, k0, v0, BK, BV)
        b_dh = tl.load(p, mask=m, other=0.0)
        b_do = load_tile(do, t0, eos, i_h, H, V, v0, BT, BV)
        b_vn = load_tile(Vn, t0, eos, i_h, H, V, v0, BT, BV)
        b_dvn = load_tile(dVn, t0, eos, i_h, H, V, v0, BT, BV)
        b_dq += dot32(b_do, tl.trans(b_h), PREC)
        b_dk += dot32(b_vn, tl.trans(b_dh), PREC)
        b_dw -= dot32(b_dvn, tl.trans(b_h), PREC)
    # P, X and G are loaded after the V loop, once each, so that the loop does not hold them.
    b_p = tl.load(p_ptrs)
    b_dq = (b_dq + dot32(b_p, b_k, PREC)) * scale
    store_tile(dq, b_dq, t0, eos, i_h, H, K, k0, BT, BK)
    b_dk += dot32(tl.trans(b_p), b_q, PREC) * scale
    b_dkb = dot32(tl.trans(_load_cc(X, c, i_h, H, BT)), b_dw, PREC)
    b_g = tl.load(p_ptrs + NC * H * BT * BT)
    b_gk = dot32(b_g, b_k, PREC)
    b_dk += (b_dkb + b_gk) * b_beta[:, None] + dot32(tl.trans(b_g), b_k * b_beta[:, None], PREC)
    store_tile(dk, b_dk, t0, eos, i_h, H, K, k0, BT, BK)
    part = dbeta_parts + (1 + i_k).to(tl.int64) * T * H
    tl.store(part + offs_t * H + i_h, tl.sum((b_dkb + b_gk) * b_k, axis=1), mask=mask_t)
