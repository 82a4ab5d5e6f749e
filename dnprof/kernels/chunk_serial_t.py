"""The two serial kernels with the state held transposed: ``h^T [BV, K]`` in one tile (``rec="tbv..."``).

Same arguments, launch grid and results as ``fwd_state_kernel`` and ``bwd_dh_kernel`` (the per-chunk
states are stored in the same ``[n, H, K, V]`` layout); only the orientation of the products differs.
With the state as ``[BV, K]`` the chunk's products put the computed operand first:

- forward: ``Vn^T = U^T - h^T W^T`` and ``h^T += Vn^T K``;
- reverse: ``dVn^T = dh^T K^T + dO^T S`` and ``dh^T += scale dO^T Q - dVn^T W``.

On Hopper the first operand of a tensor-core product may come from registers, so the running state
and ``Vn`` feed the products without a trip through shared memory, and the state update is one
product as wide as the key head dim instead of one per key slab. These kernels run at an explicit
tiling (``-rtbv64w8s2``), and ``rec="auto"`` picks the forward for a fused-output forward that stores
no states, where the H200 measured it faster (:mod:`dnprof.kernels.recurrence_tiling`); it measured
the reverse and the state-storing forward slower than the slabs.

With the output fused, the ``tj`` tilings (``-rtjbv128w8s2``, ``JOIN_WQ``) read the chunk's ``W`` and
``Q`` rows as one ``[2C, K]`` tile and multiply the state and the key tile by it once each: four
products a chunk instead of five, and ``Q`` loaded once. Compiled for sm_90 at D = 256 and
``BV = 128``, 8 warps, that loop spills 16 B where the ``t`` form spills 520 B
(``benchmarks/smem_check.py --regs``).

Under ``wy_in_loop`` (``-wyx`` variants, ``APPLY_X``) the forward applies the WY transform itself,
as the slab kernel does then: the WY launch computes ``X`` alone (fp32) and never forms
``W = X diag(beta) K`` or ``U = X diag(beta) V``, which are the size of ``k`` and ``v``; the loop takes
``Vn^T = (V^T - h^T K^T) diag(beta) X^T`` from the ``K`` tile it loads anyway, ``v`` and the chunk's
``[C, C]`` block of ``X``, one small product more a chunk. The reverse recurrence then takes ``dVn^T W``
as ``(dVn^T X diag(beta)) K``, so a backward needs no ``W`` either. On an H200 it measured slower
than reading ``W`` and ``U`` (docs/performance.md, change 26), so ``auto`` never asks for it; ``auto``
does take ``tj`` above head dim 128, where it measured faster (change 25).
"""

from __future__ import annotations

import triton
import triton.language as tl

from dnprof.kernels.chunk_common import chunk_beta, dot32, load_tile, mm, serial_program, x_block


@triton.jit
def _tile_t(ptr, t0, eos, i_h, H, D: tl.constexpr, d0, BT: tl.constexpr, BD: tl.constexpr):
    """The ``[BD, BT]`` transpose of :func:`load_tile`'s tile (zero past ``eos`` and past ``D``)."""
    offs_t = t0 + tl.arange(0, BT)
    offs_d = d0 + tl.arange(0, BD)
    m = (offs_d < D)[:, None] & (offs_t < eos)[None, :]
    return tl.load(ptr + (offs_t[None, :] * H + i_h) * D + offs_d[:, None], mask=m, other=0.0)


@triton.jit
def _store_t(ptr, val, t0, eos, i_h, H, D: tl.constexpr, d0, BT: tl.constexpr, BD: tl.constexpr):
    """Store a ``[BD, BT]`` tile as the ``[BT, BD]`` token-major tile it is the transpose of."""
    offs_t = t0 + tl.arange(0, BT)
    offs_d = d0 + tl.arange(0, BD)
    m = (offs_d < D)[:, None] & (offs_t < eos)[None, :]
    tl.store(ptr + (offs_t[None, :] * H + i_h) * D + offs_d[:, None], val, mask=m)


@triton.jit
def _state_t_ptrs(ptr, c, i_h, H, K: tl.constexpr, V: tl.constexpr, v0, BK: tl.constexpr, BV: tl.constexpr):
    """Pointers and mask of state ``c``'s ``[K, BV]`` slice at ``v0``, as its ``[BV, BK]`` transpose."""
    offs_v = v0 + tl.arange(0, BV)
    offs_k = tl.arange(0, BK)
    base = ptr + (c * H + i_h).to(tl.int64) * K * V
    return base + offs_k[None, :] * V + offs_v[:, None], (offs_v < V)[:, None] & (offs_k < K)[None, :]


@triton.jit
def _load_state_t(ptr, c, i_h, H, K: tl.constexpr, V: tl.constexpr, v0, BK: tl.constexpr, BV: tl.constexpr,
                  USE: tl.constexpr):
    """State ``c``'s ``[BV, BK]`` transposed slice at ``v0`` in fp32 (zeros when ``USE`` is false)."""
    s_t = tl.zeros([BV, BK], dtype=tl.float32)
    if USE:
        p0, m0 = _state_t_ptrs(ptr, c, i_h, H, K, V, v0, BK, BV)
        s_t = tl.load(p0, mask=m0, other=0.0).to(tl.float32)
    return s_t


@triton.jit
def _wq_tile(W, q, t0, eos, i_h, H, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr):
    """Rows ``t0 .. t0+BT`` of ``W`` stacked on the same rows of ``q``: one ``[2 BT, BK]`` tile (same dtype)."""
    r2 = tl.arange(0, 2 * BT)
    offs_t = t0 + r2 % BT
    offs_k = tl.arange(0, BK)
    m = (offs_t < eos)[:, None] & (offs_k < K)[None, :]
    off = (offs_t[:, None] * H + i_h) * K + offs_k[None, :]
    return tl.load(tl.where((r2 < BT)[:, None], W + off, q + off), mask=m, other=0.0)


@triton.jit
def _halves(x, R: tl.constexpr, BT: tl.constexpr):
    """The two ``[R, BT]`` column halves of an ``[R, 2 BT]`` tile."""
    return tl.split(tl.permute(tl.reshape(x, [R, 2, BT]), (0, 2, 1)))


@triton.jit
def _vn_from_x(X, v, k, beta, h_t, c, valid, t0, eos, i_h, H, K: tl.constexpr, V: tl.constexpr, v0,
               BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr, XPREC: tl.constexpr):
    """``Vn^T = (V^T - h^T K^T) diag(beta) X^T`` for chunk ``c`` from its ``X`` block, and the chunk's key tile.

    The ``X`` product runs at ``XPREC`` (tf32, or full fp32 for fp32 inputs) on the fp32 ``X``, so the
    WY transform stays as accurate as the 16-bit split of ``W``/``U`` in the WY launch."""
    b_k = load_tile(k, t0, eos, i_h, H, K, 0, BT, BK)
    a_t = _tile_t(v, t0, eos, i_h, H, V, v0, BT, BV).to(tl.float32) - dot32(h_t, tl.trans(b_k), PREC)
    a_t = a_t * chunk_beta(beta, t0, eos, i_h, H, BT)[None, :]
    return tl.dot(a_t, x_block(X, c, i_h, H, BT, True, valid), input_precision=XPREC), b_k


@triton.jit
def fwd_state_t_kernel(q, k, W, U, h0, Hs, Vn, o, ht, beta, seq_start, seq_chunk0, max_chunks, scale, H,
                       K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                       NKS: tl.constexpr, PREC: tl.constexpr, USE_H0: tl.constexpr, STORE_FINAL: tl.constexpr,
                       STORE_H: tl.constexpr, STORE_VN: tl.constexpr, FUSE_OUTPUT: tl.constexpr,
                       JOIN_WQ: tl.constexpr, APPLY_X: tl.constexpr, XPREC: tl.constexpr):
    """``fwd_state_kernel`` with ``h^T [BV, BK]`` (``BK`` the padded key head dim; ``NKS`` is 1).

    ``JOIN_WQ`` (with ``FUSE_OUTPUT``; ``W`` and ``q`` of one dtype): ``h^T [W; Q]^T`` and ``K [W; Q]^T``
    give ``h^T W^T``, ``h^T Q^T`` and ``K Q^T`` in two products over one loaded tile. ``APPLY_X``: ``W``
    is the fp32 ``X [n_chunks, H, C, C]`` and ``U`` is ``v`` (:func:`_vn_from_x`); ``beta`` is read only then."""
    i_n, i_h, v0, bos, eos, c0 = serial_program(seq_start, seq_chunk0, V, BV)
    h_t = _load_state_t(h0, i_n, i_h, H, K, V, v0, BK, BV, USE_H0)
    rows = tl.arange(0, BT)
    n_chunks = tl.cdiv(eos - bos, BT)
    for i in range(0, max_chunks):
        c = c0 + i
        t0 = bos + i * BT
        if STORE_H:
            ps, ms = _state_t_ptrs(Hs, c, i_h, H, K, V, v0, BK, BV)
            tl.store(ps, h_t, mask=ms & (i < n_chunks))
        # Vn^T = U^T - h^T W^T
        if APPLY_X:
            vn_t, b_k = _vn_from_x(W, U, k, beta, h_t, c, i < n_chunks, t0, eos, i_h, H, K, V, v0, BT, BK, BV, PREC,
                                   XPREC)
        elif JOIN_WQ:
            b_wq = _wq_tile(W, q, t0, eos, i_h, H, K, BT, BK)
            hw, hq = _halves(dot32(h_t, tl.trans(b_wq), PREC), BV, BT)
            vn_t = _tile_t(U, t0, eos, i_h, H, V, v0, BT, BV).to(tl.float32) - hw
        else:
            b_w = load_tile(W, t0, eos, i_h, H, K, 0, BT, BK)
            vn_t = _tile_t(U, t0, eos, i_h, H, V, v0, BT, BV).to(tl.float32) - dot32(h_t, tl.trans(b_w), PREC)
        if STORE_VN:
            _store_t(Vn, vn_t, t0, eos, i_h, H, V, v0, BT, BV)
        if not APPLY_X:
            b_k = load_tile(k, t0, eos, i_h, H, K, 0, BT, BK)
        if FUSE_OUTPUT:
            # O^T = scale (h^T Q^T + Vn^T S^T), S^T[j, i] = k_j . q_i for j <= i
            if JOIN_WQ:
                _kw, kq = _halves(mm(b_k, tl.trans(b_wq), PREC), BT, BT)
                s_t = tl.where(rows[:, None] <= rows[None, :], kq, 0.0)
            else:
                b_q = load_tile(q, t0, eos, i_h, H, K, 0, BT, BK)
                s_t = tl.where(rows[:, None] <= rows[None, :], mm(b_k, tl.trans(b_q), PREC), 0.0)
                hq = dot32(h_t, tl.trans(b_q), PREC)
            o_t = (hq + dot32(vn_t, s_t, PREC)) * scale
            _store_t(o, o_t, t0, eos, i_h, H, V, v0, BT, BV)
        # h^T += Vn^T K
        h_t += dot32(vn_t, b_k, PREC)
    if STORE_FINAL:
        pf, mf = _state_t_ptrs(ht, i_n, i_h, H, K, V, v0, BK, BV)
        tl.store(pf, h_t, mask=mf)


@triton.jit
def bwd_dh_t_kernel(q, k, W, do, dht, dHs, dVn, dh0, beta, seq_start, seq_chunk0, max_chunks, scale, H,
                    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                    NKS: tl.constexpr, PREC: tl.constexpr, USE_DHT: tl.constexpr, STORE_DH0: tl.constexpr,
                    APPLY_X: tl.constexpr, XPREC: tl.constexpr):
    """``bwd_dh_kernel`` with ``dh^T [BV, BK]`` (``BK`` the padded key head dim; ``NKS`` is 1); ``APPLY_X``
    as there: ``W`` is the fp32 ``X`` and ``dVn^T W = (dVn^T X diag(beta)) K``."""
    i_n, i_h, v0, bos, eos, c0 = serial_program(seq_start, seq_chunk0, V, BV)
    dh_t = _load_state_t(dht, i_n, i_h, H, K, V, v0, BK, BV, USE_DHT)
    rows = tl.arange(0, BT)
    n_chunks = tl.cdiv(eos - bos, BT)
    for j in range(0, max_chunks):  # pipelined; steps past a short sequence's end are masked no-ops
        i = max_chunks - 1 - j
        c = c0 + i
        t0 = bos + i * BT
        ps, ms = _state_t_ptrs(dHs, c, i_h, H, K, V, v0, BK, BV)
        tl.store(ps, dh_t, mask=ms & (i < n_chunks))
        b_q = load_tile(q, t0, eos, i_h, H, K, 0, BT, BK)
        b_k = load_tile(k, t0, eos, i_h, H, K, 0, BT, BK)
        b_s = tl.where(rows[:, None] >= rows[None, :], mm(b_q, tl.trans(b_k), PREC), 0.0) * scale
        do_t = _tile_t(do, t0, eos, i_h, H, V, v0, BT, BV)
        # dVn^T = dh'^T K^T + dO^T S (S = scale tril(Q K^T))
        dvn_t = dot32(dh_t, tl.trans(b_k), PREC) + dot32(do_t, b_s, PREC)
        _store_t(dVn, dvn_t, t0, eos, i_h, H, V, v0, BT, BV)
        # dh^T = dh'^T + scale dO^T Q - dVn^T W
        if APPLY_X:
            # dVn^T W = ((dVn^T X) diag(beta)) K
            b_y = tl.dot(dvn_t, x_block(W, c, i_h, H, BT, False, i < n_chunks), input_precision=XPREC)
            b_y = b_y * chunk_beta(beta, t0, eos, i_h, H, BT)[None, :]
            dh_t += mm(do_t, b_q, PREC) * scale - dot32(b_y, b_k, PREC)
        else:
            b_w = load_tile(W, t0, eos, i_h, H, K, 0, BT, BK)
            dh_t += mm(do_t, b_q, PREC) * scale - dot32(dvn_t, b_w, PREC)
    if STORE_DH0:
        pf, mf = _state_t_ptrs(dh0, i_n, i_h, H, K, V, v0, BK, BV)
        tl.store(pf, dh_t, mask=mf)
