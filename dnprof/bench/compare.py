"""The compare loop: for every shape and provider, verify -> time -> memory -> rows, saved as it goes.

Each (provider, shape, mode) is one ``run_task``: a provider that fails its float64 check is
recorded ``failed-verification`` and not timed; OOM, compile errors and other failures are
recorded and the loop carries on. The results file is rewritten atomically after every row, so an
interrupted run keeps everything it measured.

With an ``executor`` (``--ray``) every task runs on some GPU of the cluster at once; rows are
recorded here as they arrive, and the file keeps them in the order of the single-GPU loop.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from dnprof.bench.results import ResultRow, ResultsFile, write_results
from dnprof.providers.base import Provider, Shape, free_memory
from dnprof.providers.task import TaskSettings, run_task

if TYPE_CHECKING:
    from dnprof.distributed import Executor, TaskOutcome

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


def failed_task_row(provider: Provider, shape: Shape, mode: str, reason: str) -> ResultRow:
    """The row of a task that brought back no row (its worker died on every try): status error."""
    return ResultRow(provider=provider.name, computes=provider.computes, mode=mode, B=shape.B, T=shape.T, H=shape.H,
                     K=shape.K, V=shape.V, dtype=shape.dtype_name, status="error", device=shape.device,
                     message=f"task failed: {reason}", extra={"description": provider.description})


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
    executor: "Executor | None" = None,
) -> ResultsFile:
    """Measure every provider at every shape and mode; write ``output`` after each row; return the file.

    With ``executor`` the tasks run in parallel through it (``on_start`` is not called).
    """
    settings = settings or TaskSettings()
    runner = runner or run_task
    if fingerprint is None:
        from dnprof.bench.fingerprint import fingerprint as _fingerprint

        fingerprint = _fingerprint()
    results = ResultsFile(kind="compare", command=command, fingerprint=fingerprint)
    ordered = order_providers(providers, baseline)
    if executor is not None:
        tasks = [(p, shape, mode) for shape in shapes for p in ordered for mode in modes]
        slots: list[ResultRow | None] = [None] * len(tasks)

        def on_done(i: int, out: "TaskOutcome") -> None:
            provider, shape, mode = tasks[i]
            row = out.value if out.ok else failed_task_row(provider, shape, mode, out.error or "failed")
            slots[i] = row
            results.rows = [r for r in slots if r is not None]
            annotate_speedups(results.rows, baseline)
            if output is not None:
                write_results(output, results)
            if on_row is not None:
                on_row(row)

        executor.map(runner, [(p, shape, mode, settings) for p, shape, mode in tasks], on_done)
        return results
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
