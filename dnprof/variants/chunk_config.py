"""``ChunkConfig``: one variant of the chunkwise DeltaNet kernels, as a small frozen, hashable value.

A variant fixes the chunk size, the tile sizes over the key (``BK``) and value (``BV``) head dims,
the launch parameters, and the fusion/storage choices the kernels implement:

- ``state_dtype``: dtype of the per-chunk states ``h`` stored for the output kernel and the backward
  (``fp32`` exact, ``bf16`` half the memory). The running state is always fp32 in registers.
- ``fuse_wy``: compute ``A``, ``(I + A)^-1``, ``W`` and ``U`` in one launch (True) or split the
  inverse and the ``W``/``U`` products into two launches (False).
- ``wy_in_loop``: form neither ``W`` nor ``U``: the WY launch computes ``X = (I + A)^-1`` alone (fp32)
  and the forward state loop applies it, ``Vn = X diag(beta) (V - K h)``, from the key tile it loads
  anyway (name ``-wyx``; ``fuse_wy`` then has no meaning and stays True). The backward's reverse
  recurrence applies ``X`` too, so ``W`` is never formed.
- ``fuse_output``: compute the output inside the sequential state kernel (True; a forward without a
  backward then stores no states at all) or in a separate chunk-parallel kernel (False).
- ``output_chunk``: with the output apart, a forward that no backward follows stores the state only
  every ``output_chunk`` tokens (a multiple of the chunk size; 0: every chunk) and its output kernel
  works on chunks of that many tokens: ``O = Q h + tril(Q K^T) Vn`` holds over any span of chunks,
  because ``Vn`` already carries the delta correction. That halves (at twice the chunk size) the
  states written and read again. A backward needs every chunk's state, so with one it has no effect
  (name ``-os<output_chunk>``, e.g. ``-os128``).
- ``output_vloop``: with the output apart, one output program per chunk forms ``tril(Q K^T)`` once and
  walks the chunk's ``V / BV`` blocks, where otherwise each block's program forms it again (name
  ``-osv``, ``-os128v``).
- ``output_tiling``: the separate output kernel's own ``BV`` and warps, ``main`` (the variant's) or
  like ``bv256w8`` (name part ``-obv256w8``). Its ``Q h`` and ``tril(Q K^T) Vn`` products are only as
  wide as its V tile, so at large head dims a wider tile than the WY launch wants may pay; the
  tuner's space holds ``main`` only until a GPU run has measured the others.
- ``dot_operands``: operands of the tensor-core products outside the WY transform. ``fp32``: computed
  operands (states, Vn, P, ...) stay fp32 and multiply as tf32; ``input``: they are rounded to the
  input's 16-bit dtype first (twice the tensor-core rate, half the shared memory, a little more
  rounding), and the intermediates ``W``, ``U``, ``Vn`` and ``dVn`` are stored
  in that dtype too (half the bytes). fp32 inputs always multiply in full fp32. The WY inverse
  always multiplies in fp32/tf32.
- ``rec``: the launch tiling of the two serial kernels (the forward state recurrence and the
  backward's reverse recurrence), whose programs walk whole sequences. ``main``: the variant's own
  ``BV``, warps and stages. ``auto``: chosen per kernel at launch from the program count and the
  head dim (:func:`dnprof.kernels.recurrence_tiling.recurrence_tiling`): a narrower ``BV`` where
  ``BV = 64`` leaves SMs idle or cannot pipeline. ``bv<BV>w<warps>s<stages>`` (e.g. ``bv32w4s3``):
  that tiling for both, with the state held in slabs of the variant's ``BK`` rows; a ``bk<BK>``
  prefix (``bk256bv32w4s2``) sets the slab height (the padded key head dim: one slab), and a ``t``
  prefix (``tbv64w8s2``) holds the state transposed, ``h^T [BV, K]`` in one tile
  (:mod:`dnprof.kernels.chunk_serial_t`); ``tj`` (``tjbv128w8s2``) also joins the fused forward's
  ``W`` and ``Q`` products, and needs 16-bit dot operands (``-m16``: ``W`` then has the input's dtype)
  and ``W`` (not with ``wy_in_loop``).
- ``tma``: the slab-held serial loops (the forward state recurrence and the backward's reverse
  recurrence) load each chunk's tiles through Hopper's tensor-memory copy engine, from a descriptor
  per sequence and head, instead of per-thread masked loads: far fewer instructions in loops that are
  bound by their issue rate (name ``-tma``). It applies where it can: on compute capability 9.0 and
  later (and in the interpreter), with 16-byte aligned tensors and rows; elsewhere those loops load as
  without it, which computes the same values. Not with ``wy_in_loop`` or a transposed ``rec`` tiling;
  under ``rec="auto"`` a loop that ``auto`` holds transposed loads as without it.

The tuner builds its search space from :meth:`ChunkConfig.choices` and checks each candidate with
:meth:`ChunkConfig.validate`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from dnprof.variants.errors import ConfigError

#: Largest ``chunk_size * tile`` product a kernel may hold: it bounds the shared memory of one
#: ``[chunk, tile]`` fp32 operand (64 KB) so every program stays well under Hopper's ~227 KB.
MAX_CHUNK_TILE = 128 * 128


#: An explicit launch tiling of the serial kernels: ``bv32w4s3``, ``bk256bv32w4s3`` with the slab height,
#: ``tbv64w8s2`` with the state transposed, or ``tjbv128w8s2`` transposed with the W and Q products joined.
_REC_TILING = re.compile(r"(?:(tj?)|bk(\d+))?bv(\d+)w(\d+)s(\d+)")
#: An explicit tiling of the separate output kernel: ``bv256w8``.
_OUT_TILING = re.compile(r"bv(\d+)w(\d+)")


class RecTiling(NamedTuple):
    """An explicit ``rec`` tiling: V tile, warps, stages, the state's slab height (0: the variant's BK),
    whether the state is held transposed (then in one tile), and whether the transposed forward joins its
    ``W`` and ``Q`` products (:mod:`dnprof.kernels.chunk_serial_t`)."""

    BV: int
    warps: int
    stages: int
    BK: int = 0
    transposed: bool = False
    joint: bool = False


def parse_rec_tiling(rec: str) -> RecTiling | None:
    """The :class:`RecTiling` of an explicit ``rec`` value like ``bv32w4s3``; None for ``main``/``auto``."""
    m = _REC_TILING.fullmatch(rec) if isinstance(rec, str) else None
    if m is None:
        return None
    prefix = m.group(1) or ""
    return RecTiling(int(m.group(3)), int(m.group(4)), int(m.group(5)), int(m.group(2) or 0), prefix.startswith("t"),
                     prefix == "tj")


def _is_pow2(x: int) -> bool:
    return isinstance(x, int) and x > 0 and (x & (x - 1)) == 0


def is_16bit(dtype: Any) -> bool:
    """True for bf16/fp16 given as a name (``"bf16"``) or a torch dtype (``torch.bfloat16``)."""
    return dtype is not None and str(dtype).replace("torch.", "") in ("bf16", "fp16", "bfloat16", "float16")


def padded_dim(d: int) -> int:
    """The head dim the kernels work with: the next power of two, at least 16 (``tl.dot``'s minimum)."""
    p = 16
    while p < d:
        p *= 2
    return p


@dataclass(frozen=True)
class ChunkConfig:
    """One chunkwise-kernel variant (see the module docstring for the meaning of each field)."""

    chunk_size: int = 64
    BK: int = 64
    BV: int = 64
    num_warps: int = 4
    num_stages: int = 2
    state_dtype: str = "fp32"
    fuse_wy: bool = True
    fuse_output: bool = False
    dot_operands: str = "fp32"
    rec: str = "main"
    wy_in_loop: bool = False
    output_chunk: int = 0
    output_vloop: bool = False
    output_tiling: str = "main"
    tma: bool = False

    #: Fields of the separate output kernel: with ``fuse_output`` they have no meaning and keep their
    #: defaults, so the tuner's space does not enumerate them there (``dnprof.variants.space``).
    SEPARATE_OUTPUT_FIELDS = ("output_chunk", "output_vloop", "output_tiling")
    #: Fields :meth:`validate` checks only against :meth:`choices`: its verdict on a combination of the
    #: choices does not depend on them (the tuner's space reuses it across them).
    VALIDATE_IGNORES = ("num_warps", "num_stages", "state_dtype")

    # ----------------------------------------------------------------------------------- space
    @classmethod
    def choices(cls) -> dict[str, tuple]:
        """Allowed values per field: the raw space a tuner enumerates (then filters with ``validate``)."""
        return {
            "chunk_size": (16, 32, 64, 128),
            "BK": (16, 32, 64, 128, 256),
            "BV": (16, 32, 64, 128, 256),
            "num_warps": (1, 2, 4, 8),
            "num_stages": (1, 2, 3, 4),
            "state_dtype": ("fp32", "bf16"),
            "fuse_wy": (True, False),
            "fuse_output": (False, True),
            "dot_operands": ("fp32", "input"),
            "rec": ("main", "auto"),
            "wy_in_loop": (False, True),
            "output_chunk": (0, 128),
            "output_vloop": (False, True),
            "output_tiling": ("main",),
            "tma": (False, True),
        }

    @classmethod
    def default_for(cls, K: int, V: int, chunk_size: int = 64, dtype: Any = None,
                    mode: str | None = None) -> "ChunkConfig":
        """A good untuned variant for head dims ``K``, ``V``, input ``dtype`` and ``mode`` (fused WY transform).

        For 16-bit inputs (``bf16``/``fp16`` or the torch dtypes) it multiplies and stores the computed
        intermediates and per-chunk states in 16 bits, the fastest family, whose error stayed below
        fla-core's on an H200 (see docs/performance.md); for fp32 inputs, or no ``dtype``, everything
        stays fp32. For a 16-bit forward with no backward (``mode="fwd"``) at head dims up to 128 the
        output is computed inside the state loop (``fuse_output``), so no per-chunk state is stored: on
        the H200 that forward was 1.04-1.28x faster at D = 64 and 128, and 0.77x at D = 256, where the
        serial loop carries four key slabs (``results/nvidia-h200/``). Its ``state_dtype`` is fp32, the
        one kept of the variants that differ only there (nothing is stored). With a backward too, a
        16-bit variant at C = 64 and head dims up to 128 also fuses the output (it then stores bf16
        states for the backward): fwd+bwd 1.00-1.05x the unfused variant at D = 64 and 128 on the
        H200. 16-bit variants at chunk
        size 64 and head dims of 128 and more tile their serial kernels automatically
        (``rec="auto"``), where the H200 measured it (``benchmarks/recurrence_sweep.py``, ``dnprof
        compare``); so does the 16-bit forward with no backward at padded head dim 64, whose loop
        ``auto`` tiles at three stages, ``BV = 32`` where the programs are fewer than the SMs (the
        H200's tenth-lease sweep at D = 64: 0.265 against 0.502 ms at T = 16384, 0.185 against 0.192 ms
        at T = 4096; docs/performance.md, change 35). Other small head dims, and D = 64 with a
        backward (its reverse recurrence was never swept there), keep the variant's own tiling. The
        16-bit forward with no backward above head dim 128 (output apart) runs its WY and output launches
        at three stages: 4-5% faster than two in every paired H200 run (D = 256, T = 4096 and 16384,
        with and without ``tma``; change 36), while fwd+bwd was 6% slower at three, so it keeps two. 16-bit variants load
        the serial loops' tiles through tensor descriptors (``tma``) wherever the launch can: on the H200
        it was never slower and took 3-8% off fwd+bwd and up to 7% off the forward at D = 64-256
        (docs/performance.md, change 31).
        """
        Kp, Vp = padded_dim(K), padded_dim(V)
        cap = max(16, MAX_CHUNK_TILE // chunk_size)
        BK = min(64, Kp, cap)
        BK = max(BK, Kp // 4)
        # The chunk-parallel kernels' V tile; C = 128 at K > 128 takes 32 to fit shared memory.
        BV = min(64 if (Kp <= 128 or chunk_size <= 64) else 32, Vp, cap)
        num_warps = 8 if chunk_size >= 128 else 4
        sixteen = is_16bit(dtype)
        small = max(Kp, Vp) <= 128
        fused_forward = sixteen and mode == "fwd" and small
        fused = fused_forward or (sixteen and small and chunk_size == 64)
        auto_swept = max(Kp, Vp) >= 128 or (fused_forward and max(Kp, Vp) == 64)  # where the H200 measured auto
        # the separate-output forward above 128: its WY and output launches at three stages (change 36)
        stages = 3 if sixteen and mode == "fwd" and not small and chunk_size == 64 else 2
        cfg = cls(chunk_size=chunk_size, BK=BK, BV=BV, num_warps=num_warps, num_stages=stages,
                  state_dtype="bf16" if sixteen and not fused_forward else "fp32",
                  fuse_output=fused, dot_operands="input" if sixteen else "fp32",
                  rec="auto" if sixteen and chunk_size == 64 and auto_swept else "main", tma=sixteen)
        cfg.validate(K, V)
        return cfg

    # ----------------------------------------------------------------------------------- checks
    def validate(self, K: int | None = None, V: int | None = None) -> "ChunkConfig":
        """Raise ConfigError for impossible values or combinations; return self when it can run.

        Without ``K``/``V`` only the values themselves are checked; with them, also the tiles
        against the padded head dims.
        """
        space = self.choices()
        for name, allowed in space.items():  # every field has its choices (the tuner checks this space per candidate)
            value = getattr(self, name)
            if name in ("fuse_wy", "fuse_output", "wy_in_loop", "output_vloop", "tma"):
                if not isinstance(value, bool):
                    raise ConfigError(f"{name} must be True or False, got {value!r}")
                continue
            if name == "rec":
                self._validate_rec(allowed)
                continue
            if name in ("output_chunk", "output_tiling"):  # the tuner's choices are a subset: checked below
                continue
            if name in ("BK", "BV") and not _is_pow2(value):
                raise ConfigError(f"{name} must be a power of two, got {value!r}")
            if value not in allowed or isinstance(value, bool):
                raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")
        if self.fuse_output:
            moot = [n for n in self.SEPARATE_OUTPUT_FIELDS if getattr(self, n) != _DEFAULTS[n]]
            if moot:
                raise ConfigError(f"{', '.join(moot)} set the separate output kernel, and fuse_output=True computes the "
                                  f"output in the state loop: use fuse_output=False or leave them at their defaults")
        if self.output_chunk != 0:
            self._validate_output_chunk()
        self._validate_output_tiling(V)
        if self.tma and self.wy_in_loop:
            raise ConfigError("tma loads are written for the serial loops that read W and U, and wy_in_loop forms "
                              "neither: use tma=False or wy_in_loop=False")
        if self.wy_in_loop and not self.fuse_wy:
            raise ConfigError("wy_in_loop forms no W or U, so fuse_wy (where they are formed) has no meaning: "
                              "leave it True")
        for name in ("BK", "BV"):
            if self.chunk_size * getattr(self, name) > MAX_CHUNK_TILE:
                raise ConfigError(
                    f"chunk_size {self.chunk_size} x {name} {getattr(self, name)} exceeds {MAX_CHUNK_TILE} elements "
                    f"per tile (too much shared memory); use {name} <= {max(16, MAX_CHUNK_TILE // self.chunk_size)}"
                )
        tiling = parse_rec_tiling(self.rec)
        if self.tma and tiling is not None and tiling.transposed:
            raise ConfigError(f"rec {self.rec}: tma loads are written for the slab-held serial loops, not the "
                              f"transposed one: use a slab tiling (main, auto or like 'bv32w4s3') or tma=False")
        if K is not None:
            Kp = padded_dim(K)
            if self.BK > Kp:
                raise ConfigError(f"BK {self.BK} is larger than the padded key head dim {Kp} (K = {K})")
            if Kp > 4 * self.BK:
                raise ConfigError(
                    f"BK {self.BK} is too small for K = {K}: the state kernels hold the state in at most 4 slabs "
                    f"of BK rows, so BK must be >= {Kp // 4}"
                )
            if tiling is not None and tiling.BK and not tiling.BK <= Kp <= 4 * tiling.BK:
                raise ConfigError(f"rec {self.rec}: the state's slab height BK {tiling.BK} must be between a quarter of "
                                  f"the padded key head dim and all of it ({Kp // 4}..{Kp}; K = {K})")
            if tiling is not None and tiling.transposed and self.chunk_size * Kp > MAX_CHUNK_TILE:
                raise ConfigError(f"rec {self.rec}: a transposed state takes whole [chunk, K] tiles, and chunk_size "
                                  f"{self.chunk_size} x the padded key head dim {Kp} exceeds {MAX_CHUNK_TILE} elements")
        if V is not None:
            Vp = padded_dim(V)
            if self.BV > Vp:
                raise ConfigError(f"BV {self.BV} is larger than the padded value head dim {Vp} (V = {V})")
            if tiling is not None and tiling.BV > Vp:
                raise ConfigError(f"rec {self.rec}: BV {tiling.BV} is larger than the padded value head dim {Vp} (V = {V})")
        return self

    def output_launch(self, chunk: int) -> tuple[int, int]:
        """The separate output kernel's ``(BV, warps)`` on chunks of ``chunk`` tokens: ``output_tiling``'s, or
        the variant's ``BV`` and warps, the warps scaled with a taller chunk (at most 8: at D = 256,
        128-token chunks spill at 4)."""
        tiling = _OUT_TILING.fullmatch(self.output_tiling)
        if tiling is not None:
            return int(tiling.group(1)), int(tiling.group(2))
        return self.BV, max(self.num_warps, min(8, self.num_warps * chunk // self.chunk_size))

    def _validate_output_tiling(self, V: int | None) -> None:
        """``output_tiling`` is ``main`` or ``bv<BV>w<warps>`` within the choices and the tile bound."""
        if self.output_tiling == "main":
            return
        m = _OUT_TILING.fullmatch(self.output_tiling) if isinstance(self.output_tiling, str) else None
        if m is None:
            raise ConfigError(f"output_tiling must be 'main' or like 'bv256w8', got {self.output_tiling!r}")
        bv, warps = int(m.group(1)), int(m.group(2))
        space = self.choices()
        if bv not in space["BV"] or warps not in space["num_warps"]:
            raise ConfigError(f"output_tiling {self.output_tiling}: BV must be one of {space['BV']}, warps one of "
                              f"{space['num_warps']}")
        chunk = max(self.chunk_size, self.output_chunk)
        if chunk * bv > MAX_CHUNK_TILE:
            raise ConfigError(f"output_tiling {self.output_tiling}: the output chunk {chunk} x BV {bv} exceeds "
                              f"{MAX_CHUNK_TILE} elements")
        if V is not None and bv > padded_dim(V):
            raise ConfigError(f"output_tiling {self.output_tiling}: BV {bv} is larger than the padded value head dim "
                              f"{padded_dim(V)} (V = {V})")

    def _validate_output_chunk(self) -> None:
        """``output_chunk`` (when set) is a larger multiple of the chunk size, for the separate output kernel
        of a slab-held state (the transposed serial kernel stores every chunk's state), within the tile bound."""
        oc, c = self.output_chunk, self.chunk_size
        if not _is_pow2(oc) or isinstance(oc, bool):
            raise ConfigError(f"output_chunk must be 0 or a power of two, got {oc!r}")
        if oc <= c or oc % c:
            raise ConfigError(f"output_chunk must be 0 or a larger multiple of chunk_size {c}, got {oc}")
        for name in ("BK", "BV"):
            if oc * getattr(self, name) > MAX_CHUNK_TILE:
                raise ConfigError(f"output_chunk {oc} x {name} {getattr(self, name)} exceeds {MAX_CHUNK_TILE} elements "
                                  f"per tile; use {name} <= {MAX_CHUNK_TILE // oc}")
        tiling = parse_rec_tiling(self.rec)
        if tiling is not None and tiling.transposed:
            raise ConfigError(f"rec {self.rec}: a transposed state loop stores every chunk's state, so output_chunk "
                              f"{oc} needs a slab tiling (main, auto or like 'bv32w4s3')")

    def _validate_rec(self, named: tuple[str, ...]) -> None:
        """``rec`` is ``main``, ``auto`` or a well-formed explicit tiling within the field choices."""
        if self.rec in named:
            return
        tiling = parse_rec_tiling(self.rec)
        space = self.choices()
        if tiling is None:
            raise ConfigError(f"rec must be one of {named} or like 'bv32w4s3', got {self.rec!r}")
        bv, warps, stages, bk, _, joint = tiling
        if joint and self.dot_operands != "input":
            raise ConfigError(f"rec {self.rec}: joining the W and Q products reads W and Q as one tile of one dtype, "
                              f"so it needs 16-bit dot operands (dot_operands='input', the '-m16' variants)")
        if joint and self.wy_in_loop:
            raise ConfigError(f"rec {self.rec}: joining the W and Q products needs W, which wy_in_loop never forms")
        if (bv not in space["BV"] or warps not in space["num_warps"] or stages not in space["num_stages"]
                or (bk and bk not in space["BK"])):
            raise ConfigError(f"rec {self.rec}: BV must be one of {space['BV']}, warps one of {space['num_warps']}, "
                              f"stages one of {space['num_stages']}, BK (when given) one of {space['BK']}")
        for name, tile in (("BV", bv), ("BK", bk)):
            if self.chunk_size * tile > MAX_CHUNK_TILE:
                raise ConfigError(f"rec {self.rec}: chunk_size {self.chunk_size} x {name} {tile} exceeds "
                                  f"{MAX_CHUNK_TILE} elements")

    # ----------------------------------------------------------------------------------- names
    @property
    def name(self) -> str:
        """Short printable name, e.g. ``c64-bk64-bv64-w4-s2-hfp32-wyf-os`` (``-m16`` appended for 16-bit
        dot operands, ``-r<rec>`` for a serial-kernel tiling other than ``main``, ``-tma`` for tensor-descriptor
        loads); ``from_name`` inverts it."""
        return (
            f"c{self.chunk_size}-bk{self.BK}-bv{self.BV}-w{self.num_warps}-s{self.num_stages}"
            f"-h{self.state_dtype}-wy{'x' if self.wy_in_loop else 'f' if self.fuse_wy else 's'}"
            f"-o{'f' if self.fuse_output else 's'}{self.output_chunk or ''}{'v' if self.output_vloop else ''}"
            + ("" if self.output_tiling == "main" else f"-o{self.output_tiling}")
            + ("-m16" if self.dot_operands == "input" else "")
            + ("" if self.rec == "main" else f"-r{self.rec}")
            + ("-tma" if self.tma else "")
        )

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_name(cls, name: str) -> "ChunkConfig":
        """Parse a name made by :attr:`name`; ConfigError on anything else."""
        parts = name.strip().split("-")
        dot_operands, rec, out_tiling, tma = "fp32", "main", "main", False
        if len(parts) > 8 and parts[-1] == "tma":
            parts, tma = parts[:-1], True
        if len(parts) > 8 and parts[-1].startswith("r") and parts[-1] != "r":
            parts, rec = parts[:-1], parts[-1][1:]
        if len(parts) > 8 and parts[-1] == "m16":
            parts, dot_operands = parts[:-1], "input"
        if len(parts) == 9 and _OUT_TILING.fullmatch(parts[-1][1:]) and parts[-1].startswith("o"):
            parts, out_tiling = parts[:-1], parts[-1][1:]
        prefixes = ("c", "bk", "bv", "w", "s", "h", "wy", "o")
        if len(parts) != len(prefixes) or not all(p.startswith(x) for p, x in zip(parts, prefixes)):
            raise ConfigError(
                f"not a chunk variant name: {name!r} (expected like 'c64-bk64-bv64-w4-s2-hfp32-wyf-os')"
            )
        vals = [p[len(x):] for p, x in zip(parts, prefixes)]
        try:
            ints = [int(x) for x in vals[:5]]
        except ValueError:
            raise ConfigError(f"not a chunk variant name: {name!r}") from None
        out = re.fullmatch(r"([fs])(\d*)(v?)", vals[7])
        if vals[6] not in ("f", "s", "x") or out is None:
            raise ConfigError(f"not a chunk variant name: {name!r} (wy must end in 'f', 's' or 'x'; o in 'f' or "
                              f"'s', 's' optionally followed by the output chunk and 'v', like 's128' or 'sv')")
        cfg = cls(*ints, state_dtype=vals[5], fuse_wy=vals[6] != "s", fuse_output=out.group(1) == "f",
                  dot_operands=dot_operands, rec=rec, wy_in_loop=vals[6] == "x",
                  output_chunk=int(out.group(2) or 0), output_vloop=out.group(3) == "v", output_tiling=out_tiling,
                  tma=tma)
        return cfg.validate()

    # ----------------------------------------------------------------------------------- dicts
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ChunkConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError, missing keys take defaults."""
        if not isinstance(d, dict):
            raise ConfigError(f"expected a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown ChunkConfig keys {unknown}; known keys are {sorted(known)}")
        return cls(**d).validate()


#: Each field's default (the separate output kernel's fields must keep theirs where the output is fused).
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ChunkConfig)}
