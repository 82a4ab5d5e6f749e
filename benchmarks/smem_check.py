"""Shared memory of every chunkwise kernel a variant launches, compiled for a GPU target without a GPU.

Usage (no GPU needed): python benchmarks/smem_check.py --head-dim 128 --variants default,c128-bk64-bv32-w8-s2-hbf16-wyf-os
(``default``: the default variants for ``--dtype`` at chunk sizes 64 and 128)
Runs dnprof's forward and backward host code (``--mode fwd``: the forward alone, as inference runs
it) on CPU tensors with the launches intercepted, compiles
each launch for the target (default sm_90) with Triton's own compiler and ptxas, specialised as a
launch with those arguments would be, and prints the shared memory each kernel needs at the
pipelining depth ``dnprof.kernels.launch`` settles on, against the limit (232448 bytes per block
on Hopper). Exit code 1 if a kernel does not fit even at the fewest stages its launch allows (one,
or two for the serial kernels at BV <= 32). ``--regs`` adds each kernel's registers per thread and
spilled bytes from ptxas's own report, ``--products`` the tensor-core products in each kernel's TTGIR
and the waits for them (the serial loops' count per chunk, docs/performance.md change 22). Nothing
runs on a device.
"""

from __future__ import annotations

import argparse
import os

import torch

if os.environ.get("TRITON_INTERPRET") == "1":
    raise SystemExit("smem_check compiles real kernels: unset TRITON_INTERPRET")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import create_function_from_signature  # noqa: E402

import dnprof.kernels.chunk as chunk  # noqa: E402
import dnprof.kernels.chunk_wy as chunk_wy  # noqa: E402
from dnprof.variants.chunk_config import ChunkConfig  # noqa: E402

def compile_like_a_launch(kernel, args, target, num_warps: int, num_stages: int):
    """Compile ``kernel`` for ``target`` with the argument specialisation (alignment, divisibility by
    16) that a real launch with these arguments would get, so the pipelining matches the GPU's."""
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = {"num_warps": num_warps, "num_stages": num_stages}
    bound_args, specialization, _ = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args, specialization, None)
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__)


def ptxas_usage(compiled, arch: int) -> str:
    """``"166 regs, 0 B spilled"`` for a compiled kernel, from ptxas's own report on its PTX (Triton ships ptxas)."""
    import re
    import subprocess
    import tempfile

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as fh:
            fh.write(compiled.asm["ptx"])
        suffix = "a" if arch >= 90 else ""
        out = subprocess.run([ptxas, f"-arch=sm_{arch}{suffix}", "-v", src, "-o", os.path.join(tmp, "k.cubin")],
                             capture_output=True, text=True)
    text = out.stdout + out.stderr
    regs = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores", text)
    if regs is None:
        return f"ptxas gave no usage ({text.strip().splitlines()[-1:] or ['no output']})"
    return f"{regs.group(1)} regs, {spill.group(1) if spill else '?'} B spilled"


def product_counts(compiled) -> str:
    """``"4 products, 4 waits"``: the tensor-core products in a kernel's TTGIR (Hopper's warp-group
    ``warp_group_dot`` or the older ``tt.dot``) and the waits for them, as compiled (loop bodies
    count once)."""
    import re

    ttgir = compiled.asm["ttgir"]
    products = len(re.findall(r"= ttng\.warp_group_dot |= tt\.dot ", ttgir))
    waits = len(re.findall(r"ttng\.warp_group_dot_wait ", ttgir))
    return f"{products} products, {waits} waits"


def captured_launches(cfg: ChunkConfig, K: int, V: int, dtype: torch.dtype, T: int, H: int, batch: int = 1,
                      mode: str = "fwdbwd"):
    """(kernel, args, num_warps, num_stages, min_stages) of one forward + backward (``mode="fwd"``: a forward
    that no backward follows) over ``batch`` sequences of ``T`` tokens, captured instead of run (the batch
    and the mode set the serial kernels' ``rec="auto"`` tiling)."""
    calls = []

    def capture(kernel, grid, *args, num_warps, num_stages, min_stages=1):
        calls.append((kernel, args, num_warps, num_stages, min_stages))
        return num_stages

    real = chunk.launch
    chunk.launch = chunk_wy.launch = capture
    try:
        n = T * batch
        q = torch.randn(n, H, K, dtype=dtype)
        k = torch.randn(n, H, K, dtype=dtype)
        v = torch.randn(n, H, V, dtype=dtype)
        beta = torch.rand(n, H, dtype=dtype)
        tables = chunk._ChunkTables([b * T for b in range(batch + 1)], cfg.chunk_size, torch.device("cpu"))
        save = mode == "fwdbwd"
        o, ht, X, Hs, Vn, W = chunk._forward(q, k, v, beta, K ** -0.5, None, tables, cfg, True, save=save)
        if save:
            chunk._backward(q, k, v, beta, K ** -0.5, X, Hs, Vn, W, torch.randn_like(o), None, tables, cfg, False)
    finally:
        chunk.launch = chunk_wy.launch = real
    return calls


def _configs(name: str, K: int, V: int, dtype: str) -> list[ChunkConfig]:
    """``default``: the default variants for this dtype at chunk sizes 64 and 128; else one variant name."""
    if name == "default":
        return [ChunkConfig.default_for(K, V, c, dtype) for c in (64, 128)]
    return [ChunkConfig.from_name(name)]


def _check(cfg: ChunkConfig, D: int, Vd: int, dtype: torch.dtype, a: argparse.Namespace, target) -> int:
    """Print each kernel's shared memory at the depth that fits; return the largest."""
    worst = 0
    for kernel, args, nw, ns, least in captured_launches(cfg, D, Vd, dtype, a.seq_len, max(1, 2048 // Vd),
                                                         a.batch, a.mode):
        fitted = ns
        shared = compile_like_a_launch(kernel, args, target, nw, ns).metadata.shared
        first = shared
        while shared > a.limit and fitted > least:  # what dnprof.kernels.launch does on the GPU
            fitted -= 1
            shared = compile_like_a_launch(kernel, args, target, nw, fitted).metadata.shared
        worst = max(worst, shared)
        flag = "ok" if shared <= a.limit else f"OVER at {least} stage(s), the fewest it may run at"
        note = "" if fitted == ns else f" (s{ns} needs {first} B: launch lowers it to s{fitted})"
        if a.regs or a.products:
            compiled = compile_like_a_launch(kernel, args, target, nw, fitted)
            if a.regs:
                note += f" | {ptxas_usage(compiled, a.arch)}"
            if a.products:
                note += f" | {product_counts(compiled)}"
        print(f"D={D} {cfg.name} {kernel.fn.__name__:18s} w{nw} s{fitted}: {shared:7d} B {flag}{note}", flush=True)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--head-dim", type=int, default=128, help="K (and V unless --value-dim)")
    ap.add_argument("--value-dim", type=int, default=None)
    ap.add_argument("--variants", default="default")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--seq-len", type=int, default=4096, help="tokens of the one sequence (H = 2048 / D)")
    ap.add_argument("--batch", type=int, default=1, help="sequences of --seq-len tokens (sets rec='auto' tilings)")
    ap.add_argument("--mode", default="fwdbwd", choices=["fwd", "fwdbwd"],
                    help="fwd: a forward that no backward follows (no states stored; rec='auto' may hold them transposed)")
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--limit", type=int, default=232448)
    ap.add_argument("--regs", action="store_true",
                    help="also print each kernel's registers and spilled bytes (ptxas -v on its PTX)")
    ap.add_argument("--products", action="store_true",
                    help="also print each kernel's tensor-core products and the waits for them (from its TTGIR)")
    a = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    D = a.head_dim
    Vd = a.value_dim or D
    target = GPUTarget("cuda", a.arch, 32)
    worst = 0
    for name in a.variants.split(","):
        for cfg in _configs(name, D, Vd, a.dtype):
            worst = max(worst, _check(cfg, D, Vd, dtype, a, target))
    print(f"largest after fitting: {worst} B (limit {a.limit})")
    raise SystemExit(1 if worst > a.limit else 0)


if __name__ == "__main__":
    main()
