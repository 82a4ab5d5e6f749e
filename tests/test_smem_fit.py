"""The default variants fit Hopper's shared memory: every kernel compiled for sm_90 without a GPU.

Runs ``benchmarks/smem_check.py`` (Triton's compiler and ptxas, the launch's argument
specialisation) in a process without the interpreter; exit code 0 means every kernel of the default
variants at chunk sizes 64 and 128 fits 232448 bytes at the pipelining depth ``launch`` settles on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "smem_check.py"


@pytest.mark.parametrize("head_dim,n_kernels", [(64, 11), (128, 11), (256, 12)])
def test_default_variants_fit_sm90_shared_memory(head_dim, n_kernels):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, str(SCRIPT), "--head-dim", str(head_dim), "--dtype", "bf16"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    kernels = [line for line in out.stdout.splitlines() if line.startswith(f"D={head_dim} ")]
    # two chunk sizes x (WY, state, output, reverse state, two backward chunk kernels), less the
    # output kernel where the default fuses it into the state loop (C = 64, D <= 128); the 16-bit
    # defaults keep the forward's W, so no W recompute kernel runs
    assert len(kernels) == n_kernels, out.stdout
    assert not any("wy_apply_kernel" in line for line in kernels), out.stdout
    assert all(" ok" in line for line in kernels), out.stdout


def test_registers_and_spills_are_reported_by_ptxas():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, str(SCRIPT), "--head-dim", "64", "--seq-len", "256", "--batch", "2",
                          "--variants", "c64-bk64-bv64-w4-s2-hbf16-wyf-os-m16", "--regs"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    kernels = [line for line in out.stdout.splitlines() if line.startswith("D=64 ")]
    assert len(kernels) == 6, out.stdout
    import re

    for line in kernels:
        m = re.search(r"\| (\d+) regs, (\d+) B spilled$", line)
        assert m and 0 < int(m.group(1)) <= 255, line


def test_transposed_state_loop_issues_two_products_per_chunk():
    """The transposed forward state loop (change 23) compiles for sm_90 to two tensor-core products per
    chunk, against four for ``auto``'s 128-row slabs; ``--products`` reads them from the TTGIR."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    names = "c64-bk64-bv64-w4-s2-hbf16-wyf-os-m16-rauto,c64-bk64-bv64-w4-s2-hbf16-wyf-os-m16-rtbv64w8s2"
    out = subprocess.run([sys.executable, str(SCRIPT), "--head-dim", "256", "--batch", "8", "--variants", names,
                          "--products"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    lines = {line.split()[2]: line for line in out.stdout.splitlines() if "state" in line}
    assert "| 4 products, 4 waits" in lines["fwd_state_kernel"]
    assert "| 2 products, 2 waits" in lines["fwd_state_t_kernel"]


def test_forward_mode_compiles_what_inference_runs():
    """``--mode fwd`` captures a forward that no backward follows: with the output fused and a batch of
    64 streams at D = 256, ``auto`` holds the state transposed and no backward kernel is compiled."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, str(SCRIPT), "--head-dim", "256", "--batch", "8", "--mode", "fwd",
                          "--variants", "c64-bk64-bv64-w4-s2-hfp32-wyf-of-m16-rauto"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    kernels = [line.split()[2] for line in out.stdout.splitlines() if line.startswith("D=256 ")]
    assert kernels == ["wy_inverse_kernel", "fwd_state_t_kernel"], out.stdout
    assert " w8 s2:" in out.stdout, out.stdout
