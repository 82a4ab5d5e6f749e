"""The WY (UT) transform kernels (``wy_forward``, ``wy_recompute_w``) against a float64 triangular solve.

Checks every chunk size, fused and split launches, a short last chunk per sequence, and the exact
layout of the stored ``X`` (identity rows past the end of a sequence, zeros above the diagonal).
"""

from __future__ import annotations

import pytest
import torch

from dnprof.kernels.chunk_wy import wy_forward, wy_recompute_w


def _tables(bounds: list[int], BT: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    starts, ends = [], []
    for bos, eos in zip(bounds[:-1], bounds[1:]):
        for t in range(bos, eos, BT):
            starts.append(t)
            ends.append(eos)
    return (torch.tensor(starts, dtype=torch.int32, device=device),
            torch.tensor(ends, dtype=torch.int32, device=device))


def _reference(k, v, beta, starts, ends, BT):
    """X, W, U in float64: X = (I + tril(diag(beta) K K^T, -1))^-1 per chunk, identity on padded rows."""
    T, H, K = k.shape
    V = v.shape[-1]
    k, v, beta = k.double(), v.double(), beta.double()
    X = torch.zeros(len(starts), H, BT, BT, dtype=torch.float64)
    W = torch.zeros(T, H, K, dtype=torch.float64)
    U = torch.zeros(T, H, V, dtype=torch.float64)
    for c, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        n = min(BT, e - s)
        for h in range(H):
            kc, vc, bc = k[s:s + n, h], v[s:s + n, h], beta[s:s + n, h]
            a = torch.tril(bc[:, None] * (kc @ kc.T), -1)
            eye = torch.eye(n, dtype=torch.float64)
            x = torch.linalg.solve_triangular(eye + a, eye, upper=False, unitriangular=True)
            X[c, h] = torch.eye(BT, dtype=torch.float64)
            X[c, h, :n, :n] = x
            W[s:s + n, h] = x @ (bc[:, None] * kc)
            U[s:s + n, h] = x @ (bc[:, None] * vc)
    return X, W, U


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double().cpu() - want).norm() / want.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "split"])
@pytest.mark.parametrize("BT,BK,BV", [(16, 16, 32), (32, 16, 16), (64, 32, 32), (128, 16, 32)])
def test_wy_forward_matches_float64_solve(device, BT, BK, BV, fuse):
    torch.manual_seed(BT)
    H, K, V = 2, 32, 32
    bounds = [0, 150, 187]  # 150 = not a multiple of any chunk size; a second, shorter sequence
    T = bounds[-1]
    k = torch.nn.functional.normalize(torch.randn(T, H, K, dtype=torch.float64), dim=-1).float().to(device)
    v = torch.randn(T, H, V, device=device)
    beta = torch.rand(T, H, device=device) * 0.98 + 0.01
    starts, ends = _tables(bounds, BT, device)
    X, W, U = wy_forward(k, v, beta, starts, ends, BT, BK, BV, fuse, "ieee", 4, 1)
    rX, rW, rU = _reference(k.cpu(), v.cpu(), beta.cpu(), starts.cpu(), ends.cpu(), BT)
    assert X.shape == rX.shape and X.dtype == torch.float32
    assert _rel(X, rX) < 1e-5 and _rel(W, rW) < 1e-5 and _rel(U, rU) < 1e-5
    # Exact structure: zeros above the diagonal, ones on it.
    Xc = X.cpu()
    assert torch.all(torch.triu(Xc, 1) == 0)
    assert torch.all(torch.diagonal(Xc, dim1=-2, dim2=-1) == 1)
    W2 = wy_recompute_w(k, v, beta, X, starts, ends, BT, BK, BV, "ieee", 4, 1)
    assert torch.allclose(W2, W, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("BT", [32, 128])
def test_wy_forward_head_dim_not_a_tile_multiple(device, BT):
    """K = 40, V = 24: partial key/value tiles are masked."""
    torch.manual_seed(1)
    H, K, V = 1, 40, 24
    bounds = [0, 45]
    k = torch.nn.functional.normalize(torch.randn(45, H, K), dim=-1).to(device)
    v = torch.randn(45, H, V, device=device)
    beta = torch.rand(45, H, device=device)
    starts, ends = _tables(bounds, BT, device)
    X, W, U = wy_forward(k, v, beta, starts, ends, BT, 16, 16, True, "ieee", 4, 1)
    rX, rW, rU = _reference(k.cpu(), v.cpu(), beta.cpu(), starts.cpu(), ends.cpu(), BT)
    assert _rel(X, rX) < 1e-5 and _rel(W, rW) < 1e-5 and _rel(U, rU) < 1e-5


@pytest.mark.parametrize("BT", [16, 64])
def test_wy_forward_fp16_inputs(device, BT):
    """16-bit inputs take the tf32 path for products of fp32 intermediates."""
    torch.manual_seed(2)
    H, K, V = 2, 32, 16
    bounds = [0, 70]
    k = torch.nn.functional.normalize(torch.randn(70, H, K), dim=-1).half().to(device)
    v = torch.randn(70, H, V).half().to(device)
    beta = torch.rand(70, H).half().to(device)
    starts, ends = _tables(bounds, BT, device)
    X, W, U = wy_forward(k, v, beta, starts, ends, BT, 16, 16, True, "tf32", 4, 1)
    rX, rW, rU = _reference(k.cpu(), v.cpu(), beta.cpu(), starts.cpu(), ends.cpu(), BT)
    assert _rel(X, rX) < 2e-3 and _rel(W, rW) < 2e-3 and _rel(U, rU) < 2e-3
    assert torch.all(torch.triu(X.cpu(), 1) == 0)
