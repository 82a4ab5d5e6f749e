"""Ray as dnprof's executor: each unit of work is a Ray task holding one GPU, anywhere in the cluster.

``connect`` joins a cluster (or starts a local instance that uses every local GPU); ``discover``
runs one probe task per GPU node and groups the nodes by GPU model (name and compute capability,
as the worker reports them), since a tuning result belongs to one model. A :class:`RayExecutor`
runs the tasks of one group on that group's nodes only, collects the outcomes with ``ray.wait`` in
the driver as they arrive, and attaches the GPU each one ran on. Ray's own task retry covers dead
workers and lost nodes (``max_retries=1``: one more try on a fresh worker); a task whose worker
dies twice comes back as a failed :class:`~dnprof.distributed.TaskOutcome` naming the reason.
Exceptions raised by the work itself are not retried (``retry_exceptions=False``): dnprof's task
functions already turn a candidate's failure into a result.

Importing this module imports Ray; :func:`dnprof.distributed.ray_backend` does so only for ``--ray``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

import ray
from ray.exceptions import (NodeDiedError, OutOfMemoryError, RayError, RayTaskError, TaskCancelledError,
                            WorkerCrashedError)
from ray.util.scheduling_strategies import In, NodeAffinitySchedulingStrategy, NodeLabelSchedulingStrategy

from dnprof.distributed import OnDone, TaskOutcome
from dnprof.variants.limits import DeviceLimits
from dnprof.variants.tuner import gpu_identity

#: Every task holds one GPU; a task whose worker dies runs once more on a fresh worker, then fails.
TASK_OPTIONS: dict[str, Any] = {"num_gpus": 1, "max_retries": 1, "retry_exceptions": False}
#: Seconds between checks of stop/cancel while waiting, and between checks that the group's nodes live.
WAIT_S = 0.25
NODE_CHECK_S = 5.0
NODE_ID_LABEL = "ray.io/node-id"

T = TypeVar("T")
Identity = Callable[[str], "tuple[str, str]"]


class NoGpus(RuntimeError):
    """The Ray cluster has no GPU a task can hold, or none answered the probe."""


# --------------------------------------------------------------------------------------- cluster
def connect(address: str | None = None) -> bool:
    """Join the cluster at ``address`` (``None``/``"local"``: start a local instance with every local GPU).

    Returns True when this call started Ray (the caller then shuts it down); an already initialised
    Ray (a test, a notebook) is used as it is.
    """
    if ray.is_initialized():
        return False
    if address in (None, "", "local"):
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return True


def shutdown() -> None:
    """Disconnect from (and, for a local instance, stop) Ray."""
    ray.shutdown()


def _prepare_worker(device: str) -> None:
    if device == "cpu":  # before any Triton kernel is defined in this worker
        os.environ.setdefault("TRITON_INTERPRET", "1")


def _where() -> dict[str, Any]:
    ctx = ray.get_runtime_context()
    return {"host": socket.gethostname(), "node": ctx.get_node_id()[:16], "pid": os.getpid(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}


@dataclass
class WorkerInfo:
    """What a probe task found on one node: its GPU, the GPU's limits, the fingerprint and usable providers."""

    gpu: str
    compute_capability: str
    limits: DeviceLimits
    fingerprint: dict[str, Any]
    providers: list[str] = field(default_factory=list)


def _probe(identity: Identity, device: str) -> WorkerInfo:
    """On a worker holding one GPU: identify it and read what tuning and comparing need to know."""
    _prepare_worker(device)
    from dnprof.bench.fingerprint import fingerprint
    from dnprof.providers import available_providers
    from dnprof.variants.limits import device_limits

    gpu, cc = identity(device)
    return WorkerInfo(gpu, cc, device_limits(None, device), fingerprint(),
                      [p.name for p in available_providers(device)])


@dataclass
class GpuGroup:
    """The cluster's GPUs of one model: the nodes holding them, how many, and one worker's report."""

    info: WorkerInfo
    node_ids: tuple[str, ...]
    gpus: int

    @property
    def gpu(self) -> str:
        return self.info.gpu

    @property
    def compute_capability(self) -> str:
        return self.info.compute_capability

    @property
    def label(self) -> str:
        return f"{self.gpu} (cc {self.compute_capability})"

    def fingerprint(self) -> dict[str, Any]:
        """A worker's fingerprint, with the GPU count and nodes of the whole group (results files)."""
        fp = dict(self.info.fingerprint)
        if fp.get("gpu"):
            fp["gpu"] = dict(fp["gpu"], count=self.gpus)
        fp["ray"] = {"nodes": len(self.node_ids), "gpus": self.gpus}
        return fp


def group_nodes(found: Sequence[tuple[str, int, WorkerInfo]]) -> list[GpuGroup]:
    """Group ``(node id, GPU count, probe report)`` by GPU model; most GPUs first."""
    groups: dict[tuple[str, str], GpuGroup] = {}
    for node_id, gpus, info in found:
        key = (info.gpu, info.compute_capability)
        g = groups.get(key)
        if g is None:
            groups[key] = GpuGroup(info, (node_id,), gpus)
        else:
            g.node_ids += (node_id,)
            g.gpus += gpus
    return sorted(groups.values(), key=lambda g: (-g.gpus, g.gpu))


def discover(device: str = "cuda", identity: Identity = gpu_identity, timeout_s: float = 600.0) -> list[GpuGroup]:
    """Probe every alive GPU node once (a task pinned to it) and group the nodes by GPU model.

    A node whose probe dies or does not start within ``timeout_s`` (its GPUs all busy) is left out.
    """
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) >= 1]
    if not nodes:
        raise NoGpus("the Ray cluster has no GPU: start its nodes with GPUs (ray start --num-gpus N), "
                     "or run without --ray")
    probe = ray.remote(_probe)
    refs = {probe.options(**TASK_OPTIONS, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(identity, device): n for n in nodes}
    ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    for ref in late:
        ray.cancel(ref)
    found = []
    for ref in ready:
        try:
            info = ray.get(ref)
        except RayError:
            continue
        node = refs[ref]
        found.append((node["NodeID"], int(node["Resources"]["GPU"]), info))
    if not found:
        raise NoGpus("no GPU node of the Ray cluster answered (every probe task died or waited too long)")
    return group_nodes(found)


# --------------------------------------------------------------------------------------- tasks
def _run_on_worker(identity: Identity, device: str, fn: Callable[..., Any], args: tuple) -> tuple:
    """On a worker holding one GPU: ``fn(*args)``, with the GPU's identity and where it ran."""
    _prepare_worker(device)
    value = fn(*args)
    gpu, cc = identity(device)
    return value, gpu, cc, _where()


def failure_reason(exc: BaseException) -> str:
    """One line saying why a task came back without a value."""
    if isinstance(exc, WorkerCrashedError):
        return "its worker process died on both tries (killed, or crashed in the GPU driver or Triton)"
    if isinstance(exc, NodeDiedError):
        return "its node was lost on both tries"
    if isinstance(exc, OutOfMemoryError):
        return "Ray killed its worker on both tries: the node ran out of host memory"
    if isinstance(exc, TaskCancelledError):
        return "cancelled"
    if isinstance(exc, RayTaskError):
        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
        if cause is not None:
            first = (str(cause).strip().splitlines() or [""])[0]
            return f"{type(cause).__name__}: {first}"[:300]
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


class RayExecutor:
    """Runs tasks as Ray tasks of one GPU each, on the nodes of one GPU group (all GPUs when none).

    Implements :class:`dnprof.distributed.Executor`. ``cancel`` (shared by the executors of one
    run) stops every executor: their unfinished tasks are cancelled and ``map`` raises
    KeyboardInterrupt, as a Ctrl-C in a single-GPU run does.
    """

    def __init__(self, group: GpuGroup | None, device: str = "cuda", identity: Identity = gpu_identity,
                 cancel: threading.Event | None = None):
        self.group = group
        self.device = device
        self.identity = identity
        self.cancel = cancel or threading.Event()

    def _remote(self):
        opts = dict(TASK_OPTIONS)
        if self.group is not None:
            opts["scheduling_strategy"] = NodeLabelSchedulingStrategy(hard={NODE_ID_LABEL: In(*self.group.node_ids)})
        return ray.remote(_run_on_worker).options(**opts)

    def _group_alive(self) -> bool:
        if self.group is None:
            return True
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        return bool(alive.intersection(self.group.node_ids))

    @staticmethod
    def _collect(ref: Any) -> TaskOutcome:
        try:
            value, gpu, cc, where = ray.get(ref)
        except RayError as exc:
            return TaskOutcome(error=failure_reason(exc))
        return TaskOutcome(value=value, gpu=gpu, compute_capability=cc, worker=where)

    def map(self, fn: Callable[..., Any], args: Sequence[tuple], on_done: OnDone,
            stop: Callable[[], bool] | None = None) -> None:
        """Submit every task at once (Ray queues them for free GPUs); report each as it finishes."""
        remote = self._remote()
        pending = {remote.remote(self.identity, self.device, fn, tuple(a)): i for i, a in enumerate(args)}
        checked = time.monotonic()
        try:
            while pending:
                if self.cancel.is_set():
                    raise KeyboardInterrupt
                if stop is not None and stop():
                    return
                done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                for ref in done:
                    on_done(pending.pop(ref), self._collect(ref))
                if pending and time.monotonic() - checked > NODE_CHECK_S:
                    checked = time.monotonic()
                    if not self._group_alive():
                        lost = f"no node with a {self.group.label} is left in the Ray cluster"
                        for ref, i in list(pending.items()):
                            ray.cancel(ref)
                            del pending[ref]
                            on_done(i, TaskOutcome(error=lost))
        finally:
            for ref in pending:  # interrupted, out of time, or on_done raised: nothing left running
                ray.cancel(ref)

    def call(self, fn: Callable[..., Any], *args: Any) -> TaskOutcome:
        """Run ``fn(*args)`` as one task and wait for its outcome."""
        out: list[TaskOutcome] = []
        self.map(fn, [args], lambda i, o: out.append(o))
        return out[0] if out else TaskOutcome(error="cancelled")


def run_per_group(groups: Sequence[GpuGroup], fn: Callable[[GpuGroup], T], cancel: threading.Event) -> list[T]:
    """``fn(group)`` for every group at once (a driver thread each); Ctrl-C sets ``cancel`` and re-raises.

    The first exception of any group is raised after every group has finished.
    """
    if len(groups) == 1:
        return [fn(groups[0])]
    results: list[Any] = [None] * len(groups)
    errors: list[BaseException | None] = [None] * len(groups)

    def work(i: int) -> None:
        try:
            results[i] = fn(groups[i])
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors[i] = exc

    threads = [threading.Thread(target=work, args=(i,), name=f"dnprof-{g.label}", daemon=True)
               for i, g in enumerate(groups)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        cancel.set()
        for t in threads:
            t.join()
        raise
    for exc in errors:
        if exc is not None:
            raise exc
    return results


# --------------------------------------------------------------------------------------- tuning
def _fla_on(executor: RayExecutor, req: Any) -> tuple[float | None, str | None, str | None]:
    from dnprof.variants.tuner import time_fla

    out = executor.call(time_fla, req)
    return out.value if out.ok else (None, None, out.error)


def tune_groups(req: Any, groups: Sequence[GpuGroup], space_for: Callable[[GpuGroup], Any],
                db_for: Callable[[GpuGroup], Any], on_event: Callable[..., None] | None = None,
                identity: Identity = gpu_identity, cancel: threading.Event | None = None) -> list[tuple[GpuGroup, Any]]:
    """Run the tuning request on every GPU group at once, each into its own database.

    ``space_for(group)`` gives the group's variant space, ``db_for(group)`` its TuningDB (closed
    here), ``on_event(group, kind, **info)`` the tuner's events. Returns (group, TuneOutcome) pairs.
    """
    from dnprof.variants.tuner import Tuner

    cancel = cancel or threading.Event()

    def one(group: GpuGroup) -> tuple[GpuGroup, Any]:
        executor = RayExecutor(group, req.device, identity=identity, cancel=cancel)
        events = (lambda kind, **info: on_event(group, kind, **info)) if on_event is not None else None
        space = space_for(group)
        with db_for(group) as db:
            tuner = Tuner(req, db, space.limits, space, executor=executor, on_event=events,
                          fla_timer=lambda r: _fla_on(executor, r))
            return group, tuner.run()

    return run_per_group(groups, one, cancel)
