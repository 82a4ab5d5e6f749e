"""The Markdown report: the tables only, for pasting into a pull request or design review."""

from __future__ import annotations

from html import escape
from typing import Mapping

from dnprof.reports import tables
from dnprof.reports.frame import ReportData
from dnprof.reports.peer import NO_PAIRS, targets_text
from dnprof.reports.speedup import speedups


def md_cell(value: str) -> str:
    """One table cell: HTML-escaped, pipes escaped, on one line."""
    return escape(" ".join(str(value).split()), quote=False).replace("|", "\\|")


def md_table(table: tables.Table) -> str:
    """A Table as a GitHub Markdown table; flagged-bad cells in bold."""
    lines = ["| " + " | ".join(md_cell(h) for h in table.headers) + " |",
             "|" + "|".join("---" for _ in table.headers) + "|"]
    for i, row in enumerate(table.rows):
        cells = []
        for j, value in enumerate(row):
            cell = md_cell(value)
            if table.flags.get((i, j)) == "bad" and cell not in ("", "-"):
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(data: ReportData, title: str = "dnprof report", targets: Mapping[str, float] | None = None) -> str:
    """Headline speedups, the targets against fla-core (``targets``: speedup per mode), chunk sizes, tuning
    winners, accuracy, failures and runs as Markdown."""
    rows = data.rows
    gpus = data.gpus
    sp = speedups(rows)
    out = [f"# {md_cell(title)}", ""]

    def section(name: str, table: tables.Table, empty: str) -> None:
        out.extend([f"## {name}", "", md_table(table) if len(table) else f"_{empty}_", ""])

    out += ["## Speedup (baseline ms / dnprof ms, geometric mean per GPU)", ""]
    if sp.empty:
        out += ["_No speedups: no run has both an ok dnprof-chunk row and an ok baseline row at one shape._", ""]
    else:
        out += [md_table(tables.speedup_overview(sp, gpus)), ""]
        for gpu in gpus:
            t = tables.headline(sp, gpu)
            if len(t):
                out += [f"### {md_cell(gpu)}", "", md_table(t), ""]
    section(f"Against fla-core's DeltaNet (speedup targets: {targets_text(targets)}; memory and errors no higher)",
            tables.peer_targets(rows, targets), NO_PAIRS)
    section("Chunk size 64 against 128", tables.chunk_sizes(rows),
            "No shape has ok dnprof-chunk rows at both chunk size 64 and 128.")
    section("Tuning winners", tables.winners(rows), "No tuning results.")
    section("Accuracy (relative error against float64; **bold** above tolerance)", tables.accuracy(rows),
            "No rows carry error figures.")
    section("Failed and errored rows", tables.failed(rows), "None: every row has status ok.")
    section("Runs", tables.runs(data), "No results files were read.")
    return "\n".join(out).rstrip() + "\n"
