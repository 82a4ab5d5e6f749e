"""Where the WY kernel's time goes: the kernel timed with parts of its work left out or changed.

Usage (GPU): python benchmarks/wy_ablation.py 128,64,256 [OUT.jsonl]

One program per (chunk, head), like ``wy_inverse_kernel``, with switches: ``inv`` 0 = the real
inverse, 1 = none (``X`` replaced by ``tril(G diag(beta))``, which costs nothing), 2 = only the
16x16 diagonal-block solves; ``wu16`` = W/U products on bf16 operands (else tf32); ``store_x`` /
``x16`` = write ``X`` (in bf16). The outputs of the left-out variants are wrong by design: this
times parts, it does not compute DeltaNet. One JSON line per case (do_bench median ms),
B*T = 32768, H*D = 2048, bf16.
"""

from __future__ import annotations

import json
import sys

import torch
import triton
import triton.language as tl
from triton.testing import do_bench

from dnprof.bench.inputs import make_delta_inputs
from dnprof.kernels.chunk import _chunk_tables
from dnprof.kernels.chunk_wy import _diag_inverses, _gram, _inverse


@triton.jit
def wy_exp_kernel(k, v, beta, X, W, U, chunk_start, chunk_end, H, K: tl.constexpr, V: tl.constexpr,
                  BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
                  INV: tl.constexpr, WU16: tl.constexpr, STORE_X: tl.constexpr, X16: tl.constexpr):
    c = tl.program_id(0)
    i_h = tl.program_id(1)
    t0 = tl.load(chunk_start + c).to(tl.int64)
    eos = tl.load(chunk_end + c).to(tl.int64)
    offs_t = t0 + tl.arange(0, BT)
    mask_t = offs_t < eos
    b_beta = tl.load(beta + offs_t * H + i_h, mask=mask_t, other=0.0).to(tl.float32)
    G = _gram(k, i_h, t0, eos, H, K, BT, BK, PREC)
    rows = tl.arange(0, BT)
    if INV == 0:
        b_x = _inverse(G, b_beta, BT, PREC)
    elif INV == 1:
        b_x = tl.where(rows[:, None] >= rows[None, :], G * b_beta[None, :], 0.0)
    else:
        NB: tl.constexpr = BT // 16
        nb = tl.arange(0, NB)
        xd = _diag_inverses(G, b_beta, BT)
        xc = tl.reshape(xd, [BT, 16])
        b_x = tl.reshape(tl.where(nb[None, :, None] == (rows // 16)[:, None, None], xc[:, None, :], 0.0), [BT, BT])
    if STORE_X:
        x_base = X + (c * H + i_h).to(tl.int64) * BT * BT
        if X16:
            tl.store(x_base + rows[:, None] * BT + rows[None, :], b_x.to(tl.bfloat16))
        else:
            tl.store(x_base + rows[:, None] * BT + rows[None, :], b_x)
    for i_k in range(0, tl.cdiv(K, BK)):
        _product_tile(k, W, b_x, b_beta, offs_t, mask_t, i_h, H, K, i_k * BK, BK, PREC, WU16)
    for i_v in range(0, tl.cdiv(V, BV)):
        _product_tile(v, U, b_x, b_beta, offs_t, mask_t, i_h, H, V, i_v * BV, BV, PREC, WU16)


@triton.jit
def _product_tile(src, dst, b_x, b_beta, offs_t, mask_t, i_h, H, D: tl.constexpr, d0, BD: tl.constexpr,
                  PREC: tl.constexpr, WU16: tl.constexpr):
    """One tile of ``dst = X diag(beta) src``: both operands rounded to bf16 once (``WU16``), or tf32."""
    offs_d = d0 + tl.arange(0, BD)
    m = mask_t[:, None] & (offs_d[None, :] < D)
    off = (offs_t[:, None] * H + i_h) * D + offs_d[None, :]
    b_s = tl.load(src + off, mask=m, other=0.0).to(tl.float32) * b_beta[:, None]
    if WU16:
        r = tl.dot(b_x.to(tl.bfloat16), b_s.to(tl.bfloat16))
    else:
        r = tl.dot(b_x, b_s, input_precision=PREC)
    tl.store(dst + off, r, mask=m)


def main(D: int, T: int = 4096, out: str | None = None) -> None:
    """Time every case at head dim ``D`` for chunk sizes 64 and 128."""
    B, H = 32768 // T, 2048 // D
    inp = make_delta_inputs(B, T, H, D, D, dtype=torch.bfloat16, device="cuda")
    k = inp.k.reshape(B * T, H, D); v = inp.v.reshape(B * T, H, D); beta = inp.beta.reshape(B * T, H)
    for BT in (64, 128):
        tab = _chunk_tables(tuple(b * T for b in range(B + 1)), BT, k.device)
        NC = tab.n_chunks
        X = torch.empty(NC, H, BT, BT, dtype=torch.float32, device="cuda")
        W = torch.empty(B * T, H, D, dtype=torch.bfloat16, device="cuda"); U = torch.empty_like(W)
        grid = (NC, H)
        cases = [(0,0,1,0,4,64),(0,0,0,0,4,64),(1,0,1,0,4,64),(2,0,1,0,4,64),
                 (0,1,1,0,4,64),(0,1,1,1,4,64),(0,1,0,0,4,64),(1,1,0,0,4,64),(2,1,0,0,4,64),
                 (0,1,1,1,8,64),(0,1,1,1,2,64),(0,1,1,1,4,128),(0,1,1,1,8,128)]
        if BT == 128:
            cases = [(0,0,1,0,8,64),(0,1,1,1,8,64),(1,1,0,0,8,64),(2,1,0,0,8,64),(0,1,1,1,4,64)]
        if D != 128:
            cases = cases[:1] + [c for c in cases if c[1] == 1 and c[0] == 0][:2]
        for (inv, wu16, sx, x16, nw, BK) in cases:
            if BK > D: continue
            def f():
                wy_exp_kernel[grid](k, v, beta, X, W, U, tab.chunk_start, tab.chunk_end, H, D, D, BT, BK, BK, "tf32",
                                    inv, wu16, sx, x16, num_warps=nw, num_stages=2)
            try:
                f(); torch.cuda.synchronize()
                ms = do_bench(f, warmup=50, rep=200)
            except Exception as e:
                ms = f"{type(e).__name__}: {str(e)[:100]}"
            rec = dict(D=D, T=T, C=BT, inv=inv, wu16=wu16, store_x=sx, x16=x16, warps=nw, BK=BK, ms=ms)
            print(json.dumps(rec), flush=True)
            if out:
                with open(out, "a") as fh: fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    out_path = sys.argv[2] if len(sys.argv) > 2 else None
    if out_path:  # the machine first, so the figures can be traced to a GPU and versions
        from dnprof.bench.fingerprint import fingerprint

        with open(out_path, "a") as fh:
            fh.write(json.dumps({"fingerprint": fingerprint()}) + "\n")
    for D in [int(x) for x in sys.argv[1].split(",")]:
        main(D, out=out_path)
