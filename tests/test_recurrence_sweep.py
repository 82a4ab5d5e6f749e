"""benchmarks/recurrence_sweep.py on the CPU: every setting gives the variant's own outputs, recorded per setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recurrence_sweep.py"


def test_sweep_records_each_setting_with_its_error(tmp_path):
    out = tmp_path / "sweep.jsonl"
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--head-dim", "32", "--seq-len", "64", "--tokens", "128",
                           "--model-dim", "64", "--device", "cpu", "--bv", "16,32", "--warps", "4", "--stages", "2",
                           "--kernels", "fwd_state_of,fwd_state_ofs,bwd_dh", "--jobs", "2", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert "fingerprint" in lines[0]
    recs = lines[1:]
    kernels = ("fwd_state_of", "fwd_state_ofs", "bwd_dh")
    assert {(r["kernel"], r["BV"]) for r in recs} == {(k, bv) for k in kernels for bv in (16, 32)}
    for r in recs:
        assert r["status"] == "ok" and r["stages_ran"] == 2, r
        assert r["rel_err"] < 1e-6, r  # the same arithmetic at another V tiling


def test_sweep_runs_the_loop_forms(tmp_path):
    """``--layout slabs,t,tj --wy-in-loop 0,1``: the transposed loop, its joined W and Q products, and X
    applied in the slab and transposed loops (forward and reverse), each checked against the variant's own
    tiling and recorded."""
    out = tmp_path / "sweep.jsonl"
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--head-dim", "32", "--seq-len", "64", "--tokens", "64",
                           "--model-dim", "32", "--device", "cpu", "--bv", "32", "--warps", "4", "--stages", "2",
                           "--layout", "slabs,t,tj", "--wy-in-loop", "0,1", "--kernels", "fwd_state_of,bwd_dh", "--jobs", "2", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = [json.loads(x) for x in out.read_text().splitlines()][1:]
    want = [("slabs", 0), ("slabs", 1), ("t", 0), ("t", 1), ("tj", 0)]
    assert sorted((r["layout"], r["x"], r["kernel"]) for r in recs) == [
        (lay, x, kern) for lay, x in want for kern in ("bwd_dh", "fwd_state_of")]
    for r in recs:
        assert r["status"] == "ok" and r["rel_err"] < 1e-2, r
    assert " tj bv32 " in proc.stdout and " t+x bv32 " in proc.stdout and " bk0+x bv32 " in proc.stdout


def test_sweep_refuses_no_workers_by_name():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--jobs", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--jobs: expected at least 1 worker process, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr
