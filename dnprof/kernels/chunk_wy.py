"""The WY (UT) transform of every chunk, in parallel over chunks: ``A``, ``X = (I + A)^-1``, ``W``, ``U``.

``A = tril(diag(beta) K K^T, -1)`` is built with ``tl.dot`` over ``BK``-wide key tiles and written
into the ``X`` buffer; ``(I + A)^-1`` is then formed in place by a blocked forward substitution:
for each 16-row block ``i`` the diagonal block is inverted by forward substitution in registers and
the whole row block follows as ``X_i = X_ii (E_i - A_i X_{<i})``, where ``X_{<i}`` are the rows
already finished. This is a triangular solve (stable for any keys, unlike a Neumann-series
product) and costs about ``C^3`` multiply-adds per chunk on the tensor cores.
``W = X diag(beta) K`` and ``U = X diag(beta) V`` follow in the same launch (``fuse_wy``) or in a
second, tile-parallel launch; the backward reuses that second kernel to recompute ``W``.

Layouts: tokens are flattened over the batch (``[T_total, H, D]``), ``X`` is chunk-major
``[n_chunks, H, C, C]`` fp32, ``W``/``U`` are ``[T_total, H, K|V]`` fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _build_a(k, beta, X, c, i_h, t0, eos, H, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
             PREC: tl.constexpr):
    """A = tril(diag(beta) K K^T, -1) for one chunk, stored into X[c, i_h]."""
    offs_t = t0 + tl.arange(0, BT)
    mask_t = offs_t < eos
    acc = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(K, BK)):
        offs_k = i_k * BK + tl.arange(0, BK)
        ptr = k + (offs_t[:, None] * H + i_h) * K + offs_k[None, :]
        b_k = tl.load(ptr, mask=mask_t[:, None] & (offs_k[None, :] < K), other=0.0)
        acc += tl.dot(b_k, tl.trans(b_k), input_precision=PREC)
    b_beta = tl.load(beta + offs_t * H + i_h, mask=mask_t, other=0.0).to(tl.float32)
    rows = tl.arange(0, BT)
    acc = tl.where(rows[:, None] > rows[None, :], acc * b_beta[:, None], 0.0)
    x_base = X + (c * H + i_h).to(tl.int64) * BT * BT
    tl.store(x_base + rows[:, None] * BT + rows[None, :], acc)


@triton.jit
def _invert_in_place(X, c, i_h, H, BT: tl.constexpr, PREC: tl.constexpr):
    """Overwrite A (strictly lower, in X[c, i_h]) with (I + A)^-1, 16 rows at a time."""
    x_base = X + (c * H + i_h).to(tl.int64) * BT * BT
    r16 = tl.arange(0, 16)
    cols = tl.arange(0, BT)
    rows = tl.arange(0, BT)
    for i in tl.static_range(BT // 16):
        # Forward substitution on the 16x16 diagonal block, rows kept in registers.
        xii = tl.where(r16[:, None] == r16[None, :], 1.0, 0.0)
        for r in tl.static_range(1, 16):
            a_r = tl.load(x_base + (i * 16 + r) * BT + i * 16 + r16)  # row r of A_ii (zero at j >= r)
            new = -tl.sum(a_r[:, None] * xii, axis=0)
            xii = tl.where(r16[:, None] == r, new[None, :] + tl.where(r16[None, :] == r, 1.0, 0.0), xii)
        # X_i = X_ii (E_i - A_i X_{<i}), E_i the identity strip of this row block.
        e_i = tl.where(cols[None, :] == (i * 16 + r16[:, None]), 1.0, 0.0)
        if i > 0:
            a_i = tl.load(x_base + (i * 16 + r16[:, None]) * BT + cols[None, :],
                          mask=cols[None, :] < i * 16, other=0.0)
            x_prev = tl.load(x_base + rows[:, None] * BT + cols[None, :],
                             mask=(rows[:, None] < i * 16) & (cols[None, :] < i * 16), other=0.0)
            e_i -= tl.dot(a_i, x_prev, input_precision=PREC)
        x_i = tl.dot(xii, e_i, input_precision=PREC)
        tl.debug_barrier()
        tl.store(x_base + (i * 16 + r16[:, None]) * BT + cols[None, :], x_i)
        tl.debug_barrier()


@triton.jit
def _apply_wy(k, v, beta, X, W, U, c, i_h, t0, eos, H, K: tl.constexpr, V: tl.constexpr,
              BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
              DO_W: tl.constexpr, DO_U: tl.constexpr):
    """W = X diag(beta) K and U = X diag(beta) V for one chunk, tile by tile."""
    offs_t = t0 + tl.arange(0, BT)
    mask_t = offs_t < eos
    rows = tl.arange(0, BT)
    x_base = X + (c * H + i_h).to(tl.int64) * BT * BT
    b_x = tl.load(x_base + rows[:, None] * BT + rows[None, :])
    b_beta = tl.load(beta + offs_t * H + i_h, mask=mask_t, other=0.0).to(tl.float32)
    if DO_W:
        for i_k in range(0, tl.cdiv(K, BK)):
            offs_k = i_k * BK + tl.arange(0, BK)
            m = mask_t[:, None] & (offs_k[None, :] < K)
            off = (offs_t[:, None] * H + i_h) * K + offs_k[None, :]
            b_k = tl.load(k + off, mask=m, other=0.0).to(tl.float32) * b_beta[:, None]
            tl.store(W + off, tl.dot(b_x, b_k, input_precision=PREC), mask=m)
    if DO_U:
        for i_v in range(0, tl.cdiv(V, BV)):
            offs_v = i_v * BV + tl.arange(0, BV)
            m = mask_t[:, None] & (offs_v[None, :] < V)
            off = (offs_t[:, None] * H + i_h) * V + offs_v[None, :]
            b_v = tl.load(v + off, mask=m, other=0.0).to(tl.float32) * b_beta[:, None]
            tl.store(U + off, tl.dot(b_x, b_v, input_precision=PREC), mask=m)


@triton.jit
def wy_inverse_kernel(k, v, beta, X, W, U, chunk_start, chunk_end, H, K: tl.constexpr, V: tl.constexpr,
                      BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
                      FUSE_WU: tl.constexpr):
    """One program per (chunk, head): A, its inverse X, and (when fused) W and U."""
    c = tl.program_id(0)
    i_h = tl.program_id(1)
    t0 = tl.load(chunk_start + c).to(tl.int64)
    eos = tl.load(chunk_end + c).to(tl.int64)
    _build_a(k, beta, X, c, i_h, t0, eos, H, K, BT, BK, PREC)
    tl.debug_barrier()
    _invert_in_place(X, c, i_h, H, BT, PREC)
    if FUSE_WU:
        _apply_wy(k, v, beta, X, W, U, c, i_h, t0, eos, H, K, V, BT, BK, BV, PREC, True, True)


@triton.jit
def wy_apply_kernel(k, v, beta, X, W, U, chunk_start, chunk_end, H, K: tl.constexpr, V: tl.constexpr,
                    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
                    DO_W: tl.constexpr, DO_U: tl.constexpr):
    """One program per (chunk, head): W and/or U from a stored X."""
    c = tl.program_id(0)
    i_h = tl.program_id(1)
    t0 = tl.load(chunk_start + c).to(tl.int64)
    eos = tl.load(chunk_end + c).to(tl.int64)
    _apply_wy(k, v, beta, X, W, U, c, i_h, t0, eos, H, K, V, BT, BK, BV, PREC, DO_W, DO_U)


def wy_forward(k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, chunk_start: torch.Tensor,
               chunk_end: torch.Tensor, BT: int, BK: int, BV: int, fuse: bool, prec: str,
               num_warps: int, num_stages: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """X [n_chunks, H, C, C], W [T, H, K], U [T, H, V] (all fp32) for flattened ``[T, H, D]`` inputs."""
    T, H, K = k.shape
    V = v.shape[-1]
    NC = chunk_start.numel()
    X = torch.empty(NC, H, BT, BT, dtype=torch.float32, device=k.device)
    W = torch.empty(T, H, K, dtype=torch.float32, device=k.device)
    U = torch.empty(T, H, V, dtype=torch.float32, device=k.device)
    wy_inverse_kernel[(NC, H)](k, v, beta, X, W, U, chunk_start, chunk_end, H, K, V, BT, BK, BV, prec,
                               fuse, num_warps=num_warps, num_stages=num_stages)
    if not fuse:
        wy_apply_kernel[(NC, H)](k, v, beta, X, W, U, chunk_start, chunk_end, H, K, V, BT, BK, BV, prec,
                                 True, True, num_warps=num_warps, num_stages=num_stages)
    return X, W, U


def wy_recompute_w(k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, X: torch.Tensor,
                   chunk_start: torch.Tensor, chunk_end: torch.Tensor, BT: int, BK: int, BV: int, prec: str,
                   num_warps: int, num_stages: int) -> torch.Tensor:
    """W = X diag(beta) K again from a stored X (the backward's recompute)."""
    T, H, K = k.shape
    V = v.shape[-1]
    NC = chunk_start.numel()
    W = torch.empty(T, H, K, dtype=torch.float32, device=k.device)
    wy_apply_kernel[(NC, H)](k, v, beta, X, W, W, chunk_start, chunk_end, H, K, V, BT, BK, BV, prec,
                             True, False, num_warps=num_warps, num_stages=num_stages)
    return W
