"""Spreading ``tune`` and ``compare`` over every reachable GPU through Ray (the ``dnprof[ray]`` extra).

The tuner and the compare loop hand independent units of work (a candidate's verification or one
timing round, a provider at one shape and mode) to an :class:`Executor` and record each outcome in
the driver process as it arrives; the driver alone writes the tuning database and the results
file. Nothing in this module imports Ray: :func:`ray_backend` loads
:mod:`dnprof.distributed.ray_executor` (which does) only when ``--ray`` is given.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

INSTALL_HINT = "pip install 'dnprof[ray]'"


@dataclass
class TaskOutcome:
    """What one task gave back: its value or why it failed, and the GPU (name, compute capability) it ran on."""

    value: Any = None
    error: str | None = None  # the task raised, or its worker died on every try
    gpu: str | None = None
    compute_capability: str | None = None
    worker: dict[str, Any] | None = None  # host, pid, GPU ids: where it ran, for the record

    @property
    def ok(self) -> bool:
        return self.error is None


OnDone = Callable[[int, TaskOutcome], None]


class Executor(Protocol):
    """Runs ``fn(*args)`` for many argument tuples, possibly elsewhere, reporting each outcome here."""

    def map(self, fn: Callable[..., Any], args: Sequence[tuple], on_done: OnDone,
            stop: Callable[[], bool] | None = None) -> None:
        """Run every task; ``on_done(index, outcome)`` runs in the caller's thread as each one finishes.

        When ``stop()`` turns true, tasks not finished yet are cancelled and ``map`` returns.
        """

    def call(self, fn: Callable[..., Any], *args: Any) -> TaskOutcome:
        """Run one task and wait for it."""


class InlineExecutor:
    """The executor protocol without a cluster: every task runs here, one after another (tests, debugging)."""

    def __init__(self, gpu: str | None = None, compute_capability: str | None = None):
        self.gpu, self.compute_capability = gpu, compute_capability

    def call(self, fn: Callable[..., Any], *args: Any) -> TaskOutcome:
        try:
            value = fn(*args)
        except Exception as exc:
            return TaskOutcome(error=f"{type(exc).__name__}: {exc}", gpu=self.gpu,
                               compute_capability=self.compute_capability)
        return TaskOutcome(value=value, gpu=self.gpu, compute_capability=self.compute_capability)

    def map(self, fn: Callable[..., Any], args: Sequence[tuple], on_done: OnDone,
            stop: Callable[[], bool] | None = None) -> None:
        for i, a in enumerate(args):
            if stop is not None and stop():
                return
            on_done(i, self.call(fn, *a))


class RayUnavailable(RuntimeError):
    """``--ray`` was given but Ray cannot be imported."""


def ray_backend():
    """The Ray executor module, imported now (it imports Ray); RayUnavailable when Ray is not installed."""
    try:
        from dnprof.distributed import ray_executor
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "ray":
            raise
        raise RayUnavailable(f"--ray needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray_executor


@contextlib.contextmanager
def ray_cluster(address: str, device: str, error: type[Exception]) -> Iterator[tuple[Any, list]]:
    """Connect to Ray (starting a local instance for ``local``) and yield (backend, GPU groups by model).

    A missing Ray or a cluster without GPUs raises ``error`` with the reason; a Ray instance this call
    started is shut down afterwards.
    """
    try:
        rx = ray_backend()
    except RayUnavailable as exc:
        raise error(str(exc)) from None
    started = rx.connect(address)
    try:
        try:
            groups = rx.discover(device)
        except rx.NoGpus as exc:
            raise error(str(exc)) from None
        yield rx, groups
    finally:
        if started:
            rx.shutdown()
