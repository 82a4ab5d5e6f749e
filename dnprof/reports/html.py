"""The self-contained HTML report: tables and plotly figures in one file that needs no network.

plotly.js is inlined once in the page head; every figure is a div plus a small script that draws into it.
Every piece of text from a results file is HTML-escaped here or, inside figures, in ``figures.esc``.
"""

from __future__ import annotations

import datetime as _dt
from html import escape
from typing import Mapping, Sequence

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from dnprof import __version__
from dnprof.reports import figures, tables
from dnprof.reports.frame import ReportData
from dnprof.reports.peer import NO_PAIRS, targets_text
from dnprof.reports.speedup import (
    BASELINES,
    chunk_size_comparison,
    roofline_shares,
    speedups,
    tune_candidates,
    tuning_heatmaps,
)

#: Section ids and titles, in page order.
SECTIONS = (
    ("headline", "Headline: dnprof's speedup"),
    ("targets", "Against fla-core's DeltaNet: the targets"),
    ("throughput", "Throughput"),
    ("speedup", "Speedup against sequence length"),
    ("memory", "Peak memory"),
    ("chunk-size", "Chunk size 64 against 128"),
    ("roofline", "Time against the roofline floor"),
    ("tuning", "Tuning"),
    ("accuracy", "Accuracy"),
    ("runs", "Runs: fingerprints and commands"),
    ("failures", "Failed and errored rows"),
)

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1500px;
       padding: 0 24px 48px; color: #1d2330; }
h1 { margin: 20px 0 4px; } h2 { margin-top: 36px; border-bottom: 2px solid #dde3ee; padding-bottom: 4px; }
h3 { margin: 20px 0 6px; } section { scroll-margin-top: 48px; }
nav { position: sticky; top: 0; background: #fff; padding: 8px 0; border-bottom: 1px solid #e3e7ef; z-index: 10; }
nav a { margin-right: 14px; color: #3553a5; text-decoration: none; white-space: nowrap; }
.meta { color: #5b6475; }
.note { color: #5b6475; margin: 4px 0 10px; }
.empty { color: #8a5300; background: #fff7e6; border-left: 4px solid #f0a020; padding: 8px 12px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #dfe3ea; padding: 3px 8px; text-align: left; vertical-align: top; white-space: nowrap; }
td.wrap { white-space: normal; min-width: 14em; }
th { background: #f2f5fa; position: sticky; top: 0; }
td.good { background: #e7f6ea; } td.bad { background: #fde8e8; color: #9b1c1c; font-weight: 600; }
tr.fail td { background: #fff3f3; }
td code, td.code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px;
                   white-space: pre-wrap; word-break: break-all; min-width: 18em; }
.gpus { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.figure { margin: 8px 0 18px; }
"""


def table_html(table: tables.Table) -> str:
    """A Table as an escaped HTML table."""
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = []
    for i, row in enumerate(table.rows):
        cells = []
        for j, value in enumerate(row):
            classes = [c for c in (table.flags.get((i, j)), "code" if j in table.code_columns else None,
                                   "wrap" if j in table.wrap_columns else None) if c]
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}>{escape(value)}</td>")
        rcls = f' class="{table.row_flags[i]}"' if i in table.row_flags else ""
        body.append(f"<tr{rcls}>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def empty(message: str) -> str:
    """A plain statement that a section has no data."""
    return f'<p class="empty">{escape(message)}</p>'


def note(message: str) -> str:
    """A short explanatory line."""
    return f'<p class="note">{escape(message)}</p>'


def figure_html(fig: go.Figure, div_id: str) -> str:
    """A figure as a div and drawing script, relying on the plotly.js inlined in the page head."""
    height = fig.layout.height or 450
    inner = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, default_height=f"{height}px",
                        config={"displaylogo": False, "responsive": True})
    return f'<div class="figure">{inner}</div>'


def _figure_or_empty(fig: go.Figure | None, div_id: str, message: str) -> str:
    """The figure, or the plain no-data message."""
    return figure_html(fig, div_id) if fig is not None else empty(message)


def _headline(data: ReportData, sp, gpus: Sequence[str]) -> str:
    """Speedup overview (GPUs side by side) and each GPU's per-shape table."""
    if sp.empty:
        return empty("No speedups: no run has both an ok dnprof-chunk row and an ok baseline row at one shape "
                     "(baselines: " + ", ".join(BASELINES) + ") in the compare results given.")
    parts = [note("Speedup = baseline ms / dnprof ms at the same GPU, mode, B, T, H, K, V and dtype, over rows with "
                  "status ok, both from the same run (results file): dnprof is its fastest dnprof-chunk variant "
                  "in that run, and where several runs measured a shape beside a baseline the most recent one "
                  "counts. Above 1x dnprof is faster."),
             "<h3>Geometric mean per GPU</h3>", table_html(tables.speedup_overview(sp, gpus))]
    for gpu in gpus:
        t = tables.headline(sp, gpu)
        if len(t):
            parts += [f"<h3>{escape(gpu)}</h3>", table_html(t)]
    return "".join(parts)


def _tuning(data: ReportData, gpus: Sequence[str]) -> str:
    """Candidate spread, winners table and the config heatmap."""
    rows = data.rows
    if tune_candidates(rows).empty:
        return empty("No tuning results: no results file of kind \"tune\" was given.")
    parts = ["<h3>Candidate times per tuned shape</h3>",
             _figure_or_empty(figures.tuning_spread_figure(rows, gpus), "fig-tuning-spread",
                              "No tuning candidate ran successfully, so there are no times to show."),
             "<h3>Winning configs</h3>", table_html(tables.winners(rows)),
             "<h3>Config heatmap</h3>",
             note("Best time per cell of two config parameters, as a multiple of the tuned shape's best (1 = best)."),
             _figure_or_empty(figures.tuning_heatmap_figure(tuning_heatmaps(rows)), "fig-tuning-heatmap",
                              "No tuned shape has ok candidates varying two config parameters, so there is no "
                              "heatmap.")]
    return "".join(parts)


def _targets(rows, targets: Mapping[str, float] | None) -> str:
    """The per-shape verdicts against fla-core's DeltaNet, or why there are none."""
    table = tables.peer_targets(rows, targets)
    if not len(table):
        return empty(NO_PAIRS)
    return note(f"Each shape judged from one run (the one the headline pairs): the speedup over fla-core's "
                f"chunk_delta_rule against its mode's target ({targets_text(targets)}), peak memory no higher than "
                f"fla-core's, and every error figure both carry no higher than fla-core's (the worst ratio is "
                f"shown; each provider is checked on its own fresh inputs of that kind, at its row's verify "
                f"T). A dash: a figure is missing, so that part is not judged.") + table_html(table)


def render_html(data: ReportData, title: str = "dnprof report", targets: Mapping[str, float] | None = None) -> str:
    """The whole report page as one HTML string; ``targets``: speedup targets per mode over fla-core."""
    rows = data.rows
    gpus = data.gpus
    sp = speedups(rows)
    chunk_table = tables.chunk_sizes(rows)
    accuracy = tables.accuracy(rows)
    failed = tables.failed(rows)
    content = {
        "headline": _headline(data, sp, gpus),
        "targets": _targets(rows, targets),
        "throughput": _figure_or_empty(figures.throughput_figure(rows, gpus), "fig-throughput",
                                       "No ok compare rows with tokens/s to plot."),
        "speedup": _figure_or_empty(figures.speedup_figure(sp, gpus), "fig-speedup",
                                    "No speedups to plot (see the headline)."),
        "memory": _figure_or_empty(figures.memory_figure(rows, gpus), "fig-memory",
                                   "No ok compare rows carry peak memory."),
        "chunk-size": (figure_html(figures.chunk_size_figure(chunk_size_comparison(rows), gpus), "fig-chunk-size")
                       + table_html(chunk_table)) if len(chunk_table) else
        empty("No shape has ok dnprof-chunk rows at both chunk size 64 and 128."),
        "roofline": (note("Measured time divided by the row's roofline floor (the time to move its bytes or do its "
                          "FLOPs at peak): 1 means at the floor.")
                     + figure_html(figures.roofline_figure(roofline_shares(rows), gpus), "fig-roofline"))
        if not roofline_shares(rows).empty else empty("No ok compare rows carry a roofline floor (roofline_ms)."),
        "tuning": _tuning(data, gpus),
        "accuracy": (note("Relative error ||x - ref|| / ||ref|| against float64 from the same inputs; cells above "
                          "the row's tolerance are marked. Tuning runs contribute their winners and their failures.")
                     + table_html(accuracy)) if len(accuracy) else empty("No rows carry error figures."),
        "runs": table_html(tables.runs(data)) if len(data.runs) else empty("No results files were read."),
        "failures": table_html(failed) if len(failed) else empty("None: every row has status ok."),
    }
    nav = " ".join(f'<a href="#{sid}">{escape(name)}</a>' for sid, name in SECTIONS)
    sections = "".join(f'<section id="{sid}"><h2>{escape(name)}</h2>{content[sid]}</section>'
                       for sid, name in SECTIONS)
    made = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    n_ok = int((rows["status"] == "ok").sum()) if len(rows) else 0
    meta = (f"{len(data.runs)} results files, {len(rows)} rows ({n_ok} ok), GPUs: "
            f"{', '.join(gpus) if gpus else 'none'}. Made by dnprof {__version__} at {made}.")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
        f"<style>{_CSS}</style>"
        "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>\n"
        f"<script>{get_plotlyjs()}</script>\n"
        f"</head><body><h1>{escape(title)}</h1><p class=\"meta\">{escape(meta)}</p><nav>{nav}</nav>"
        f"{sections}</body></html>\n"
    )
