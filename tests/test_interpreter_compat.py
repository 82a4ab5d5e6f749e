"""The interpreter fix: a kernel loop whose trip count is loaded from memory runs on the CPU."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from dnprof.kernels import interpreter_compat



@triton.jit
def _sum_below_loaded_bound(bounds, out):
    n = tl.load(bounds + 1) - tl.load(bounds)
    acc = 0
    for i in range(0, n):
        acc += i
    tl.store(out, acc)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU interpreter; GPU runs compile the kernel instead")
def test_loop_over_a_loaded_trip_count_runs_in_the_interpreter():
    assert interpreter_compat.install()
    out = torch.zeros(1, dtype=torch.int32)
    _sum_below_loaded_bound[(1,)](torch.tensor([3, 10], dtype=torch.int32), out)
    assert out.item() == sum(range(7))


def test_install_is_idempotent():
    assert interpreter_compat.install() == interpreter_compat.install()
