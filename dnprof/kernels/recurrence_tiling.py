"""Launch tiling of the two serial kernels (``BV``, warps, stages, state slabs), and the ``rec="auto"`` rule.

The forward state recurrence and the backward's reverse recurrence run one program per
(sequence, head, ``BV`` block of V); each walks every chunk of its sequence. Their tiling is
independent of the chunk-parallel kernels': ``BV`` sets how many programs share the GPU
(``n_seqs * H * V / BV``) and, with the head dim, whether the loop's tiles fit shared memory at
two or more pipelining stages. The ``auto`` rule encodes what ``benchmarks/recurrence_sweep.py``
measured on an H200 (bf16, C = 64, ``results/nvidia-h200/runs/lease3-call1-sweep.jsonl``):

- with at least one program per SM at ``BV = 64``, ``BV = 64``: the forward at 4 warps (2 stages
  when it stores states, 3 when it also computes the output), the reverse at 8 warps, 3 stages
  (D = 128, T = 4096: 0.38 against 0.48 ms at the variant's 4 warps, 2 stages);
- with fewer programs than three quarters of the SMs (long sequences, small batches), ``BV = 32`` at
  4 warps, 3 stages (D = 128, T = 16384, 64 programs at ``BV = 64``: forward 0.30 against 0.53 ms,
  reverse 0.42 against 0.81 ms). From three quarters up, ``BV = 64`` (fourteenth lease,
  ``runs/lease14/c1-sweep-waves.jsonl``, T = 8192, 128 programs on 132 SMs: D = 128 reverse 0.260
  against 0.368 ms and forward 0.211 against 0.271; D = 256 forward storing states 0.352 against
  0.386; D = 64 0.253 against 0.267 and 0.209 against 0.219), and a forward that stores states with
  its output apart takes 3 stages where the programs fit one wave (D = 128: 0.211 against 0.275 ms at
  2 stages; with two programs per SM, T = 4096, the stages tied, 0.226 against 0.224);
- at padded head dims above 128, where the reverse recurrence (and the forward with the output
  fused) cannot pipeline at ``BV = 64``, ``BV = 32`` for those (D = 256, T = 4096: reverse 1.20
  against 2.25 ms);
- at C <= 32 a stage holds half the tiles, and the forward with the output fused pipelines at
  ``BV = 64`` with 8 warps and 3 stages at D = 256 (``dnprof compare``, fourth lease,
  ``results/nvidia-h200/runs/lease4/call2-explore-d256-fwd.json``: 0.965 against 1.296 ms at
  ``BV = 32`` for T = 4096, 1.686 against 1.742 ms for T = 16384); 4 warps spill there;
- the state's slab height (fifth lease, ``runs/lease5/call2-sweep-*.jsonl``): each slab of ``BK``
  rows costs the loop a tensor-core product and a wait per chunk, so at C <= 64 the reverse
  recurrence holds its state in one slab of ``Kp`` rows (D = 256, BV = 32: 0.86 against 0.95 ms
  at T = 4096; D = 128, BV = 64 at 4 warps: 0.31 against 0.39 ms at 8 warps with two slabs) and the
  forward in slabs of 128 rows (D = 256, storing states, BV = 64: 0.41 against 0.53 ms; D = 128,
  output fused: 0.26 against 0.31 ms);
- the state held transposed (sixth lease, ``runs/lease6/call1-sweep-*.jsonl``): a forward that
  computes its output and stores no states (no backward follows) holds ``h^T`` in one tile at
  ``BV = Kp / 2`` when that still gives about one program per SM (D = 256, T = 4096: 0.55 against
  0.84 ms; D = 128, T = 4096: 0.23 against the fifth lease's 0.26 ms). It lost wherever the
  programs were fewer, and wherever states are stored or the recurrence runs in reverse, so those
  keep their slabs;
- with ``tma`` loads (tenth lease, ``runs/lease10/call4-sweep-d256-tma.jsonl``), the forward that stores
  states at ``BV = 32`` holds its state in one slab at padded head dims above 128 (D = 256, T = 16384:
  0.379 against 0.431 ms in 128-row slabs; without ``tma`` one slab had been no faster);
- at padded head dims above 128 with 16-bit dot operands, that transposed forward reads each
  chunk's ``W`` and ``Q`` as one tile (``tj``; seventh lease, ``runs/lease7/call1-sweep.jsonl``:
  D = 256, T = 4096, 0.366 against 0.552 ms; at D = 128 it lost, 0.264 against 0.229 ms).

On sm_90 with Triton 3.6 these kernels fault or return wrong values at C = 64 and ``BV <= 32``
without pipelining (one stage), so there such launches require at least two stages. (At C = 128
the same kernels at ``BV = 32`` lowered to one stage verified on the GPU, and two stages do not fit
at D = 256; other architectures were not seen to fault and may still lower to one stage.) There,
too, ``wy_in_loop`` returned wrong forward outputs at ``BV <= 32`` and is refused
(:func:`check_wy_in_loop`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import triton

from dnprof.variants.chunk_config import ChunkConfig, padded_dim, parse_rec_tiling
from dnprof.variants.errors import RefusedOnDevice

#: At or below this ``BV`` a serial kernel must pipeline on sm_90 (see the module docstring).
NARROW_BV = 32


class Tiling(NamedTuple):
    """One serial kernel's launch: V tile, warps, requested stages, the fewest stages allowed, the
    height of the slabs its fp32 state is held in (``Kp // BK`` slabs, one to four), whether the
    state is held transposed (:mod:`dnprof.kernels.chunk_serial_t`, one ``[BV, Kp]`` tile), whether
    that forward joins its ``W`` and ``Q`` products (``JOIN_WQ``), and whether the kernel applies ``X``
    itself instead of reading ``W`` and ``U`` (``APPLY_X``: ``ChunkConfig.wy_in_loop``), and whether a slab-held
    loop loads its chunk tiles through tensor descriptors (``tma``: ``ChunkConfig.tma``, where the launch can)."""

    BV: int
    num_warps: int
    num_stages: int
    min_stages: int
    BK: int
    transposed: bool = False
    joint: bool = False
    apply_x: bool = False
    tma: bool = False


@functools.lru_cache(maxsize=8)
def compute_major(device_index: int | None) -> int | None:
    """The CUDA device's compute capability major (None off-GPU)."""
    if device_index is None:
        return None
    import torch

    return torch.cuda.get_device_capability(device_index)[0]


def check_pipelined(tiling: Tiling, kernel: str) -> None:
    """Refuse a tiling asked to run below its fewest stages (sm_90: it faults or returns wrong values silently)."""
    if tiling.num_stages < tiling.min_stages:
        raise RefusedOnDevice(
            f"config: the {kernel} serial kernel at BV {tiling.BV} needs at least {tiling.min_stages} pipelining "
            f"stages on sm_90 (at one stage it faults or returns wrong values with Triton 3.6); "
            f"got {tiling.num_stages}: use num_stages >= {tiling.min_stages}, rec='auto' or an explicit rec tiling"
        )


def check_wy_in_loop(tiling: Tiling, kernel: str, major: int | None) -> None:
    """Refuse ``wy_in_loop`` in a serial kernel at ``BV <= 32`` on sm_90: on an H200 with Triton 3.6 the
    D = 128 forward returned wrong outputs there (error 1.0 against float64 at every such tiling tried)
    and one launch faulted, while the same tilings verify without it (``runs/lease7/call2-wyx-diag.log``)."""
    if tiling.apply_x and major == 9 and tiling.BV <= NARROW_BV:
        raise RefusedOnDevice(
            f"config: wy_in_loop in the {kernel} serial kernel at BV {tiling.BV} returns wrong values on sm_90 "
            f"with Triton 3.6; it needs BV > {NARROW_BV} there: use an explicit rec tiling such as "
            f"rec='bv64w4s2', or wy_in_loop=False"
        )


@functools.lru_cache(maxsize=8)
def sm_count(device_index: int | None) -> int:
    """Streaming multiprocessors of a CUDA device (132 assumed off-GPU: the rule then matches an H100/H200)."""
    if device_index is None:
        return 132
    import torch

    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _tiling(bv: int, warps: int, stages: int, bk: int, chunk_size: int, major: int | None,
            transposed: bool = False, joint: bool = False) -> Tiling:
    return Tiling(bv, warps, stages, 2 if major == 9 and bv <= NARROW_BV and chunk_size <= 64 else 1, bk, transposed,
                  joint)


#: The first compute capability whose GPUs have the tensor-memory copy engine (``ChunkConfig.tma``).
TMA_MAJOR = 9


def tma_applies(cfg: ChunkConfig, major: int | None) -> bool:
    """Whether ``cfg``'s ``tma`` loads can run on a GPU of compute capability ``major`` (None: off-GPU, the
    interpreter, which has them too); elsewhere its loops load per thread."""
    return cfg.tma and (major is None or major >= TMA_MAJOR)


def recurrence_tiling(cfg: ChunkConfig, kernel: str, K: int, V: int, n_streams: int, sms: int,
                      major: int | None = None, stores_states: bool = True) -> Tiling:
    """The tiling of ``kernel`` (``"fwd"``: state recurrence, ``"bwd"``: reverse) for ``cfg.rec``, marked
    to apply ``X`` itself under ``cfg.wy_in_loop`` and to load through tensor descriptors under
    ``cfg.tma`` where its state is held in slabs (see :func:`_rec_tiling`)."""
    tiling = _rec_tiling(cfg, kernel, K, V, n_streams, sms, major, stores_states)
    if cfg.wy_in_loop:
        tiling = tiling._replace(apply_x=True)
    if tma_applies(cfg, major) and not tiling.transposed:
        tiling = tiling._replace(tma=True)
    return tiling


def _rec_tiling(cfg: ChunkConfig, kernel: str, K: int, V: int, n_streams: int, sms: int,
                major: int | None = None, stores_states: bool = True) -> Tiling:
    """The tiling of ``kernel`` (``"fwd"``: state recurrence, ``"bwd"``: reverse) for ``cfg.rec``.

    ``n_streams`` is sequences x heads; ``sms`` the device's SM count; ``major`` its compute
    capability major (None off-GPU), which decides the fewest stages a narrow tile may run at;
    ``stores_states``: whether the forward writes per-chunk states (False: a forward with the output
    fused and no backward to follow).
    """
    C = cfg.chunk_size
    if cfg.rec == "main":
        return _tiling(cfg.BV, cfg.num_warps, cfg.num_stages, cfg.BK, C, major)
    explicit = parse_rec_tiling(cfg.rec)
    if explicit is not None:
        bk = padded_dim(K) if explicit.transposed else explicit.BK or cfg.BK
        return _tiling(explicit.BV, explicit.warps, explicit.stages, bk, C, major, explicit.transposed,
                       explicit.joint)
    Kp, Vp = padded_dim(K), padded_dim(V)
    if kernel == "fwd" and cfg.fuse_output and not stores_states and C == 64 and Kp >= 128:
        joint = Kp > 128 and cfg.dot_operands == "input" and not cfg.wy_in_loop
        transposed = _transposed_forward(Kp, Vp, V, n_streams, sms, major, joint)
        if transposed is not None:
            return transposed
    programs = n_streams * triton.cdiv(V, min(64, Vp))  # at BV = 64
    wide = 4 * programs >= 3 * sms  # about one program per SM or more (fourteenth lease: 128 on 132 SMs)
    if kernel == "fwd" and cfg.fuse_output and C <= 32 and Kp > 128:
        return _tiling(min(64, Vp), 8, 3, cfg.BK, C, major)
    bk = _slab_height(kernel, Kp, C, cfg.BK)
    cannot_pipeline = Kp > 128 and (kernel == "bwd" or cfg.fuse_output)
    if not wide or cannot_pipeline:
        if kernel == "fwd" and not cfg.fuse_output and Kp > 128 and tma_applies(cfg, major):
            bk = Kp  # tensor-descriptor loads: one slab (tenth lease, see the module docstring)
        return _tiling(min(NARROW_BV, Vp), 4, 3, bk, C, major)
    if kernel == "fwd":
        one_wave = programs <= sms and Kp <= 128  # one program per SM: a third stage costs no co-resident
        return _tiling(min(64, Vp), 4, 3 if cfg.fuse_output or one_wave else 2, bk, C, major)  # (fits to Kp 128)
    return _tiling(min(64, Vp), 4 if bk == Kp else 8, 3, bk, C, major)


def _transposed_forward(Kp: int, Vp: int, V: int, n_streams: int, sms: int, major: int | None,
                        joint: bool = False) -> Tiling | None:
    """``auto``'s transposed state for a forward that computes its output and stores no states, when
    ``BV = Kp / 2`` still gives about one program per SM (at least three quarters of the SMs); else None.
    ``joint``: join the ``W`` and ``Q`` products (``tj``), which the caller asks for at head dims above 128.

    Sixth lease sweep (``runs/lease6/call1-sweep-*.jsonl``, C = 64): D = 256, T = 4096, ``tbv128w8s2``
    0.553 against 0.837 ms for the slabs ``auto`` took there (0.819 at one slab); D = 128, T = 4096, ``tbv64w4s2`` 0.230 ms
    against 0.264 ms for ``auto``'s slabs in the fifth lease. With fewer programs (T = 16384, B = 2) the
    slabs at ``BV = 32`` won (0.38 against 0.63 ms at D = 128), so they stay there.

    Seventh lease (``runs/lease7/call1-*``): the joined ``tjbv128w8s2`` took the D = 256, T = 4096 loop
    from 0.552 to 0.366 ms and the whole forward from 0.811 to 0.603 ms; at D = 128 ``tjbv64w4s2`` was
    slower than ``tbv64w4s2`` (0.264 against 0.229 ms), so only head dims above 128 join."""
    bv = min(Kp // 2, Vp)
    if 4 * n_streams * triton.cdiv(V, bv) < 3 * sms:
        return None
    return _tiling(bv, 8 if Kp > 128 else 4, 2, Kp, 64, major, transposed=True, joint=joint)


def _slab_height(kernel: str, Kp: int, chunk_size: int, variant_bk: int) -> int:
    """``auto``'s state slab height at C <= 64: one slab for the reverse recurrence, slabs of 128 rows
    for the forward (fewer, taller slabs mean fewer tensor-core waits per chunk; lease 5 sweep)."""
    if chunk_size > 64 or Kp < 128:
        return variant_bk
    return Kp if kernel == "bwd" else 128
