"""``chunk_delta_rule``: the chunkwise DeltaNet kernels (forward and backward) behind fla's API.

Launch plan (per call; ``C`` the chunk size of the selected :class:`ChunkConfig`):

forward
    1. ``wy_inverse_kernel`` (chunk_wy.py), parallel over (chunk, head): ``A``, ``X = (I + A)^-1``
       and, with ``fuse_wy``, ``W`` and ``U``; otherwise ``wy_apply_kernel`` makes ``W``/``U``.
    2. ``fwd_state_kernel`` (chunk_fwd.py), sequential over chunks per (sequence, head, V block):
       ``Vn = U - W h``, ``h += K^T Vn``; with ``fuse_output`` it also writes ``O``. The two serial
       kernels (this one and ``bwd_dh_kernel``) launch at a tiling of their own, ``cfg.rec``
       (recurrence_tiling.py); a ``t`` tiling runs their transposed-state forms instead
       (chunk_serial_t.py), which ``auto`` picks for a forward with the output fused that no backward
       follows, when there are programs enough. With ``wy_in_loop`` this loop applies ``X`` itself:
       step 1 then computes ``X`` alone, and ``W``/``U`` are never formed.
    3. without ``fuse_output``: ``fwd_output_kernel``, parallel over chunks (and V blocks, unless
       ``output_vloop`` has one program walk a chunk's V blocks). With no backward to follow
       these may be ``output_chunk`` tokens long (a multiple of ``C``): step 2 then stores only their
       first states.
backward
    1. ``wy_apply_kernel`` recomputes ``W`` from the saved ``X``, unless the forward kept ``W``
       (16-bit intermediates: ``W`` is then the size of ``k``, and keeping it costs less than
       recomputing it) or ``wy_in_loop`` has the reverse recurrence apply ``X`` itself (no ``W`` at all).
    2. ``bwd_dh_kernel``: reverse recurrence for the state gradients ``dh'`` and ``dVn``, and dh0.
    3. ``bwd_chunk_v_kernel`` per (chunk, head): dv, dbeta's V part, and ``P`` and ``G`` into a
       per-chunk scratch (twice the size of ``X``); then ``bwd_chunk_k_kernel`` per (chunk, head,
       K tile): dq, dk and the rest of dbeta.

What is stored and what is recomputed: the forward saves for the backward the inputs, ``X`` (``C``
values per token and head: small), the per-chunk states ``h`` (``state_dtype``; the largest
intermediate, ``T/C * K * V`` per head, halved by C = 128 or by bf16) and ``Vn`` (the size of v).
``X``, ``W``, ``U``, ``Vn`` and ``dVn`` are fp32, or the input's 16-bit dtype with
``dot_operands="input"``. In 16 bits ``W`` is kept for the backward; in fp32 it is recomputed (one
parallel launch) rather than kept at twice the size of ``k``. ``U`` is not needed by the backward
at all (``dU = dVn``). A forward that no backward follows stores nothing beyond what its
output needs: no ``X``, and with ``fuse_output`` no per-chunk state and no ``Vn`` either.

Precision: every accumulation is fp32. Products of two input tensors (``K K^T``, ``Q K^T``,
``Q^T dO``) run in the input dtype on the tensor cores. The inverse's products run as tf32 for
16-bit inputs and as full fp32 ("ieee") for fp32 inputs; ``W`` and ``U`` take the precision of
their storage (16-bit operands under ``dot_operands="input"``, else that of the inverse). The other products
involving computed operands (``h``, ``Vn``, ``dVn``, ``P``, ``G``...) follow ``dot_operands``:
tf32 (``"fp32"``) or the input's 16-bit dtype (``"input"``, the default for 16-bit inputs); fp32
inputs always use full fp32. ``use_qk_l2norm_in_kernel`` is applied with differentiable torch ops
before the kernels. Every launch goes through :func:`dnprof.kernels.launch.launch`, which lowers a
kernel's pipelining depth when its shared memory would not fit.

Batches are flattened into one packed sequence set (``B`` sequences of ``T`` tokens, or the
``cu_seqlens`` ones), with host-built chunk tables so a sequence's last chunk may be short and
chunks never straddle sequences.
"""

from __future__ import annotations

import contextlib
import functools
from typing import NamedTuple

import torch
import triton

from dnprof.kernels.chunk_bwd import bwd_chunk_k_kernel, bwd_chunk_v_kernel, bwd_dh_kernel
from dnprof.kernels.chunk_fwd import fwd_output_kernel, fwd_state_kernel
from dnprof.kernels.chunk_serial_t import bwd_dh_t_kernel, fwd_state_t_kernel
from dnprof.kernels.chunk_wy import wy_forward, wy_recompute_w
from dnprof.kernels.launch import descriptor_scratch, launch, note_tiling
from dnprof.kernels.recurrence_tiling import (Tiling, check_pipelined, check_wy_in_loop, compute_major, recurrence_tiling,
                                             sm_count)
from dnprof.kernels.validation import backward_can_follow, check_delta_inputs
from dnprof.reference import l2norm
from dnprof.variants.chunk_config import ChunkConfig, ConfigError, padded_dim
from dnprof.variants.errors import RefusedOnDevice
from dnprof.variants.known_faults import sm90_wrong_values

Tensor = torch.Tensor

__all__ = ["chunk_delta_rule", "select_config", "ChunkConfig"]

_STATE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def select_config(K: int, V: int, T: int, dtype: torch.dtype, mode: str = "fwdbwd",
                  chunk_size: int | None = None) -> ChunkConfig:
    """The variant used when the caller passes no ``config``: tuned, else shipped, else the default.

    ``chunk_size=None`` lets the tuning records choose the chunk size (see
    :func:`dnprof.variants.selection.select_chunk_config`).
    """
    from dnprof.variants.selection import select_chunk_config

    return select_chunk_config(K, V, T, dtype, mode, chunk_size=chunk_size)[0]


def select_launchable(K: int, V: int, T: int, dtype: torch.dtype | str, mode: str, n_streams: int,
                      device: torch.device | str, chunk_size: int | None = None) -> tuple[ChunkConfig, str, LaunchPlan]:
    """The variant a call without ``config`` runs, its source and its launch plan: the tuned or shipped pick
    when the launch guard accepts it at ``n_streams`` (sequences x heads) on ``device``, else the default.

    Tuned and shipped configs are chosen per sequence-length bucket, not per batch: one tuned at 64 streams
    may be refused at 16 (``auto`` narrows its loop to BV 32, where sm_90 refuses ``wy_in_loop``), and a call
    that named no config must not fail for that. ``mode`` ``fwd``: no backward follows (no states saved).
    """
    from dnprof.variants.selection import select_chunk_config

    cfg, source = select_chunk_config(K, V, T, dtype, mode, chunk_size=chunk_size)
    dev = _device_index(torch.device(device))
    where = (n_streams, sm_count(dev), compute_major(dev), mode != "fwd")
    if source != "default":
        try:
            cfg.validate(K, V)
            return cfg, source, plan_launch(cfg, K, V, *where)
        except (RefusedOnDevice, ConfigError):
            cfg, source = ChunkConfig.default_for(K, V, 64 if chunk_size is None else chunk_size, dtype, mode), "default"
    return cfg, source, plan_launch(cfg, K, V, *where)


class _ChunkTables:
    """Host-built index tables for the flattened token axis (int32, on the device)."""

    def __init__(self, bounds: list[int], BT: int, device: torch.device):
        self.bounds = tuple(bounds)
        self.chunk_size = BT
        starts, ends, chunk0 = [], [], []
        for bos, eos in zip(bounds[:-1], bounds[1:]):
            chunk0.append(len(starts))
            for t in range(bos, eos, BT):
                starts.append(t)
                ends.append(eos)
        self.n_seqs = len(bounds) - 1
        self.n_chunks = len(starts)
        #: chunk count of the longest sequence: the trip count of the (pipelined) state loops
        self.max_chunks = max(-(-(eos - bos) // BT) for bos, eos in zip(bounds[:-1], bounds[1:]))
        self.seq_start = torch.tensor(bounds, dtype=torch.int32, device=device)
        self.seq_chunk0 = torch.tensor(chunk0, dtype=torch.int32, device=device)
        self.chunk_start = torch.tensor(starts, dtype=torch.int32, device=device)
        self.chunk_end = torch.tensor(ends, dtype=torch.int32, device=device)


@functools.lru_cache(maxsize=64)
def _chunk_tables(bounds: tuple[int, ...], BT: int, device: torch.device) -> _ChunkTables:
    """The tables for one batch layout, built once: a training loop calls with the same shapes each step,
    and building them costs a Python loop and four host-to-device copies."""
    return _ChunkTables(list(bounds), BT, device)


def _precision(dtype: torch.dtype) -> str:
    """Product precision of the WY transform: full fp32 for fp32 inputs, tf32 otherwise."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _dot_precision(dtype: torch.dtype, cfg: ChunkConfig) -> str:
    """Product precision of the state, output and backward kernels (``ChunkConfig.dot_operands``)."""
    if dtype == torch.float32 or cfg.dot_operands == "fp32":
        return _precision(dtype)
    return "bf16" if dtype == torch.bfloat16 else "fp16"


def _intermediate_dtype(dtype: torch.dtype, cfg: ChunkConfig) -> torch.dtype:
    """Storage dtype of ``W``, ``U``, ``Vn`` and ``dVn``: the input's 16-bit dtype when the products
    round their operands to it anyway (``dot_operands="input"``), else fp32."""
    return dtype if _dot_precision(dtype, cfg) in ("bf16", "fp16") else torch.float32


def _device_index(device: torch.device) -> int | None:
    """The CUDA device's index (None off-GPU, where no architecture rule applies)."""
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


class LaunchPlan(NamedTuple):
    """What one call's launches may run at, worked out (and checked) once before any kernel runs:
    the two serial kernels' tilings and the fewest stages the WY inverse may be lowered to."""

    fwd: Tiling
    bwd: Tiling
    wy_min_stages: int


def _stores_states(cfg: ChunkConfig, save: bool) -> bool:
    """Whether the forward writes per-chunk states (and ``Vn``): for a backward, or for a separate output kernel."""
    return save or not cfg.fuse_output


def plan_launch(cfg: ChunkConfig, K: int, V: int, n_streams: int, sms: int, major: int | None,
                save: bool = True) -> LaunchPlan:
    """The :class:`LaunchPlan` of ``cfg`` for ``n_streams`` (sequence, head) pairs on a GPU of ``sms`` SMs and
    compute capability ``major`` (None off-GPU), with no device needed (the tuner prunes by it before
    compiling): :class:`RefusedOnDevice` (a ValueError starting ``config:``) for a kernel of the call that
    must not launch there (sm_90: an unpipelined narrow serial tiling, see ``check_pipelined``;
    ``wy_in_loop`` at a narrow tiling, see ``check_wy_in_loop``; or a C = 128 WY transform at one stage,
    which faulted once and returned wrong values once on an H200 at 8 warps, D = 256:
    docs/performance.md, change 21; or a variant of :func:`dnprof.variants.known_faults.sm90_wrong_values`).
    ``save``: a backward will follow, so the forward stores its states."""
    wrong = sm90_wrong_values(cfg, K, save) if major == 9 else None
    if wrong:
        raise RefusedOnDevice(f"config: {wrong}")
    tilings = {kernel: recurrence_tiling(cfg, kernel, K, V, n_streams, sms, major,
                                         stores_states=_stores_states(cfg, save)) for kernel in ("fwd", "bwd")}
    for kernel in ("fwd", "bwd") if save else ("fwd",):  # with no backward to follow the reverse never launches
        check_pipelined(tilings[kernel], kernel)
        check_wy_in_loop(tilings[kernel], kernel, major)
    wy_min = 2 if cfg.chunk_size >= 128 and major == 9 else 1
    if cfg.num_stages < wy_min:
        raise RefusedOnDevice(f"config: at chunk size {cfg.chunk_size} the WY transform needs at least {wy_min} pipelining "
                         f"stages on sm_90 (at one stage it faulted or returned wrong values with Triton 3.6); "
                         f"got num_stages={cfg.num_stages}")
    return LaunchPlan(tilings["fwd"], tilings["bwd"], wy_min)


def launch_plan(cfg: ChunkConfig, K: int, V: int, H: int, tables: _ChunkTables, device: torch.device,
                save: bool = True) -> LaunchPlan:
    """:func:`plan_launch` for this batch on ``device`` (its SM count and compute capability)."""
    dev = _device_index(device)
    return plan_launch(cfg, K, V, tables.n_seqs * H, sm_count(dev), compute_major(dev), save)


def tma_ready(*tensors: Tensor) -> bool:
    """Whether the copy engine can read these ``[T_total, H, D]`` tensors through tensor descriptors: each
    base address and each row of ``D`` elements a multiple of 16 bytes. (Whether the GPU has the engine
    at all is the tiling's ``tma``, from :func:`dnprof.kernels.recurrence_tiling.tma_applies`.)"""
    return not any(t.data_ptr() % 16 or (t.shape[-1] * t.element_size()) % 16 for t in tensors)


def _launch_serial(kernel, tiling: Tiling, tables: _ChunkTables, scale: float, cfg: ChunkConfig, q: Tensor,
                   V: int, tensors: tuple, flags: tuple, form: str = "", tma: bool = False) -> int:
    """Launch one serial kernel (slab or transposed form) at ``tiling``: one program per (sequence, V block,
    head), the arguments both forms share around ``tensors`` and ``flags`` (``tma``: a slab kernel's last
    argument, its loads through tensor descriptors, whose scratch this provides); note the tiling (with
    ``form``, see :func:`dnprof.kernels.launch.note_tiling`), return the stages."""
    H, K = q.shape[1], q.shape[2]
    with descriptor_scratch(q.device) if tma else contextlib.nullcontext():
        ran = launch(
            kernel, (tables.n_seqs * triton.cdiv(V, tiling.BV), H), *tensors,
            tables.seq_start, tables.seq_chunk0, tables.max_chunks, scale, H, K, V, cfg.chunk_size, tiling.BK,
            tiling.BV, padded_dim(K) // tiling.BK, _dot_precision(q.dtype, cfg), *flags, *((True,) if tma else ()),
            num_warps=tiling.num_warps, num_stages=tiling.num_stages, min_stages=tiling.min_stages,
        )
    note_tiling(kernel, tiling.BK, tiling.BV, tiling.num_warps, ran, form + ("+tma" if tma else ""))
    return ran


def launch_state(q: Tensor, k: Tensor, W: Tensor, U: Tensor, h0: Tensor | None, Hs: Tensor, Vn: Tensor, o: Tensor,
                 ht: Tensor | None, tables: _ChunkTables, scale: float, cfg: ChunkConfig, store_h: bool,
                 store_vn: bool, tiling: Tiling, beta: Tensor | None = None,
                 hs_tables: _ChunkTables | None = None) -> int:
    """Launch the forward state recurrence at its own tiling (:func:`launch_plan`); return the stages run.

    The recurrence's V tiling is independent of the chunk-parallel kernels': it only decides how
    many programs walk each sequence (``B * H * V / BV``) and what fits shared memory. With
    ``tiling.apply_x`` (``wy_in_loop``) ``W`` is the fp32 ``X``, ``U`` is ``v`` and ``beta`` is needed.
    ``hs_tables``: the chunks whose first states are stored (the output kernel's, ``output_chunk``; by
    default the loop's own), numbered as they number them."""
    join_wq = tiling.transposed and tiling.joint and cfg.fuse_output
    _check_x(tiling, W, beta)
    if join_wq and W.dtype != q.dtype:
        raise ValueError(f"config: rec {cfg.rec} reads W and q as one tile, so they need one dtype; got W {W.dtype} "
                         f"and q {q.dtype} (use a '-m16' variant)")
    tensors = (q, k, W, U, h0 if h0 is not None else Hs, Hs, Vn, o, ht if ht is not None else Hs,
               W if beta is None else beta)
    flags = (h0 is not None, ht is not None, store_h, store_vn, cfg.fuse_output)
    x_flags = (tiling.apply_x, _precision(q.dtype))
    form = "+x" if tiling.apply_x else "+wq" if join_wq else ""
    hs_tables = hs_tables or tables
    every = hs_tables.chunk_size // tables.chunk_size
    if tiling.transposed:
        if every > 1:
            raise ValueError(f"config: output_chunk {cfg.output_chunk} stores every {every}th state, which the "
                             f"transposed state loop does not; use a slab tiling for rec (got {cfg.rec})")
        return _launch_serial(fwd_state_t_kernel, tiling, tables, scale, cfg, q, U.shape[-1], tensors,
                              flags + (join_wq,) + x_flags, form)
    hs_flags = (hs_tables.seq_chunk0, every)
    tma = tiling.tma and tma_ready(q, k, W, U)
    return _launch_serial(fwd_state_kernel, tiling, tables, scale, cfg, q, U.shape[-1], tensors,
                          flags + x_flags + hs_flags, form + (f"+h{every}" if every > 1 else ""), tma)


def launch_dh(q: Tensor, k: Tensor, W: Tensor, do: Tensor, dht: Tensor | None, dHs: Tensor, dVn: Tensor,
              dh0: Tensor | None, tables: _ChunkTables, scale: float, cfg: ChunkConfig, tiling: Tiling,
              beta: Tensor | None = None) -> int:
    """Launch the backward's reverse recurrence (dh', dVn, dh0) at its own tiling; return the stages run.
    With ``tiling.apply_x`` (``wy_in_loop``) ``W`` is the fp32 ``X`` and ``beta`` is needed."""
    _check_x(tiling, W, beta)
    tma = tiling.tma and tma_ready(q, k, W, do)
    return _launch_serial(
        bwd_dh_t_kernel if tiling.transposed else bwd_dh_kernel, tiling, tables, scale, cfg, q, do.shape[-1],
        (q, k, W, do, dht if dht is not None else dHs, dHs, dVn, dh0 if dh0 is not None else dHs,
         W if beta is None else beta),
        (dht is not None, dh0 is not None, tiling.apply_x, _precision(q.dtype)), "+x" if tiling.apply_x else "", tma)


def _check_x(tiling: Tiling, W: Tensor, beta: Tensor | None) -> None:
    """A serial kernel that applies ``X`` itself takes the fp32 ``X [n_chunks, H, C, C]`` for ``W``, and ``beta``."""
    if tiling.apply_x and (beta is None or W.dtype != torch.float32 or W.dim() != 4):
        raise ValueError("config: wy_in_loop applies X in the serial kernels: they take the fp32 X "
                         "[n_chunks, H, C, C] as W, and beta")


def _output_tables(tables: _ChunkTables, cfg: ChunkConfig, save: bool, device: torch.device) -> _ChunkTables:
    """The chunks the separate output kernel works on: ``cfg.output_chunk`` tokens when no backward follows
    (which needs every chunk's state) and the output is not fused, else the loop's own."""
    if save or cfg.fuse_output or cfg.output_chunk <= cfg.chunk_size:
        return tables
    return _chunk_tables(tables.bounds, cfg.output_chunk, device)


def _forward(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, scale: float, h0: Tensor | None,
             tables: _ChunkTables, cfg: ChunkConfig, output_final_state: bool, save: bool,
             plan: LaunchPlan | None = None):
    """Flattened ``[T, H, D]`` inputs -> (o, ht, X, Hs, Vn, W); Hs/Vn only when needed, W only when kept.

    ``plan``: the call's, when the caller has it already (else from :func:`launch_plan`)."""
    T, H, K = q.shape
    V = v.shape[-1]
    plan = plan or launch_plan(cfg, K, V, H, tables, q.device, save)
    BT, BK, BV = cfg.chunk_size, cfg.BK, cfg.BV
    prec, dprec = _precision(q.dtype), _dot_precision(q.dtype, cfg)
    nw, ns = cfg.num_warps, cfg.num_stages
    inter = _intermediate_dtype(q.dtype, cfg)
    apply_x = plan.fwd.apply_x
    X, W, U = wy_forward(k, v, beta, tables.chunk_start, tables.chunk_end, BT, BK, BV, cfg.fuse_wy, prec, nw, ns,
                         inter, keep_x=save, min_stages=plan.wy_min_stages, make_wu=not apply_x)
    store_h = store_vn = _stores_states(cfg, save)
    dev = q.device
    # without a backward, the output kernel may take coarser chunks, whose first states alone are stored
    out_tables = _output_tables(tables, cfg, save, dev)
    Hs = torch.empty(out_tables.n_chunks if store_h else 1, H, K, V, dtype=_STATE_DTYPES[cfg.state_dtype], device=dev)
    Vn = torch.empty(T if store_vn else 1, H, V, dtype=inter, device=dev)
    # a forward with its output apart and no backward to follow allocates o after the loop, once W, U and X
    # are freed: its peak is then the larger of (W, U, Hs, Vn) and (Hs, Vn, o) instead of all five together
    o_after_loop = not cfg.fuse_output and not save
    o = torch.empty(1 if o_after_loop else T, H, V, dtype=q.dtype, device=dev)  # a placeholder the loop never touches
    ht = torch.empty(tables.n_seqs, H, K, V, dtype=torch.float32, device=dev) if output_final_state else None
    # under wy_in_loop the loop forms Vn from X, v and beta itself
    launch_state(q, k, *((X, v) if apply_x else (W, U)), h0, Hs, Vn, o, ht, tables, scale, cfg, store_h, store_vn,
                 plan.fwd, beta, hs_tables=out_tables)
    if o_after_loop:
        X = W = U = None  # the output launch reads only q, k, Hs and Vn
        o = torch.empty(T, H, V, dtype=q.dtype, device=dev)
    if not cfg.fuse_output:
        out_bv, out_warps = cfg.output_launch(out_tables.chunk_size)
        # output_vloop: one program per chunk walks the V blocks (Q K^T formed once), else one per V block
        v_programs = 1 if cfg.output_vloop else triton.cdiv(V, out_bv)
        launch(
            fwd_output_kernel, (out_tables.n_chunks * v_programs, H),
            q, k, Hs, Vn, o, out_tables.chunk_start, out_tables.chunk_end, scale, H, K, V, out_tables.chunk_size,
            BK, out_bv, dprec, cfg.output_vloop, num_warps=out_warps, num_stages=ns,
        )
    keep_w = save and inter != torch.float32 and W is not None
    return o, ht, X, (Hs if save else None), (Vn if save else None), (W if keep_w else None)


def _backward(q, k, v, beta, scale, X, Hs, Vn, W, do, dht, tables: _ChunkTables, cfg: ChunkConfig, need_dh0: bool,
              tiling: Tiling | None = None):
    """Gradients (dq, dk, dv, dbeta, dh0) for flattened inputs, in the inputs' dtypes; dh0 fp32, None unless asked.

    ``W`` is the forward's when it kept it, else None (recomputed here from ``X``); ``tiling`` the
    reverse recurrence's, when the caller has it (else from :func:`launch_plan`)."""
    T, H, K = q.shape
    V = v.shape[-1]
    tiling = tiling or launch_plan(cfg, K, V, H, tables, q.device).bwd
    BT, BK, BV = cfg.chunk_size, cfg.BK, cfg.BV
    prec, dprec = _precision(q.dtype), _dot_precision(q.dtype, cfg)
    nw, ns = cfg.num_warps, cfg.num_stages
    dev = q.device
    inter = _intermediate_dtype(q.dtype, cfg)
    if tiling.apply_x:  # the reverse recurrence applies X itself: no W
        W = X
    elif W is None:
        W = wy_recompute_w(k, v, beta, X, tables.chunk_start, tables.chunk_end, BT, BK, BV, prec, nw, ns, inter)
    dHs = torch.empty(tables.n_chunks, H, K, V, dtype=_STATE_DTYPES[cfg.state_dtype], device=dev)
    dVn = torch.empty(T, H, V, dtype=inter, device=dev)
    dh0 = torch.empty(tables.n_seqs, H, K, V, dtype=torch.float32, device=dev) if need_dh0 else None
    launch_dh(q, k, W, do, dht, dHs, dVn, dh0, tables, scale, cfg, tiling, beta)
    # dq, dk and dv are written once, straight in the inputs' dtypes (the store rounds as a cast
    # would, without an extra pass); dbeta comes in fp32 parts, one per K tile plus the V part.
    dq = torch.empty(T, H, K, dtype=q.dtype, device=dev)
    dk = torch.empty(T, H, K, dtype=k.dtype, device=dev)
    dv = torch.empty(T, H, V, dtype=v.dtype, device=dev)
    NKT = triton.cdiv(K, BK)
    dbeta_parts = torch.empty(1 + NKT, T, H, dtype=torch.float32, device=dev)
    S = torch.empty((2,) + tuple(X.shape), dtype=inter, device=dev)  # per-chunk scratch: P, then G
    launch(
        bwd_chunk_v_kernel, (tables.n_chunks, H),
        k, v, beta, X, S, Hs, Vn, dVn, do, dv, dbeta_parts, tables.chunk_start, tables.chunk_end,
        T, H, K, V, BT, BK, BV, dprec, num_warps=nw, num_stages=ns,
    )
    launch(
        bwd_chunk_k_kernel, (tables.n_chunks * NKT, H),
        q, k, beta, X, S, Hs, dHs, Vn, dVn, do, dq, dk, dbeta_parts, tables.chunk_start, tables.chunk_end,
        scale, T, H, K, V, BT, BK, BV, dprec, num_warps=nw, num_stages=ns,
    )
    dbeta = dbeta_parts.sum(0).to(beta.dtype)
    return dq, dk, dv, dbeta, dh0


class ChunkDeltaRuleFunction(torch.autograd.Function):
    """Autograd wrapper: inputs already flattened to ``[T_total, H, D]`` and contiguous."""

    @staticmethod
    def forward(ctx, q, k, v, beta, initial_state, scale, tables, cfg, output_final_state, plan):
        o, ht, X, Hs, Vn, W = _forward(q, k, v, beta, scale, initial_state, tables, cfg, output_final_state, save=True,
                                       plan=plan)
        ctx.save_for_backward(q, k, v, beta, X, Hs, Vn, W)
        ctx.scale, ctx.tables, ctx.cfg, ctx.bwd_tiling = scale, tables, cfg, plan.bwd
        ctx.h0_dtype = None if initial_state is None else initial_state.dtype
        if ht is not None:
            return o, ht
        return o, None

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, beta, X, Hs, Vn, W = ctx.saved_tensors
        do = do.to(q.dtype).contiguous()
        dht = None if dht is None else dht.float().contiguous()
        need_dh0 = ctx.h0_dtype is not None and ctx.needs_input_grad[4]
        dq, dk, dv, dbeta, dh0 = _backward(q, k, v, beta, ctx.scale, X, Hs, Vn, W, do, dht, ctx.tables, ctx.cfg, need_dh0,
                                           tiling=ctx.bwd_tiling)
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dbeta.to(beta.dtype),
                None if dh0 is None else dh0.to(ctx.h0_dtype), None, None, None, None, None)


def chunk_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_size: int | None = None,
    config: ChunkConfig | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The delta rule, chunkwise, in fla's calling convention.

    ``q, k: [B, T, H, K]``, ``v: [B, T, H, V]``, ``beta: [B, T, H]``, ``initial_state: [N, H, K, V]``
    (float32), ``cu_seqlens``: packed offsets with ``B = 1``. ``scale`` defaults to ``K ** -0.5``.
    Returns ``(o [B, T, H, V] in q's dtype, final_state [N, H, K, V] float32 or None)``.
    ``config`` selects the kernel variant and overrides ``chunk_size``; differentiable in q, k, v,
    beta and initial_state. Head dims up to 256 (non powers of two are padded with masks).
    """
    shape = check_delta_inputs(q, k, v, beta, scale=scale, initial_state=initial_state, cu_seqlens=cu_seqlens)
    B, T, H, K, V = shape.B, shape.T, shape.H, shape.K, shape.V
    differentiable = backward_can_follow(q, k, v, beta, initial_state)
    bounds = [int(x) for x in cu_seqlens.tolist()] if cu_seqlens is not None else [b * T for b in range(B + 1)]
    plan = None
    if config is None:
        if chunk_size is not None and chunk_size not in ChunkConfig.choices()["chunk_size"]:
            raise ValueError(f"chunk_size: must be one of {ChunkConfig.choices()['chunk_size']}, got {chunk_size!r}")
        mode = "fwdbwd" if differentiable else "fwd"  # no backward can follow: the forward's own pick
        config, _, plan = select_launchable(K, V, T, q.dtype, mode, (len(bounds) - 1) * H, q.device, chunk_size)
    elif not isinstance(config, ChunkConfig):
        raise ValueError(f"config: expected a ChunkConfig or None, got {type(config).__name__}")
    try:
        config.validate(K, V)
    except ConfigError as e:
        raise ValueError(f"config: {e}") from None
    if scale is None:
        scale = K ** -0.5
    scale = float(scale)
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q.float()).to(q.dtype), l2norm(k.float()).to(k.dtype)

    tables = _chunk_tables(tuple(bounds), config.chunk_size, q.device)
    if plan is None:  # a named config: refused here, before any launch, if it must not run
        plan = launch_plan(config, K, V, H, tables, q.device, save=differentiable)
    qf, kf, vf = (x.reshape(B * T, H, x.shape[-1]).contiguous() for x in (q, k, v))
    bf = beta.reshape(B * T, H).contiguous()
    h0 = None if initial_state is None else initial_state.contiguous()

    if differentiable:
        o, ht = ChunkDeltaRuleFunction.apply(qf, kf, vf, bf, h0, scale, tables, config, output_final_state, plan)
    else:
        o, ht, *_ = _forward(qf, kf, vf, bf, scale, h0, tables, config, output_final_state, save=False,
                             plan=plan)
    return o.reshape(B, T, H, V), ht
