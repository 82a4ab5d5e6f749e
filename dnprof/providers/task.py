"""One (provider, shape, mode) measurement in isolation: verify, then time, then memory, as a ResultRow.

``run_task`` never raises for a provider's failure: out-of-memory becomes status ``oom``, Triton
compile errors and out-of-resources ``compile-error``, anything else ``error`` with the message,
and a failed check ``failed-verification`` (not timed). It is the unit a distributed runner can
ship to a worker: everything it needs is in its arguments, everything it found is in the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from dnprof.bench.results import ResultRow
from dnprof.bench.timing import peak_memory_mb, time_call, tokens_per_second
from dnprof.providers.base import Provider, Shape, free_memory

if TYPE_CHECKING:
    from dnprof.bench.verify import VerifyResult

#: Exception class names (anywhere in the MRO) that mean Triton could not compile or fit a kernel.
COMPILE_ERROR_NAMES = frozenset({
    "CompilationError", "CompileTimeAssertionFailure", "OutOfResources", "PTXASError",
    "UnsupportedLanguageConstruct", "InterpreterError",
})
MAX_MESSAGE = 500


@dataclass
class TaskSettings:
    """How one task is measured: seed, timing budget and the verification cap."""

    seed: int = 0
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    cpu_repeats: int = 3
    verify_seq_len: int | None = None  # cap on verification T (None: DEFAULT_VERIFY_SEQ_LEN)
    verify: bool = True


def _is_oom(exc: BaseException) -> bool:
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if isinstance(t, type))
    if oom_types and isinstance(exc, oom_types):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def classify_exception(exc: BaseException) -> tuple[str, str]:
    """(status, message) for an exception raised by a provider: oom, compile-error or error."""
    first = (str(exc).strip().splitlines() or [""])[0]
    message = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    message = message[:MAX_MESSAGE]
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if _is_oom(e):
            return "oom", message
    for e in chain:
        names = {cls.__name__ for cls in type(e).__mro__}
        module = type(e).__module__ or ""
        if names & COMPILE_ERROR_NAMES or (module.startswith("triton") and "compil" in type(e).__name__.lower()):
            return "compile-error", message
    return "error", message


def _failure_message(result: "VerifyResult") -> str:
    parts = ", ".join(f"{k} {result.errors[k]:.2e}" for k in result.failed)
    return f"above tolerance {result.tolerance:.1e}: {parts}"


def _base_row(provider: Provider, shape: Shape, mode: str, status: str, **fields: Any) -> ResultRow:
    return ResultRow(
        provider=provider.name, computes=provider.computes, mode=mode, B=shape.B, T=shape.T, H=shape.H,
        K=shape.K, V=shape.V, dtype=shape.dtype_name, status=status, device=shape.device, **fields,
    )


def run_task(
    provider: Provider | str,
    shape: Shape,
    mode: str,
    settings: TaskSettings | None = None,
) -> ResultRow:
    """Verify ``provider`` at ``shape``/``mode`` against float64, and if it passes time it; return the row."""
    if isinstance(provider, str):
        from dnprof.providers import get_provider

        provider = get_provider(provider)
    if mode not in ("fwd", "fwdbwd"):
        raise ValueError(f"mode: expected 'fwd' or 'fwdbwd', got {mode!r}")
    s = settings or TaskSettings()
    extra: dict[str, Any] = {"description": provider.description}

    reason = provider.unavailable_reason(shape.device) or provider.shape_problem(shape)
    if reason:
        return _base_row(provider, shape, mode, "unavailable", message=reason, extra=extra)

    row = _base_row(provider, shape, mode, "error", extra=extra)
    try:
        provider.begin_run()
        resolved = provider.resolve(shape, mode)
        row.variant, row.config, row.config_source = resolved.variant, resolved.config, resolved.config_source
        extra.update(resolved.extra)

        if s.verify:
            vshape = provider.verify_shape(shape, s.verify_seq_len)
            result = provider.verify(vshape, mode, resolved, seed=s.seed + 1)
            row.errors, row.tolerance, row.verify_T = dict(result.errors), result.tolerance, vshape.T
            extra["verify_B"] = vshape.B
            free_memory()
            if not result.passed:
                extra.update(provider.run_notes())
                row.status, row.message = "failed-verification", _failure_message(result)
                return row

        fn = provider.build_callable(shape, mode, resolved, seed=s.seed)
        if shape.device == "cuda":
            timing = time_call(fn, "cuda", warmup_ms=s.warmup_ms, rep_ms=s.rep_ms)
        else:
            timing = time_call(fn, "cpu", repeats=s.cpu_repeats, warmup=1)
            extra["clock"] = "cpu wall clock" + (" (Triton interpreter)" if provider.name.startswith("dnprof") else "")
        row.peak_mem_mb = peak_memory_mb(fn, shape.device)
        row.ms, row.ms_p20, row.ms_p80 = timing.ms, timing.ms_p20, timing.ms_p80
        row.tokens_per_s = tokens_per_second(shape.B, shape.T, timing.ms)
        flops = provider.flops(shape, mode, resolved)
        row.tflops = None if flops is None else flops / (timing.ms * 1e-3) / 1e12
        row.roofline_ms = provider.roofline_ms(shape, mode)
        extra.update(provider.run_notes())
        row.status = "ok" if timing.ms > 0 else "error"
        if row.status == "error":
            row.message = f"non-positive time {timing.ms!r} ms"
        return row
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        row.status, row.message = classify_exception(exc)
        row.ms = row.ms_p20 = row.ms_p80 = row.tokens_per_s = row.tflops = None
        return row
    finally:
        fn = None  # drop the inputs the callable holds before freeing
        free_memory()
