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


@triton.jit
def _bf16_products(a, b, out32, out16, R: tl.constexpr):
    r = tl.arange(0, R)
    x = tl.load(a + r[:, None] * R + r[None, :])
    y = tl.load(b + r[:, None] * R + r[None, :])
    z = tl.dot(x.to(tl.bfloat16), y.to(tl.bfloat16))
    tl.store(out32 + r[:, None] * R + r[None, :], z)
    tl.store(out16 + r[:, None] * R + r[None, :], z)


def test_bf16_products_and_rounding_match_torch(device):
    """bf16 operands multiply as numbers (exactly, into fp32) and fp32 -> bf16 rounds to nearest even."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(16, 16, generator=gen).to(device) for _ in range(2))
    out32 = torch.empty(16, 16, device=device)
    out16 = torch.empty(16, 16, dtype=torch.bfloat16, device=device)
    _bf16_products[(1,)](a, b, out32, out16, 16)
    want = a.bfloat16().double() @ b.bfloat16().double()
    assert torch.allclose(out32.double(), want, rtol=1e-5, atol=1e-5)
    assert torch.equal(out16, out32.bfloat16())  # torch rounds to nearest even, as the GPU does


def test_fp32_to_bf16_rounds_to_nearest_even():
    values = torch.tensor([1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, -1.0 - 2 ** -8, 3.0e38, 1e-40, 0.0, float("inf")])
    bits = interpreter_compat._fp32_to_bf16_bits(values.numpy())
    assert torch.equal(torch.from_numpy(bits.view("int16")).view(torch.bfloat16), values.bfloat16())
