"""The numbers a report shows: speedups over baselines, chunk sizes, roofline shares, tuning, accuracy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from dnprof.reports.frame import ERROR_NAMES, SHAPE_KEY

#: dnprof's chunkwise provider; variants appear as ``dnprof-chunk-<variant>``.
DNPROF_PROVIDER = "dnprof-chunk"
#: Each baseline provider and the family the headline groups it under.
BASELINES: dict[str, str] = {
    "fla-deltanet": "fla DeltaNet",
    "flash-attn": "FlashAttention",
    "cudnn-attn": "FlashAttention",
    "flash-attn-pkg": "FlashAttention",
    "fla-gla": "GLA",
    "fla-recurrent": "recurrent",
    "dnprof-recurrent": "recurrent",
}
#: Config parameters a tuning heatmap prefers as its axes, in this order.
HEATMAP_PREFERENCE = ("BV", "num_warps", "BK", "chunk_size", "num_stages", "BT")


def is_dnprof_chunk(provider: str) -> bool:
    """Whether a provider name is dnprof's chunkwise kernel or one of its variants."""
    return provider == DNPROF_PROVIDER or provider.startswith(DNPROF_PROVIDER + "-")


def baseline_label(provider: str) -> str:
    """A baseline's column label: its family and, where the family has several, the provider."""
    family = BASELINES.get(provider, provider)
    return family if family == provider else f"{family} ({provider})"


def shape_label(row: Any) -> str:
    """A compact text label for a shape: ``fwd B8 T4096 H16 K128 V128 bf16``."""
    return f"{row['mode']} B{row['B']} T{row['T']} H{row['H']} K{row['K']} V{row['V']} {row['dtype']}"


def measured(rows: pd.DataFrame) -> pd.DataFrame:
    """Timed rows that count for comparisons: status ok, positive ms, not tuning candidates."""
    if rows.empty:
        return rows
    keep = (rows["status"] == "ok") & (rows["ms"] > 0) & (rows["kind"] != "tune")
    return rows[keep]


def _fastest(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The fastest row of each group of ``keys``."""
    return rows.loc[rows.groupby(keys, sort=True)["ms"].idxmin().values]


def _most_recent(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group of ``keys``, the row of the most recent run (fingerprint date, then file name)."""
    dated = rows.assign(_date=rows["date"].fillna("").astype(str))
    return dated.sort_values(["_date", "file"]).groupby(keys, sort=False).tail(1).drop(columns="_date")


def best_per_provider(rows: pd.DataFrame) -> pd.DataFrame:
    """The fastest ok row per (shape, provider), so repeated runs count once, by their best time."""
    ok = measured(rows)
    if ok.empty:
        return ok
    return _fastest(ok, [*SHAPE_KEY, "provider"]).reset_index(drop=True)


def speedups(rows: pd.DataFrame) -> pd.DataFrame:
    """Speedup = baseline ms / dnprof ms per shape and baseline provider, both from one run (results file).

    Within a run dnprof is its fastest ``dnprof-chunk`` variant at the shape. Where several runs
    paired dnprof with a baseline at a shape, the most recent run (fingerprint date, then file name)
    counts: times from different runs, often different machines, are never divided by each other.
    ``dnprof_row`` and ``baseline_row`` are the index labels in ``rows`` of the two rows paired.
    """
    cols = [*SHAPE_KEY, "dnprof_provider", "dnprof_variant", "dnprof_ms", "baseline", "family", "baseline_ms",
            "speedup", "file", "dnprof_row", "baseline_row"]
    ok = measured(rows)
    if ok.empty:
        return pd.DataFrame(columns=cols)
    run_key = [*SHAPE_KEY, "file"]
    dn = ok[ok["provider"].map(is_dnprof_chunk)]
    base = ok[ok["provider"].isin(list(BASELINES))]
    if dn.empty or base.empty:
        return pd.DataFrame(columns=cols)
    dn = _fastest(dn, run_key)
    dn = dn[[*run_key, "date", "provider", "variant", "ms"]].assign(dnprof_row=dn.index).rename(
        columns={"provider": "dnprof_provider", "variant": "dnprof_variant", "ms": "dnprof_ms"})
    base = _fastest(base, [*run_key, "provider"])
    base = base[[*run_key, "provider", "ms"]].assign(baseline_row=base.index).rename(
        columns={"provider": "baseline", "ms": "baseline_ms"})
    out = dn.merge(base, on=run_key, how="inner")
    if out.empty:
        return pd.DataFrame(columns=cols)
    out = _most_recent(out, [*SHAPE_KEY, "baseline"])
    out["family"] = out["baseline"].map(BASELINES)
    out["speedup"] = out["baseline_ms"] / out["dnprof_ms"]
    order = {p: i for i, p in enumerate(BASELINES)}
    out["_order"] = out["baseline"].map(order)
    out = out.sort_values(["gpu", "mode", "K", "T", "B", "H", "V", "dtype", "_order"])
    return out[cols].reset_index(drop=True)


def speedup_summary(sp: pd.DataFrame) -> pd.DataFrame:
    """Per GPU, baseline and mode: geometric-mean, lowest and highest speedup and the shape count."""
    cols = ["gpu", "baseline", "family", "mode", "shapes", "geomean", "min", "max"]
    if sp.empty:
        return pd.DataFrame(columns=cols)
    order = {p: i for i, p in enumerate(BASELINES)}
    g = sp.groupby(["gpu", "baseline", "family", "mode"], sort=False)["speedup"]
    out = pd.DataFrame({
        "shapes": g.size(),
        "geomean": g.apply(lambda s: float(np.exp(np.log(s).mean()))),
        "min": g.min(),
        "max": g.max(),
    }).reset_index()
    out["_order"] = out["baseline"].map(order)
    return out.sort_values(["gpu", "_order", "mode"]).drop(columns="_order")[cols].reset_index(drop=True)


def headline_table(sp: pd.DataFrame, gpu: str) -> pd.DataFrame:
    """One GPU's speedups as a table: a row per shape and run, a column per baseline provider."""
    part = sp[sp["gpu"] == gpu]
    if part.empty:
        return pd.DataFrame()
    index = ["mode", "K", "T", "B", "H", "V", "dtype", "dnprof_ms", "file"]
    table = part.pivot_table(index=index, columns="baseline", values="speedup", aggfunc="first")
    order = [p for p in BASELINES if p in table.columns]
    table = table[order].rename(columns=baseline_label)
    table.columns.name = None
    return table.reset_index()


def chunk_size_comparison(rows: pd.DataFrame) -> pd.DataFrame:
    """Best dnprof-chunk time at chunk size 64 and 128 per shape, both from one run (any run kind); where
    several runs measured both, the most recent counts (as :func:`speedups` pairs its times)."""
    cols = [*SHAPE_KEY, "ms_64", "ms_128", "ratio"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    ok = rows[(rows["status"] == "ok") & (rows["ms"] > 0) & rows["provider"].map(is_dnprof_chunk)]
    ok = ok[ok["chunk_size"].isin([64, 128])]
    if ok.empty:
        return pd.DataFrame(columns=cols)
    ok = ok.assign(chunk_size=ok["chunk_size"].astype(int), date=ok["date"].fillna(""))
    best = ok.groupby([*SHAPE_KEY, "date", "file", "chunk_size"])["ms"].min()
    wide = best.unstack("chunk_size")
    if 64 not in wide.columns or 128 not in wide.columns:
        return pd.DataFrame(columns=cols)
    wide = wide[[64, 128]].dropna().reset_index()
    if wide.empty:
        return pd.DataFrame(columns=cols)
    wide = _most_recent(wide, SHAPE_KEY).rename(columns={64: "ms_64", 128: "ms_128"}).sort_values(SHAPE_KEY)
    wide["ratio"] = wide["ms_64"] / wide["ms_128"]
    return wide[cols].reset_index(drop=True)


def roofline_shares(rows: pd.DataFrame) -> pd.DataFrame:
    """Each best measured time as a multiple of its roofline floor (1.0 = at the floor)."""
    cols = [*SHAPE_KEY, "provider", "ms", "roofline_ms", "x_floor"]
    best = best_per_provider(rows)
    if best.empty:
        return pd.DataFrame(columns=cols)
    best = best[best["roofline_ms"] > 0]
    out = best.assign(x_floor=best["ms"] / best["roofline_ms"])
    return out[cols].reset_index(drop=True)


def tune_candidates(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of tune runs, with a ``shape`` label naming the tuned kernel family and shape."""
    if rows.empty:
        return rows.assign(shape=pd.Series(dtype=str))
    tune = rows[rows["kind"] == "tune"]
    return tune.assign(shape=[f"{r['provider']} {shape_label(r)}" for _, r in tune.iterrows()] if len(tune) else [])


def tuning_winners(rows: pd.DataFrame) -> pd.DataFrame:
    """Per tuned shape: the winner (flagged, else the fastest ok candidate) and the candidate counts."""
    cols = ["gpu", "shape", "variant", "ms", "config", "flagged", "candidates", "ok", "failed", "median_ms",
            "worst_ms"]
    tune = tune_candidates(rows)
    if tune.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for (gpu, shape), group in tune.groupby(["gpu", "shape"], sort=True):
        ok = group[(group["status"] == "ok") & (group["ms"] > 0)]
        flagged = ok[ok["winner"]]
        pick = flagged if len(flagged) else ok
        rec: dict[str, Any] = {"gpu": gpu, "shape": shape, "candidates": len(group), "ok": len(ok),
                               "failed": len(group) - len(ok), "flagged": bool(len(flagged)),
                               "median_ms": float(ok["ms"].median()) if len(ok) else math.nan,
                               "worst_ms": float(ok["ms"].max()) if len(ok) else math.nan}
        if len(pick):
            win = pick.loc[pick["ms"].idxmin()]
            rec.update(variant=win["variant"], ms=float(win["ms"]), config=win["config"])
        else:
            rec.update(variant=None, ms=math.nan, config={})
        out.append(rec)
    return pd.DataFrame.from_records(out, columns=cols)


def _varying_params(group: pd.DataFrame) -> list[str]:
    """Config parameters that take two or more hashable values among a shape's ok candidates."""
    counts: dict[str, int] = {}
    for config in group["config"]:
        for key in config:
            counts.setdefault(key, 0)
    varying = {}
    for key in counts:
        values = {v for v in (c.get(key) for c in group["config"]) if isinstance(v, (int, float, str, bool))}
        if len(values) >= 2:
            varying[key] = len(values)
    preferred = [k for k in HEATMAP_PREFERENCE if k in varying]
    others = sorted((k for k in varying if k not in preferred), key=lambda k: (-varying[k], k))
    return preferred + others


def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers before text, each in natural order."""
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))


def tuning_heatmaps(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Per tuned shape with two varying config parameters: best ms per cell, relative to the shape's best."""
    tune = tune_candidates(rows)
    maps = []
    if tune.empty:
        return maps
    for (gpu, shape), group in tune.groupby(["gpu", "shape"], sort=True):
        ok = group[(group["status"] == "ok") & (group["ms"] > 0)]
        params = _varying_params(ok) if len(ok) else []
        if len(params) < 2:
            continue
        px_, py_ = params[0], params[1]
        cells: dict[tuple[Any, Any], float] = {}
        for config, ms in zip(ok["config"], ok["ms"]):
            key = (config.get(px_), config.get(py_))
            if key[0] is None or key[1] is None:
                continue
            cells[key] = min(ms, cells.get(key, math.inf))
        xs = sorted({k[0] for k in cells}, key=_sort_key)
        ys = sorted({k[1] for k in cells}, key=_sort_key)
        best = min(cells.values())
        z = [[cells[(x, y)] / best if (x, y) in cells else None for x in xs] for y in ys]
        ms = [[cells.get((x, y)) for x in xs] for y in ys]
        maps.append({"gpu": gpu, "shape": shape, "x_param": px_, "y_param": py_, "x": xs, "y": ys,
                     "z": z, "ms": ms, "best_ms": best})
    return maps


def accuracy_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Error figures of every provider and variant (compare and verify runs, tuning winners and failures)."""
    err_cols = [c for c in rows.columns if c.startswith("err_")]
    cols = ["gpu", "kind", "provider", "variant", "mode", "B", "T", "H", "K", "V", "dtype", "verify_T", *err_cols,
            "tolerance", "status", "worst", "fails"]
    if rows.empty or not err_cols:
        return pd.DataFrame(columns=cols)
    has_err = rows[err_cols].notna().any(axis=1) | (rows["status"] == "failed-verification")
    keep = has_err & ((rows["kind"] != "tune") | rows["winner"] | (rows["status"] == "failed-verification"))
    table = rows[keep].copy()
    if table.empty:
        return pd.DataFrame(columns=cols)
    table["worst"] = table[err_cols].max(axis=1, skipna=True)
    over = table[err_cols].gt(table["tolerance"], axis=0)
    table["fails"] = (table["status"] == "failed-verification") | over.any(axis=1)
    table = table.sort_values(["gpu", "kind", "provider", "mode", "K", "T"], na_position="last")
    return table[cols].reset_index(drop=True)


def error_columns(table: pd.DataFrame) -> list[str]:
    """The error-figure columns of a frame, in the standard order."""
    present = [c for c in table.columns if c.startswith("err_")]
    order = [f"err_{n}" for n in ERROR_NAMES]
    return [c for c in order if c in present] + [c for c in present if c not in order]


def failures(rows: pd.DataFrame) -> pd.DataFrame:
    """Every row whose status is not ok, with its message."""
    cols = ["gpu", "kind", "provider", "variant", "mode", "B", "T", "H", "K", "V", "dtype", "status", "message",
            "file"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    bad = rows[rows["status"] != "ok"]
    return bad[cols].reset_index(drop=True)
