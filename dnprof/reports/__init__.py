"""Reports from results files: a pandas frame, speedups, plotly HTML, Markdown tables and CSV."""

from __future__ import annotations

from typing import Mapping

from dnprof.reports.frame import ReportData, flat_frame, frame_from_results, load_report_data, to_csv

__all__ = ["ReportData", "flat_frame", "frame_from_results", "load_report_data", "to_csv", "render_html",
           "render_markdown"]


def render_html(data: ReportData, title: str = "dnprof report", targets: Mapping[str, float] | None = None) -> str:
    """The self-contained HTML report (imports plotly on first use); ``targets``: speedup per mode over fla-core."""
    from dnprof.reports.html import render_html as _render

    return _render(data, title, targets)


def render_markdown(data: ReportData, title: str = "dnprof report", targets: Mapping[str, float] | None = None) -> str:
    """The Markdown tables report; ``targets``: speedup per mode over fla-core."""
    from dnprof.reports.markdown import render_markdown as _render

    return _render(data, title, targets)
