"""Time the two serial kernels alone over their own tiling: BV, warps and pipelining depth.

The forward state recurrence and the backward's reverse recurrence are the only kernels whose
programs walk a whole sequence, so their V tiling decides the parallelism at long sequences
(``B * H * V / BV`` programs) and their registers and shared memory decide whether they pipeline
at large head dims. This sweeps ``BV``, ``num_warps`` and ``num_stages`` for each of them, checks
every setting's outputs against the default variant's at its main tiling (relative error; the
same arithmetic, so anything above rounding is a mis-compile, recorded as ``mismatch`` and not
timed; at another state slab height, ``--bk``, the sums run in another order and the bound is
looser), and writes JSON lines.

Each group of settings runs in a worker process of its own. A CUDA error poisons a process, so a
worker that meets one records that setting as ``fault`` and exits; the rest of its group reruns
in a fresh worker. The workers compile in parallel first.

Usage (GPU): python benchmarks/recurrence_sweep.py --head-dim 128,256 --seq-len 4096,16384 --json out.jsonl
(``--bk 128,256`` for taller state slabs, ``--layout slabs,t,tj`` for the transposed-state kernels too,
``tj`` joining the fused forward's W and Q products; ``--wy-in-loop 0,1`` times each setting also
applying X in the loop, from an X-only WY step, as ``-wyx`` variants run)
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: The forward storing states for a separate output kernel (``os``), with the output fused and no states
#: stored (``of``: a forward that no backward follows), with the output fused and the states stored too
#: (``ofs``: the forward of fwd+bwd at D <= 128), and the backward's reverse recurrence.
KERNELS = ("fwd_state_os", "fwd_state_of", "fwd_state_ofs", "bwd_dh")
#: Largest relative difference from the variant's own tiling that counts as the same result: the
#: arithmetic is identical, so anything beyond rounding-order noise is a mis-compile.
MATCH_TOL = 1e-3
#: The same at another slab height (``--bk``): the forward's ``U - W h`` then sums its slabs in another
#: order, and the 16-bit states and ``Vn`` it stores round differently (1.3e-3 to 2.6e-3 seen on the
#: H200 over 64-256 chunks); a mis-compile is off by order one.
REORDERED_TOL = 1e-2


def _prepare(D: int, T: int, tokens: int, model_dim: int, device: str) -> dict[str, Any]:
    """Inputs at B*T = ``tokens``, H*D = ``model_dim``, and the default variant's WY step (W, U), do, dht."""
    import torch

    from dnprof.bench.inputs import make_delta_inputs
    from dnprof.kernels import chunk as ck
    from dnprof.variants.chunk_config import ChunkConfig

    B, H = tokens // T, model_dim // D
    cfg = dataclasses.replace(ChunkConfig.default_for(D, D, 64, torch.bfloat16, "fwdbwd"), rec="main")
    inp = make_delta_inputs(B, T, H, D, D, dtype=torch.bfloat16, device=device)
    q, k, v = (t.reshape(B * T, H, D).contiguous() for t in (inp.q, inp.k, inp.v))
    beta = inp.beta.reshape(B * T, H).contiguous()
    tables = ck._ChunkTables([b * T for b in range(B + 1)], cfg.chunk_size, q.device)
    inter = ck._intermediate_dtype(q.dtype, cfg)
    wy = (k, v, beta, tables.chunk_start, tables.chunk_end, cfg.chunk_size, cfg.BK, cfg.BV, cfg.fuse_wy,
          ck._precision(q.dtype), cfg.num_warps, cfg.num_stages, inter)
    X, W, U = ck.wy_forward(*wy, keep_x=True)
    X32, _, _ = ck.wy_forward(*wy, make_wu=False)  # what a ``-wyx`` loop reads instead of W and U
    return dict(cfg=cfg, q=q, k=k, v=v, beta=beta, W=W, U=U, X32=X32, h0=inp.initial_state.contiguous(),
                tables=tables, inter=inter,
                do=inp.do.reshape(B * T, H, D).contiguous(), dht=inp.dht.float().contiguous(), scale=D ** -0.5)


def _runner(p: dict[str, Any], kernel: str, BV: int, warps: int, stages: int, BK: int = 0, layout: str = "slabs",
            wy_in_loop: bool = False, tma: bool = False):
    """A zero-argument launch of ``kernel`` at this tiling (``BK``: the state's slab height, 0 for the
    variant's own; ``layout`` ``t``: the transposed-state form, one tile; ``tj``: that with the W and Q
    products joined; ``wy_in_loop``: a forward applies X itself; ``tma``: a slab loop loads its tiles
    through tensor descriptors), and a function returning its outputs."""
    import torch

    from dnprof.kernels import chunk as ck
    from dnprof.kernels.recurrence_tiling import Tiling
    from dnprof.variants.chunk_config import padded_dim

    q, k, tables, cfg = p["q"], p["k"], p["tables"], p["cfg"]
    # min 1: the sweep measures the unpipelined settings too
    transposed = layout in ("t", "tj")
    tiling = Tiling(BV, warps, stages, 1, padded_dim(q.shape[-1]) if transposed else BK or cfg.BK, transposed,
                    layout == "tj", wy_in_loop, tma)
    T, H, D = q.shape
    n_states = tables.n_seqs
    f32 = dict(dtype=torch.float32, device=q.device)
    if kernel.startswith("fwd_state"):
        fused = kernel != "fwd_state_os"
        store = kernel != "fwd_state_of"
        cfg = dataclasses.replace(cfg, fuse_output=fused)
        Hs = torch.empty(tables.n_chunks if store else 1, H, D, D, dtype=ck._STATE_DTYPES[cfg.state_dtype],
                         device=q.device)
        Vn = torch.empty(T if store else 1, H, D, dtype=p["inter"], device=q.device)
        o = torch.empty(T, H, D, dtype=q.dtype, device=q.device)
        ht = torch.empty(n_states, H, D, D, **f32)

        W, U, beta = (p["X32"], p["v"], p["beta"]) if tiling.apply_x else (p["W"], p["U"], None)

        def run():
            return ck.launch_state(q, k, W, U, p["h0"], Hs, Vn, o, ht, tables, p["scale"], cfg, store, store, tiling,
                                   beta)

        return run, lambda: ([o] if fused else []) + ([Hs, Vn] if store else []) + [ht]
    dHs = torch.empty(tables.n_chunks, H, D, D, dtype=ck._STATE_DTYPES[cfg.state_dtype], device=q.device)
    dVn = torch.empty(T, H, D, dtype=p["inter"], device=q.device)
    dh0 = torch.empty(n_states, H, D, D, **f32)

    W, beta = (p["X32"], p["beta"]) if tiling.apply_x else (p["W"], None)

    def run():
        return ck.launch_dh(q, k, W, p["do"], p["dht"], dHs, dVn, dh0, tables, p["scale"], cfg, tiling, beta)

    return run, lambda: [dHs, dVn, dh0]


def _rel_err(outs, refs) -> float:
    return max(float((o.float() - r.float()).norm() / r.float().norm().clamp_min(1e-30)) for o, r in zip(outs, refs))


def worker(items: list[dict[str, Any]], compile_only: bool) -> None:
    """Run ``items`` (dicts of D, T, kernel, BV, warps, stages) in order, one JSON line each."""
    import torch

    from dnprof.bench.timing import time_cuda

    prepared: dict[tuple[int, int], dict[str, Any]] = {}
    refs: dict[tuple[int, int, str], list] = {}
    for it in items:
        print("START " + json.dumps(it), flush=True)
        key = (it["D"], it["T"], it["tokens"], it["model_dim"], it["device"])
        if key not in prepared:
            prepared.clear()
            prepared[key] = _prepare(*key)
        p = prepared[key]
        rkey = (it["D"], it["T"], it["kernel"])
        if rkey not in refs and not compile_only:
            cfg = p["cfg"]
            run, outs = _runner(p, it["kernel"], cfg.BV, cfg.num_warps, cfg.num_stages)
            run()
            refs[rkey] = [o.clone() for o in outs()]
        run, outs = _runner(p, it["kernel"], it["BV"], it["warps"], it["stages"], it.get("BK", 0),
                            it.get("layout", "slabs"), bool(it.get("x", 0)), bool(it.get("tma", 0)))
        rec = dict(it)
        try:
            rec["stages_ran"] = run()
            if it["device"] == "cuda":
                torch.cuda.synchronize()
            if not compile_only:
                rec["rel_err"] = _rel_err(outs(), refs[rkey])
                same = it.get("BK", 0) in (0, p["cfg"].BK) and it.get("layout", "slabs") == "slabs" and not it.get("x")
                tol = MATCH_TOL if same else REORDERED_TOL
                if not rec["rel_err"] <= tol:  # NaN fails too: a wrong result is never timed
                    rec["status"] = "mismatch"
                    print("DONE " + json.dumps(rec), flush=True)
                    continue
                if it["device"] == "cuda":
                    rec["ms"] = time_cuda(run, warmup_ms=25, rep_ms=100).ms
            rec["status"] = "ok"
        except Exception as exc:  # noqa: BLE001 - a failed setting is a result, recorded by type
            rec["status"] = f"error: {type(exc).__name__}: {str(exc)[:200]}"
            if "CUDA" in str(exc) or "Accelerator" in type(exc).__name__:
                # A CUDA error poisons this process's context: every later item would fail with it.
                # Report this one and exit, so the driver reruns the rest in a fresh process.
                rec["status"] = f"fault: {type(exc).__name__}: {str(exc)[:200]}"
                print("DONE " + json.dumps(rec), flush=True)
                os._exit(3)
        print("DONE " + json.dumps(rec), flush=True)


def _run_group(items: list[dict[str, Any]], compile_only: bool) -> list[dict[str, Any]]:
    """Run a group in worker processes until every item has a record; a crash marks its item ``fault``."""
    done: list[dict[str, Any]] = []
    pending = list(items)
    while pending:
        cmd = [sys.executable, __file__, "--worker", json.dumps(pending)] + (["--compile-only"] if compile_only else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        started = None
        for line in proc.stdout.splitlines():
            if line.startswith("START "):
                started = json.loads(line[6:])
            elif line.startswith("DONE "):
                done.append(json.loads(line[5:]))
                pending.remove(started)
                started = None
        if started is not None:
            tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no message"]
            done.append(dict(started, status=f"fault: {tail[0][:200]}"))
            pending.remove(started)
        elif pending and proc.returncode not in (0, 3):  # 3: a worker that left after a recorded fault
            tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no message"]
            done.extend(dict(it, status=f"fault before start: {tail[0][:200]}") for it in pending)
            pending = []
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head-dim", default="128,256")
    ap.add_argument("--seq-len", default="4096,16384")
    ap.add_argument("--kernels", default=",".join(KERNELS))
    ap.add_argument("--bv", default="32,64")
    ap.add_argument("--bk", default="0", help="height of the state's slabs (0: the variant's BK; the head dim: one slab)")
    ap.add_argument("--layout", default="slabs", help="slabs (the state as [BK, BV] slabs), t (transposed, one tile), tj (t with the W and Q products joined)")
    ap.add_argument("--wy-in-loop", default="0", help="0 and/or 1: the kernels also applying X in the loop")
    ap.add_argument("--tma", default="0", help="0 and/or 1: the slab loops loading their tiles through tensor descriptors (ChunkConfig.tma)")
    ap.add_argument("--warps", default="2,4,8")
    ap.add_argument("--stages", default="1,2,3")
    ap.add_argument("--tokens", type=int, default=32768, help="B * T")
    ap.add_argument("--model-dim", type=int, default=2048, help="H * D")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu under TRITON_INTERPRET=1 (outputs only)")
    ap.add_argument("--jobs", type=int, default=8, help="worker processes compiling at once")
    ap.add_argument("--json", default=None, help="append the records as JSON lines to this file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.jobs < 1:
        ap.error(f"--jobs: expected at least 1 worker process, got {a.jobs}")
    if a.worker is not None:
        worker(json.loads(a.worker), a.compile_only)
        return
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    groups: dict[tuple, list[dict[str, Any]]] = {}
    layouts = a.layout.split(",")
    for D, lay, x, tma, BK, BV, w, T, kern, s in itertools.product(
            ints(a.head_dim), layouts, ints(a.wy_in_loop), ints(a.tma), ints(a.bk), ints(a.bv), ints(a.warps),
            ints(a.seq_len), a.kernels.split(","), ints(a.stages)):
        if lay in ("t", "tj"):
            BK = 0  # one tile of the head dim
        if x and lay == "tj":
            continue  # joining needs W, which X in the loop never forms
        if tma and (lay != "slabs" or x):
            continue  # descriptors are written for the slab loops reading W (and U) only
        if BV <= D and BK <= D and (BK == 0 or 4 * BK >= D):
            item = dict(D=D, T=T, kernel=kern, layout=lay, x=x, tma=tma, BK=BK, BV=BV, warps=w, stages=s, tokens=a.tokens,
                        model_dim=a.model_dim, device=a.device)
            group = groups.setdefault((D, lay, x, tma, BK, BV, w), [])
            if item not in group:
                group.append(item)
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:  # compile every group side by side
        list(pool.map(lambda g: _run_group(g, True), groups.values()))
    if a.json:
        from dnprof.bench.fingerprint import fingerprint

        with open(a.json, "a") as fh:
            fh.write(json.dumps({"fingerprint": fingerprint()}) + "\n")
    for group in groups.values():  # then time one group at a time
        for rec in _run_group(group, False):
            ms = f"{rec['ms']:.3f} ms" if "ms" in rec else ""
            lay = ((rec["layout"] if rec.get("layout") in ("t", "tj") else f"bk{rec.get('BK', 0)}")
                   + ("+x" * rec.get("x", 0)) + ("+tma" if rec.get("tma") else ""))
            print(f"D={rec['D']} T={rec['T']} {rec['kernel']:13s} {lay} bv{rec['BV']} w{rec['warps']} s{rec['stages']}"
                  f" (ran s{rec.get('stages_ran', '?')}) {ms} err={rec.get('rel_err', float('nan')):.1e} "
                  f"{rec['status']}", flush=True)
            if a.json:
                with open(a.json, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
