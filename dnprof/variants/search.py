"""Search strategies over a pruned variant space: exhaustive, random, successive halving.

A strategy decides two things: which candidates enter the search (``initial_set``, from the
space's prior order and the budget) and how their timings are refined (``run_rounds``). Timing goes
through a ``measure(candidate, round, rep_ms)`` callable that returns the median in ms, or None
when the candidate failed; the tuner's ``measure`` answers from the database when a round was
already measured, which is what makes a second run resume instead of starting again.

- ``exhaustive``: every candidate (in prior order, up to the budget's count), one round.
- ``random``: a seeded sample of the budget's count (the default variant always included), one round.
- ``halving``: successive halving. Round 0 times every candidate briefly; each next round keeps the
  faster half and times it twice as long, until one is left. The default variant is timed in every
  round (pinned) so the final speedup compares like with like.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

STRATEGIES = ("exhaustive", "random", "halving")
#: Default budget: 48 candidates (about 45 s of 16-core compiling at D=256) and at most 240 s.
DEFAULT_BUDGET = "48,240s"


@dataclass(frozen=True)
class Budget:
    """How much to search: at most ``count`` candidates and/or ``seconds`` of wall clock."""

    count: int | None = None
    seconds: float | None = None

    def __str__(self) -> str:
        parts = ([str(self.count)] if self.count else []) + ([f"{self.seconds:g}s"] if self.seconds else [])
        return ",".join(parts) or "unlimited"


def parse_budget(text: str | int | None) -> Budget:
    """``"48"`` (candidates), ``"300s"``/``"5m"`` (time), ``"48,300s"`` (both) or ``"none"``/``"all"``."""
    if text is None or str(text).strip().lower() in ("", "none", "all", "unlimited"):
        return Budget()
    count, seconds = None, None
    for part in str(text).lower().replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|min|h)?", part)
        if not m:
            raise ValueError(f"budget: expected a candidate count (48), a time (300s, 5m) or both (48,300s), got {text!r}")
        value, unit = float(m.group(1)), m.group(2)
        if unit is None:
            if value != int(value) or value < 1:
                raise ValueError(f"budget: the candidate count must be a whole number >= 1, got {part!r}")
            count = int(value)
        else:
            seconds = value * {"s": 1, "m": 60, "min": 60, "h": 3600}[unit]
            if seconds <= 0:
                raise ValueError(f"budget: the time must be positive, got {part!r}")
    return Budget(count, seconds)


def initial_set(strategy: str, ordered: Sequence[Any], budget: Budget, default: Any | None = None,
                seed: int = 0) -> list[Any]:
    """The candidates a strategy will examine, from the prior-ordered kept space."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    n = len(ordered) if budget.count is None else min(budget.count, len(ordered))
    if strategy == "random":
        rest = [c for c in ordered if c != default]
        pick = random.Random(seed).sample(rest, max(0, n - (1 if default in ordered else 0)))
        chosen = ([default] if default in ordered else []) + pick
        return chosen[:max(n, 1)] if ordered else []
    return list(ordered[:n])


@dataclass
class RoundPlan:
    """The timing length of each round: short first, doubling for halving."""

    base_rep_ms: float = 25.0
    max_rep_ms: float = 400.0
    single_rep_ms: float = 100.0

    def rep_ms(self, strategy: str, round_: int) -> float:
        if strategy != "halving":
            return self.single_rep_ms
        return min(self.max_rep_ms, self.base_rep_ms * (2 ** round_))


@dataclass
class SearchResult:
    """Per candidate its best (deepest) measurement, and the ranking."""

    measured: dict[Any, tuple[int, float]] = field(default_factory=dict)  # cand -> (round, ms)
    failed: list[Any] = field(default_factory=list)
    rounds: int = 0
    stopped: str | None = None  # why the search stopped early (e.g. "time budget")

    def ranking(self) -> list[tuple[Any, int, float]]:
        """(candidate, round, ms), best first: deepest round, then time."""
        items = [(c, r, ms) for c, (r, ms) in self.measured.items()]
        return sorted(items, key=lambda x: (-x[1], x[2]))


def planned_measurements(strategy: str, n: int, pinned: bool = True) -> int:
    """How many timing steps a strategy takes over ``n`` verified candidates (for progress bars)."""
    if strategy != "halving":
        return n
    total, k = 0, n
    while k >= 1:
        total += k + (1 if pinned else 0)
        if k == 1:
            break
        k = math.ceil(k / 2)
    return total


def run_rounds(strategy: str, candidates: Sequence[Any], measure: Callable[[Any, int, float], float | None],
               default: Any | None = None, plan: RoundPlan | None = None,
               out_of_time: Callable[[], bool] = lambda: False) -> SearchResult:
    """Time ``candidates`` as the strategy says; failures drop out; stops early when out of time."""
    plan = plan or RoundPlan()
    result = SearchResult()
    alive = list(candidates)
    round_ = 0
    while alive:
        rep = plan.rep_ms(strategy, round_)
        timed: list[tuple[Any, float]] = []
        todo = list(alive)
        if strategy == "halving" and default is not None and default in candidates and default not in todo \
                and default not in result.failed:
            todo.append(default)  # pinned: the reference is measured as long as the finalists
        for cand in todo:
            if out_of_time():
                result.stopped = "time budget"
                result.rounds = round_ + 1
                return result
            ms = measure(cand, round_, rep)
            if ms is None or not math.isfinite(ms):
                result.failed.append(cand)
                result.measured.pop(cand, None)
                continue
            result.measured[cand] = (round_, ms)
            if cand in alive:
                timed.append((cand, ms))
        result.rounds = round_ + 1
        if strategy != "halving" or len(timed) <= 1:
            break
        timed.sort(key=lambda x: x[1])
        alive = [c for c, _ in timed[:math.ceil(len(timed) / 2)]]
        round_ += 1
    return result


class Deadline:
    """A wall-clock limit (None: no limit)."""

    def __init__(self, seconds: float | None, start: float | None = None):
        self.start = time.monotonic() if start is None else start
        self.seconds = seconds

    def fraction(self, f: float) -> "Deadline":
        """A deadline at ``f`` of this one's span, from the same start."""
        return Deadline(None if self.seconds is None else self.seconds * f, self.start)

    def __call__(self) -> bool:
        return self.seconds is not None and time.monotonic() - self.start >= self.seconds
