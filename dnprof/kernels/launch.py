"""Kernel launches that fit shared memory: the software-pipelining depth is lowered when it does not.

A variant's ``num_stages`` multiplies the shared memory of every pipelined loop's tiles; at large
chunk sizes or head dims the deepest setting can exceed the GPU's per-block limit (Triton raises
``OutOfResources`` when it compiles). :func:`launch` then retries with one stage fewer, down to the
launch's ``min_stages`` (one, no pipelining, unless the caller knows the kernel mis-compiles there),
and remembers the depth that fit for that kernel specialisation, so the failing compile happens
once per process, not once per call. Any other error propagates unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import triton
from triton.runtime.errors import OutOfResources

#: (kernel name, constexpr arguments, tensor dtypes, warps, requested stages) -> stages that fit
_FITTED: dict[tuple, int] = {}
#: kernels that overflowed shared memory at least once in this process (only these pay for a lookup)
_OVERFLOWED: set[Any] = set()
#: (kernel name, requested stages, stages run) of every launch since :func:`reset_lowered`
_LOWERED: set[tuple[str, int, int]] = set()
#: (kernel name, BK, BV, warps, stages run) noted by :func:`note_tiling` since :func:`reset_lowered`
_TILINGS: set[tuple[str, int, int, int, int]] = set()


def reset_lowered() -> None:
    """Forget which launches ran below their requested depth, and the noted tilings (a results row starts here)."""
    _LOWERED.clear()
    _TILINGS.clear()


def note_tiling(kernel: Any, BK: int, BV: int, num_warps: int, stages: int, form: str = "") -> None:
    """Remember a launch of ``kernel`` (a Triton kernel) and its tiling for the results row being measured:
    a variant whose tiling is chosen at launch (``rec="auto"``) then says what actually ran. ``form``
    (e.g. ``"+wq"``) follows the kernel's name where one kernel runs in more than one form."""
    _TILINGS.add((_name(kernel) + form, BK, BV, num_warps, stages))


def noted_tilings() -> list[str]:
    """The tilings noted since :func:`reset_lowered`, e.g. ``["bwd_dh_kernel bk64 bv32 w4 s2"]``, sorted."""
    return sorted(f"{name} bk{bk} bv{bv} w{w} s{s}" for name, bk, bv, w, s in _TILINGS)


def run_notes() -> dict[str, list[str]]:
    """What a results row or tuning record says about its launches since :func:`reset_lowered`:
    ``stages_lowered`` and ``serial_tilings``, each only when there is something to say."""
    notes = {"stages_lowered": lowered_stages(), "serial_tilings": noted_tilings()}
    return {k: v for k, v in notes.items() if v}


def lowered_stages() -> list[str]:
    """Launches since :func:`reset_lowered` that ran at fewer stages than they asked for (the variant's
    name, or its ``rec`` tiling for the serial kernels), e.g. ``["bwd_dh_kernel s2->s1"]``: a results
    file says so rather than implying the asked depth."""
    return sorted(f"{name} s{asked}->s{ran}" for name, asked, ran in _LOWERED)


def _specialisation(kernel: Any, args: tuple, num_warps: int, num_stages: int) -> tuple | None:
    """What decides a launch's shared memory: the kernel, its constexpr arguments, tensor dtypes, warps
    and requested stages (None in the interpreter, whose kernels have no parameters to inspect)."""
    params = getattr(kernel, "params", None)
    if params is None:
        return None
    constexprs = tuple(a for p, a in zip(params, args) if p.is_constexpr)
    dtypes = tuple(a.dtype for a in args if isinstance(a, torch.Tensor))
    return (_name(kernel), constexprs, dtypes, num_warps, num_stages)


def _name(kernel: Any) -> str:
    return getattr(getattr(kernel, "fn", None), "__name__", repr(kernel))


def launch(kernel: Any, grid: tuple, *args: Any, num_warps: int, num_stages: int, min_stages: int = 1) -> int:
    """Run ``kernel[grid](*args)`` at the deepest pipelining ``<= num_stages`` that fits; return that depth.

    ``min_stages`` is the shallowest depth the launch may run at: below it Triton's out-of-resources
    error propagates (a tiling that is known to mis-compile unpipelined must not be lowered to it).
    The common case costs one set lookup: only a kernel that has overflowed before in this process
    has its specialisation looked up in the remembered depths.
    """
    if num_stages < min_stages:
        raise ValueError(f"{_name(kernel)}: asked for {num_stages} pipelining stage(s), needs at least {min_stages}")
    key = None
    stages = num_stages
    if kernel in _OVERFLOWED:
        key = _specialisation(kernel, args, num_warps, num_stages)
        stages = max(min_stages, _FITTED.get(key, num_stages))
    while True:
        try:
            kernel[grid](*args, num_warps=num_warps, num_stages=stages)
            break
        except OutOfResources as exc:
            if "shared memory" not in str(exc) or stages <= max(1, min_stages):
                raise
            _OVERFLOWED.add(kernel)
            stages -= 1
    if stages < num_stages:
        key = key or _specialisation(kernel, args, num_warps, num_stages)
        if key is not None:
            _FITTED[key] = stages
        _LOWERED.add((_name(kernel), num_stages, stages))
    return stages


@contextlib.contextmanager
def descriptor_scratch(device: torch.device) -> Iterator[None]:
    """Give Triton a global scratch allocator for a launch that builds tensor descriptors on the device
    (each program writes its descriptors there), unless the caller has set one of their own."""
    def scratch(size: int, alignment: int, stream: int | None) -> torch.Tensor:
        return torch.empty(size, dtype=torch.int8, device=device)

    try:
        from triton.runtime import _allocation

        current = _allocation._allocator
        unset = isinstance(current.get(), _allocation.NullAllocator)
    except (ImportError, AttributeError):  # another Triton layout: set it for good, through the public call
        triton.set_allocator(scratch)
        yield
        return
    if not unset:
        yield
        return
    token = current.set(scratch)
    try:
        yield
    finally:
        current.reset(token)
