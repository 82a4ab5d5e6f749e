"""Variant parameters of the fused recurrent DeltaNet kernels (forward and backward).

One program handles one (sequence, head, V block) and keeps the K x BV slice of the fp32 state in
registers for all T steps; the backward also keeps its gradient. The knobs are therefore the V
block width and the warps that share the tile, separately for the forward (``BV``,
``num_warps``) and the backward (``bwd_BV``, ``bwd_num_warps``: what the forward saves does not
depend on its tiling, and on an H100 the two kernels are fastest at different tilings), how often
the forward saves an exact fp32 copy of the state for the backward (``checkpoint``, in tokens),
and how the backward sums dq, dk and dbeta over V blocks (``atomic``: fp32 atomics into one buffer
instead of one fp32 partial per V block, trading bitwise reproducibility for memory: at D = 256,
BV = 8 the partials alone take 16 GB at 32K tokens x 8 heads). Forward fields affect only the
forward and backward fields only the backward, so a tuner can search the two halves apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from dnprof.variants.errors import ConfigError

#: Largest head dim (K or V) the kernels accept: K is held whole in one program.
MAX_HEAD_DIM = 256
#: Most fp32 values of one K x BV state tile per thread. The backward holds two tiles (state and
#: its gradient) plus copies of q and k and temporaries: ptxas for sm_90 fits 32 per tile in about
#: 170-215 registers without spilling, while 64 spills hundreds of bytes.
MAX_TILE_REGS_PER_THREAD = 32
#: Smallest V block, used also when V itself is smaller (masked lanes).
MIN_BV = 8


def _pow2(n: int) -> int:
    """The smallest power of two >= n (>= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


def _is_pow2(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


@dataclass(frozen=True)
class RecurrentConfig:
    """One variant of the fused recurrent kernels: V blocks and warps of fwd and bwd, checkpoints, reduction."""

    BV: int = 16
    num_warps: int = 1
    bwd_BV: int = 16
    bwd_num_warps: int = 1
    checkpoint: int = 256
    atomic: bool = True

    def __post_init__(self) -> None:
        """Reject values that no shape could run (wrong types, non powers of two, out of range)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "atomic":
                if not isinstance(value, bool):
                    raise ConfigError(f"RecurrentConfig.atomic must be a bool, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"RecurrentConfig.{f.name} must be an int, got {value!r}")
        for bv_name in ("BV", "bwd_BV"):
            bv = getattr(self, bv_name)
            if not _is_pow2(bv) or not MIN_BV <= bv <= MAX_HEAD_DIM:
                raise ConfigError(f"RecurrentConfig.{bv_name} must be a power of two in [{MIN_BV}, {MAX_HEAD_DIM}], got {bv}")
        for w_name in ("num_warps", "bwd_num_warps"):
            w = getattr(self, w_name)
            if not _is_pow2(w) or w > 32:
                raise ConfigError(f"RecurrentConfig.{w_name} must be a power of two in [1, 32], got {w}")
        if self.checkpoint < 1:
            raise ConfigError(f"RecurrentConfig.checkpoint must be >= 1 token, got {self.checkpoint}")

    @property
    def name(self) -> str:
        """A short printable id, unique per configuration (used as the variant name in results)."""
        return (f"rec-bv{self.BV}-w{self.num_warps}-bbv{self.bwd_BV}-bw{self.bwd_num_warps}-ck{self.checkpoint}"
                + ("-atomic" if self.atomic else "-partial"))

    def __str__(self) -> str:
        return self.name

    def to_dict(self) -> dict[str, int | bool]:
        """The fields as a plain dict (JSON-ready), the inverse of ``from_dict``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RecurrentConfig":
        """Build from ``to_dict()`` output; unknown keys raise ConfigError naming them."""
        if not isinstance(data, dict):
            raise ConfigError(f"RecurrentConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"RecurrentConfig: unknown keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)

    @classmethod
    def choices(cls) -> dict[str, tuple[int | bool, ...]]:
        """The values a tuner may try for each field (``validate`` then prunes per shape)."""
        return {
            "BV": (8, 16, 32, 64, 128),
            "num_warps": (1, 2, 4, 8),
            "bwd_BV": (8, 16, 32, 64, 128),
            "bwd_num_warps": (1, 2, 4, 8),
            "checkpoint": (64, 256, 1024),
            "atomic": (False, True),
        }

    def validate(self, K: int, V: int) -> None:
        """Raise ConfigError when this configuration cannot (or pointlessly would) run at head dims K, V."""
        for label, d in (("K", K), ("V", V)):
            if not 1 <= d <= MAX_HEAD_DIM:
                raise ConfigError(f"{self.name}: head dim {label} = {d} is outside [1, {MAX_HEAD_DIM}]")
        bk = _pow2(K)
        for label, bv, warps in (("", self.BV, self.num_warps), ("bwd_", self.bwd_BV, self.bwd_num_warps)):
            if bv > max(_pow2(V), MIN_BV):
                raise ConfigError(f"{self.name}: {label}BV = {bv} is wider than the padded value dim {max(_pow2(V), MIN_BV)} (V = {V})")
            threads = 32 * warps
            tile = bk * bv
            if tile > MAX_TILE_REGS_PER_THREAD * threads:
                raise ConfigError(
                    f"{self.name}: the {bk} x {bv} fp32 state tile needs {tile // threads} registers per thread "
                    f"(> {MAX_TILE_REGS_PER_THREAD}); use a smaller {label}BV or more {label}num_warps"
                )
            if tile < threads and warps > 1:
                raise ConfigError(f"{self.name}: the {bk} x {bv} state tile has fewer elements than the {threads} threads of {warps} warps")

    @classmethod
    def default_for(cls, K: int, V: int) -> "RecurrentConfig":
        """The H100-measured best shape of tiling for K: 32 state values per thread, few warps.

        Forward: BV = 16 with K / 64 warps (D = 256: 6.5 ms vs 6.9-10.5 for other tilings).
        Backward: K / 128 warps and BV = 16 at K <= 64, 8 above (D = 256: 35 ms vs 50-92;
        D = 64: 9 ms vs 11-22), atomics for the V-block sums (a fraction of the memory).
        """
        bk = _pow2(K)
        pad_v = max(_pow2(V), MIN_BV)
        bv = min(pad_v, 16)
        warps = max(1, min(8, (bk * bv) // (32 * MAX_TILE_REGS_PER_THREAD)))
        bwd_warps = max(1, min(8, bk // 128))
        bwd_bv = min(pad_v, max(MIN_BV, min(16, (32 * MAX_TILE_REGS_PER_THREAD * bwd_warps) // bk)))
        cfg = cls(BV=bv, num_warps=warps, bwd_BV=bwd_bv, bwd_num_warps=bwd_warps, checkpoint=256, atomic=True)
        cfg.validate(K, V)
        return cfg
