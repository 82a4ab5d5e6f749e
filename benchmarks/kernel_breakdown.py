"""Where the time of one dnprof chunkwise call goes: CUDA time per Triton kernel, via torch.profiler.

Usage (GPU): python benchmarks/kernel_breakdown.py --head-dim 128 --seq-len 4096 [--variants selected,NAME]
Prints one line per kernel (calls, total ms per step) for fwd and fwd+bwd at B*T = 32768, H*D = 2048.
``--variants fla`` profiles fla-core's chunk_delta_rule the same way, kernel by kernel, for a
side-by-side view of where the peer spends its time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from dnprof.bench.inputs import make_delta_inputs
from dnprof.kernels.chunk import chunk_delta_rule, select_config
from dnprof.variants.chunk_config import ChunkConfig


def _fla_delta_rule():
    """fla-core's chunk_delta_rule with dnprof's argument order (imported only when asked for)."""
    from fla.ops.delta_rule import chunk_delta_rule as fla_chunk

    def call(q, k, v, beta, initial_state, output_final_state, config):
        return fla_chunk(q=q, k=k, v=v, beta=beta, initial_state=initial_state, output_final_state=output_final_state)

    return call


def breakdown(D: int, T: int, mode: str, config: ChunkConfig | None, steps: int = 5) -> dict[str, float]:
    """Average CUDA ms per step of each kernel for one (D, T, mode); ``config=None`` profiles fla-core."""
    B, H = 32768 // T, 2048 // D
    inp = make_delta_inputs(B, T, H, D, D, dtype=torch.bfloat16, device="cuda", requires_grad=mode == "fwdbwd")
    kernel = chunk_delta_rule if config is not None else _fla_delta_rule()

    def run():
        return kernel(inp.q, inp.k, inp.v, inp.beta, initial_state=inp.initial_state, output_final_state=True,
                      config=config)

    def step():
        if mode == "fwd":
            with torch.no_grad():
                run()
        else:
            o, _ = run()
            # autograd.grad, not backward(): no .grad accumulation kernels in the breakdown
            torch.autograd.grad(o, [inp.q, inp.k, inp.v, inp.beta, inp.initial_state], inp.do)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            totals[ev.name] += ev.device_time / 1e3 / steps
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--variants", default="selected",
                    help="comma list of ChunkConfig names, 'selected' (the variant chunk_delta_rule picks), "
                         "'selected-m16' (it with 16-bit dot operands) or 'fla' (fla-core's chunk_delta_rule)")
    ap.add_argument("--modes", default="fwd,fwdbwd", help="comma list of fwd, fwdbwd")
    ap.add_argument("--json", default=None, help="also append the breakdown as JSON lines to this file")
    args = ap.parse_args()
    if args.json:  # the machine first, so the figures below can be traced to a GPU and versions
        from dnprof.bench.fingerprint import fingerprint

        with open(args.json, "a") as fh:
            fh.write(json.dumps({"fingerprint": fingerprint()}) + "\n")
    for spec in args.variants.split(","):
        for mode in args.modes.split(","):
            if spec == "fla":
                cfg = None
            elif spec.startswith("selected"):
                cfg = select_config(args.head_dim, args.head_dim, args.seq_len, torch.bfloat16, mode)
                if spec == "selected-m16":
                    cfg = dataclasses.replace(cfg, dot_operands="input")
            else:
                cfg = ChunkConfig.from_name(spec)
            rows = breakdown(args.head_dim, args.seq_len, mode, cfg)
            total = sum(rows.values())
            label = "fla-core" if cfg is None else cfg.name
            print(f"D={args.head_dim} T={args.seq_len} {mode} {label}: {total:.3f} ms of kernels per step")
            for name, ms in rows.items():
                print(f"  {ms:8.3f} ms  {100 * ms / total:5.1f}%  {name[:90]}")
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps({"D": args.head_dim, "T": args.seq_len, "mode": mode, "variant": label,
                                         "kernels_ms": rows}) + "\n")

if __name__ == "__main__":
    main()
