"""The WY (UT) transform of every chunk, in parallel over chunks: ``A``, ``X = (I + A)^-1``, ``W``, ``U``.

One program per (chunk, head) does the whole transform in registers: it reads the chunk's key,
value and beta tiles (no load address depends on a computed value) and writes ``X``, ``W`` and
``U`` once at the end; nothing is stored and read back in between. With ``nb = C / 16`` row blocks:

1. ``G = K K^T`` (``tl.dot`` over ``BK``-wide key tiles); ``A = tril(diag(beta) G, -1)``.
2. The ``nb`` diagonal 16x16 blocks ``A_ii`` are packed into one ``[nb, 16, 16]`` tensor and
   inverted together by forward substitution in fp32: 15 steps, each taking row ``r`` of every
   block with a masked sum, so the serial chain is 15 register steps whatever the chunk size.
3. ``X`` starts as the block diagonal ``D = diag(X_ii)`` and is completed one row block at a time
   (blocked forward substitution, i.e. still a triangular solve, not a series):
   ``X_i = D_i - X_ii (A_i,<i X_<i)`` for ``i = 1 .. nb-1``, two tensor-core dots on ``[C, 16]``
   panels per block. It is carried as ``X^T`` so that the panel of ``A`` a block needs is a
   register-local slice and no ``[C, C]`` tf32 operand needs a transposed shared-memory copy.
   Off-diagonal products use ``PREC``; the diagonal blocks stay the exact fp32 solves.
4. ``W = X diag(beta) K`` and ``U = X diag(beta) V`` from the register ``X`` in the same launch
   (``fuse_wy``), or in a second, tile-parallel launch reading the stored ``X``; the backward reuses
   that second kernel to recompute ``W``.

Layouts: tokens are flattened over the batch (``[T_total, H, D]``), ``X`` is chunk-major
``[n_chunks, H, C, C]`` (full ``C x C``, zeros above the diagonal, identity rows past the end
of a sequence), ``W``/``U`` are ``[T_total, H, K|V]``. All three are fp32, or, when every later
product rounds them to 16 bits anyway (``-m16`` variants), the input's 16-bit dtype (``X`` only
with the fused launch); then the ``W``/``U`` products run on 16-bit operands at the tensor cores'
full rate, with ``X diag(beta)`` split in two 16-bit parts so that they stay as accurate as tf32.
``A`` and the inverse itself are always computed in fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dnprof.kernels.chunk_common import dot32
from dnprof.kernels.launch import launch


@triton.jit
def _gram(k, i_h, t0, eos, H, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr):
    """G = K K^T for one chunk ([BT, BT] fp32; zero rows/cols past ``eos``), one dot per key tile."""
    offs_t = t0 + tl.arange(0, BT)
    mask_t = offs_t < eos
    acc = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BK)):
        offs_k = i_k * BK + tl.arange(0, BK)
        ptr = k + (offs_t[:, None] * H + i_h) * K + offs_k[None, :]
        b_k = tl.load(ptr, mask=mask_t[:, None] & (offs_k[None, :] < K), other=0.0)
        acc += tl.dot(b_k, tl.trans(b_k), input_precision=PREC)
    return acc


@triton.jit
def _diag_inverses(G, b_beta, BT: tl.constexpr):
    """All diagonal-block inverses ``X_ii = (I + A_ii)^-1`` as ``[BT/16, 16, 16]`` fp32, solved together.

    Works on the transposed blocks ``A_ii^T[j, r] = beta_r G[j, r]`` (G is symmetric) so that row
    ``r`` of every ``A_ii`` comes out of a sum along the last axis already shaped to scale the rows
    of ``X_ii``: no layout change inside the 15-step substitution.
    """
    NB: tl.constexpr = BT // 16
    rows = tl.arange(0, BT)
    # A^T restricted to the diagonal blocks, then packed: at[s, r] = A[16*(s//16) + r, s].
    at = tl.where((rows[:, None] < rows[None, :]) & (rows[:, None] // 16 == rows[None, :] // 16),
                  G * b_beta[None, :], 0.0)
    nb = tl.arange(0, NB)
    at = tl.sum(tl.reshape(at, [BT, NB, 16]), axis=1)  # one nonzero block per row: exact
    at = tl.reshape(at, [NB, 16, 16])  # at[b, j, r] = A_bb[r, j]
    r16 = tl.arange(0, 16)
    j3 = r16[None, :, None]
    c3 = r16[None, None, :]
    x = tl.where((j3 == c3) & (nb[:, None, None] >= 0), 1.0, 0.0)  # [NB, 16, 16] identities
    for r in tl.static_range(1, 16):
        a_r = tl.sum(tl.where(c3 == r, at, 0.0), axis=2)  # [NB, 16]: row r of each A_bb (zero at j >= r)
        new = -tl.sum(a_r[:, :, None] * x, axis=1)  # [NB, 16]: -(A_bb[r, :] X_bb)
        x = tl.where(j3 == r, new[:, None, :] + tl.where(c3 == r, 1.0, 0.0), x)
    return x


@triton.jit
def _inverse(G, b_beta, BT: tl.constexpr, PREC: tl.constexpr):
    """X = (I + tril(diag(beta) G, -1))^-1 ([BT, BT] fp32) by blocked forward substitution in registers.

    Carries X^T as the dot accumulator: block ``i``'s products are ``[BT, 16]`` panels, the panel of
    ``A`` is a register-local column slice of ``A^T``, and no ``[BT, BT]`` operand has to be
    transposed through shared memory (tf32 tensor-core operands must be K-major).
    """
    NB: tl.constexpr = BT // 16
    rows = tl.arange(0, BT)
    nb = tl.arange(0, NB)
    xd = _diag_inverses(G, b_beta, BT)
    xc = tl.reshape(xd, [BT, 16])  # xc[t, c] = X_bb[t % 16, c] with b = t // 16
    # D = diag(X_00, ..., X_nb-1,nb-1) as a full [BT, BT] matrix: the start of X.
    x = tl.reshape(tl.where(nb[None, :, None] == (rows // 16)[:, None, None], xc[:, None, :], 0.0), [BT, BT])
    if NB > 1:
        # a_t[c, t] = A[t, c] on the strictly block-lower part (G is symmetric).
        a_t = tl.where(rows[:, None] // 16 < rows[None, :] // 16, G * b_beta[None, :], 0.0)
        a_t3 = tl.reshape(a_t, [BT, NB, 16])
        xt = tl.trans(x)
        for i in tl.static_range(1, NB):
            a_ti = tl.sum(tl.where(nb[None, :, None] == i, a_t3, 0.0), axis=1)  # (A_i,<i)^T, [BT, 16]
            # (A_i,<i X_<i)^T; rows >= 16 i of X are not final yet but meet zeros of A_i,<i.
            y_t = tl.dot(xt, a_ti, input_precision=PREC)
            # X_i -= X_ii (A_i,<i X_<i), as X^T -= Y^T [0 .. X_ii^T .. 0]; zero in the columns of
            # D, so the diagonal blocks stay exact and the other row blocks get exact zeros.
            d_i = tl.where((rows // 16 == i)[:, None], xc, 0.0)
            xt = tl.dot(-y_t, tl.trans(d_i), xt, input_precision=PREC)
        x = tl.trans(xt)
    return x


@triton.jit
def _apply_wy(k, v, beta, b_x, W, U, i_h, t0, eos, H, K: tl.constexpr, V: tl.constexpr,
              BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, WPREC: tl.constexpr,
              DO_W: tl.constexpr, DO_U: tl.constexpr):
    """W = X diag(beta) K and U = X diag(beta) V for one chunk, tile by tile, from ``b_x`` in registers.

    ``WPREC`` ``tf32``/``ieee``: fp32 operands. ``bf16``/``fp16`` (``W`` and ``U`` stored in that
    dtype): ``X diag(beta)`` is split into a 16-bit high part and the 16-bit rounding of its
    remainder, and each multiplies the raw 16-bit key / value tile, which is exact in that dtype. Two
    full-rate 16-bit products per tile then carry about 16 mantissa bits of ``X diag(beta)``, more
    than tf32's 10, where rounding ``X`` and ``beta K`` to 16 bits each would add two roundings the
    size of the stored result's own.
    """
    offs_t = t0 + tl.arange(0, BT)
    mask_t = offs_t < eos
    b_beta = tl.load(beta + offs_t * H + i_h, mask=mask_t, other=0.0).to(tl.float32)
    SPLIT: tl.constexpr = WPREC == "bf16" or WPREC == "fp16"
    x_hi = b_x
    x_lo = b_x
    if SPLIT:
        dt = tl.bfloat16 if WPREC == "bf16" else tl.float16
        b_xb = b_x * b_beta[None, :]
        x_hi = b_xb.to(dt)
        x_lo = (b_xb - x_hi.to(tl.float32)).to(dt)
    if DO_W:
        for i_k in range(0, tl.cdiv(K, BK)):
            _wy_tile(k, W, b_x, x_hi, x_lo, b_beta, offs_t, mask_t, i_h, H, K, i_k * BK, BK, WPREC, SPLIT)
    if DO_U:
        for i_v in range(0, tl.cdiv(V, BV)):
            _wy_tile(v, U, b_x, x_hi, x_lo, b_beta, offs_t, mask_t, i_h, H, V, i_v * BV, BV, WPREC, SPLIT)


@triton.jit
def _wy_tile(src, dst, b_x, x_hi, x_lo, b_beta, offs_t, mask_t, i_h, H, D: tl.constexpr, d0, BD: tl.constexpr,
             WPREC: tl.constexpr, SPLIT: tl.constexpr):
    """One ``[BT, BD]`` tile of ``dst = X diag(beta) src`` (see :func:`_apply_wy` for the two precisions)."""
    offs_d = d0 + tl.arange(0, BD)
    m = mask_t[:, None] & (offs_d[None, :] < D)
    off = (offs_t[:, None] * H + i_h) * D + offs_d[None, :]
    b_s = tl.load(src + off, mask=m, other=0.0)
    if SPLIT:
        b_s = b_s.to(x_hi.dtype)
        tl.store(dst + off, tl.dot(x_lo, b_s, tl.dot(x_hi, b_s)), mask=m)
    else:
        tl.store(dst + off, dot32(b_x, b_s.to(tl.float32) * b_beta[:, None], WPREC), mask=m)


@triton.jit
def wy_inverse_kernel(k, v, beta, X, W, U, chunk_start, chunk_end, H, K: tl.constexpr, V: tl.constexpr,
                      BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
                      WPREC: tl.constexpr, FUSE_WU: tl.constexpr, STORE_X: tl.constexpr):
    """One program per (chunk, head): A, its inverse X (stored once, when a backward or the split
    ``wy_apply_kernel`` needs it), and (when fused) W and U."""
    c = tl.program_id(0)
    i_h = tl.program_id(1)
    t0 = tl.load(chunk_start + c).to(tl.int64)
    eos = tl.load(chunk_end + c).to(tl.int64)
    offs_t = t0 + tl.arange(0, BT)
    b_beta = tl.load(beta + offs_t * H + i_h, mask=offs_t < eos, other=0.0).to(tl.float32)
    G = _gram(k, i_h, t0, eos, H, K, BT, BK, PREC)
    b_x = _inverse(G, b_beta, BT, PREC)
    rows = tl.arange(0, BT)
    if STORE_X:
        x_base = X + (c * H + i_h).to(tl.int64) * BT * BT
        tl.store(x_base + rows[:, None] * BT + rows[None, :], b_x.to(X.dtype.element_ty))
    if FUSE_WU:
        _apply_wy(k, v, beta, b_x, W, U, i_h, t0, eos, H, K, V, BT, BK, BV, WPREC, True, True)


@triton.jit
def wy_apply_kernel(k, v, beta, X, W, U, chunk_start, chunk_end, H, K: tl.constexpr, V: tl.constexpr,
                    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, WPREC: tl.constexpr,
                    DO_W: tl.constexpr, DO_U: tl.constexpr):
    """One program per (chunk, head): W and/or U from a stored X."""
    c = tl.program_id(0)
    i_h = tl.program_id(1)
    t0 = tl.load(chunk_start + c).to(tl.int64)
    eos = tl.load(chunk_end + c).to(tl.int64)
    rows = tl.arange(0, BT)
    x_base = X + (c * H + i_h).to(tl.int64) * BT * BT
    b_x = tl.load(x_base + rows[:, None] * BT + rows[None, :]).to(tl.float32)
    _apply_wy(k, v, beta, b_x, W, U, i_h, t0, eos, H, K, V, BT, BK, BV, WPREC, DO_W, DO_U)


def _store_prec(prec: str, dtype: torch.dtype) -> str:
    """Operand precision of the ``W``/``U`` products: the storage dtype's when it is 16-bit, else ``prec``."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, prec)


def wy_forward(k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, chunk_start: torch.Tensor,
               chunk_end: torch.Tensor, BT: int, BK: int, BV: int, fuse: bool, prec: str,
               num_warps: int, num_stages: int, wu_dtype: torch.dtype = torch.float32, keep_x: bool = True,
               min_stages: int = 1, make_wu: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None,
                                                                   torch.Tensor | None]:
    """X [n_chunks, H, C, C], W [T, H, K], U [T, H, V] for flattened ``[T, H, D]`` inputs.

    With a 16-bit ``wu_dtype`` the ``W``/``U`` products take 16-bit operands (split in two, see
    :func:`_apply_wy`) and, with ``fuse``, ``X`` is stored in that dtype too: only the backward reads
    it then, and its products round it to that dtype anyway. The split launch keeps ``X`` in fp32,
    as its ``W``/``U`` products read it. ``keep_x=False`` (a forward no backward follows) returns no X
    and, with ``fuse``, never writes it. ``min_stages``: the fewest pipelining stages the inverse
    kernel may run at (:func:`dnprof.kernels.chunk.launch_plan`). ``make_wu=False``: ``X`` alone, fp32
    and always returned, ``W`` and ``U`` None (the state loop applies ``X`` itself: ``wy_in_loop``).
    """
    T, H, K = k.shape
    V = v.shape[-1]
    NC = chunk_start.numel()
    if not make_wu:
        X = torch.empty((NC, H, BT, BT), dtype=torch.float32, device=k.device)
        launch(wy_inverse_kernel, (NC, H), k, v, beta, X, X, X, chunk_start, chunk_end, H, K, V, BT, BK, BV, prec,
               prec, False, True, num_warps=num_warps, num_stages=num_stages, min_stages=min_stages)
        return X, None, None
    store_x = keep_x or not fuse
    wprec = _store_prec(prec, wu_dtype)
    x_dtype = wu_dtype if fuse else torch.float32
    X = torch.empty((NC, H, BT, BT) if store_x else (1,), dtype=x_dtype, device=k.device)
    W = torch.empty(T, H, K, dtype=wu_dtype, device=k.device)
    U = torch.empty(T, H, V, dtype=wu_dtype, device=k.device)
    launch(wy_inverse_kernel, (NC, H), k, v, beta, X, W, U, chunk_start, chunk_end, H, K, V, BT, BK, BV, prec,
           wprec, fuse, store_x, num_warps=num_warps, num_stages=num_stages, min_stages=min_stages)
    if not fuse:
        launch(wy_apply_kernel, (NC, H), k, v, beta, X, W, U, chunk_start, chunk_end, H, K, V, BT, BK, BV, wprec,
               True, True, num_warps=num_warps, num_stages=num_stages)
    return (X if keep_x else None), W, U


def wy_recompute_w(k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, X: torch.Tensor,
                   chunk_start: torch.Tensor, chunk_end: torch.Tensor, BT: int, BK: int, BV: int, prec: str,
                   num_warps: int, num_stages: int, w_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """W = X diag(beta) K again from a stored X (the backward's recompute), stored as ``w_dtype``."""
    T, H, K = k.shape
    V = v.shape[-1]
    NC = chunk_start.numel()
    W = torch.empty(T, H, K, dtype=w_dtype, device=k.device)
    launch(wy_apply_kernel, (NC, H), k, v, beta, X, W, W, chunk_start, chunk_end, H, K, V, BT, BK, BV,
           _store_prec(prec, w_dtype), True, False, num_warps=num_warps, num_stages=num_stages)
    return W
