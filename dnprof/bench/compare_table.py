"""How ``dnprof compare`` shows its rows: a rich table that grows as rows land, and csv/json/md for piping.

The speedup column is the baseline's median time over the row's at the same shape and mode (> 1
means faster than the baseline); the fastest ok row of each shape and mode is highlighted.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from typing import Any, Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dnprof.bench.compare import annotate_speedups, shape_key
from dnprof.bench.results import ResultRow

STATUS_STYLE = {"ok": "green", "failed-verification": "bold red", "oom": "yellow", "compile-error": "magenta",
                "error": "red", "unavailable": "dim"}
#: Columns of the csv/md outputs, before the per-quantity error columns.
FLAT_COLUMNS = ("provider", "variant", "config_source", "device", "mode", "B", "T", "H", "K", "V", "dtype", "status",
                "ms", "ms_p20", "ms_p80", "tokens_per_s", "tflops", "peak_mem_mb", "roofline_ms", "speedup",
                "baseline", "max_err", "tolerance", "verify_T", "message")
ERROR_KEYS = ("o", "ht", "dq", "dk", "dv", "dbeta", "dg", "dh0")
#: Console columns of the live table; on consoles narrower than WIDE_COLUMNS the WIDE_ONLY ones are left out.
COLUMNS = ("provider", "mode", "status", "ms", "tokens/s", "TFLOP/s", "peak MB", "floor ms", "max err", "speedup")
WIDE_ONLY = ("TFLOP/s", "floor ms")
WIDE_COLUMNS = 120


def best_indices(rows: Sequence[ResultRow]) -> set[int]:
    """Indices of the fastest ok row of each shape and mode."""
    best: dict[tuple, int] = {}
    for i, r in enumerate(rows):
        if r.status != "ok" or not r.ms:
            continue
        k = shape_key(r)
        if k not in best or r.ms < rows[best[k]].ms:
            best[k] = i
    return set(best.values())


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _tokens(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.0f}"


def _max_err(r: ResultRow) -> float | None:
    return max(r.errors.values()) if r.errors else None


class CompareTable:
    """A rich table of compare rows that redraws as rows are added (use as a context manager)."""

    def __init__(self, baseline: str | None, console: Console | None = None, title: str = "dnprof compare") -> None:
        self.baseline = baseline
        self.console = console or Console()
        self.title = title
        self.rows: list[ResultRow] = []
        self.running: str | None = None
        self._live: Live | None = None
        self._t0 = time.monotonic()

    def __enter__(self) -> "CompareTable":
        self._t0 = time.monotonic()
        self._live = Live(self.render(), console=self.console, refresh_per_second=4, auto_refresh=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.running = None
        if self._live is not None:
            self._live.update(self.render(), refresh=True)
            self._live.__exit__(*exc)
            self._live = None

    def add(self, row: ResultRow) -> None:
        """Add a row and redraw (off a terminal, also log it on a line of its own)."""
        self.rows.append(row)
        self.running = None
        self._log(row_line(row))
        self._redraw()

    def start(self, provider: Any, shape: Any, mode: str) -> None:
        """Show what is being measured now (checks and first compiles can take minutes)."""
        self.running = f"running {provider.name} {mode} at {shape.label()}: float64 check, then timing"
        self._log(self.running)
        self._redraw()

    def _log(self, message: str) -> None:
        """Off a terminal the live table only prints when it closes, so a log cut short would hold
        nothing: there each start and row is also a time-stamped line as it happens."""
        if self._live is not None and not self.console.is_terminal:
            self.console.print(Text(f"[{time.monotonic() - self._t0:7.1f} s] {message}"), soft_wrap=True)

    def _redraw(self) -> None:
        if self._live is not None:
            self._live.update(self.render(), refresh=True)

    def render(self) -> Group:
        """One table per shape (in the order shapes appear), every row so far."""
        annotate_speedups(self.rows, self.baseline)
        best = best_indices(self.rows)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(self.rows):
            groups.setdefault((r.B, r.T, r.H, r.K, r.V, r.dtype, r.device), []).append(i)
        parts: list[Any] = [Text(self.title, style="bold")]
        for (B, T, H, K, V, dtype, device), idx in groups.items():
            dims = f"D={K}" if K == V else f"K={K} V={V}"
            title = f"B={B} T={T} H={H} {dims} {dtype}" + ("" if device == "cuda" else f" ({device})")
            table = Table(title=title, title_justify="left", header_style="bold")
            wide = self.console.width >= WIDE_COLUMNS
            names = [n for n in COLUMNS if wide or n not in WIDE_ONLY]
            for name in names:
                header = "ms (p20-p80)" if name == "ms" and wide else name
                table.add_column(header, justify="left" if name in ("provider", "mode", "status") else "right",
                                 no_wrap=name in ("mode", "tokens/s", "speedup"))
            for i in idx:
                cells = dict(zip(COLUMNS, self._cells(self.rows[i], wide)))
                table.add_row(*(cells[n] for n in names), style="bold green" if i in best else None)
            parts.append(table)
        if self.rows:
            parts.append(Text(
                f"speedup = {self.baseline} ms / row ms at the same shape and mode (> 1 is faster); "
                "fastest per shape and mode in bold green" if self.baseline
                else "no baseline, so no speedups; fastest per shape and mode in bold green", style="dim"))
        if self.running and self.console.is_terminal:
            parts.append(Text(self.running, style="cyan"))
        return Group(*parts)

    @staticmethod
    def _cells(r: ResultRow, wide: bool = True) -> list[Any]:
        provider = Text(r.provider)
        if r.variant:
            provider.append(f"\n{r.variant}", style="dim")
        status = Text(r.status, style=STATUS_STYLE.get(r.status, ""))
        if r.message and r.status != "ok":
            status.append(f": {r.message[:120]}", style="dim")
        if r.ms is None:
            ms = "-"
        elif wide and r.ms_p20 is not None and r.ms_p80 is not None:
            ms = f"{r.ms:.3f} ({r.ms_p20:.3f}-{r.ms_p80:.3f})"
        else:
            ms = f"{r.ms:.3f}"
        err = _max_err(r)
        err_text = "-" if err is None else f"{err:.1e}"
        if err is not None and r.verify_T is not None and r.verify_T != r.T:
            err_text += f" (T={r.verify_T})"
        speedup = r.extra.get("speedup")
        return [provider, r.mode, status, ms, _tokens(r.tokens_per_s), _num(r.tflops, ".1f" if (r.tflops or 0) >= 1 else ".2g"),
                _num(r.peak_mem_mb, ".0f"), _num(r.roofline_ms, ".3f"), err_text,
                "-" if speedup is None else f"{speedup:.2f}x"]


def row_line(r: ResultRow) -> str:
    """One line for a finished row: ``fla-deltanet fwd B=8 T=4096 H=8 D=256 bf16: ok 1.088 ms, max err 4.3e-03``."""
    dims = f"D={r.K}" if r.K == r.V else f"K={r.K} V={r.V}"
    what = f"{r.provider} {r.mode} B={r.B} T={r.T} H={r.H} {dims} {r.dtype}: {r.status}"
    if r.ms is not None:
        what += f" {r.ms:.3f} ms"
    err = _max_err(r)
    if err is not None:
        what += f", max err {err:.1e}"
    if r.status != "ok" and r.message:
        what += f" ({r.message.splitlines()[0][:160]})"
    return what


def flat_row(r: ResultRow) -> dict[str, Any]:
    """A row as a flat dict (speedup and per-quantity errors as columns) for csv and markdown."""
    d: dict[str, Any] = {c: getattr(r, c, None) for c in FLAT_COLUMNS}
    d["speedup"] = r.extra.get("speedup")
    d["baseline"] = r.extra.get("baseline")
    d["max_err"] = _max_err(r)
    for k in ERROR_KEYS:
        d[f"err_{k}"] = r.errors.get(k)
    return d


def format_rows(rows: Sequence[ResultRow], fmt: str, baseline: str | None = None) -> str:
    """Rows as ``csv``, ``json`` (a list of row objects) or ``md`` (a markdown table)."""
    rows = list(rows)
    annotate_speedups(rows, baseline)
    if fmt == "json":
        return json.dumps([r.to_dict() for r in rows], indent=1, allow_nan=True)
    flats = [flat_row(r) for r in rows]
    columns = list(FLAT_COLUMNS) + [f"err_{k}" for k in ERROR_KEYS]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for f in flats:
            writer.writerow({k: ("" if v is None else v) for k, v in f.items()})
        return buf.getvalue().rstrip("\n")
    if fmt == "md":
        md_cols = ["provider", "variant", "mode", "B", "T", "H", "K", "dtype", "status", "ms", "tokens_per_s",
                   "tflops", "peak_mem_mb", "roofline_ms", "max_err", "speedup"]

        def cell(c: str, v: Any) -> str:
            if v is None:
                return "-"
            if isinstance(v, float):
                if c == "max_err":
                    return f"{v:.1e}"
                if c == "tokens_per_s":
                    return _tokens(v)
                if c == "speedup":
                    return f"{v:.2f}x"
                return f"{v:.3f}" if c in ("ms", "roofline_ms") else f"{v:.1f}"
            return str(v).replace("|", "\\|")

        lines = ["| " + " | ".join(md_cols) + " |", "|" + "---|" * len(md_cols)]
        for f in flats:
            lines.append("| " + " | ".join(cell(c, f[c]) for c in md_cols) + " |")
        return "\n".join(lines)
    raise ValueError(f"format: expected one of csv, json, md, got {fmt!r}")
