"""Speed-regression suite for dnprof's default kernels (pytest-benchmark; needs a CUDA GPU).

Each benchmark times one zero-argument call built by the provider (inputs drawn once, outside the
timing) and synchronises the GPU inside the timed function, so a round measures the kernels and
not just their launch. Save a baseline on a GPU machine and compare later runs against it::

    pytest tests/benchmarks --benchmark-autosave
    pytest tests/benchmarks --benchmark-compare --benchmark-compare-fail=median:10%

Shapes follow the guide's bar (bf16, B * T = 32768 tokens, H * D = 2048) at a few T and D.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from dnprof.providers import Shape, get_provider  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

TOKENS, MODEL_DIM = 32768, 2048
CASES = [
    ("dnprof-chunk", 4096, 64),
    ("dnprof-chunk", 4096, 128),
    ("dnprof-chunk", 4096, 256),
    ("dnprof-chunk", 16384, 128),
    ("dnprof-recurrent", 4096, 128),
]


def _shape(T: int, D: int) -> Shape:
    return Shape(B=TOKENS // T, T=T, H=MODEL_DIM // D, K=D, V=D, dtype=torch.bfloat16, device="cuda")


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("name, T, D", CASES, ids=[f"{n}-T{t}-D{d}" for n, t, d in CASES])
def test_kernel_speed(benchmark, name: str, T: int, D: int, mode: str) -> None:
    """Median time of one call of the default variant at this shape (verified first, so a fast wrong kernel fails)."""
    provider = get_provider(name)
    reason = provider.unavailable_reason("cuda")
    if reason:
        pytest.skip(reason)
    shape = _shape(T, D)
    resolved = provider.resolve(shape, mode)
    check = provider.verify(provider.verify_shape(shape, 1024), mode, resolved, seed=1)
    assert check.passed, f"{name} fails its float64 check: {check.errors}"
    fn = provider.build_callable(shape, mode, resolved)

    def run() -> None:
        fn()
        torch.cuda.synchronize()

    for _ in range(3):  # compile, autotune and warm the caches outside the measurement
        run()
    benchmark.extra_info.update({"variant": resolved.variant, "config_source": resolved.config_source,
                                 "B": shape.B, "T": T, "H": shape.H, "D": D, "mode": mode,
                                 "gpu": torch.cuda.get_device_name()})
    benchmark.pedantic(run, rounds=20, iterations=1, warmup_rounds=2)
