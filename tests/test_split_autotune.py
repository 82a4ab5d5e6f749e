"""benchmarks/split_autotune.py: each process tries only its share of every Triton autotuner's configs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl
from triton.runtime.autotuner import Autotuner

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "split_autotune.py"
_spec = importlib.util.spec_from_file_location("split_autotune", SCRIPT)
split_autotune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(split_autotune)

BLOCKS = (16, 32, 64, 128, 256)


@triton.autotune(configs=[triton.Config({"BLOCK": b}) for b in BLOCKS], key=["n"])
@triton.jit
def _add_one(x, y, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y + i, tl.load(x + i, mask=i < n) + 1, mask=i < n)


@pytest.mark.parametrize("part, parts, want", [(0, 2, [0, 2, 4]), (1, 2, [0, 1, 3]), (4, 5, [0, 4]), (6, 7, [0]),
                                               (0, 1, [0, 1, 2, 3, 4])])
def test_each_share_takes_every_nth_config_after_the_first(part, parts, want):
    assert split_autotune.share_of(list(range(5)), part, parts) == want


@pytest.mark.parametrize("argv, message", [(["1", "2", "compare"], "usage"), (["a", "2", "--"], "integers"),
                                           (["2", "2", "--"], "0 <= I < N"), (["0", "0", "--"], "0 <= I < N")])
def test_bad_arguments_name_what_was_expected(argv, message):
    with pytest.raises(ValueError, match=message):
        split_autotune.parse(argv)


def test_an_installed_share_benchmarks_only_its_configs_and_still_runs_the_kernel(monkeypatch):
    """After ``install(1, 2)`` an autotuned kernel benchmarks configs 0, 1 and 3 of its five (the benchmark itself
    is replaced: it needs a GPU) and runs with one of them, with the right values."""
    benched = []

    def fake_bench(self, *args, config, **meta):
        benched.append(config.kwargs["BLOCK"])
        return [float(len(benched))]

    monkeypatch.setattr(Autotuner, "prune_configs", Autotuner.prune_configs)  # undone after the test
    monkeypatch.setattr(Autotuner, "_bench", fake_bench)
    split_autotune.install(1, 2)
    x = torch.arange(100, dtype=torch.float32)
    y = torch.empty_like(x)
    _add_one[lambda meta: (triton.cdiv(100, meta["BLOCK"]),)](x, y, 100)
    assert benched == [BLOCKS[0], BLOCKS[1], BLOCKS[3]]
    assert torch.equal(y, x + 1)


def test_the_script_refuses_bad_arguments_by_name():
    out = subprocess.run([sys.executable, str(SCRIPT), "3", "2", "--", "compare"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "split_autotune: I and N: expected 0 <= I < N" in out.stderr, out
