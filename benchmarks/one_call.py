"""A few forward (or fwd+bwd) calls of one dnprof variant or of fla-core, for a kernel profiler to watch.

Usage (GPU): ncu --clock-control none --nvtx --nvtx-include "measured/" python benchmarks/one_call.py
--head-dim 256 --seq-len 16384 --mode fwd --variant selected
B*T = 32768 and H*D = 2048, as in ``dnprof compare``; ``--variant fla`` runs fla-core's chunk_delta_rule.
The first calls compile (and autotune, for fla-core); only the last runs inside the NVTX range
``measured``, so ``ncu --nvtx --nvtx-include "measured/"`` profiles that call alone.
"""

from __future__ import annotations

import argparse

import torch

from dnprof.bench.inputs import make_delta_inputs
from dnprof.kernels.chunk import chunk_delta_rule, select_config
from dnprof.variants.chunk_config import ChunkConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--head-dim", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=16384)
    ap.add_argument("--mode", choices=("fwd", "fwdbwd"), default="fwd")
    ap.add_argument("--variant", default="selected",
                    help="a ChunkConfig name, 'selected' (what chunk_delta_rule runs) or 'fla' (fla-core)")
    ap.add_argument("--calls", type=int, default=3)
    args = ap.parse_args()
    D, T = args.head_dim, args.seq_len
    B, H = 32768 // T, 2048 // D
    grad = args.mode == "fwdbwd"
    inp = make_delta_inputs(B, T, H, D, D, dtype=torch.bfloat16, device="cuda", requires_grad=grad)
    if args.variant == "fla":
        from fla.ops.delta_rule import chunk_delta_rule as fla_chunk

        def run():
            return fla_chunk(q=inp.q, k=inp.k, v=inp.v, beta=inp.beta, initial_state=inp.initial_state,
                             output_final_state=True)
    else:
        cfg = (select_config(D, D, T, torch.bfloat16, args.mode) if args.variant == "selected"
               else ChunkConfig.from_name(args.variant))
        print(f"variant {cfg.name}")

        def run():
            return chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta, initial_state=inp.initial_state,
                                    output_final_state=True, config=cfg)

    for i in range(args.calls):
        if i == args.calls - 1:  # the profiled call: ncu --nvtx --nvtx-include "measured/"
            torch.cuda.synchronize()
            torch.cuda.nvtx.range_push("measured")
        if grad:
            o, _ = run()
            torch.autograd.grad(o, [inp.q, inp.k, inp.v, inp.beta, inp.initial_state], inp.do)
        else:
            with torch.no_grad():
                run()
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()
    print("done")


if __name__ == "__main__":
    main()
