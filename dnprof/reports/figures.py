"""Plotly figures for the HTML report; each returns None when it has nothing to draw.

Text from results files (GPU and provider names) goes into figures HTML-escaped: plotly.js renders its
own small HTML subset in labels and decodes entities, so escaped text shows exactly as written.
"""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dnprof.reports.speedup import (
    baseline_label,
    best_per_provider,
    tune_candidates,
    tuning_winners,
)

_PALETTE = plotly.colors.qualitative.Plotly + plotly.colors.qualitative.D3 + plotly.colors.qualitative.Dark24
_MODE_ORDER = {"fwd": 0, "fwdbwd": 1}
_PANEL_HEIGHT = 270


def esc(text: Any) -> str:
    """HTML-escape any value for a plotly label."""
    return html.escape(str(text), quote=True)


def _colors(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per series name: dnprof's first, the rest sorted."""
    ordered = sorted(set(names), key=lambda n: (not n.startswith("dnprof-chunk"), n))
    return {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(ordered)}


def _facet_lines(df: pd.DataFrame, y: str, series: str, gpus: Sequence[str], y_title: str, *,
                 agg: str = "min", hline: float | None = None, log_y: bool = False,
                 fmt: str = ".4g", tickformat: str | None = None) -> go.Figure:
    """Lines of ``y`` against T, one panel per (mode, head dim) row and GPU column, one line per series."""
    df = df.dropna(subset=[y])
    df = df.groupby(["gpu", "mode", "K", "T", series], as_index=False)[y].agg(agg)
    panels = sorted({(m, int(k)) for m, k in zip(df["mode"], df["K"])}, key=lambda p: (_MODE_ORDER.get(p[0], 9), p))
    cols = [g for g in gpus if g in set(df["gpu"])]
    titles = [f"{esc(g)} · {m} · K={k}" for m, k in panels for g in cols]
    fig = make_subplots(rows=len(panels), cols=len(cols), subplot_titles=titles,
                        vertical_spacing=min(0.12, 0.35 / len(panels)), horizontal_spacing=0.06)
    colors = _colors(list(df[series].astype(str)))
    shown: set[str] = set()
    for r, (mode, k) in enumerate(panels, start=1):
        for c, gpu in enumerate(cols, start=1):
            part = df[(df["gpu"] == gpu) & (df["mode"] == mode) & (df["K"] == k)]
            for name, line in part.groupby(series, sort=True):
                name = str(name)
                line = line.sort_values("T")
                fig.add_trace(go.Scatter(
                    x=line["T"], y=line[y], mode="lines+markers", name=esc(name), legendgroup=esc(name),
                    showlegend=name not in shown, line={"color": colors[name]},
                    hovertemplate=f"{esc(name)}<br>T=%{{x}}<br>{esc(y_title)}=%{{y:{fmt}}}<extra></extra>"),
                    row=r, col=c)
                shown.add(name)
            if part.empty:
                fig.add_annotation(text="no data", x=0.5, y=0.5, xref="x domain", yref="y domain",
                                   showarrow=False, font={"color": "#888"}, row=r, col=c)
            ts = sorted(set(part["T"]))
            fig.update_xaxes(type="log", tickvals=ts, ticktext=[str(t) for t in ts], row=r, col=c,
                             title_text="sequence length T" if r == len(panels) else None)
            fig.update_yaxes(title_text=esc(y_title) if c == 1 else None, type="log" if log_y else None,
                             tickformat=tickformat, rangemode="tozero" if not log_y else None, row=r, col=c)
    if hline is not None:
        fig.add_hline(y=hline, line_dash="dot", line_color="#555", row="all", col="all")
    fig.update_layout(height=_PANEL_HEIGHT * len(panels) + 140, margin={"t": 60, "b": 50},
                      legend={"orientation": "h", "y": -0.02 - 40 / (_PANEL_HEIGHT * len(panels)), "yanchor": "top"})
    return fig


def throughput_figure(rows: pd.DataFrame, gpus: Sequence[str]) -> go.Figure | None:
    """Tokens per second against sequence length, per provider."""
    best = best_per_provider(rows)
    if best.empty or best["tokens_per_s"].notna().sum() == 0:
        return None
    return _facet_lines(best, "tokens_per_s", "provider", gpus, "tokens/s", agg="max", tickformat="~s", fmt=".3s")


def speedup_figure(sp: pd.DataFrame, gpus: Sequence[str]) -> go.Figure | None:
    """dnprof's speedup over each baseline against sequence length (1 = as fast)."""
    if sp.empty:
        return None
    df = sp.assign(label=sp["baseline"].map(baseline_label))
    return _facet_lines(df, "speedup", "label", gpus, "speedup (x)", agg="mean", hline=1.0)


def memory_figure(rows: pd.DataFrame, gpus: Sequence[str]) -> go.Figure | None:
    """Peak memory against sequence length, per provider."""
    best = best_per_provider(rows)
    if best.empty or best["peak_mem_mb"].notna().sum() == 0:
        return None
    return _facet_lines(best, "peak_mem_mb", "provider", gpus, "peak memory (MB)", agg="min")


def chunk_size_figure(cs: pd.DataFrame, gpus: Sequence[str]) -> go.Figure | None:
    """dnprof-chunk's best time at chunk size 64 and 128 against sequence length."""
    if cs.empty:
        return None
    long = cs.melt(id_vars=["gpu", "mode", "B", "T", "H", "K", "V", "dtype"], value_vars=["ms_64", "ms_128"],
                   var_name="chunk", value_name="ms")
    long["chunk"] = long["chunk"].map({"ms_64": "chunk size 64", "ms_128": "chunk size 128"})
    return _facet_lines(long, "ms", "chunk", gpus, "ms", agg="min")


def roofline_figure(rs: pd.DataFrame, gpus: Sequence[str]) -> go.Figure | None:
    """Measured time as a multiple of the roofline floor (1 = at the floor)."""
    if rs.empty:
        return None
    return _facet_lines(rs, "x_floor", "provider", gpus, "time / floor", agg="min", hline=1.0)


def tuning_spread_figure(rows: pd.DataFrame, gpus: Sequence[str]) -> go.Figure | None:
    """Candidate times per tuned shape (box with every point), the winner starred."""
    tune = tune_candidates(rows)
    ok = tune[(tune["status"] == "ok") & (tune["ms"] > 0)] if len(tune) else tune
    if ok.empty:
        return None
    cols = [g for g in gpus if g in set(ok["gpu"])]
    fig = make_subplots(rows=1, cols=len(cols), subplot_titles=[esc(g) for g in cols], horizontal_spacing=0.08)
    winners = tuning_winners(rows)
    for c, gpu in enumerate(cols, start=1):
        part = ok[ok["gpu"] == gpu]
        for shape, group in part.groupby("shape", sort=True):
            fig.add_trace(go.Box(
                x=[esc(shape)] * len(group), y=group["ms"], name=esc(shape), boxpoints="all", jitter=0.4,
                pointpos=0, marker={"color": "#636efa", "size": 6}, line={"color": "#8c93f5"}, showlegend=False,
                text=[esc(v) for v in group["variant"].fillna("")],
                hovertemplate="%{text}<br>%{y:.4g} ms<extra></extra>"), row=1, col=c)
        win = winners[(winners["gpu"] == gpu) & winners["ms"].notna()]
        if len(win):
            fig.add_trace(go.Scatter(
                x=[esc(s) for s in win["shape"]], y=win["ms"], mode="markers", name="winner",
                marker={"symbol": "star", "size": 15, "color": "#ef553b", "line": {"width": 1, "color": "#333"}},
                text=[esc(v) for v in win["variant"].fillna("")], showlegend=c == 1,
                hovertemplate="winner %{text}<br>%{y:.4g} ms<extra></extra>"), row=1, col=c)
        fig.update_yaxes(title_text="ms" if c == 1 else None, row=1, col=c)
    fig.update_layout(height=460, margin={"t": 60, "b": 40})
    return fig


def tuning_heatmap_figure(maps: list[dict[str, Any]]) -> go.Figure | None:
    """Per tuned shape: best time per cell of two config parameters, relative to that shape's best."""
    if not maps:
        return None
    ncols = min(3, len(maps))
    nrows = math.ceil(len(maps) / ncols)
    titles = [f"{esc(m['gpu'])}<br>{esc(m['shape'])}" for m in maps]
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=titles, horizontal_spacing=0.1,
                        vertical_spacing=min(0.2, 0.5 / nrows))
    for i, m in enumerate(maps):
        r, c = i // ncols + 1, i % ncols + 1
        text = [["" if v is None else f"{v:.3g} ms" for v in row] for row in m["ms"]]
        fig.add_trace(go.Heatmap(
            x=[esc(v) for v in m["x"]], y=[esc(v) for v in m["y"]], z=m["z"], text=text, texttemplate="%{text}",
            coloraxis="coloraxis",
            hovertemplate=f"{esc(m['x_param'])}=%{{x}}<br>{esc(m['y_param'])}=%{{y}}<br>%{{text}}"
                          f" (%{{z:.2f}}x best)<extra></extra>"), row=r, col=c)
        fig.update_xaxes(title_text=esc(m["x_param"]), type="category", row=r, col=c)
        fig.update_yaxes(title_text=esc(m["y_param"]), type="category", row=r, col=c)
    fig.update_layout(height=360 * nrows + 80, margin={"t": 80},
                      coloraxis={"colorscale": "Viridis", "reversescale": True,
                                 "colorbar": {"title": {"text": "x best"}}})
    return fig

