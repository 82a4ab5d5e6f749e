"""fla-core's kernels as providers: the peer every speedup is quoted against.

fla-core does not import without a GPU driver, so nothing here imports it at module load: the
availability check looks for the package without importing it, then (on a GPU) imports it and
turns any exception into the reason the provider is unavailable.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable

import torch

from dnprof.providers.deltanet import DeltaNetProvider
from dnprof.providers.gla import GLAProvider

INSTALL_HINT = "fla-core is not installed: pip install 'dnprof[baselines]'"
#: fla's chunk size for the delta rule (it supports 16/32/64 only and uses 64).
FLA_CHUNK_SIZE = 64
#: fla-core's delta-rule module.
DELTA_MODULE = "fla.ops.delta_rule"


def fla_requirement(module: str) -> Callable[[str], str | None]:
    """Installed, on a GPU, and ``module`` importable; else the reason."""

    def check(device: str) -> str | None:
        try:
            installed = importlib.util.find_spec("fla") is not None
        except Exception:
            installed = False
        if not installed:
            return INSTALL_HINT
        if device != "cuda" or not torch.cuda.is_available():
            return "fla-core needs a CUDA GPU"
        try:
            importlib.import_module(module)
        except Exception as exc:  # ImportError, or a driver/triton error raised at import
            return f"fla-core failed to import ({module}): {type(exc).__name__}: {exc}"
        return None

    return check


def _loader(module: str, attr: str) -> Callable[[], Callable]:
    def load() -> Callable:
        return getattr(importlib.import_module(module), attr)

    return load


def _keyword_delta_kernel(fn: Callable) -> Callable:
    """Pass every optional argument by keyword, as fla's signature names them."""

    def call(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
             use_qk_l2norm_in_kernel=False, cu_seqlens=None):
        return fn(q=q, k=k, v=v, beta=beta, scale=scale, initial_state=initial_state,
                  output_final_state=output_final_state, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
                  cu_seqlens=cu_seqlens)

    call.__name__ = getattr(fn, "__name__", "fla_kernel")
    return call


def _keyword_gla_kernel(fn: Callable) -> Callable:
    def call(q, k, v, g, scale=None, initial_state=None, output_final_state=False):
        return fn(q=q, k=k, v=v, g=g, scale=scale, initial_state=initial_state, output_final_state=output_final_state)

    call.__name__ = getattr(fn, "__name__", "fla_gla")
    return call


def fla_chunk_delta_rule() -> Callable:
    """fla-core's chunk_delta_rule taking dnprof's calling convention (imports fla-core: GPU only)."""
    return _keyword_delta_kernel(_loader(DELTA_MODULE, "chunk_delta_rule")())


def fla_providers() -> list:
    """fla-deltanet, fla-recurrent and fla-gla."""
    delta = DELTA_MODULE
    return [
        DeltaNetProvider(
            "fla-deltanet", "fla-core chunk_delta_rule",
            loader=fla_chunk_delta_rule,
            chunk_size=FLA_CHUNK_SIZE, requirement=fla_requirement(delta),
        ),
        DeltaNetProvider(
            "fla-recurrent", "fla-core fused_recurrent_delta_rule",
            loader=lambda: _keyword_delta_kernel(_loader(delta, "fused_recurrent_delta_rule")()),
            requirement=fla_requirement(delta),
        ),
        GLAProvider(
            "fla-gla", "fla-core chunk_gla",
            loader=lambda: _keyword_gla_kernel(_loader("fla.ops.gla", "chunk_gla")()),
            requirement=fla_requirement("fla.ops.gla"),
        ),
    ]
