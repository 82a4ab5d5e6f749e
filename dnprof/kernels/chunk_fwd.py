"""Forward of the chunkwise delta rule after the WY transform: the state recurrence and the output.

``fwd_state_kernel`` is the only sequential part: one program per (sequence, head, ``BV`` block of
V) walks the chunks holding its fp32 state slice ``h [K, BV]`` in registers, as up to
four ``[BK, BV]`` slabs (so K = 256 needs BK >= 64). Per chunk it optionally stores ``h`` (for the
output kernel and the backward), forms ``Vn = U - W h`` (``X diag(beta) (V - K h)`` under ``wy_in_loop``,
which forms no ``W`` or ``U``), optionally the output
``O = scale (Q h + tril(Q K^T) Vn)`` (``fuse_output``), and updates ``h += K^T Vn``. Program ids run the
V blocks of one (sequence, head) side by side, so they read its ``W``, ``K`` and ``Q`` tiles at
about the same time and share them through L2.
``fwd_output_kernel`` computes the output in parallel over chunks from the stored states instead
(with ``output_vloop`` one program per chunk walks its V blocks, forming ``Q K^T`` once);
its chunks may span several of the loop's (``output_chunk``), when the loop stores only their first
states: ``Vn`` carries each chunk's delta correction, so ``Q h + tril(Q K^T) Vn`` holds over the span.

The chunk loop is a ``for`` over ``max_chunks`` (the longest sequence's chunk count, a launch
argument) so that Triton software-pipelines it: the next chunk's tiles load while this chunk's
products run. A shorter sequence's extra steps see only masked (zero) tiles, which leave ``h``
unchanged, and their state stores are masked off.
"""

from __future__ import annotations

import triton
import triton.language as tl

from dnprof.kernels.chunk_common import (chunk_beta, dot32, load_state_slabs, load_tile, load_tile32, loop_descs,
                                         mm, serial_program, state_ptrs, store_state_slabs, store_tile,
                                         tile_via, x_block)


@triton.jit
def _key_slabs(k, t0, eos, i_h, H, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, NKS: tl.constexpr,
               k_desc=None, TMA: tl.constexpr = False, r=0):
    """The chunk's ``NKS`` key tiles ``[BT, BK]`` (the unused ones repeat the first); with ``TMA`` through
    ``k_desc`` at row ``r`` of the sequence."""
    k1 = tile_via(k, k_desc, TMA, t0, eos, r, i_h, H, K, 0, BT, BK)
    k2 = k1
    k3 = k1
    k4 = k1
    if NKS > 1:
        k2 = tile_via(k, k_desc, TMA, t0, eos, r, i_h, H, K, BK, BT, BK)
    if NKS > 2:
        k3 = tile_via(k, k_desc, TMA, t0, eos, r, i_h, H, K, 2 * BK, BT, BK)
        k4 = tile_via(k, k_desc, TMA, t0, eos, r, i_h, H, K, 3 * BK, BT, BK)
    return k1, k2, k3, k4


@triton.jit
def fwd_state_kernel(q, k, W, U, h0, Hs, Vn, o, ht, beta, seq_start, seq_chunk0, max_chunks, scale, H,
                     K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                     NKS: tl.constexpr, PREC: tl.constexpr, USE_H0: tl.constexpr, STORE_FINAL: tl.constexpr,
                     STORE_H: tl.constexpr, STORE_VN: tl.constexpr, FUSE_OUTPUT: tl.constexpr,
                     APPLY_X: tl.constexpr, XPREC: tl.constexpr, hs_chunk0, HS_EVERY: tl.constexpr,
                     TMA: tl.constexpr = False):
    """The state recurrence (module docstring). ``APPLY_X`` (``wy_in_loop``): ``W`` is the fp32
    ``X [n_chunks, H, C, C]``, ``U`` is ``v``, and ``Vn = X diag(beta) (V - K h)``, the ``X`` product at
    ``XPREC`` (tf32, or full fp32 for fp32 inputs); ``beta`` is read only then. ``HS_EVERY > 1``
    (``output_chunk``): the state is stored only at every ``HS_EVERY``-th chunk, into the slots that
    ``hs_chunk0`` (each sequence's first slot) numbers. ``TMA``: the chunk's ``K``, ``W``, ``U`` and ``Q``
    tiles come through Hopper's tensor-memory copy engine (:func:`sequence_desc`) instead of per-thread
    masked loads (not with ``APPLY_X``)."""
    i_n, i_h, v0, bos, eos, c0 = serial_program(seq_start, seq_chunk0, V, BV)
    q_desc, k_desc, w_desc, u_desc = loop_descs(q, k, W, U, bos, eos, i_h, H, K, V, BT, BK, BV, TMA, APPLY_X)
    if HS_EVERY > 1:
        s0 = tl.load(hs_chunk0 + i_n)
    h1 = tl.zeros([BK, BV], dtype=tl.float32)
    h2 = h1
    h3 = h1
    h4 = h1
    if USE_H0:
        h1, h2, h3, h4 = load_state_slabs(h0, i_n, i_h, H, K, V, v0, BK, BV, NKS)
    rows = tl.arange(0, BT)
    causal = rows[:, None] >= rows[None, :]
    n_chunks = tl.cdiv(eos - bos, BT)
    for i in range(0, max_chunks):
        c = c0 + i
        r = i * BT
        t0 = bos + r
        if STORE_H:
            if HS_EVERY > 1:
                store_state_slabs(Hs, s0 + i // HS_EVERY, i_h, H, K, V, v0, BK, BV, NKS, h1, h2, h3, h4,
                                  (i < n_chunks) & (i % HS_EVERY == 0))
            else:
                store_state_slabs(Hs, c, i_h, H, K, V, v0, BK, BV, NKS, h1, h2, h3, h4, i < n_chunks)
        if APPLY_X:
            # Vn = X diag(beta) (V - K h), from the key slabs the update needs anyway
            k1, k2, k3, k4 = _key_slabs(k, t0, eos, i_h, H, K, BT, BK, NKS)
            b_vn = load_tile32(U, t0, eos, i_h, H, V, v0, BT, BV) - dot32(k1, h1, PREC)
            if NKS > 1:
                b_vn -= dot32(k2, h2, PREC)
            if NKS > 2:
                b_vn -= dot32(k3, h3, PREC)
                b_vn -= dot32(k4, h4, PREC)
            b_xb = x_block(W, c, i_h, H, BT, False, i < n_chunks) * chunk_beta(beta, t0, eos, i_h, H, BT)[None, :]
            b_vn = tl.dot(b_xb, b_vn, input_precision=XPREC)
        else:
            # Vn = U - W h, each W slab loaded just before its product: loading them all first, as the
            # branch above must, compiles the D = 256, T = 16384 default to 187 registers instead of 168
            b_vn = tile_via(U, u_desc, TMA, t0, eos, r, i_h, H, V, v0, BT, BV).to(tl.float32)
            b_vn -= dot32(tile_via(W, w_desc, TMA, t0, eos, r, i_h, H, K, 0, BT, BK), h1, PREC)
            if NKS > 1:
                b_vn -= dot32(tile_via(W, w_desc, TMA, t0, eos, r, i_h, H, K, BK, BT, BK), h2, PREC)
            if NKS > 2:
                b_vn -= dot32(tile_via(W, w_desc, TMA, t0, eos, r, i_h, H, K, 2 * BK, BT, BK), h3, PREC)
                b_vn -= dot32(tile_via(W, w_desc, TMA, t0, eos, r, i_h, H, K, 3 * BK, BT, BK), h4, PREC)
        if STORE_VN:
            store_tile(Vn, b_vn, t0, eos, i_h, H, V, v0, BT, BV)
        if not APPLY_X:
            k1, k2, k3, k4 = _key_slabs(k, t0, eos, i_h, H, K, BT, BK, NKS, k_desc, TMA, r)
        if FUSE_OUTPUT:
            b_q = tile_via(q, q_desc, TMA, t0, eos, r, i_h, H, K, 0, BT, BK)
            b_s = mm(b_q, tl.trans(k1), PREC)
            b_o = dot32(b_q, h1, PREC)
            if NKS > 1:
                b_q = tile_via(q, q_desc, TMA, t0, eos, r, i_h, H, K, BK, BT, BK)
                b_s += mm(b_q, tl.trans(k2), PREC)
                b_o += dot32(b_q, h2, PREC)
            if NKS > 2:
                b_q = tile_via(q, q_desc, TMA, t0, eos, r, i_h, H, K, 2 * BK, BT, BK)
                b_s += mm(b_q, tl.trans(k3), PREC)
                b_o += dot32(b_q, h3, PREC)
                b_q = tile_via(q, q_desc, TMA, t0, eos, r, i_h, H, K, 3 * BK, BT, BK)
                b_s += mm(b_q, tl.trans(k4), PREC)
                b_o += dot32(b_q, h4, PREC)
            b_s = tl.where(causal, b_s, 0.0)
            b_o = (b_o + dot32(b_s, b_vn, PREC)) * scale
            store_tile(o, b_o, t0, eos, i_h, H, V, v0, BT, BV)
        # h += K^T Vn
        h1 += dot32(tl.trans(k1), b_vn, PREC)
        if NKS > 1:
            h2 += dot32(tl.trans(k2), b_vn, PREC)
        if NKS > 2:
            h3 += dot32(tl.trans(k3), b_vn, PREC)
            h4 += dot32(tl.trans(k4), b_vn, PREC)
    if STORE_FINAL:
        store_state_slabs(ht, i_n, i_h, H, K, V, v0, BK, BV, NKS, h1, h2, h3, h4, True)


@triton.jit
def _store_output(b_o, b_s, Vn, o, scale, t0, eos, i_h, H, V: tl.constexpr, v0, BT: tl.constexpr, BV: tl.constexpr,
                  PREC: tl.constexpr):
    """Store ``O = scale (Q h + S Vn)`` for the ``[BT, BV]`` block at ``v0``: ``b_o`` holds ``Q h``, ``b_s``
    the masked ``tril(Q K^T)``."""
    b_vn = load_tile(Vn, t0, eos, i_h, H, V, v0, BT, BV)
    store_tile(o, (b_o + dot32(b_s, b_vn, PREC)) * scale, t0, eos, i_h, H, V, v0, BT, BV)


@triton.jit
def fwd_output_kernel(q, k, Hs, Vn, o, chunk_start, chunk_end, scale, H, K: tl.constexpr, V: tl.constexpr,
                      BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
                      V_LOOP: tl.constexpr = False):
    """``O = scale (Q h + tril(Q K^T) Vn)`` from stored h and Vn, one program per (chunk and V block, head).

    Chunk-major program ids: the V blocks of one chunk run side by side and share its Q and K tiles in L2.
    ``V_LOOP`` (``output_vloop``): one program per (chunk, head) forms ``tril(Q K^T)`` once and walks the
    chunk's V blocks, instead of each V block's program forming it again.
    """
    NVB: tl.constexpr = (V + BV - 1) // BV
    i_h = tl.program_id(1)
    if V_LOOP:
        c = tl.program_id(0)
    else:
        c = tl.program_id(0) // NVB
    t0 = tl.load(chunk_start + c).to(tl.int64)
    eos = tl.load(chunk_end + c).to(tl.int64)
    rows = tl.arange(0, BT)
    causal = rows[:, None] >= rows[None, :]
    if V_LOOP:
        b_s = tl.zeros([BT, BT], dtype=tl.float32)
        for i_k in range(0, tl.cdiv(K, BK)):
            b_q = load_tile(q, t0, eos, i_h, H, K, i_k * BK, BT, BK)
            b_k = load_tile(k, t0, eos, i_h, H, K, i_k * BK, BT, BK)
            b_s += mm(b_q, tl.trans(b_k), PREC)
        b_s = tl.where(causal, b_s, 0.0)
        for i_v in range(0, NVB):
            v0 = i_v * BV
            b_o = tl.zeros([BT, BV], dtype=tl.float32)
            for i_k in range(0, tl.cdiv(K, BK)):
                b_q = load_tile(q, t0, eos, i_h, H, K, i_k * BK, BT, BK)
                p, m = state_ptrs(Hs, c, i_h, H, K, V, i_k * BK, v0, BK, BV)
                b_o += dot32(b_q, tl.load(p, mask=m, other=0.0), PREC)
            _store_output(b_o, b_s, Vn, o, scale, t0, eos, i_h, H, V, v0, BT, BV, PREC)
    else:
        v0 = (tl.program_id(0) % NVB) * BV
        b_s = tl.zeros([BT, BT], dtype=tl.float32)
        b_o = tl.zeros([BT, BV], dtype=tl.float32)
        for i_k in range(0, tl.cdiv(K, BK)):
            b_q = load_tile(q, t0, eos, i_h, H, K, i_k * BK, BT, BK)
            b_k = load_tile(k, t0, eos, i_h, H, K, i_k * BK, BT, BK)
            p, m = state_ptrs(Hs, c, i_h, H, K, V, i_k * BK, v0, BK, BV)
            b_h = tl.load(p, mask=m, other=0.0)
            b_s += mm(b_q, tl.trans(b_k), PREC)
            b_o += dot32(b_q, b_h, PREC)
        _store_output(b_o, tl.where(causal, b_s, 0.0), Vn, o, scale, t0, eos, i_h, H, V, v0, BT, BV, PREC)
