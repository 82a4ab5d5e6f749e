"""Compile dnprof's kernel variants for a compare run in parallel worker processes, before anything is timed.

Triton compiles a kernel at its first launch, in the launching process, one kernel after another:
a compare at head dim 256 spent most of its time limit there. Each worker runs one (variant, head
dims, dtype, mode) once on the GPU at the run's shape, which fills Triton's on-disk cache; the timed
process then loads the binaries instead of compiling them. The sequence length is a runtime
argument of every kernel, so one shape per variant is enough.

Only dnprof's own providers are compiled ahead. A peer's autotuning times configurations on the
GPU and must not share it with other work, so it stays in the timed run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

#: dnprof providers and the tuning family their configs belong to
_FAMILIES = {"dnprof-recurrent": "recurrent"}


def provider_family(name: str) -> str | None:
    """``chunk`` / ``recurrent`` for dnprof's kernel providers, None for every other provider."""
    if name.startswith("dnprof-chunk"):
        return "chunk"
    return _FAMILIES.get(name)


@dataclass
class PrecompileSummary:
    """What the ahead-of-time compile did: tasks run, seconds, and the failures by task label."""

    tasks: int = 0
    seconds: float = 0.0
    jobs: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        """One console line, e.g. ``compiled 6 dnprof kernel variants in 21.3 s on 8 workers``."""
        text = f"compiled {self.tasks} dnprof kernel variants in {self.seconds:.1f} s on {self.jobs} workers"
        if self.failed:
            text += (f"; {len(self.failed)} failed to compile ahead ("
                     + ", ".join(sorted(self.failed)) + "): the timed run reports them")
        return text


def compile_tasks(providers: Sequence[Any], shapes: Sequence[Any], modes: Sequence[str]) -> list[tuple[str, tuple]]:
    """``(label, compile_worker arguments)`` for every distinct variant the run will launch, dnprof's only."""
    from dnprof.variants.db import dtype_name

    tasks: list[tuple[str, tuple]] = []
    seen: set[tuple] = set()
    for provider in providers:
        family = provider_family(provider.name)
        if family is None:
            continue
        for shape in shapes:
            if shape.device != "cuda" or provider.unavailable_reason(shape.device) or provider.shape_problem(shape):
                continue
            dt = dtype_name(shape.dtype)
            for mode in modes:
                try:
                    resolved = provider.resolve(shape, mode)
                except Exception:  # noqa: BLE001 - the timed run records the same error against its row
                    continue
                if resolved.config is None:
                    continue
                # a rec="auto" variant tiles its serial kernels by sequences x heads: B matters there
                batch = shape.B if resolved.config.get("rec") == "auto" else None
                key = (family, json.dumps(resolved.config, sort_keys=True), shape.K, shape.V, dt, mode, batch, shape.H)
                if key in seen:
                    continue
                seen.add(key)
                label = f"{resolved.variant or provider.name} D{shape.K} {mode}"
                tasks.append((label, (family, resolved.config, shape.K, shape.V, dt, mode, shape.B, shape.T, shape.H)))
    return tasks


def precompile(providers: Sequence[Any], shapes: Sequence[Any], modes: Sequence[str], jobs: int,
               compiler: Any = None, on_done: Callable[[str, str], None] | None = None) -> PrecompileSummary:
    """Run :func:`compile_tasks` over ``jobs`` worker processes (nothing when ``jobs`` is 0 or no task).

    ``compiler`` defaults to the tuner's :class:`~dnprof.variants.tuner.ParallelCompiler`, which runs
    one task per process so that a kernel that faults cannot take others down with it.
    """
    if jobs <= 0:
        return PrecompileSummary(jobs=jobs)
    tasks = compile_tasks(providers, shapes, modes)
    summary = PrecompileSummary(tasks=len(tasks), jobs=jobs)
    if not tasks:
        return summary
    if compiler is None:
        from dnprof.variants.tuner import ParallelCompiler

        compiler = ParallelCompiler(jobs)

    def done(label: str, result: tuple) -> None:
        status, message = result[0], result[2] if len(result) > 2 else None
        if status != "ok":
            summary.failed[label] = f"{status}: {message}" if message else status
        if on_done is not None:
            on_done(label, status)

    start = time.perf_counter()
    compiler.run(tasks, done)
    summary.seconds = time.perf_counter() - start
    return summary
