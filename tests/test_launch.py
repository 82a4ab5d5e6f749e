"""launch(): pipelining depth lowered on a shared-memory overflow, remembered, other errors kept."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from triton.runtime.errors import OutOfResources

from dnprof.kernels import launch as launch_mod


class FakeKernel:
    """Records launches; overflows shared memory above ``fits`` stages, like a Triton compile would."""

    def __init__(self, name: str, fits: int, error: Exception | None = None):
        self.fn = SimpleNamespace(__name__=name)
        self.params = [SimpleNamespace(is_constexpr=False), SimpleNamespace(is_constexpr=True)]
        self.fits, self.error, self.calls = fits, error, []

    def __getitem__(self, grid):
        def run(*args, num_warps, num_stages):
            self.calls.append(num_stages)
            if self.error is not None:
                raise self.error
            if num_stages > self.fits:
                raise OutOfResources(100_000 * num_stages, 232448, "shared memory")
        return run


def test_stages_are_lowered_until_the_kernel_fits_and_remembered():
    kernel = FakeKernel("overflowing_kernel", fits=2)
    x = torch.zeros(4)
    assert launch_mod.launch(kernel, (1,), x, 64, num_warps=4, num_stages=4) == 2
    assert kernel.calls == [4, 3, 2]
    assert launch_mod.launch(kernel, (1,), x, 64, num_warps=4, num_stages=4) == 2
    assert kernel.calls == [4, 3, 2, 2]  # the failing depths are not compiled again
    # another specialisation (a different constexpr) starts from the requested depth again
    launch_mod.launch(kernel, (1,), x, 128, num_warps=4, num_stages=3)
    assert kernel.calls[-2:] == [3, 2]


def test_one_stage_that_still_overflows_raises():
    kernel = FakeKernel("hopeless_kernel", fits=0)
    with pytest.raises(OutOfResources):
        launch_mod.launch(kernel, (1,), torch.zeros(1), 16, num_warps=4, num_stages=2)
    assert kernel.calls == [2, 1]


def test_lowering_stops_at_min_stages():
    kernel = FakeKernel("narrow_kernel", fits=1)
    with pytest.raises(OutOfResources):
        launch_mod.launch(kernel, (1,), torch.zeros(1), 32, num_warps=4, num_stages=3, min_stages=2)
    assert kernel.calls == [3, 2]  # never compiled at one stage


def test_a_remembered_depth_never_goes_below_min_stages():
    kernel = FakeKernel("shared_kernel", fits=1)
    x = torch.zeros(1)
    assert launch_mod.launch(kernel, (1,), x, 32, num_warps=4, num_stages=2) == 1  # lowered, remembered
    with pytest.raises(OutOfResources):  # the same specialisation asked not to go below two stages
        launch_mod.launch(kernel, (1,), x, 32, num_warps=4, num_stages=2, min_stages=2)
    assert kernel.calls == [2, 1, 2]
    with pytest.raises(ValueError, match="asked for 1 pipelining stage"):
        launch_mod.launch(kernel, (1,), x, 32, num_warps=4, num_stages=1, min_stages=2)


def test_other_errors_propagate_without_retry():
    kernel = FakeKernel("broken_kernel", fits=4, error=RuntimeError("illegal memory access"))
    with pytest.raises(RuntimeError, match="illegal"):
        launch_mod.launch(kernel, (1,), torch.zeros(1), 16, num_warps=4, num_stages=3)
    assert kernel.calls == [3]


def test_lowered_launches_are_reported_until_reset():
    from dnprof.providers.dnprof_kernels import DnprofChunkProvider

    provider = DnprofChunkProvider()
    provider.begin_run()
    assert launch_mod.lowered_stages() == [] and provider.run_notes() == {}
    launch_mod.launch(FakeKernel("tight_kernel", fits=1), (1,), torch.zeros(1), 32, num_warps=8, num_stages=2)
    launch_mod.launch(FakeKernel("roomy_kernel", fits=4), (1,), torch.zeros(1), 32, num_warps=8, num_stages=2)
    assert provider.run_notes() == {"stages_lowered": ["tight_kernel s2->s1"]}
    provider.begin_run()
    assert launch_mod.lowered_stages() == []


def test_descriptor_scratch_sets_an_allocator_for_the_launch_only():
    """Kernels that build tensor descriptors on the device need Triton's scratch allocator: dnprof sets one
    around its launch and takes it away after, and leaves an allocator the caller set alone."""
    from triton.runtime import _allocation

    from dnprof.kernels.launch import descriptor_scratch

    assert isinstance(_allocation._allocator.get(), _allocation.NullAllocator)
    with descriptor_scratch(torch.device("cpu")):
        buf = _allocation._allocator.get()(64, 16, None)
        assert buf.numel() == 64 and buf.dtype == torch.int8
    assert isinstance(_allocation._allocator.get(), _allocation.NullAllocator)

    def mine(size, alignment, stream):
        return torch.zeros(size, dtype=torch.int8)

    token = _allocation._allocator.set(mine)
    try:
        with descriptor_scratch(torch.device("cpu")):
            assert _allocation._allocator.get() is mine
    finally:
        _allocation._allocator.reset(token)
