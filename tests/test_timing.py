"""Timing helpers: CPU quantiles stay inside the samples, counts are exact."""

from __future__ import annotations

import itertools
import os
import stat

from dnprof.bench import timing
from dnprof.bench.results import atomic_write_text


def test_time_cpu_quantiles_lie_within_the_samples(monkeypatch):
    clock = itertools.count()
    # perf_counter gives 0,1 | 2,12 | 13,14: samples 1000, 10000 and 1000 ms
    ticks = iter([0, 1, 2, 12, 13, 14])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    t = timing.time_cpu(lambda: next(clock), repeats=3, warmup=0)
    assert t.ms == 1000.0
    assert 1000.0 <= t.ms_p20 <= t.ms <= t.ms_p80 <= 10000.0


def test_time_cpu_single_sample(monkeypatch):
    ticks = iter([0.0, 0.5])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    t = timing.time_cpu(lambda: None, repeats=1, warmup=0)
    assert (t.ms, t.ms_p20, t.ms_p80) == (500.0, 500.0, 500.0)


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "r.json").stat().st_mode)
    assert mode == 0o644
    assert (tmp_path / "r.json").read_text() == "{}"
