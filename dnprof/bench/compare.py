"""The compare loop: for every shape and provider, verify -> time -> memory -> rows, saved as it goes.

Each (provider, shape, mode) is one ``run_task``: a provider that fails its float64 check is
recorded ``failed-verification`` and not timed; OOM, compile errors and other failures are
recorded and the loop carries on. The results file is rewritten atomically after every row, so an
interrupted run keeps everything it measured.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from dnprof.bench.results import ResultRow, ResultsFile, write_results
from dnprof.providers.base import Provider, Shape, free_memory
from dnprof.providers.task import TaskSettings, run_task

Runner = Callable[[Provider, Shape, str, TaskSettings], ResultRow]


def gpu_slug(fp: dict[str, Any]) -> str:
    """A filesystem-safe label for the fingerprint's GPU, e.g. ``nvidia-h100-80gb-hbm3`` (``cpu`` without one)."""
    gpu = fp.get("gpu")
    name = gpu["name"] if gpu else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")
    return slug or "unknown-gpu"


def default_output_path(fp: dict[str, Any], now: _dt.datetime | None = None, root: str | Path = "results") -> Path:
    """``results/<gpu-slug>/compare-<UTC timestamp>.json``."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    stamp = now.astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(root) / gpu_slug(fp) / f"compare-{stamp}.json"


def shape_key(row: ResultRow) -> tuple:
    """What makes two rows comparable: same mode, shape, dtype and device."""
    return (row.mode, row.B, row.T, row.H, row.K, row.V, row.dtype, row.device)


def annotate_speedups(rows: Sequence[ResultRow], baseline: str | None) -> None:
    """Set ``extra['speedup']`` (baseline ms / row ms, > 1 is faster) on every ok row with an ok baseline row."""
    base_ms: dict[tuple, float] = {}
    if baseline:
        for r in rows:
            if r.provider == baseline and r.status == "ok" and r.ms:
                base_ms.setdefault(shape_key(r), r.ms)
    for r in rows:
        r.extra.pop("speedup", None)
        r.extra.pop("baseline", None)
        b = base_ms.get(shape_key(r))
        if b is not None and r.status == "ok" and r.ms:
            r.extra["speedup"] = b / r.ms
            r.extra["baseline"] = baseline


def order_providers(providers: Sequence[Provider], baseline: str | None) -> list[Provider]:
    """The baseline first (so speedups show as soon as a row lands), the rest in the given order."""
    first = [p for p in providers if p.name == baseline]
    return first + [p for p in providers if p.name != baseline]


def run_compare(
    providers: Sequence[Provider],
    shapes: Sequence[Shape],
    modes: Sequence[str] = ("fwd", "fwdbwd"),
    *,
    settings: TaskSettings | None = None,
    baseline: str | None = None,
    output: str | Path | None = None,
    command: str = "",
    fingerprint: dict[str, Any] | None = None,
    on_row: Callable[[ResultRow], None] | None = None,
    on_start: Callable[[Provider, Shape, str], None] | None = None,
    runner: Runner | None = None,
) -> ResultsFile:
    """Measure every provider at every shape and mode; write ``output`` after each row; return the file."""
    settings = settings or TaskSettings()
    runner = runner or run_task
    if fingerprint is None:
        from dnprof.bench.fingerprint import fingerprint as _fingerprint

        fingerprint = _fingerprint()
    results = ResultsFile(kind="compare", command=command, fingerprint=fingerprint)
    ordered = order_providers(providers, baseline)
    for shape in shapes:
        for provider in ordered:
            for mode in modes:
                if on_start is not None:
                    on_start(provider, shape, mode)
                row = runner(provider, shape, mode, settings)
                results.rows.append(row)
                annotate_speedups(results.rows, baseline)
                if output is not None:
                    write_results(output, results)
                if on_row is not None:
                    on_row(row)
            free_memory()
    return results
