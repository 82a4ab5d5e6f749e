"""Timing and peak-memory measurement for anything dnprof compares or tunes.

On a GPU: ``triton.testing.do_bench`` (CUDA events, warm-up excluded) reporting the median with
the 20th and 80th percentiles, and ``torch.cuda.max_memory_allocated`` around one measured call,
counted above what was allocated before it (the inputs). On the CPU (interpreter runs, labelled as
such) a wall-clock median over repeats.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Timing:
    """Median and spread of a measured call, in milliseconds."""

    ms: float
    ms_p20: float
    ms_p80: float


def time_cuda(fn: Callable[[], object], warmup_ms: float = 25, rep_ms: float = 100) -> Timing:
    """Median, p20 and p80 of ``fn`` on the current CUDA device via do_bench (events, warm-up excluded)."""
    from triton.testing import do_bench

    p50, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    return Timing(ms=float(p50), ms_p20=float(p20), ms_p80=float(p80))


def time_cpu(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> Timing:
    """Wall-clock median of ``fn`` on the CPU (interpreter figures: not comparable to GPU ones)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    if len(samples) < 2:
        return Timing(ms=samples[0], ms_p20=samples[0], ms_p80=samples[0])
    p20, _, _, p80 = statistics.quantiles(samples, n=5, method="inclusive")
    return Timing(ms=statistics.median(samples), ms_p20=p20, ms_p80=p80)


def time_call(fn: Callable[[], object], device: str, **kwargs) -> Timing:
    """Time ``fn`` with the right clock for ``device`` (``cuda`` or ``cpu``)."""
    return time_cuda(fn, **kwargs) if device == "cuda" else time_cpu(fn, **kwargs)


def peak_memory_mb(fn: Callable[[], object], device: str) -> float | None:
    """Peak CUDA memory of one call of ``fn`` above what was allocated before it, in MB (None on CPU)."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 1e6


def tokens_per_second(batch: int, seq_len: int, ms: float) -> float:
    """Tokens processed per second for one call over ``batch * seq_len`` tokens."""
    return batch * seq_len / (ms * 1e-3)


def deltanet_chunk_flops(B: int, T: int, H: int, K: int, V: int, chunk_size: int, mode: str) -> float:
    """Matrix FLOPs of the chunkwise delta rule (ALGORITHM.md's cost model); fwd+bwd counted as 3x fwd."""
    c = chunk_size
    per_token = 2 * c * (K + V) + 2 * c * K + 3 * 2 * K * V
    fwd = float(B * T * H * per_token)
    return fwd if mode == "fwd" else 3.0 * fwd


def causal_attention_flops(B: int, T: int, H: int, K: int, V: int, mode: str) -> float:
    """FLOPs of causal softmax attention (QK^T and PV, half the square); fwd+bwd is 3.5x fwd."""
    fwd = 2.0 * B * H * T * T * (K + V) / 2
    return fwd if mode == "fwd" else 3.5 * fwd
