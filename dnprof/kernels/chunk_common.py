"""Small Triton helpers shared by the chunkwise kernels: masked tile loads/stores and fp32 dots.

All token-major tensors are flattened over the batch to ``[T_total, H, D]`` (contiguous); per-chunk
states are ``[n_chunks, H, K, V]``. Offsets are computed in int64 so large batches cannot overflow.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def load_tile(ptr, t0, eos, i_h, H, D: tl.constexpr, d0, BT: tl.constexpr, BD: tl.constexpr):
    """Rows ``t0 .. t0+BT`` (zero at ``t >= eos``), cols ``d0 .. d0+BD`` (zero at ``d >= D``) of head ``i_h``."""
    offs_t = t0 + tl.arange(0, BT)
    offs_d = d0 + tl.arange(0, BD)
    m = (offs_t < eos)[:, None] & (offs_d < D)[None, :]
    return tl.load(ptr + (offs_t[:, None] * H + i_h) * D + offs_d[None, :], mask=m, other=0.0)


@triton.jit
def load_tile32(ptr, t0, eos, i_h, H, D: tl.constexpr, d0, BT: tl.constexpr, BD: tl.constexpr):
    """:func:`load_tile` as fp32, for intermediates stored in 16 bits that are used outside a dot."""
    return load_tile(ptr, t0, eos, i_h, H, D, d0, BT, BD).to(tl.float32)


@triton.jit
def store_tile(ptr, val, t0, eos, i_h, H, D: tl.constexpr, d0, BT: tl.constexpr, BD: tl.constexpr):
    """Masked store of a ``[BT, BD]`` tile laid out as in :func:`load_tile`."""
    offs_t = t0 + tl.arange(0, BT)
    offs_d = d0 + tl.arange(0, BD)
    m = (offs_t < eos)[:, None] & (offs_d < D)[None, :]
    tl.store(ptr + (offs_t[:, None] * H + i_h) * D + offs_d[None, :], val, mask=m)


@triton.jit
def sequence_desc(ptr, bos, eos, i_h, H, D: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    """A tensor descriptor of ``[BT, BD]`` blocks over head ``i_h`` of one sequence (rows ``bos .. eos`` of a
    ``[T_total, H, D]`` tensor), for loads through Hopper's tensor-memory copy engine: a block's rows past the
    sequence's end and columns past ``D`` read as zero, like :func:`load_tile`'s masks. Needs ``D`` times the
    element size and the base address to be multiples of 16 bytes (see ``dnprof.kernels.chunk.tma_ready``)."""
    return tl.make_tensor_descriptor(ptr + (bos * H + i_h) * D, shape=[(eos - bos).to(tl.int32), D],
                                     strides=[H * D, 1], block_shape=[BT, BD])


@triton.jit
def loop_descs(q, k, W, v_like, bos, eos, i_h, H, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr,
               BK: tl.constexpr, BV: tl.constexpr, TMA: tl.constexpr, APPLY_X: tl.constexpr):
    """A slab loop's descriptors for ``TMA`` (:func:`sequence_desc`): its key-dim tensors ``q``, ``k``, ``W``
    in ``[BT, BK]`` blocks and its value-dim one (``U`` or ``dO``) in ``[BT, BV]``; without ``TMA`` the
    tensors themselves, which :func:`tile_via` then reads per thread."""
    if TMA:
        tl.static_assert(not APPLY_X, "TMA loads are not written for wy_in_loop")
        return (sequence_desc(q, bos, eos, i_h, H, K, BT, BK), sequence_desc(k, bos, eos, i_h, H, K, BT, BK),
                sequence_desc(W, bos, eos, i_h, H, K, BT, BK), sequence_desc(v_like, bos, eos, i_h, H, V, BT, BV))
    else:
        return q, k, W, v_like


@triton.jit
def tile_via(ptr, desc, TMA: tl.constexpr, t0, eos, r, i_h, H, D: tl.constexpr, d0, BT: tl.constexpr,
             BD: tl.constexpr):
    """:func:`load_tile`, or with ``TMA`` the same block through ``desc`` (a :func:`sequence_desc` of ``ptr``)
    at row ``r`` of the sequence (``r = t0 - bos``)."""
    if TMA:
        return desc.load([r, d0])
    else:
        return load_tile(ptr, t0, eos, i_h, H, D, d0, BT, BD)


@triton.jit
def serial_program(seq_start, seq_chunk0, V: tl.constexpr, BV: tl.constexpr):
    """Where a serial kernel's program works: ``(sequence, head, v0, bos, eos, first chunk)``.

    Program ids run the ``V / BV`` blocks of one (sequence, head) side by side, so they read the
    chunk's tiles at about the same time and share them through L2."""
    NVB: tl.constexpr = (V + BV - 1) // BV
    i_n = tl.program_id(0) // NVB
    i_h = tl.program_id(1)
    v0 = (tl.program_id(0) % NVB) * BV
    bos = tl.load(seq_start + i_n).to(tl.int64)
    eos = tl.load(seq_start + i_n + 1).to(tl.int64)
    c0 = tl.load(seq_chunk0 + i_n)
    return i_n, i_h, v0, bos, eos, c0


@triton.jit
def state_ptrs(ptr, c, i_h, H, K: tl.constexpr, V: tl.constexpr, k0, v0, BK: tl.constexpr, BV: tl.constexpr):
    """Pointers and mask of the ``[BK, BV]`` tile at ``(k0, v0)`` of state ``c`` (``[n, H, K, V]`` layout)."""
    offs_k = k0 + tl.arange(0, BK)
    offs_v = v0 + tl.arange(0, BV)
    base = ptr + (c * H + i_h).to(tl.int64) * K * V
    m = (offs_k < K)[:, None] & (offs_v < V)[None, :]
    return base + offs_k[:, None] * V + offs_v[None, :], m


@triton.jit
def load_state_slabs(ptr, c, i_h, H, K: tl.constexpr, V: tl.constexpr, v0, BK: tl.constexpr, BV: tl.constexpr,
                     NKS: tl.constexpr):
    """State ``c``'s ``[K, BV]`` slice at ``v0`` as four fp32 ``[BK, BV]`` slabs (the unused ones zero)."""
    p, m = state_ptrs(ptr, c, i_h, H, K, V, 0, v0, BK, BV)
    h1 = tl.load(p, mask=m, other=0.0).to(tl.float32)
    h2 = tl.zeros([BK, BV], dtype=tl.float32)
    h3 = tl.zeros([BK, BV], dtype=tl.float32)
    h4 = tl.zeros([BK, BV], dtype=tl.float32)
    if NKS > 1:
        p, m = state_ptrs(ptr, c, i_h, H, K, V, BK, v0, BK, BV)
        h2 = tl.load(p, mask=m, other=0.0).to(tl.float32)
    if NKS > 2:
        p, m = state_ptrs(ptr, c, i_h, H, K, V, 2 * BK, v0, BK, BV)
        h3 = tl.load(p, mask=m, other=0.0).to(tl.float32)
        p, m = state_ptrs(ptr, c, i_h, H, K, V, 3 * BK, v0, BK, BV)
        h4 = tl.load(p, mask=m, other=0.0).to(tl.float32)
    return h1, h2, h3, h4


@triton.jit
def store_state_slabs(ptr, c, i_h, H, K: tl.constexpr, V: tl.constexpr, v0, BK: tl.constexpr, BV: tl.constexpr,
                      NKS: tl.constexpr, h1, h2, h3, h4, valid):
    """Store the ``NKS`` used slabs of :func:`load_state_slabs` into state ``c`` (cast to its dtype).

    ``valid`` (a scalar bool) masks the whole store: the chunk loops run to the longest sequence's
    chunk count, and a shorter sequence's extra steps must not write into its neighbour's states.
    """
    p, m = state_ptrs(ptr, c, i_h, H, K, V, 0, v0, BK, BV)
    tl.store(p, h1, mask=m & valid)
    if NKS > 1:
        p, m = state_ptrs(ptr, c, i_h, H, K, V, BK, v0, BK, BV)
        tl.store(p, h2, mask=m & valid)
    if NKS > 2:
        p, m = state_ptrs(ptr, c, i_h, H, K, V, 2 * BK, v0, BK, BV)
        tl.store(p, h3, mask=m & valid)
        p, m = state_ptrs(ptr, c, i_h, H, K, V, 3 * BK, v0, BK, BV)
        tl.store(p, h4, mask=m & valid)


@triton.jit
def dot32(a, b, PREC: tl.constexpr):
    """``a @ b`` for computed operands (states, Vn, P, X...), fp32 accumulation.

    ``PREC`` ``ieee``/``tf32``: both operands in fp32 (tf32 tensor cores for 16-bit inputs);
    ``bf16``/``fp16``: both rounded to that dtype first (full-rate tensor cores, half the bytes).
    """
    if PREC == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif PREC == "fp16":
        return tl.dot(a.to(tl.float16), b.to(tl.float16))
    else:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PREC)


@triton.jit
def mm(a, b, PREC: tl.constexpr):
    """``a @ b`` for operands loaded from the inputs (already in the input dtype), fp32 accumulation."""
    if PREC == "bf16" or PREC == "fp16":
        return tl.dot(a, b)
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def chunk_beta(beta, t0, eos, i_h, H, BT: tl.constexpr):
    """The chunk's ``beta`` as fp32 ``[BT]`` (zero past ``eos``)."""
    offs_t = t0 + tl.arange(0, BT)
    return tl.load(beta + offs_t * H + i_h, mask=offs_t < eos, other=0.0).to(tl.float32)


@triton.jit
def x_block(X, c, i_h, H, BT: tl.constexpr, TRANS: tl.constexpr, valid):
    """Chunk ``c``'s ``[BT, BT]`` block of the fp32 ``X [n_chunks, H, C, C]`` (its transpose with ``TRANS``):
    what the serial kernels read under ``wy_in_loop`` instead of ``W`` and ``U``. ``valid`` (a scalar
    bool) is false on a shorter sequence's extra loop steps, whose ``c`` is another sequence's chunk or
    past the end: zeros then, since even a zero ``beta`` times an ``inf`` read there would be NaN."""
    rows = tl.arange(0, BT)
    base = X + (c * H + i_h).to(tl.int64) * BT * BT
    m = (rows[:, None] >= 0) & valid
    if TRANS:
        return tl.load(base + rows[:, None] + rows[None, :] * BT, mask=m, other=0.0)
    return tl.load(base + rows[:, None] * BT + rows[None, :], mask=m, other=0.0)
