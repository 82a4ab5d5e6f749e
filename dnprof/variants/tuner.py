"""The tuning run: compile candidates in worker processes, verify each, time it, record it.

For each family the tuner (1) builds the search's initial set from the pruned space, (2) gets every
candidate not yet checked compiled and verified -- compiled in parallel worker processes (spawn)
that run it once at the verification shape on the GPU, which fills Triton's on-disk kernel cache
so the main process only loads binaries, then verified in the main process against the float64
reference (``verify_delta_kernel``; forward output and final state, and every gradient for
``fwdbwd``) -- and (3) times the verified ones in the strategy's rounds. Every step is a durable
database record, and a step already in the database is read instead of redone, so an interrupted
run resumes and a finished one is only reported. Compiling overlaps verification; timing starts
after all workers are done so their GPU work does not disturb it.

With an ``executor`` (``--ray``: :mod:`dnprof.distributed`) every step -- a candidate's
verification, or its timing in one round -- runs as a task on some GPU of one model instead
(:func:`run_step`), the tasks of a round in parallel; their outcomes are recorded here as they
arrive, into the same database records, and the search replays from the database.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import importlib.metadata
import math
import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from dnprof.distributed import Executor, TaskOutcome
from dnprof.variants.db import (MAX_CRASHES, CandidateState, TuneKey, TuningDB, config_id)
from dnprof.variants.errors import ConfigError
from dnprof.variants.limits import DeviceLimits
from dnprof.variants.search import (Budget, Deadline, RoundPlan, SearchResult, planned_measurements,
                                    run_rounds)
from dnprof.variants.space import Candidate, Space

TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class Cancelled(Exception):
    """Internal: the run was interrupted (Ctrl-C) while a candidate was in flight."""


@dataclass
class TuneRequest:
    """What to tune: the problem shape, the search and where it runs."""

    K: int
    V: int
    T: int = 4096
    B: int = 8
    H: int = 8
    dtype: str = "bf16"
    mode: str = "fwdbwd"
    device: str = "cuda"
    families: tuple[str, ...] = ("chunk",)
    strategy: str = "halving"
    budget: Budget = field(default_factory=lambda: Budget(48, 240.0))
    jobs: int = 0
    force: bool = False
    seed: int = 0
    verify_B: int | None = None
    verify_T: int | None = None
    verify_H: int | None = None
    fla: bool = True
    plan: RoundPlan | None = None

    def verify_shape(self) -> tuple[int, int, int]:
        """(B, T, H) of verification: the timing shape's sequences and heads, of min(T, 1024) tokens.

        Same B and H as the timing shape: a variant with ``rec="auto"`` tiles its serial kernels by
        sequences x heads, so verification checks the tiling that is timed; and Triton specialises
        integer arguments (by divisibility), so another H would compile again in the timing process.
        """
        if self.device == "cpu":
            return (self.verify_B or self.B, self.verify_T or self.T, self.verify_H or self.H)
        return (self.verify_B or self.B, self.verify_T or min(self.T, 1024), self.verify_H or self.H)

    def round_plan(self) -> RoundPlan:
        if self.plan is not None:
            return self.plan
        if self.device == "cpu":  # repeats, not milliseconds, under the interpreter
            return RoundPlan(base_rep_ms=1, max_rep_ms=3, single_rep_ms=2)
        return RoundPlan()


@dataclass
class CandidateResult:
    """One candidate's outcome in this key: status, error figures and its deepest timing."""

    candidate: Candidate
    status: str  # ok | a failure type | "pending" (not reached)
    errors: dict[str, float] = field(default_factory=dict)
    tolerance: float | None = None
    message: str | None = None
    ms: float | None = None
    ms_p20: float | None = None
    ms_p80: float | None = None
    round: int | None = None
    rep_ms: float | None = None
    verify_shape: dict[str, int] | None = None
    from_db: bool = False


@dataclass
class FamilyOutcome:
    """The outcome of one family: its key, the ranked candidates, the default and the baseline."""

    family: str
    key: TuneKey
    results: list[CandidateResult]
    default: Candidate | None
    search: SearchResult | None = None
    fla_ms: float | None = None
    fla_message: str | None = None

    def ranked(self) -> list[CandidateResult]:
        """Timed candidates, best first (deepest round, then time)."""
        ok = [r for r in self.results if r.status == "ok" and r.ms]
        return sorted(ok, key=lambda r: (-(r.round or 0), r.ms))

    @property
    def winner(self) -> CandidateResult | None:
        r = self.ranked()
        return r[0] if r else None

    def default_result(self) -> CandidateResult | None:
        return next((r for r in self.results if r.candidate == self.default), None)


@dataclass
class TuneOutcome:
    """Everything a tuning run found, for the table and the results file."""

    request: TuneRequest
    families: list[FamilyOutcome]
    space: Space
    new_steps: int = 0
    elapsed_s: float = 0.0
    stopped: str | None = None


# ------------------------------------------------------------------------------------- failures
def classify_failure(exc: BaseException) -> str:
    """The failure type of an exception raised while compiling or running a candidate."""
    name = type(exc).__name__
    mod = type(exc).__module__ or ""
    if isinstance(exc, ConfigError):
        return "invalid"  # the config's own checks, or refused on this GPU before launch (RefusedOnDevice)
    if name == "OutOfResources" or "out of resource" in str(exc).lower():
        return "out-of-resources"
    if name == "OutOfMemoryError" or "CUDA out of memory" in str(exc):
        return "out-of-memory"
    if name in ("CompilationError", "CompileTimeAssertionFailure", "PTXASError", "UnsupportedLanguageConstruct") \
            or mod.startswith("triton.compiler"):
        return "compile-error"
    return "runtime-error"


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    msg = lines[0] if lines else type(exc).__name__
    return msg[:300]


def gpu_identity(device: str) -> tuple[str, str]:
    """(GPU name, compute capability) of CUDA device 0, or the interpreter's identity for ``cpu``."""
    if device == "cpu":
        return "Triton interpreter (CPU)", "interpreter"
    import torch

    props = torch.cuda.get_device_properties(0)
    return props.name, f"{props.major}.{props.minor}"


# ------------------------------------------------------------------------------------- kernels
def kernel_for(family: str) -> Callable[..., Any]:
    """dnprof's kernel entry point of ``family``."""
    if family == "chunk":
        from dnprof.kernels.chunk import chunk_delta_rule

        return chunk_delta_rule
    from dnprof.kernels.recurrent import fused_recurrent_delta_rule

    return fused_recurrent_delta_rule


def _torch_dtype(name: str):
    import torch

    return getattr(torch, TORCH_DTYPES[name])


def verify_fields(res: Any) -> dict[str, Any]:
    """The verify record fields (status, errors, tolerance, message) of a VerifyResult."""
    status = "ok" if res.passed else "failed-verification"
    msg = None
    if not res.passed:
        msg = "failed verification: " + ", ".join(f"{n} err {res.errors[n]:.3g}" for n in res.failed) \
              + f" > tolerance {res.tolerance:g}"
    return {"status": status, "errors": dict(res.errors), "tolerance": res.tolerance, "message": msg}


def default_verifier(cand: Candidate, req: TuneRequest):
    """Verify ``cand`` against float64 at the request's verification shape (a VerifyResult)."""
    from dnprof.bench.verify import verify_delta_kernel

    B, T, H = req.verify_shape()
    kernel = functools.partial(kernel_for(cand.family), config=cand.config)
    return verify_delta_kernel(kernel, B=B, T=T, H=H, K=req.K, V=req.V, dtype=_torch_dtype(req.dtype),
                               device=req.device, mode=req.mode)


def _make_call(kernel: Callable[..., Any], req: TuneRequest, B: int, T: int, H: int, device: str, inputs: Any = None):
    """A no-argument call running ``kernel`` forward (and backward for fwdbwd) on ``inputs``
    (:func:`timing_inputs`; drawn here when not given)."""
    import torch

    grads = req.mode == "fwdbwd"
    inp = inputs if inputs is not None else timing_inputs(req, B, T, H, device)
    leaves = [inp.q, inp.k, inp.v, inp.beta]

    def call():
        o, _ = kernel(inp.q, inp.k, inp.v, inp.beta)
        if grads:
            torch.autograd.grad((o,), leaves, (inp.do,))
        return o

    return call


def timing_inputs(req: TuneRequest, B: int, T: int, H: int, device: str) -> Any:
    """Seeded inputs of one timing shape (q, k unit-norm, v, beta in (0, 1), upstream gradient)."""
    from dnprof.bench.inputs import make_delta_inputs

    return make_delta_inputs(B, T, H, req.K, req.V, dtype=_torch_dtype(req.dtype), device=device,
                             initial_state=False, requires_grad=req.mode == "fwdbwd")


class KernelTimer:
    """Times candidates at the request's shape: do_bench on a GPU, wall clock under the interpreter.

    The inputs are drawn once and shared by every candidate (they are seeded, so each candidate saw
    the same values anyway): drawing them costs seconds at the timing shape, more than a round's
    measurement of a candidate."""

    def __init__(self, req: TuneRequest):
        self.req = req
        self._inputs: Any = None

    def __call__(self, cand: Candidate, rep_ms: float):
        from dnprof.bench.timing import time_call

        req = self.req
        if self._inputs is None:
            self._inputs = timing_inputs(req, req.B, req.T, req.H, req.device)
        call = _make_call(functools.partial(kernel_for(cand.family), config=cand.config), req, req.B, req.T, req.H,
                          req.device, self._inputs)
        if req.device == "cuda":
            return time_call(call, "cuda", warmup_ms=max(10.0, rep_ms / 4), rep_ms=rep_ms)
        return time_call(call, "cpu", repeats=max(1, int(rep_ms)), warmup=0)


def time_fla(req: TuneRequest) -> tuple[float | None, str | None, str | None]:
    """(ms, version, message) of fla-core's chunk_delta_rule at the request's shape, if installed."""
    try:
        version = importlib.metadata.version("fla-core")
    except importlib.metadata.PackageNotFoundError:
        return None, None, "fla-core is not installed"
    if req.device != "cuda":
        return None, version, "fla-core needs a GPU"
    try:
        from dnprof.bench.timing import time_call
        from dnprof.providers.fla import fla_chunk_delta_rule

        call = _make_call(fla_chunk_delta_rule(), req, req.B, req.T, req.H, "cuda")
        call()  # its own autotuning happens here
        return time_call(call, "cuda", rep_ms=200).ms, version, None
    except Exception as exc:  # any failure of the peer is reported, never fatal
        return None, version, _short(exc)


# ------------------------------------------------------------------------------------- workers
def fla_compile_worker(req: TuneRequest) -> None:
    """In a worker process: run fla-core's chunk_delta_rule once at the request's shape, so that its
    kernels are compiled (Triton's disk cache) while dnprof's candidates compile, not after them."""
    try:
        import torch

        from dnprof.providers.fla import fla_chunk_delta_rule

        _make_call(fla_chunk_delta_rule(), req, req.B, req.T, req.H, "cuda")()
        torch.cuda.synchronize()
    except BaseException:  # noqa: BLE001 - a warm-up only: the timed call reports any failure itself
        pass


class FlaPrewarm:
    """fla-core's first call at a shape compiles and autotunes for minutes (133 s at D = 256 on an H200);
    this runs it in a spawned process beside the candidates' compile workers. ``wait`` joins it before
    anything is timed, so its GPU work never overlaps a measurement."""

    def __init__(self, req: TuneRequest):
        ctx = multiprocessing.get_context("spawn")
        self.process = ctx.Process(target=fla_compile_worker, args=(req,), daemon=True)
        self.process.start()

    def wait(self, timeout: float = 900.0) -> None:
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


def compile_worker(family: str, config: dict[str, Any], K: int, V: int, dtype: str, mode: str,
                   B: int, T: int, H: int, verify: bool = False) -> tuple[str, float, str | None, dict | None]:
    """In a worker process: run the candidate once on the GPU at (B, T, H), filling Triton's disk cache,
    then (``verify``) check it against float64 there too.

    Verifying in the worker keeps a candidate that faults (an illegal address kills the CUDA context
    of its process) away from the tuning process. Returns (status, seconds, message, verify record
    fields or None) with status ``ok`` or a failure type; never raises.
    """
    start = time.perf_counter()
    try:
        import torch

        from dnprof.variants.db import config_from_dict

        cfg = config_from_dict(family, config)
        req = TuneRequest(K=K, V=V, T=T, B=B, H=H, dtype=dtype, mode=mode, device="cuda",
                          verify_B=B, verify_T=T, verify_H=H)
        call = _make_call(functools.partial(kernel_for(family), config=cfg), req, B, T, H, "cuda")
        call()
        torch.cuda.synchronize()
        fields = verify_fields(default_verifier(Candidate(family, cfg), req)) if verify else None
        return "ok", time.perf_counter() - start, None, fields
    except BaseException as exc:  # noqa: BLE001 - a worker reports everything
        return classify_failure(exc), time.perf_counter() - start, _short(exc), None


@dataclass(frozen=True)
class Step:
    """One unit of a tuning run that can run anywhere: verify a candidate, or time it in one round."""

    stage: str  # "verify" | "time"
    candidate: Candidate
    round: int | None = None
    rep_ms: float | None = None


def run_step(req: TuneRequest, step: Step) -> dict[str, Any]:
    """Run ``step`` in this process (a worker with one GPU) and return its record fields; never raises
    for the candidate's own failure, which becomes the status (a failure type) and message."""
    try:
        if step.stage == "verify":
            return verify_fields(default_verifier(step.candidate, req))
        timing = KernelTimer(req)(step.candidate, float(step.rep_ms or 0))
        return {"status": "ok", "ms": float(timing.ms), "ms_p20": float(timing.ms_p20), "ms_p80": float(timing.ms_p80)}
    except Exception as exc:
        return {"status": classify_failure(exc), "message": _short(exc)}


class _RoundFound(Exception):
    """Internal: the next round to run remotely has been collected."""


def default_jobs() -> int:
    """Default parallel compile workers: one per CPU core, at most 16, when a GPU is present, else 0
    (compiling a candidate is single-threaded and dominates a cold run)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return 0
    except Exception:
        return 0
    return min(16, os.cpu_count() or 1)


class ParallelCompiler:
    """Runs :func:`compile_worker` for many candidates over a spawn process pool.

    A worker that dies breaks the pool; the candidates caught in it are retried one at a time in
    fresh single-worker pools, and the one that kills its worker again is reported as a compile
    error, so one bad candidate costs one record, not the run.
    """

    def __init__(self, jobs: int, worker: Callable[..., tuple[str, float, str | None]] = compile_worker):
        self.jobs = max(1, jobs)
        self.worker = worker

    def run(self, tasks: list[tuple[Any, tuple]], on_done: Callable[[Any, tuple[str, float, str | None]], None],
            should_stop: Callable[[], bool] | None = None) -> None:
        """Compile every ``(tag, args)``; ``on_done(tag, result)`` runs in this process as each finishes.

        Once ``should_stop()`` is true (the time budget is spent) tasks not yet started are dropped:
        a later run picks them up, and the budget bounds the run instead of the task count.
        """
        ctx = multiprocessing.get_context("spawn")
        retry: list[tuple[Any, tuple]] = []
        # One candidate per worker process: a CUDA error (an illegal address, say) poisons the
        # process's context, and every later candidate in it would fail for no fault of its own.
        with cf.ProcessPoolExecutor(max_workers=min(self.jobs, len(tasks)) or 1, mp_context=ctx,
                                    max_tasks_per_child=1) as pool:
            futures = {pool.submit(self.worker, *args): (tag, args) for tag, args in tasks}
            try:
                for fut in cf.as_completed(futures):
                    tag, args = futures[fut]
                    try:
                        res = fut.result()
                    except cf.process.BrokenProcessPool:
                        retry.append((tag, args))
                        continue
                    except cf.CancelledError:
                        continue
                    except Exception as exc:
                        res = ("compile-error", 0.0, _short(exc))
                    on_done(tag, res)
                    if should_stop is not None and should_stop():
                        for f in futures:
                            f.cancel()  # only those not yet running; the running ones finish
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        for tag, args in retry:
            with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                try:
                    res = pool.submit(self.worker, *args).result()
                except cf.process.BrokenProcessPool:
                    res = ("compile-error", 0.0, "the compile worker process died (crash in Triton or the driver)")
                except Exception as exc:
                    res = ("compile-error", 0.0, _short(exc))
            on_done(tag, res)


# ------------------------------------------------------------------------------------- tuner
Event = Callable[..., None]


class Tuner:
    """Runs one tuning request against a database; every collaborator can be replaced in tests."""

    def __init__(self, request: TuneRequest, db: TuningDB, limits: DeviceLimits, space: Space, *,
                 verifier: Callable[[Candidate, TuneRequest], Any] | None = None,
                 timer: Callable[[Candidate, float], Any] | None = None,
                 compiler: ParallelCompiler | None = None,
                 fla_timer: Callable[[TuneRequest], tuple[float | None, str | None, str | None]] | None = None,
                 on_event: Event | None = None, executor: Executor | None = None):
        self.req = request
        self.db = db
        self.limits = limits
        self.space = space
        self.verifier = verifier or default_verifier
        self.timer = timer or KernelTimer(request)
        self.compiler = compiler if compiler is not None else (
            ParallelCompiler(request.jobs) if request.jobs > 0 and request.device == "cuda" else None)
        self.fla_timer = fla_timer if fla_timer is not None else time_fla
        self.on_event = on_event or (lambda *a, **k: None)
        self.executor = executor
        self.new_steps = 0

    # ------------------------------------------------------------------ helpers
    def key(self, family: str) -> TuneKey:
        return TuneKey.make(self.db.gpu, self.db.compute_capability, self.req.dtype, self.req.K, self.req.V,
                            self.req.mode, self.req.T, family=family)

    def _state(self, key: TuneKey, cand: Candidate) -> CandidateState | None:
        return self.db.candidates(key).get(config_id(cand.to_dict()))

    def _guarded(self, key: TuneKey, cand: Candidate, what: str, fn: Callable[[], Any], **fields: Any) -> Any:
        """Run ``fn`` for ``cand`` between a start record and its result; Ctrl-C writes 'interrupted'."""
        self.db.record("start", key, cand.name, cand.to_dict(), what=what, **fields)
        try:
            return fn()
        except KeyboardInterrupt:
            self.db.record("interrupted", key, cand.name, cand.to_dict(), what=what)
            raise

    def _record_verify(self, key: TuneKey, cand: Candidate, status: str, **fields: Any) -> None:
        B, T, H = self.req.verify_shape()
        self.db.record("verify", key, cand.name, cand.to_dict(), status=status, verify={"B": B, "T": T, "H": H}, **fields)
        self.new_steps += 1

    def _verify(self, key: TuneKey, cand: Candidate) -> None:
        def run():
            try:
                res = self.verifier(cand, self.req)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                return classify_failure(exc), None, _short(exc)
            return ("ok" if res.passed else "failed-verification"), res, None

        status, res, msg = self._guarded(key, cand, "verify", run)
        if res is not None:
            fields = verify_fields(res)
            status, msg = fields.pop("status"), fields.pop("message")
            self._record_verify(key, cand, status, message=msg, **fields)
        else:
            self._record_verify(key, cand, status, message=msg)
        self.on_event("verified", family=key.family, candidate=cand, status=status, message=msg)

    def _measure(self, key: TuneKey, cand: Candidate, round_: int, rep_ms: float) -> float | None:
        st = self._state(key, cand)
        if st is not None and round_ in st.times:
            t = st.times[round_]
            self.on_event("measured", family=key.family, candidate=cand, ms=t.get("ms"), round=round_, cached=True)
            return t.get("ms") if t.get("status") == "ok" else None

        def run():
            try:
                return self.timer(cand, rep_ms), None
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                return None, exc

        from dnprof.kernels.launch import reset_lowered, run_notes

        reset_lowered()
        timing, exc = self._guarded(key, cand, "time", run, round=round_)
        # a record says when the candidate ran below the pipelining depth it asked for, and the
        # tiling its serial kernels ran at when that is chosen at launch
        notes = run_notes()
        if exc is not None:
            return self._record_time(key, cand, round_, rep_ms, {"status": classify_failure(exc), "message": _short(exc)},
                                     **notes)
        return self._record_time(key, cand, round_, rep_ms, {"status": "ok", "ms": float(timing.ms),
                                                             "ms_p20": float(timing.ms_p20),
                                                             "ms_p80": float(timing.ms_p80)}, **notes)

    def _record_time(self, key: TuneKey, cand: Candidate, round_: int, rep_ms: float, res: dict[str, Any],
                     **extra: Any) -> float | None:
        """Record one timing outcome (``run_step``'s fields); returns the median ms, or None on failure."""
        shape = {"B": self.req.B, "T": self.req.T, "H": self.req.H}
        if res.get("status") != "ok":
            self.db.record("time", key, cand.name, cand.to_dict(), status=res.get("status", "runtime-error"),
                           message=res.get("message"), round=round_, rep_ms=rep_ms, shape=shape, **extra)
            ms = None
        else:
            ms = float(res["ms"])
            self.db.record("time", key, cand.name, cand.to_dict(), status="ok", ms=ms, ms_p20=float(res["ms_p20"]),
                           ms_p80=float(res["ms_p80"]), round=round_, rep_ms=rep_ms, shape=shape,
                           device=self.req.device, **extra)
        self.new_steps += 1
        self.on_event("measured", family=key.family, candidate=cand, ms=ms, round=round_, cached=False)
        return ms

    # ------------------------------------------------------------------ remote steps (executor)
    def _run_remote(self, key: TuneKey, steps: list[Step], stop: Callable[[], bool]) -> None:
        """Run ``steps`` through the executor, recording each outcome here as it arrives."""

        def on_done(i: int, out: TaskOutcome) -> None:
            step = steps[i]
            if not out.ok:
                res = {"status": "runtime-error", "message": out.error}
            elif out.gpu is not None and (out.gpu, out.compute_capability) != (self.db.gpu, self.db.compute_capability):
                res = {"status": "runtime-error", "message": f"ran on {out.gpu} (cc {out.compute_capability}), not on "
                                                              f"this database's {self.db.gpu} (cc {self.db.compute_capability})"}
            else:
                res = dict(out.value)
            extra = {"worker": out.worker} if out.worker else {}
            if step.stage == "verify":
                status, msg = res.pop("status"), res.pop("message", None)
                self._record_verify(key, step.candidate, status, message=msg, **res, **extra)
                self.on_event("verified", family=key.family, candidate=step.candidate, status=status, message=msg)
            else:
                self._record_time(key, step.candidate, int(step.round or 0), float(step.rep_ms or 0), res, **extra)

        self.executor.map(run_step, [(self.req, s) for s in steps], on_done, stop=stop)

    def _next_round(self, key: TuneKey, cands: list[Candidate], default: Candidate | None,
                    announced: set[tuple[str, int]]) -> list[Step]:
        """The timing steps of the earliest round the database does not hold yet (empty: the search is done).

        Found by running the search itself over the database: a measurement it holds is answered,
        the first missing ones are collected up to the end of their round.
        """
        batch: list[Step] = []

        def probe(cand: Candidate, round_: int, rep_ms: float) -> float | None:
            st = self._state(key, cand)
            if st is not None and round_ in st.times:
                t = st.times[round_]
                if (cand.name, round_) not in announced:
                    announced.add((cand.name, round_))
                    self.on_event("measured", family=key.family, candidate=cand, ms=t.get("ms"), round=round_,
                                  cached=True)
                return t.get("ms") if t.get("status") == "ok" else None
            if batch and round_ != batch[0].round:
                raise _RoundFound
            batch.append(Step("time", cand, round_, rep_ms))
            return None

        try:
            run_rounds(self.req.strategy, cands, probe, default=default, plan=self.req.round_plan())
        except _RoundFound:
            pass
        return batch

    def _remote_rounds(self, key: TuneKey, cands: list[Candidate], default: Candidate | None,
                       deadline: Deadline) -> SearchResult:
        """The strategy's rounds with each round's timings run in parallel through the executor."""
        announced: set[tuple[str, int]] = set()
        while not deadline():
            batch = self._next_round(key, cands, default, announced)
            if not batch or any((s.candidate.name, s.round) in announced for s in batch):
                break  # done, or a step ran and left no record (never loop on it)
            announced.update((s.candidate.name, int(s.round or 0)) for s in batch)
            self._run_remote(key, batch, deadline)
        missing: set[Candidate] = set()

        def recorded(cand: Candidate, round_: int, rep_ms: float) -> float | None:
            st = self._state(key, cand)
            if st is not None and round_ in st.times:
                t = st.times[round_]
                return t.get("ms") if t.get("status") == "ok" else None
            missing.add(cand)
            return None

        search = run_rounds(self.req.strategy, cands, recorded, default=default, plan=self.req.round_plan())
        if missing:  # not measured within the budget: not a failure
            search.failed = [c for c in search.failed if c not in missing]
            search.stopped = search.stopped or "time budget"
        return search

    # ------------------------------------------------------------------ phases
    def _prepare(self, key: TuneKey, cands: list[Candidate], deadline: Deadline) -> None:
        """Compile (workers) and verify every candidate without a verify record."""
        states = self.db.candidates(key)
        todo = []
        for c in cands:
            st = states.get(config_id(c.to_dict()))
            if st is not None and st.verify is not None:
                continue
            if st is not None and st.crashes >= MAX_CRASHES:
                self._record_verify(key, c, "runtime-error",
                                    message=f"the process died {st.crashes} times while running this candidate")
                continue
            todo.append(c)
        self.on_event("phase", family=key.family, phase="verify", total=len(todo))
        if not todo:
            return
        if self.executor is not None:
            self._run_remote(key, [Step("verify", c) for c in todo], deadline)
            return
        if self.compiler is None:
            for c in todo:
                if deadline():
                    return
                self._verify(key, c)
            return
        B, T, H = self.req.verify_shape()
        in_worker = self.verifier is default_verifier
        tasks = [(c, (c.family, c.to_dict(), self.req.K, self.req.V, self.req.dtype, self.req.mode, B, T, H)
                  + ((True,) if in_worker else ())) for c in todo]

        def on_done(cand: Candidate, res: tuple) -> None:
            status, secs, msg = res[:3]
            fields = res[3] if len(res) > 3 else None
            self.on_event("compiled", family=key.family, candidate=cand, status=status, seconds=secs)
            if deadline():
                return
            if fields is not None:  # verified in the worker
                fields = dict(fields)
                status, msg = fields.pop("status"), fields.pop("message")
                self._record_verify(key, cand, status, message=msg, compile_s=round(secs, 2), **fields)
                self.on_event("verified", family=key.family, candidate=cand, status=status, message=msg)
            elif status != "ok":
                self._record_verify(key, cand, status, message=msg, compile_s=round(secs, 2))
                self.on_event("verified", family=key.family, candidate=cand, status=status, message=msg)
            else:
                self._verify(key, cand)

        self.compiler.run(tasks, on_done, should_stop=deadline)

    def _fla_version(self, key: TuneKey) -> str | None:
        """fla-core's installed version when this run should time it at ``key`` (None: not installed or off)."""
        if not self.req.fla or key.family != "chunk":
            return None
        try:
            return importlib.metadata.version("fla-core")
        except importlib.metadata.PackageNotFoundError:
            return None

    def _start_fla_prewarm(self) -> FlaPrewarm | None:
        """Compile fla-core beside the candidates when it will be timed and is not in the database yet."""
        if self.fla_timer is not time_fla or not isinstance(self.compiler, ParallelCompiler) or self.req.device != "cuda":
            return None
        if "chunk" not in self.req.families:
            return None
        key = self.key("chunk")
        version = self._fla_version(key)
        if version is None or self.db.baseline(key, "fla-core", version) is not None:
            return None
        return FlaPrewarm(self.req)

    def _baseline(self, key: TuneKey) -> tuple[float | None, str | None]:
        if not self.req.fla or key.family != "chunk":
            return None, None
        version = self._fla_version(key)
        if version is None:
            return None, "fla-core is not installed"
        rec = self.db.baseline(key, "fla-core", version)
        if rec is not None:
            return rec.get("ms"), rec.get("message")
        self.on_event("phase", family=key.family, phase="fla", total=1)
        ms, version, msg = self.fla_timer(self.req)
        if ms is not None or version is not None:
            self.db.record("baseline", key, provider="fla-core", version=version, ms=ms, message=msg,
                           shape={"B": self.req.B, "T": self.req.T, "H": self.req.H})
        return ms, msg

    def run(self) -> TuneOutcome:
        """Tune every requested family; returns the outcome (the database holds every step)."""
        start = time.monotonic()
        deadline = Deadline(self.req.budget.seconds, start)
        outcomes = []
        stopped = None
        prewarm = self._start_fla_prewarm()
        try:
            for family in self.req.families:
                outcome, reason = self._run_family(family, deadline, prewarm)
                outcomes.append(outcome)
                stopped = stopped or reason
        finally:
            if prewarm is not None:
                prewarm.wait(0)  # stops it if the run ended early (an error, Ctrl-C)
        from dnprof.variants import selection

        selection.clear_cache()
        return TuneOutcome(self.req, outcomes, self.space, self.new_steps, time.monotonic() - start, stopped)

    def _run_family(self, family: str, deadline: Deadline,
                    prewarm: FlaPrewarm | None) -> tuple[FamilyOutcome, str | None]:
        """Verify and time one family's candidates: its outcome, and why its search stopped early (None: it did not)."""
        key = self.key(family)
        if self.req.force:
            self.db.reset(key)
        default = self.space.defaults.get(family)
        cands = self.space.searched(family, self.req.strategy, self.req.budget, seed=self.req.seed)
        self.on_event("start", family=family, key=key, candidates=cands)
        self._prepare(key, cands, deadline.fraction(0.7) if self.req.budget.seconds else deadline)
        states = self.db.candidates(key)
        verified = [c for c in cands if (st := states.get(config_id(c.to_dict()))) is not None and st.verified]
        if prewarm is not None:
            prewarm.wait()  # its GPU work must be over before anything is timed
        self.on_event("phase", family=family, phase="time",
                      total=planned_measurements(self.req.strategy, len(verified)))
        if self.executor is not None:
            search = self._remote_rounds(key, verified, default, deadline)
        else:
            search = run_rounds(self.req.strategy, verified, functools.partial(self._measure, key),
                                default=default, plan=self.req.round_plan(), out_of_time=deadline)
        stopped = search.stopped or ("time budget" if deadline() else None)
        fla_ms, fla_msg = self._baseline(key) if search.measured else (None, None)
        return FamilyOutcome(family, key, self._results(key, cands), default, search, fla_ms, fla_msg), stopped

    def _results(self, key: TuneKey, cands: list[Candidate]) -> list[CandidateResult]:
        states = self.db.candidates(key)
        out = []
        for c in cands:
            st = states.get(config_id(c.to_dict()))
            if st is None or st.verify is None:
                out.append(CandidateResult(c, "pending"))
                continue
            v = st.verify
            r = CandidateResult(c, v.get("status", "runtime-error"), errors=v.get("errors") or {},
                                tolerance=v.get("tolerance"), message=v.get("message"), verify_shape=v.get("verify"))
            bad = st.timing_failure
            best = st.best_time
            if bad is not None:
                r.status, r.message = bad.get("status", "runtime-error"), bad.get("message")
            elif best is not None:
                r.ms, r.ms_p20, r.ms_p80 = best.get("ms"), best.get("ms_p20"), best.get("ms_p80")
                r.round, r.rep_ms = best.get("round", 0), best.get("rep_ms")
            elif r.status == "ok":
                r.status = "pending"  # verified, not timed (budget)
                r.message = "verified; not timed within the budget"
            out.append(r)
        return out
