"""Run each chunkwise kernel stage alone, synchronising after each, to find a failing launch.

Usage (GPU): CUDA_LAUNCH_BLOCKING=1 python benchmarks/stage_check.py --head-dim 256 [--variant NAME]
"""

from __future__ import annotations

import argparse
import sys

import torch

from dnprof.bench.inputs import make_delta_inputs
from dnprof.kernels import chunk as ck
from dnprof.variants.chunk_config import ChunkConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--head-dim", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--variant", default=None)
    a = ap.parse_args()
    D = a.head_dim
    cfg = ChunkConfig.from_name(a.variant) if a.variant else ChunkConfig.default_for(D, D)
    print("config", cfg.name, flush=True)
    inp = make_delta_inputs(a.batch, a.seq_len, a.heads, D, D, dtype=torch.bfloat16, device="cuda")
    flat = [t.reshape(-1, *t.shape[2:]).contiguous() for t in (inp.q, inp.k, inp.v, inp.beta)]
    q, k, v, beta = flat
    bounds = [i * a.seq_len for i in range(a.batch + 1)]
    tables = ck._ChunkTables(bounds, cfg.chunk_size, q.device)
    h0 = inp.initial_state.contiguous()
    stage = "forward"
    try:
        o, ht, X, Hs, Vn, W = ck._forward(q, k, v, beta, D ** -0.5, h0, tables, cfg, True, save=True)
        torch.cuda.synchronize()
        print("forward ok", float(o.float().norm()), flush=True)
        stage = "backward"
        do = inp.do.reshape(-1, a.heads, D).contiguous()
        res = ck._backward(q, k, v, beta, D ** -0.5, X, Hs, Vn, W, do, inp.dht.float().contiguous(), tables, cfg, True)
        torch.cuda.synchronize()
        print("backward ok", [float(r.float().norm()) for r in res if r is not None], flush=True)
    except Exception as exc:  # noqa: BLE001 - report the stage and the launch that failed
        print(f"FAILED in {stage}: {type(exc).__name__}: {exc}", flush=True)
        import traceback

        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main()
