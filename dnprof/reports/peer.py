"""dnprof against its peer, fla-core's DeltaNet, shape by shape: speed, peak memory and accuracy against targets.

The project's bar is to beat fla-core's ``chunk_delta_rule`` measured side by side: faster by a target
factor per mode (by default 1.5x forward, 1.25x forward + backward), with peak memory and errors
against float64 no higher. Each shape is judged from one run only, the one :func:`speedups` pairs
(the most recent run with both providers ok at that shape), so the three verdicts of a row come from
the same machine, process and inputs' kind.
"""

from __future__ import annotations

import math
from typing import Mapping

import pandas as pd

from dnprof.reports.frame import SHAPE_KEY
from dnprof.reports.speedup import error_columns, speedups

#: The peer every target is quoted against.
PEER = "fla-deltanet"
#: Speedup targets per mode (peer ms / dnprof ms), the project's bar.
DEFAULT_TARGETS: dict[str, float] = {"fwd": 1.5, "fwdbwd": 1.25}
#: What a report says where no run has both providers ok at one shape.
NO_PAIRS = "No run has both an ok dnprof-chunk row and an ok fla-deltanet row at one shape."

SCORECARD_COLUMNS = [
    *SHAPE_KEY, "dnprof_variant", "dnprof_ms", "peer_ms", "speedup", "target", "fast_enough",
    "dnprof_peak_mb", "peer_peak_mb", "lean_enough", "error_ratio", "error_name", "accurate_enough", "meets", "file",
]


def _worst_error_ratio(dn: pd.Series, peer: pd.Series, names: list[str]) -> tuple[float, str | None]:
    """The largest dnprof / peer error ratio over the error figures both rows carry, and its name."""
    worst, which = math.nan, None
    for col in names:
        a, b = dn.get(col), peer.get(col)
        if pd.isna(a) or pd.isna(b):
            continue
        ratio = math.inf if b == 0 and a > 0 else (1.0 if b == 0 else float(a) / float(b))
        if math.isnan(worst) or ratio > worst:
            worst, which = ratio, col.removeprefix("err_")
    return worst, which


def targets_text(targets: Mapping[str, float] | None = None) -> str:
    """The targets as a report states them, e.g. ``fwd 1.50x, fwdbwd 1.25x``."""
    return ", ".join(f"{mode} {t:.2f}x" for mode, t in (DEFAULT_TARGETS if targets is None else targets).items())


def _at_most(value: float, limit: float) -> bool | None:
    """``value <= limit``, or None when either figure is missing (not judged)."""
    return None if pd.isna(value) or pd.isna(limit) else bool(value <= limit)


def peer_scorecard(rows: pd.DataFrame, targets: Mapping[str, float] | None = None,
                   peer: str = PEER) -> pd.DataFrame:
    """One row per (GPU, shape, mode) where dnprof and ``peer`` ran in one run: the speedup against the
    mode's target, peak memory and the worst error ratio, each with a verdict (None where a figure is
    missing), and ``meets`` when all three hold."""
    targets = dict(DEFAULT_TARGETS if targets is None else targets)
    sp = speedups(rows)
    sp = sp[sp["baseline"] == peer] if not sp.empty else sp
    if sp.empty:
        return pd.DataFrame(columns=SCORECARD_COLUMNS)
    names = error_columns(rows)
    records = []
    for _, pair in sp.iterrows():
        dn, base = rows.loc[pair["dnprof_row"]], rows.loc[pair["baseline_row"]]
        target = targets.get(pair["mode"], math.nan)
        ratio, which = _worst_error_ratio(dn, base, names)
        fast = _at_most(target, pair["speedup"])
        lean = _at_most(dn["peak_mem_mb"], base["peak_mem_mb"])
        accurate = _at_most(ratio, 1.0)
        records.append({
            **{k: pair[k] for k in SHAPE_KEY}, "dnprof_variant": pair["dnprof_variant"],
            "dnprof_ms": pair["dnprof_ms"], "peer_ms": pair["baseline_ms"], "speedup": pair["speedup"],
            "target": target, "fast_enough": fast, "dnprof_peak_mb": dn["peak_mem_mb"],
            "peer_peak_mb": base["peak_mem_mb"], "lean_enough": lean, "error_ratio": ratio, "error_name": which,
            "accurate_enough": accurate, "meets": fast is True and lean is True and accurate is True,
            "file": pair["file"],
        })
    out = pd.DataFrame.from_records(records, columns=SCORECARD_COLUMNS)
    return out.sort_values(["gpu", "mode", "K", "T", "B", "H", "V", "dtype"]).reset_index(drop=True)
