"""Kernel launches that fit shared memory: the software-pipelining depth is lowered when it does not.

A variant's ``num_stages`` multiplies the shared memory of every pipelined loop's tiles; at large
chunk sizes or head dims the deepest setting can exceed the GPU's per-block limit (Triton raises
``OutOfResources`` when it compiles). :func:`launch` then retries with one stage fewer, down to one
(no pipelining), and remembers the depth that fit for that kernel specialisation, so the failing
compile happens once per process, not once per call. Any other error propagates unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from triton.runtime.errors import OutOfResources

#: (kernel name, constexpr arguments, tensor dtypes, warps, requested stages) -> stages that fit
_FITTED: dict[tuple, int] = {}
#: (kernel name, requested stages, stages run) of every launch since :func:`reset_lowered`
_LOWERED: set[tuple[str, int, int]] = set()


def reset_lowered() -> None:
    """Forget which launches ran below their requested depth (a results row starts here)."""
    _LOWERED.clear()


def lowered_stages() -> list[str]:
    """Launches since :func:`reset_lowered` that ran at fewer stages than their variant names,
    e.g. ``["bwd_dh_kernel s2->s1"]``: a results file says so rather than implying the named depth."""
    return sorted(f"{name} s{asked}->s{ran}" for name, asked, ran in _LOWERED)


def _specialisation(kernel: Any, args: tuple) -> tuple | None:
    """What decides a kernel's shared memory: its constexpr arguments and tensor dtypes (None in the interpreter)."""
    params = getattr(kernel, "params", None)
    if params is None:
        return None
    constexprs = tuple(a for p, a in zip(params, args) if p.is_constexpr)
    dtypes = tuple(a.dtype for a in args if isinstance(a, torch.Tensor))
    return (kernel.fn.__name__ if hasattr(kernel, "fn") else repr(kernel), constexprs, dtypes)


def launch(kernel: Any, grid: tuple, *args: Any, num_warps: int, num_stages: int) -> int:
    """Run ``kernel[grid](*args)`` at the deepest pipelining ``<= num_stages`` that fits; return that depth."""
    spec = _specialisation(kernel, args)
    key = None if spec is None else spec + (num_warps, num_stages)
    stages = _FITTED.get(key, num_stages) if key is not None else num_stages
    while True:
        try:
            kernel[grid](*args, num_warps=num_warps, num_stages=stages)
        except OutOfResources as exc:
            if "shared memory" not in str(exc) or stages <= 1:
                raise
            stages -= 1
            continue
        if key is not None:
            _FITTED[key] = stages
        if stages < num_stages:
            _LOWERED.add((getattr(getattr(kernel, "fn", None), "__name__", repr(kernel)), num_stages, stages))
        return stages
