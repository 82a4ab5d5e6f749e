"""The variant space: every combination of the kernels' variant parameters, pruned before compiling.

Generation takes the product of ``ChunkConfig.choices()`` (family ``chunk``) and of
``RecurrentConfig.choices()`` (family ``recurrent``) for one head dim (K, V), dtype, mode and device.
Pruning rules, applied in this order (the first that applies names the reason):

``invalid``
    ``config.validate(K, V)`` raised ConfigError: the kernels cannot run it (tile wider than the
    padded head dim, too many state slabs, a chunk x tile product over the kernels' cap, ...).
``shared-memory``
    The estimated shared memory of the largest launch exceeds the device's opt-in maximum per block
    (see :func:`chunk_smem_bytes`). Triton would refuse it at compile time ("out of resource").
``registers``
    The estimated live fp32 values per thread exceed 255 registers (the compiler would spill to local
    memory, which for a state held across the whole sequence is always slower than a variant that
    fits), or the block's registers exceed the SM's register file (see :func:`chunk_regs_per_thread`).
``known-fault``
    Seen to fail on this architecture for reasons outside dnprof's code: on sm_90 (Triton 3.6) the
    serial kernels at chunk size 64, BV <= 32 and no pipelining (one stage) make illegal memory
    accesses or return wrong values, at 4 and 8 warps, in the forward and in the backward; the same
    code at two or more stages verifies (``benchmarks/recurrence_sweep.py``). Cut: chunk size <= 64
    with the main tiling or an explicit ``rec`` tiling at BV <= 32 and one stage (the main tiling
    also sets the chunk-parallel kernels', never measured unpipelined at that width). On sm_90
    such serial launches also refuse to be lowered to one stage when shared memory is short
    (:mod:`dnprof.kernels.recurrence_tiling`). Also cut: chunk size 128 at one stage, whose WY
    transform faulted once and returned wrong values once on an H200 (8 warps, D = 256), while the
    same variant at two stages verified (``dnprof.kernels.chunk.launch_plan``). And the variants of
    :func:`dnprof.variants.known_faults.sm90_wrong_values`: chunk size 64 at 8 warps with the keys in
    one tile, and (with a backward) BK below a head dim of 64, which returned wrong values on an H200.
``refused``
    Only when the space is generated for a shape (``n_streams``, the (sequence, head) pairs of the
    tuning batch): the launch guard of :func:`dnprof.kernels.chunk.plan_launch` would refuse the
    variant on this device at that shape, because its ``auto`` serial tiling lands where a kernel
    form is known to fault or return wrong values (e.g. ``wy_in_loop`` at BV <= 32 on sm_90, which
    ``auto`` picks at D = 256 with 16 streams). Cutting it here keeps it from taking a place in the
    budget only to be reported as refused.
``duplicate``
    The variant computes exactly what another one does in this mode: in a forward-only run with the
    output fused into the state kernel no states are stored, so ``state_dtype`` has no effect and
    only ``fp32`` is kept; before compute capability 9.0 ``tma`` has no effect, nor (for a shape) where
    ``auto`` holds every serial loop the call launches transposed.

Flags (soft rules, the variant is *kept*; ``--list`` shows the counts):

``hopper-warps8``
    On compute capability 9.x several Triton versions crash or mis-compile kernels of this kind at
    ``num_warps=8`` (the guide). It is not pruned: every candidate is verified against float64 before
    it is timed, so a mis-compile becomes a recorded failure, and where Triton compiles it correctly
    8 warps is often the fastest choice for 128-wide chunks.

The estimators are deliberately simple and a little generous: they only cut what is certain not to
fit; anything they let through that still does not fit fails at compile time and is recorded.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import operator
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from dnprof.variants.limits import DeviceLimits
from dnprof.variants.known_faults import sm90_wrong_values

FAMILIES = ("chunk", "recurrent")
#: Registers per thread a kernel needs besides its tiles (pointers, offsets, loop counters, masks).
BASE_REGS = 32


def _dtype_bytes(dtype: str) -> int:
    return 4 if dtype == "fp32" else 2


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def padded(d: int) -> int:
    """The head dim the kernels work with: next power of two, at least 16."""
    return max(16, _pow2(d))


# ----------------------------------------------------------------------------------------- estimators
def chunk_smem_bytes(cfg: Any, K: int, V: int, dtype: str) -> int:
    """Estimated shared memory (bytes) of the largest chunk-kernel launch of ``cfg``.

    ``num_stages`` copies (software pipelining) of the streamed chunk tiles in the input dtype: q and
    k as ``C x BK`` and v as ``C x BV``; plus one ``C x C`` fp32 tile for ``A`` / ``(I + A)^-1`` and
    one ``BK x BV`` fp32 slab of the state staged as a ``tl.dot`` operand. ``C`` is the larger of the chunk
    size and ``output_chunk`` (the output kernel's own chunk).
    """
    C, BK, BV = max(cfg.chunk_size, getattr(cfg, "output_chunk", 0)), cfg.BK, cfg.BV
    stages = max(1, cfg.num_stages)
    streamed = stages * C * (2 * BK + BV) * _dtype_bytes(dtype)
    return streamed + C * C * 4 + BK * BV * 4


def chunk_regs_per_thread(cfg: Any, K: int, V: int) -> int:
    """Estimated registers per thread of the state kernel of ``cfg``.

    The running state ``K x BV`` (all key slabs, fp32), the ``C x BV`` fp32 accumulator of the chunk's
    value/output tile and the ``C x C`` fp32 ``A`` tile are live together, spread over
    ``32 * num_warps`` threads, plus :data:`BASE_REGS`.
    """
    C, BV = cfg.chunk_size, cfg.BV
    live = padded(K) * BV + C * BV + C * C
    return math.ceil(live / (32 * cfg.num_warps)) + BASE_REGS


def recurrent_regs_per_thread(cfg: Any, K: int, V: int) -> int:
    """Estimated registers per thread of the recurrent backward: state and its gradient ``K x BV`` fp32."""
    return math.ceil(2 * padded(K) * cfg.BV / (32 * cfg.num_warps)) + BASE_REGS


def recurrent_smem_bytes(cfg: Any, K: int, V: int, dtype: str) -> int:
    """Estimated shared memory of the recurrent kernels: one K x BV fp32 slab for reductions."""
    return padded(K) * cfg.BV * 4


# ----------------------------------------------------------------------------------------- space
@dataclass(frozen=True)
class Candidate:
    """One variant of one family."""

    family: str
    config: Any

    @property
    def name(self) -> str:
        return self.config.name

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-safe dict."""
        return self.config.to_dict()


@dataclass
class Pruned:
    """A variant cut before compiling, with the rule and a human reason."""

    candidate: Candidate | None
    rule: str
    detail: str
    raw: dict[str, Any] = field(default_factory=dict)
    twin: Candidate | None = None  # for a ``duplicate``: the variant it duplicates (its moot field set back)


@dataclass
class Space:
    """The generated space of one (K, V, dtype, mode, device): kept candidates, pruned ones, flags."""

    K: int
    V: int
    dtype: str
    mode: str
    limits: DeviceLimits
    families: tuple[str, ...]
    n_streams: int | None = None  # the shape's (sequence, head) pairs, when generated for one
    total: int = 0
    kept: list[Candidate] = field(default_factory=list)
    pruned: list[Pruned] = field(default_factory=list)
    flags: dict[str, list[Candidate]] = field(default_factory=dict)
    defaults: dict[str, Candidate] = field(default_factory=dict)
    #: Variants named for the search (``dnprof tune --include``): kept whatever the chosen fields, and ordered
    #: right after the default, so every strategy and budget times them.
    included: dict[str, list[Candidate]] = field(default_factory=dict)

    def reasons(self) -> dict[str, int]:
        """Pruned counts per rule."""
        return dict(Counter(p.rule for p in self.pruned))

    def examples(self) -> dict[str, str]:
        """One example detail per pruning rule."""
        out: dict[str, str] = {}
        for p in self.pruned:
            out.setdefault(p.rule, p.detail)
        return out

    def kept_twin(self, cand: Candidate) -> Candidate | None:
        """``cand`` if it was kept, else, when a ``duplicate`` rule pruned it, the kept variant it duplicates
        (following each rule's twin: tma off where it has no effect, an fp32 state for a fused forward, ...),
        else None. A default pruned as a duplicate stays the tuner's reference through its twin."""
        while cand not in self._kept_set:
            cand = self._twins.get(cand)
            if cand is None:
                return None
        return cand

    @functools.cached_property
    def _kept_set(self) -> set[Candidate]:
        return set(self.kept)

    @functools.cached_property
    def _twins(self) -> dict[Candidate, Candidate]:
        return {p.candidate: p.twin for p in self.pruned if p.twin is not None}

    def keep(self, cand: Candidate) -> None:
        """Add ``cand`` to the kept variants, with its flags, unless it is there already."""
        if cand not in self._kept_set:
            self.kept.append(cand)
            self._kept_set.add(cand)
            for flag in _flags(cand, self.limits):
                self.flags.setdefault(flag, []).append(cand)

    def kept_of(self, family: str) -> list[Candidate]:
        return [c for c in self.kept if c.family == family]

    def ordered(self, family: str, seed: int = 0) -> list[Candidate]:
        """Kept candidates of ``family`` in search-prior order.

        The default variant first, then the variants named with ``include``, then the default of every
        other chunk size (128 first), then the
        one-parameter neighbours of those anchors (each knob explored around a sound baseline; the
        default's and chunk 128's in turn, then the smaller chunks'), then the rest in a seeded
        random order.
        """
        kept = self.kept_of(family)
        anchors: list[Candidate] = []
        default = self.defaults.get(family)
        if default is not None and default in self._kept_set:
            anchors.append(default)
        if family == "chunk":
            cls = _config_classes(family)
            for c in sorted({k.config.chunk_size for k in kept}, key=lambda c: (c != 128, -c)):
                try:
                    cand = self.kept_twin(Candidate(family, cls.default_for(self.K, self.V, chunk_size=c,
                                                                            dtype=self.dtype, mode=self.mode)))
                except ValueError:
                    continue
                if cand is not None and cand not in anchors:
                    anchors.append(cand)
        rng = random.Random(seed)
        neighbours: list[list[Candidate]] = []
        # a neighbour pruned as a duplicate (e.g. tma where the loops are held transposed) counts as its twin
        twins = [c for c in self._twins if c.family == family]
        for a in anchors:
            near = list(dict.fromkeys(t for c in kept + twins if self._knobs_apart(a, c) == 1
                                      for t in [self.kept_twin(c)] if t is not None and t not in anchors))
            rng.shuffle(near)
            neighbours.append(near)
        named = [c for c in self.included.get(family, []) if c not in anchors]
        first = anchors[:1] + named + anchors[1:]
        seen = set(first)
        # Neighbours of the two largest-chunk anchors (the default and chunk 128, where the fused
        # kernels gain most) alternate first; those of smaller chunks follow.
        lead, tail = neighbours[:2], neighbours[2:]
        for group in itertools.chain(itertools.zip_longest(*lead), itertools.zip_longest(*tail)):
            for c in group:
                if c is not None and c not in seen:
                    first.append(c)
                    seen.add(c)
        rest = [c for c in kept if c not in seen]
        rng.shuffle(rest)
        return first + rest

    def searched(self, family: str, strategy: str, budget: Any, seed: int = 0) -> list[Candidate]:
        """What a search of ``family`` examines: the strategy's share of :meth:`ordered` within ``budget``,
        and every variant named with ``include``, whatever the budget."""
        from dnprof.variants.search import initial_set

        chosen = initial_set(strategy, self.ordered(family, seed), budget, default=self.defaults.get(family), seed=seed)
        return chosen + [c for c in self.included.get(family, []) if c not in chosen]

    def _knobs_apart(self, a: Candidate, b: Candidate) -> int:
        """How many parameters differ between ``a`` and ``b``, leaving out one that has no effect on either
        (a fused-output forward's state dtype: the duplicate rule keeps one of those, so fusing the
        output is one knob away from the default, not two)."""
        da, db = a.to_dict(), b.to_dict()
        moot = set()
        if self.mode == "fwd" and (da.get("fuse_output") or db.get("fuse_output")):
            moot.add("state_dtype")
        return sum(da[k] != db.get(k) for k in da if k not in moot)


def _config_classes(family: str):
    if family == "chunk":
        from dnprof.variants.chunk_config import ChunkConfig

        return ChunkConfig
    from dnprof.variants.recurrent_config import RecurrentConfig

    return RecurrentConfig


def _config_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [ValueError]
    return tuple(errs)


def generate_space(K: int, V: int, dtype: str, limits: DeviceLimits, families: Iterable[str] = ("chunk",),
                   mode: str = "fwdbwd", chunk_sizes: Iterable[int] | None = None,
                   n_streams: int | None = None, recs: Iterable[str] | None = None,
                   include: Iterable[str] = ()) -> Space:
    """Enumerate every variant of ``families`` for head dims (K, V) and prune it for ``limits``; with
    ``n_streams`` (batch x heads of the shape to tune) also what the launch guard refuses at that shape.
    ``chunk_sizes`` and ``recs`` (serial-loop tilings: ``main``, ``auto`` or explicit like ``bk256bv64w4s2``)
    replace the chunk family's own choices of those fields. ``include``: chunk variant names to search
    whatever those choices (:func:`_include`)."""
    families = tuple(families)
    for fam in families:
        if fam not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {fam!r}")
    space = Space(K=K, V=V, dtype=dtype, mode=mode, limits=limits, families=families, n_streams=n_streams)
    sizes = None if chunk_sizes is None else tuple(int(c) for c in chunk_sizes)
    for fam in families:
        cls = _config_classes(fam)
        choices = dict(cls.choices())
        if fam == "chunk" and sizes is not None:
            bad = [c for c in sizes if c not in choices["chunk_size"]]
            if bad:
                raise ValueError(f"chunk size must be among {choices['chunk_size']}, got {bad}")
            choices["chunk_size"] = sizes
        if fam == "chunk" and recs is not None:
            choices["rec"] = _rec_choices(recs, choices["rec"])
        try:
            default = cls.default_for(K, V) if fam == "recurrent" else cls.default_for(
                K, V, chunk_size=64 if sizes is None or 64 in sizes else sizes[0], dtype=dtype, mode=mode)
            space.defaults[fam] = Candidate(fam, default)
        except ValueError:
            pass
        # validate's verdict, per combination of the fields it looks at (a config class may name those it
        # checks only against their choices, which every combination here meets): most combinations are
        # invalid for their tiles alone, and this skips building and checking each of them again
        ignored = getattr(cls, "VALIDATE_IGNORES", None)
        checked = None if ignored is None else operator.itemgetter(*(n for n in choices if n not in ignored))
        verdicts: dict[tuple, str | None] = {}
        for raw in _raw_combinations(cls, choices):
            space.total += 1
            key = checked(raw) if checked is not None else object()  # a class without the list: no reuse
            verdict = verdicts.get(key, _UNSEEN)
            if isinstance(verdict, str):
                space.pruned.append(Pruned(None, "invalid", verdict, raw))
                continue
            try:
                cfg = cls(**raw)
                if verdict is _UNSEEN:
                    cfg.validate(K, V)
            except _config_errors() as exc:
                verdicts[key] = str(exc)
                space.pruned.append(Pruned(None, "invalid", str(exc), raw))
                continue
            verdicts[key] = None
            cand = Candidate(fam, cfg)
            rule, twin = _verdict(space, cand)
            if rule is not None:
                space.pruned.append(Pruned(cand, rule[0], rule[1], raw, twin))
                continue
            space.keep(cand)
    for name in dict.fromkeys(n.strip() for n in include if n.strip()):
        _include(space, name)
    for fam, default in space.defaults.items():  # pruned as a duplicate: its kept twin is the reference
        space.defaults[fam] = space.kept_twin(default) or default
    return space


def _verdict(space: Space, cand: Candidate) -> tuple[Verdict | None, Candidate | None]:
    """The rule that prunes ``cand`` from ``space`` (None: it is kept) and, for a duplicate, the twin it computes
    the same as."""
    rule = _prune_rule(cand, space.K, space.V, space.dtype, space.mode, space.limits) or \
        _refusal(cand, space.K, space.V, space.mode, space.limits, space.n_streams)
    twin = Candidate(cand.family, dataclasses.replace(cand.config, **rule[2])) if rule and len(rule) > 2 else None
    return rule, twin


def _include(space: Space, name: str) -> None:
    """Add the chunk variant ``name`` to ``space.included`` (and to ``kept`` when the chosen fields left it
    out), after the checks every kept variant passes; ValueError naming ``--include`` when it fails one."""
    from dnprof.variants.chunk_config import ChunkConfig

    if "chunk" not in space.families:
        raise ValueError(f"--include {name}: named variants are chunk variants, and the chunk family is not searched")
    try:
        cand = Candidate("chunk", ChunkConfig.from_name(name).validate(space.K, space.V))
    except ValueError as exc:
        raise ValueError(f"--include {name}: {exc}") from None
    rule, twin = _verdict(space, cand)
    if rule is not None:
        if twin is None:
            raise ValueError(f"--include {name}: pruned on {space.limits.name} ({rule[0]}): {rule[1]}")
        cand = space.kept_twin(twin) or twin  # a duplicate: the variant it computes the same as
    space.keep(cand)
    named = space.included.setdefault("chunk", [])
    if cand not in named:
        named.append(cand)


def _rec_choices(recs: Iterable[str], named: tuple[str, ...]) -> tuple[str, ...]:
    """``recs`` checked: each ``main``, ``auto`` or a well-formed explicit tiling (ValueError naming it)."""
    from dnprof.variants.chunk_config import parse_rec_tiling

    out = tuple(dict.fromkeys(r.strip() for r in recs))
    bad = [r for r in out if r not in named and parse_rec_tiling(r) is None]
    if bad or not out:
        raise ValueError(f"rec (--rec): expected {named} or an explicit tiling like 'bv32w4s3', 'bk256bv64w4s2' or "
                         f"'tjbv128w8s2', got {bad or list(out)}")
    return out


#: a verdict not yet reached (None is "valid", a string the reason it is not)
_UNSEEN = object()


def _raw_combinations(cls: Any, choices: dict[str, tuple]) -> Iterable[dict[str, Any]]:
    """Every combination of ``choices``, except fields a config class declares moot in some combinations
    (``ChunkConfig.SEPARATE_OUTPUT_FIELDS`` where the output is fused), which keep their defaults there."""
    moot = getattr(cls, "SEPARATE_OUTPUT_FIELDS", ())
    names = [n for n in choices if n not in moot]
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    free = list(itertools.product(*(choices[n] for n in moot)))
    for values in itertools.product(*(choices[n] for n in names)):
        raw = dict(zip(names, values))
        if raw.get("fuse_output"):
            yield {**raw, **{n: defaults[n] for n in moot}}
            continue
        for out in free:
            yield {**raw, **dict(zip(moot, out))}


#: A pruning verdict: (rule, reason), or for a ``duplicate`` (rule, reason, the moot fields as its kept twin has them).
Verdict = tuple


def _prune_rule(cand: Candidate, K: int, V: int, dtype: str, mode: str, limits: DeviceLimits) -> Verdict | None:
    cfg = cand.config
    if cand.family == "chunk":
        smem = chunk_smem_bytes(cfg, K, V, dtype)
        regs = chunk_regs_per_thread(cfg, K, V)
    else:
        smem = recurrent_smem_bytes(cfg, K, V, dtype)
        regs = recurrent_regs_per_thread(cfg, K, V)
    if smem > limits.smem_per_block:
        return "shared-memory", (f"{cand.name}: ~{smem // 1024} KiB shared memory > {limits.smem_per_block // 1024} KiB "
                                 f"per block on {limits.name}")
    if regs > limits.regs_per_thread:
        return "registers", f"{cand.name}: ~{regs} registers per thread > {limits.regs_per_thread} (would spill)"
    threads = 32 * cfg.num_warps
    if threads > limits.max_threads_per_block or regs * threads > limits.regs_per_sm:
        return "registers", (f"{cand.name}: ~{regs} x {threads} threads = {regs * threads} registers "
                             f"> {limits.regs_per_sm} per SM")
    if cand.family == "chunk" and limits.major == 9 and _unpipelined_narrow(cfg):
        return "known-fault", (f"{cand.name}: the serial kernels at BV <= 32 and one stage make illegal memory "
                               "accesses or return wrong values at C <= 64 on sm_90 (seen with Triton 3.6 on the H100 and H200)")
    wrong = sm90_wrong_values(cfg, K, mode != "fwd") if cand.family == "chunk" and limits.major == 9 else None
    if wrong:
        return "known-fault", f"{cand.name}: {wrong}"
    if cand.family == "chunk" and limits.major == 9 and cfg.chunk_size >= 128 and cfg.num_stages == 1:
        return "known-fault", (f"{cand.name}: the WY transform at chunk size 128 and one stage faulted or returned "
                               "wrong values on sm_90 (seen with Triton 3.6 on the H200)")
    if cand.family == "chunk" and dtype == "fp32" and getattr(cfg, "dot_operands", "fp32") != "fp32":
        return ("duplicate", f"{cand.name}: fp32 inputs always multiply in fp32, so dot_operands has no effect",
                {"dot_operands": "fp32"})
    if cand.family == "chunk" and mode == "fwd" and getattr(cfg, "fuse_output", False) and getattr(cfg, "state_dtype", "fp32") != "fp32":
        return ("duplicate", f"{cand.name}: a fused-output forward stores no states, so state_dtype has no effect",
                {"state_dtype": "fp32"})
    if cand.family == "chunk" and getattr(cfg, "tma", False) and not _tma_applies(cfg, limits):
        return "duplicate", (f"{cand.name}: tensor-descriptor loads need compute capability 9.0, so on this device "
                             "the loops load as without tma"), {"tma": False}
    if cand.family == "chunk" and mode != "fwd" and getattr(cfg, "output_chunk", 0):
        return "duplicate", (f"{cand.name}: a backward needs every chunk's state, so output_chunk has no effect "
                             "in fwd+bwd"), {"output_chunk": 0}
    return None


def _refusal(cand: Candidate, K: int, V: int, mode: str, limits: DeviceLimits,
             n_streams: int | None) -> Verdict | None:
    """``refused`` with the launch guard's reason, when a chunk variant would be refused at launch on this
    device for ``n_streams`` (sequence, head) pairs; None without a shape or for other families."""
    if n_streams is None or cand.family != "chunk":
        return None
    from dnprof.kernels.chunk import plan_launch
    from dnprof.variants.errors import RefusedOnDevice

    try:
        plan = plan_launch(cand.config, K, V, n_streams, limits.sm_count, limits.major or None, save=mode != "fwd")
    except RefusedOnDevice as exc:
        return "refused", f"{cand.name}: at {n_streams} (sequence, head) streams, {exc}"
    if getattr(cand.config, "tma", False) and not plan.fwd.tma and (mode == "fwd" or not plan.bwd.tma):
        return "duplicate", (f"{cand.name}: at {n_streams} (sequence, head) streams the serial loops it would "
                             "load through tensor descriptors are held transposed, so tma has no effect"), {"tma": False}
    return None


def _tma_applies(cfg: Any, limits: DeviceLimits) -> bool:
    """The launch's own rule (:func:`dnprof.kernels.recurrence_tiling.tma_applies`) for these limits."""
    from dnprof.kernels.recurrence_tiling import tma_applies

    return tma_applies(cfg, limits.major or None)


def _unpipelined_narrow(cfg: Any) -> bool:
    """True when ``cfg`` asks for C <= 64, BV <= 32 and one stage, in its main tiling or an explicit ``rec`` one."""
    from dnprof.variants.chunk_config import parse_rec_tiling

    if cfg.chunk_size > 64:
        return False
    explicit = parse_rec_tiling(getattr(cfg, "rec", "main"))
    return (cfg.BV <= 32 and cfg.num_stages == 1) or (explicit is not None and explicit.BV <= 32 and explicit.stages == 1)


def _flags(cand: Candidate, limits: DeviceLimits) -> list[str]:
    flags = []
    if limits.major == 9 and cand.config.num_warps == 8:
        flags.append("hopper-warps8")
    return flags


FLAG_NOTES = {
    "hopper-warps8": "num_warps=8 on sm_90: some Triton versions mis-compile such kernels; kept, every candidate is verified",
}
RULE_NOTES = {
    "invalid": "the kernels cannot run it (ConfigError from validate)",
    "shared-memory": "estimated shared memory exceeds the device's opt-in limit per block",
    "registers": "estimated registers exceed 255 per thread (spill) or the SM's register file",
    "duplicate": "same computation as a kept variant in this mode",
    "known-fault": "a combination seen to fault or return wrong values on this architecture",
    "refused": "the launch guard refuses it on this device at this shape (its auto tiling hits a known fault)",
}
