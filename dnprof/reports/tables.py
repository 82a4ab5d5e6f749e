"""Report tables as plain text cells, shared by the HTML and Markdown renderers (which escape them)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd

from dnprof.reports.frame import ReportData
from dnprof.reports.peer import peer_scorecard
from dnprof.reports.speedup import (
    BASELINES,
    accuracy_table,
    baseline_label,
    chunk_size_comparison,
    error_columns,
    failures,
    headline_table,
    shape_label,
    speedup_summary,
    tuning_winners,
)


@dataclass
class Table:
    """Headers and rows of text; ``flags`` marks cells ("bad"/"good") and ``row_flags`` whole rows."""

    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    flags: dict[tuple[int, int], str] = field(default_factory=dict)
    row_flags: dict[int, str] = field(default_factory=dict)
    #: Columns whose cells are code (commands, configs): shown in monospace.
    code_columns: set[int] = field(default_factory=set)
    #: Columns of long free text (messages): allowed to wrap.
    wrap_columns: set[int] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.rows)


def missing(value: Any) -> bool:
    """Whether a cell value is absent (None or NaN)."""
    if value is None or value is pd.NA:
        return True
    try:
        return bool(isinstance(value, float) and math.isnan(value))
    except TypeError:
        return False


def num(value: Any, spec: str = ".3g", suffix: str = "") -> str:
    """A number formatted by ``spec``, or a dash when absent."""
    if missing(value):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:{spec}}{suffix}"


def text(value: Any) -> str:
    """Any value as text, a dash when absent."""
    return "-" if missing(value) else str(value)


def config_text(config: Any) -> str:
    """A config dict as compact ``key=value`` text."""
    if not isinstance(config, dict) or not config:
        return "-"
    return ", ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in config.items())


def speedup_overview(sp: pd.DataFrame, gpus: Sequence[str]) -> Table:
    """Per baseline and mode, dnprof's geometric-mean speedup on each GPU side by side."""
    summary = speedup_summary(sp)
    cols = [g for g in gpus if g in set(summary["gpu"])]
    table = Table(["baseline", "mode", *[f"{g}: geo-mean (range, shapes)" for g in cols]])
    if summary.empty:
        return table
    order = {p: i for i, p in enumerate(BASELINES)}
    keys = sorted({(b, m) for b, m in zip(summary["baseline"], summary["mode"])}, key=lambda k: (order[k[0]], k[1]))
    for i, (baseline, mode) in enumerate(keys):
        row = [baseline_label(baseline), mode]
        for j, gpu in enumerate(cols):
            hit = summary[(summary["gpu"] == gpu) & (summary["baseline"] == baseline) & (summary["mode"] == mode)]
            if hit.empty:
                row.append("-")
                continue
            s = hit.iloc[0]
            row.append(f"{s['geomean']:.2f}x ({s['min']:.2f}-{s['max']:.2f}x, {int(s['shapes'])})")
            table.flags[(i, 2 + j)] = "good" if s["geomean"] >= 1 else "bad"
        table.rows.append(row)
    return table


def headline(sp: pd.DataFrame, gpu: str) -> Table:
    """One GPU's speedup per shape and run (rows) and baseline provider (columns), with the run's results file."""
    wide = headline_table(sp, gpu)
    if wide.empty:
        return Table([])
    fixed = ["mode", "K", "T", "B", "H", "V", "dtype", "dnprof_ms", "file"]
    baselines = [c for c in wide.columns if c not in fixed]
    table = Table(["mode", "K", "T", "B", "H", "V", "dtype", "dnprof ms", *[f"vs {b}" for b in baselines], "run"],
                  code_columns={len(fixed) - 1 + len(baselines)})
    for i, (_, r) in enumerate(wide.iterrows()):
        row = [r["mode"], str(r["K"]), str(r["T"]), str(r["B"]), str(r["H"]), str(r["V"]), r["dtype"],
               num(r["dnprof_ms"], ".3f")]
        for j, b in enumerate(baselines):
            row.append(num(r[b], ".2f", "x"))
            if not missing(r[b]):
                table.flags[(i, len(fixed) - 1 + j)] = "good" if r[b] >= 1 else "bad"
        table.rows.append(row + [text(r["file"])])
    return table


def chunk_sizes(rows: pd.DataFrame) -> Table:
    """Best dnprof-chunk time at chunk size 64 and 128 per shape, both from the same run."""
    cs = chunk_size_comparison(rows)
    table = Table(["GPU", "shape", "ms at 64", "ms at 128", "128 vs 64"])
    for i, (_, r) in enumerate(cs.iterrows()):
        table.rows.append([r["gpu"], shape_label(r), num(r["ms_64"], ".3f"), num(r["ms_128"], ".3f"),
                           num(r["ratio"], ".2f", "x")])
        table.flags[(i, 4)] = "good" if r["ratio"] >= 1 else "bad"
    return table


def winners(rows: pd.DataFrame) -> Table:
    """The winning config per tuned shape, with how the other candidates fared."""
    win = tuning_winners(rows)
    table = Table(["GPU", "tuned shape", "winner", "ms", "config", "candidates", "ok", "not ok", "median ms",
                   "winner vs median"], code_columns={4})
    for _, r in win.iterrows():
        variant = text(r["variant"]) + ("" if r["flagged"] or missing(r["variant"]) else " (fastest ok; not flagged)")
        vs = r["median_ms"] / r["ms"] if not missing(r["ms"]) and r["ms"] > 0 else math.nan
        table.rows.append([r["gpu"], r["shape"], variant, num(r["ms"], ".3f"), config_text(r["config"]),
                           str(r["candidates"]), str(r["ok"]), str(r["failed"]), num(r["median_ms"], ".3f"),
                           num(vs, ".2f", "x")])
    return table


def accuracy(rows: pd.DataFrame) -> Table:
    """Error figures against float64 per provider and variant, cells above tolerance flagged."""
    acc = accuracy_table(rows)
    errs = error_columns(acc)
    table = Table(["GPU", "run", "provider", "variant", "shape", "verify T", *[c[4:] for c in errs], "tolerance",
                   "status"], wrap_columns={0, 4})
    for i, (_, r) in enumerate(acc.iterrows()):
        row = [r["gpu"], r["kind"], r["provider"], text(r["variant"]), shape_label(r), text(r["verify_T"])]
        for j, c in enumerate(errs):
            row.append(num(r[c], ".2e"))
            if not missing(r[c]) and not missing(r["tolerance"]) and r[c] > r["tolerance"]:
                table.flags[(i, 6 + j)] = "bad"
        row += [num(r["tolerance"], ".1e"), r["status"]]
        if r["fails"]:
            table.row_flags[i] = "fail"
            table.flags[(i, len(row) - 1)] = "bad"
        table.rows.append(row)
    return table


def _verdict_flag(verdict: Any) -> str | None:
    """The cell flag of a verdict: good, bad, or none where a figure was missing (not judged)."""
    if missing(verdict):
        return None
    return "good" if verdict else "bad"


def peer_targets(rows: pd.DataFrame, targets: Mapping[str, float] | None = None) -> Table:
    """dnprof against fla-core's DeltaNet per GPU and shape: speedup against its mode's target, peak memory
    and worst error ratio, each judged (a dash where a figure is missing), and whether all three hold."""
    card = peer_scorecard(rows, targets)
    table = Table(["GPU", "shape", "dnprof ms", "fla-core ms", "speedup (target)", "peak MB dnprof / fla-core",
                   "worst error ratio dnprof / fla-core", "meets", "run"], code_columns={8}, wrap_columns={0, 1})
    for i, (_, r) in enumerate(card.iterrows()):
        target = "no target" if missing(r["target"]) else f"{r['target']:.2f}x"
        ratio = "-" if missing(r["error_ratio"]) else f"{r['error_ratio']:.2f} ({r['error_name']})"
        table.rows.append([r["gpu"], shape_label(r), num(r["dnprof_ms"], ".3f"), num(r["peer_ms"], ".3f"),
                           f"{r['speedup']:.2f}x ({target})",
                           f"{num(r['dnprof_peak_mb'], '.0f')} / {num(r['peer_peak_mb'], '.0f')}", ratio,
                           "yes" if r["meets"] else "no", text(r["file"])])
        for col, key in ((4, "fast_enough"), (5, "lean_enough"), (6, "accurate_enough"), (7, "meets")):
            flag = _verdict_flag(r[key])
            if flag:
                table.flags[(i, col)] = flag
    return table


def runs(data: ReportData) -> Table:
    """The fingerprint and exact command of every results file read."""
    table = Table(["file", "kind", "GPU", "SMs", "CC", "driver", "CUDA", "torch", "triton", "fla-core", "dnprof",
                   "git commit", "date", "rows (ok / not ok)", "command"], code_columns={0, 14})
    for i, (_, r) in enumerate(data.runs.iterrows()):
        table.rows.append([r["file"], r["kind"], r["gpu"], text(r["sm_count"]), text(r["compute_capability"]),
                           text(r["driver"]), text(r["cuda"]), text(r["torch"]), text(r["triton"]),
                           text(r["fla_core"]), text(r["dnprof_version"]), text(r["git_commit"]), text(r["date"]),
                           f"{r['rows']} ({r['ok']} / {r['not_ok']})", text(r["command"])])
        if r["not_ok"]:
            table.flags[(i, 13)] = "bad"
    return table


def failed(rows: pd.DataFrame) -> Table:
    """Every row that is not ok, with its status and message."""
    bad = failures(rows)
    table = Table(["GPU", "run", "provider", "variant", "shape", "status", "message", "file"], code_columns={7},
                  wrap_columns={6})
    for i, (_, r) in enumerate(bad.iterrows()):
        table.rows.append([r["gpu"], r["kind"], r["provider"], text(r["variant"]), shape_label(r), r["status"],
                           text(r["message"]), r["file"]])
        table.flags[(i, 5)] = "bad"
    return table
