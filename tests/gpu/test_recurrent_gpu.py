"""The fused recurrent kernels on a GPU at real sizes (bf16, T = 4096, D up to 256).

Reference: the chunkwise form in float64 on the GPU (equal to the recurrent form, and fast), from
the same bf16-rounded inputs, through autograd. ``python tests/gpu/test_recurrent_gpu.py`` prints
forward and forward+backward timings of a few kernel variants at the guide's benchmark size.
"""

from __future__ import annotations

import pytest
import torch

from dnprof.bench.equivalence import relative_error, tolerance_for
from dnprof.bench.inputs import make_delta_inputs
from dnprof.reference import chunk_delta_rule_reference
from dnprof.variants.recurrent_config import RecurrentConfig

NAMES = ("o", "final_state", "dq", "dk", "dv", "dbeta", "dh0")


def _errors(x, config=None) -> dict[str, float]:
    from dnprof.kernels.recurrent import fused_recurrent_delta_rule

    o, ht = fused_recurrent_delta_rule(
        x.q, x.k, x.v, x.beta, initial_state=x.initial_state, output_final_state=True,
        cu_seqlens=x.cu_seqlens, config=config,
    )
    g = torch.autograd.grad((o.float() * x.do.float()).sum() + (ht * x.dht).sum(), x.leaves())
    leaves = [t.detach().double().requires_grad_() for t in x.leaves()]
    ro, rht = chunk_delta_rule_reference(
        *leaves[:4], chunk_size=64, initial_state=leaves[4], output_final_state=True, cu_seqlens=x.cu_seqlens
    )
    rg = torch.autograd.grad((ro * x.do.double()).sum() + (rht * x.dht.double()).sum(), leaves)
    errs = [relative_error(o, ro), relative_error(ht, rht)] + [relative_error(a, b) for a, b in zip(g, rg)]
    return dict(zip(NAMES, errs))


def _assert_close(errs: dict[str, float], tol: float) -> None:
    bad = {n: e for n, e in errs.items() if not e <= tol}
    assert not bad, f"errors above {tol}: {bad} (all: {errs})"


@pytest.mark.gpu
@pytest.mark.parametrize(
    "B,H,D,config",
    [
        pytest.param(1, 2, 256, None, id="D256-default"),
        pytest.param(2, 4, 64, None, id="D64-default"),
        pytest.param(1, 2, 256, RecurrentConfig(BV=32, num_warps=8, bwd_BV=16, bwd_num_warps=4, checkpoint=64, atomic=True),
                     id="D256-bbv16-atomic"),
        pytest.param(2, 2, 64, RecurrentConfig(BV=32, num_warps=2, bwd_BV=16, bwd_num_warps=1, checkpoint=1024, atomic=False),
                     id="D64-bbv16-partials"),
    ],
)
def test_bf16_long_sequence_matches_float64(B, H, D, config):
    x = make_delta_inputs(B, 4096, H, D, dtype=torch.bfloat16, device="cuda", seed=D + H, requires_grad=True)
    _assert_close(_errors(x, config), tolerance_for(torch.bfloat16))


@pytest.mark.gpu
def test_bf16_varlen_and_odd_head_dim():
    x = make_delta_inputs(1, 1000, 2, 100, 72, dtype=torch.bfloat16, device="cuda", seed=1,
                          cu_seqlens=[0, 1, 333, 700, 1000], requires_grad=True)
    _assert_close(_errors(x), tolerance_for(torch.bfloat16))


def _bench(budget_s: float = 150.0) -> None:
    """Print median fwd and fwd+bwd ms, peak MB and agreement with the default for a few variants."""
    import time

    from triton.testing import do_bench

    from dnprof.kernels.recurrent import fused_recurrent_delta_rule

    start = time.time()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    def R(bv: int, w: int, bbv: int, bw: int, atomic: bool = True) -> RecurrentConfig:
        return RecurrentConfig(BV=bv, num_warps=w, bwd_BV=bbv, bwd_num_warps=bw, atomic=atomic)

    sweeps = {
        64: [None, R(32, 2, 32, 2), R(64, 4, 16, 2), R(16, 1, 8, 1), R(16, 1, 16, 1, atomic=False)],
        256: [None, R(32, 8, 16, 4), R(16, 4, 8, 4), R(8, 2, 8, 2, atomic=False), R(16, 8, 16, 8)],
    }
    for D, configs in sweeps.items():
        H, T = 2048 // D, 4096
        B = 32768 // T
        x = make_delta_inputs(B, T, H, D, dtype=torch.bfloat16, device="cuda", initial_state=False)
        leaves = [t.clone().requires_grad_() for t in (x.q, x.k, x.v, x.beta)]
        base = None
        for cfg in configs:
            if time.time() - start > budget_s:
                print("time budget reached, sweep stopped", flush=True)
                return
            cfg = cfg or RecurrentConfig.default_for(D, D)
            try:
                def fwd():
                    with torch.no_grad():
                        return fused_recurrent_delta_rule(x.q, x.k, x.v, x.beta, config=cfg)

                def fwd_bwd():
                    o, _ = fused_recurrent_delta_rule(*leaves, config=cfg)
                    return torch.autograd.grad(o, leaves, x.do)

                outs = [fwd()[0]] + list(fwd_bwd())
                if base is None:
                    base, diff = outs, 0.0
                else:
                    diff = max(relative_error(a, b) for a, b in zip(outs, base))
                t_f = do_bench(fwd, warmup=25, rep=100)
                t_fb = do_bench(fwd_bwd, warmup=25, rep=200)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                fwd_bwd()
                torch.cuda.synchronize()
                peak = (torch.cuda.max_memory_allocated() - before) / 2**20
                print(f"D={D} B={B} H={H} T={T} {cfg.name:28s} fwd {t_f:7.2f} ms  fwd+bwd {t_fb:7.2f} ms  "
                      f"peak {peak:7.0f} MB  max rel diff vs default {diff:.1e}", flush=True)
            except Exception as e:  # a variant that fails is reported, not fatal to the sweep
                print(f"D={D} {cfg.name}: {type(e).__name__}: {str(e)[:200]}", flush=True)


if __name__ == "__main__":
    import sys

    _bench(float(sys.argv[1]) if len(sys.argv) > 1 else 150.0)
