"""benchmarks/gpu_suite.sh: steps run under their limits, each with a summary line; bad steps exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.sh"


def _run(tmp_path: Path, *steps: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), *steps], capture_output=True, text=True,
                          env=env, timeout=300, cwd=SCRIPT.parents[1])


def test_unknown_step_exits_2(tmp_path):
    out = _run(tmp_path, "bogus")
    assert out.returncode == 2 and "unknown step: bogus" in out.stderr


def test_each_step_gets_a_summary_line_with_its_exit_code(tmp_path):
    # without a GPU, compare stops with exit code 2; with one, it would measure: either way one line
    out = _run(tmp_path, "compare-16:60")
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    assert len(summary) == 1 and summary[0].startswith("compare-16")
    expected = "rc=0" if _has_cuda() else "rc=2"
    assert expected in summary[0], summary
    assert (tmp_path / "out" / "compare-16.log").exists()
    assert out.stdout.strip() == summary[0].strip()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_forms_step_names_the_separate_output_variants(tmp_path):
    """``forms-D`` compares the default with its separate output kernel's eight forms; without a GPU the
    compare stops with exit code 2 after resolving every provider name (a bad name would say so)."""
    out = _run(tmp_path, "forms-256:120")
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    assert len(summary) == 1 and summary[0].startswith("forms-256")
    log = (tmp_path / "out" / "forms-256.log").read_text()
    assert "unknown provider" not in log, log
    assert ("rc=0" if _has_cuda() else "rc=2") in summary[0], (summary, log)
    from dnprof.variants.chunk_config import ChunkConfig

    names = (tmp_path / "out" / "forms-d256.providers").read_text().strip().split(",")
    forms = [ChunkConfig.from_name(n.removeprefix("dnprof-chunk-")).validate(256, 256) for n in names]
    assert {(c.output_chunk, c.output_vloop, c.output_tiling) for c in forms} == {
        (0, False, "main"), (0, True, "main"), (128, False, "main"), (128, True, "main"),
        (0, False, "bv128w8"), (0, True, "bv128w8"), (0, False, "bv256w8"), (0, True, "bv256w8")}
    assert all(not c.fuse_output and c.rec == "auto" for c in forms)


def test_cache_step_packs_what_device_env_unpacks_on_the_next_machine(tmp_path):
    """``cache`` packs Triton's cache into parts under OUTDIR; on the next machine, with the parts in
    ``.tc/``, sourcing ``benchmarks/device_env.sh`` puts the same files back and points Triton at them."""
    cache = tmp_path / "first" / ".triton-cache"
    (cache / "abc").mkdir(parents=True)
    payload = os.urandom(3000)
    (cache / "abc" / "kernel.cubin").write_bytes(payload)
    env = dict(os.environ, PYTHON=sys.executable, TRITON_CACHE_DIR=str(cache))
    out = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "cache:60"], capture_output=True, text=True,
                         env=env, timeout=120, cwd=SCRIPT.parents[1])
    assert out.returncode == 0 and "rc=0" in out.stdout, (out.stdout, out.stderr)
    parts = sorted((tmp_path / "out").glob("triton-cache.tgz.part*"))
    assert parts
    second = tmp_path / "second"
    (second / ".tc").mkdir(parents=True)
    for p in parts:
        (second / ".tc" / p.name).write_bytes(p.read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "TRITON_CACHE_DIR"}
    probe = subprocess.run(["bash", "-c", f"source '{SCRIPT.parent / 'device_env.sh'}' && echo \"$TRITON_CACHE_DIR\""],
                           capture_output=True, text=True, env=env, timeout=120, cwd=second)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == str(second / ".triton-cache")
    assert (second / ".triton-cache" / "abc" / "kernel.cubin").read_bytes() == payload


def test_cache_step_without_a_cache_folder_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_CACHE_DIR"}
    env["PYTHON"] = sys.executable
    out = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "cache:60"], capture_output=True, text=True,
                         env=env, timeout=60, cwd=SCRIPT.parents[1])
    assert out.returncode != 0 and "source benchmarks/device_env.sh first" in out.stderr


def test_compare_step_takes_its_sequence_lengths_and_providers_from_the_environment(tmp_path):
    """``SEQ_LENS`` and ``PROVIDERS`` reach ``dnprof compare``: a bad value of either is its error, in the log."""
    for var, value, word in (("PROVIDERS", "dnprof-chunk,no-such-provider", "--providers"),
                             ("SEQ_LENS", "4096,x", "--seq-len")):
        env = dict(os.environ, PYTHON=sys.executable, **{var: value})
        out = subprocess.run(["bash", str(SCRIPT), str(tmp_path / var), "compare-64:60"], capture_output=True,
                             text=True, env=env, timeout=120, cwd=SCRIPT.parents[1])
        log = (tmp_path / var / "compare-64.log").read_text()
        assert "rc=2" in out.stdout and word in log and value.split(",")[1] in log, (out.stdout, log)


def test_warm_step_compiles_each_baseline_in_its_own_process_keeping_no_autotuning(tmp_path):
    """``warm-D`` starts one ``dnprof compare`` per provider of ``WARM_PROVIDERS`` at the first of
    ``SEQ_LENS``, with autotuning results kept out of the cache, and waits for them all."""
    fake = tmp_path / "fake-python"
    fake.write_text('#!/usr/bin/env bash\necho "FLA=$FLA_CACHE_RESULTS TRITON=$TRITON_CACHE_AUTOTUNING $*"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), WARM_PROVIDERS="fla-gla,fla-deltanet", SEQ_LENS="2048,4096")
    out = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "warm-128:60"], capture_output=True,
                         text=True, env=env, timeout=120, cwd=SCRIPT.parents[1])
    assert out.returncode == 0 and out.stdout.startswith("warm-128") and "rc=0" in out.stdout, out
    for p in ("fla-gla", "fla-deltanet"):
        line = (tmp_path / "out" / f"warm-d128-{p}.log").read_text()
        assert line.startswith("FLA=0 TRITON=0 -m dnprof compare --seq-len 2048 --head-dim 128 "), line
        assert f"--providers {p} --baseline {p} " in line and "-j 0" in line, line


def test_warm_split_starts_n_processes_per_baseline_each_with_its_share(tmp_path):
    """``WARM_SPLIT=N`` runs ``benchmarks/split_autotune.py I N -- compare ...`` for I = 0 .. N - 1 per provider,
    each with its own log, autotuning results still kept out of the cache."""
    fake = tmp_path / "fake-python"
    fake.write_text('#!/usr/bin/env bash\necho "FLA=$FLA_CACHE_RESULTS TRITON=$TRITON_CACHE_AUTOTUNING $*"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), WARM_PROVIDERS="fla-gla", WARM_SPLIT="3", SEQ_LENS="4096")
    out = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "warm-256:60"], capture_output=True,
                         text=True, env=env, timeout=120, cwd=SCRIPT.parents[1])
    assert out.returncode == 0 and "rc=0" in out.stdout, out
    for i in range(3):
        line = (tmp_path / "out" / f"warm-d256-fla-gla-{i}.log").read_text()
        assert line.startswith(f"FLA=0 TRITON=0 benchmarks/split_autotune.py {i} 3 -- compare --seq-len 4096 "
                               "--head-dim 256 "), line
        assert "--providers fla-gla --baseline fla-gla " in line, line
    assert not (tmp_path / "out" / "warm-d256-fla-gla-3.log").exists()


def test_tune_step_passes_tune_args_on(tmp_path):
    """``tune-D`` runs ``dnprof tune`` at head dim D over chunk sizes 64 and 128, with ``TUNE_ARGS`` appended."""
    fake = tmp_path / "fake-python"
    fake.write_text('#!/usr/bin/env bash\necho "$*"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), TUNE_ARGS="--budget 32,140s --mode fwd")
    out = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "tune-64:60"], capture_output=True,
                         text=True, env=env, timeout=120, cwd=SCRIPT.parents[1])
    assert out.returncode == 0 and out.stdout.startswith("tune-64") and "rc=0" in out.stdout, out
    line = (tmp_path / "out" / "tune-64.log").read_text().strip()
    assert line == (f"-m dnprof tune --head-dim 64 --chunk-size 64,128 --output {tmp_path / 'out' / 'tune-d64.json'} "
                    "--budget 32,140s --mode fwd"), line


def test_sweep_waves_step_sweeps_each_head_dim_at_t8192(tmp_path):
    """``sweep-waves`` runs three recurrence sweeps at T = 8192 (D = 256, 128, 64), BV 32 against 64, into one file."""
    fake = tmp_path / "fake-python"
    fake.write_text('#!/usr/bin/env bash\necho "$*"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake))
    out = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "sweep-waves:60"], capture_output=True,
                         text=True, env=env, timeout=120, cwd=SCRIPT.parents[1])
    assert out.returncode == 0 and out.stdout.startswith("sweep-waves") and "rc=0" in out.stdout, out
    lines = (tmp_path / "out" / "sweep-waves.log").read_text().strip().splitlines()
    assert [line.split("--head-dim ")[1].split()[0] for line in lines] == ["256", "128", "64"]
    for line in lines:
        assert line.startswith("benchmarks/recurrence_sweep.py") and "--seq-len 8192" in line and "--bv 32,64" in line
        assert f"--json {tmp_path / 'out' / 'sweep-waves.jsonl'}" in line


def test_tests_step_runs_only_the_tests_tests_k_picks(tmp_path, monkeypatch):
    """``TESTS_K`` reaches pytest as one ``-k`` expression: here it selects no test, so pytest exits 5."""
    monkeypatch.setenv("TESTS_K", "no_such_test and not fla")
    _run(tmp_path, "tests:120")
    log = (tmp_path / "out" / "tests.log").read_text()
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "rc=5" in summary and "deselected" in log, (summary, log)


def test_tune_step_copies_the_tuning_database_into_the_output(tmp_path):
    """After ``tune-D`` the machine's tuning databases are in OUTDIR (``tuning-db-<file>``), whatever the tune did:
    without a GPU it stops with exit code 2, and a database already there is still copied."""
    tdir = tmp_path / "tuning"
    tdir.mkdir()
    (tdir / "nvidia-h200-cc9.0.jsonl").write_text('{"dnprof_tuning_db": 1}\n')
    env = dict(os.environ, PYTHON=sys.executable, DNPROF_TUNING_DIR=str(tdir))
    subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out"), "tune-16:60"], capture_output=True, text=True,
                   env=env, timeout=300, cwd=SCRIPT.parents[1])
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert summary.startswith("tune-16") and ("rc=0" if _has_cuda() else "rc=2") in summary
    copied = tmp_path / "out" / "tuning-db-nvidia-h200-cc9.0.jsonl"
    assert copied.read_text() == '{"dnprof_tuning_db": 1}\n'


def test_bundle_step_packs_the_outdir_into_one_archive_and_leaves_the_cache_parts(tmp_path):
    """``bundle`` packs every file and folder of OUTDIR (the summary with its own line included) into
    ``bundle-N.tgz``, removes what it packed and leaves the cache parts; a second ``bundle`` takes N = 2."""
    import tarfile

    out_dir = tmp_path / "out"
    (out_dir / "sub").mkdir(parents=True)
    (out_dir / "compare-d64.json").write_text('{"rows": []}')
    (out_dir / "sub" / "warm-0.log").write_text("warm")
    (out_dir / "triton-cache.tgz.partaa").write_bytes(b"cache")
    first = _run(tmp_path, "bundle")
    assert first.returncode == 0 and first.stdout.startswith("bundle") and "rc=0" in first.stdout, first
    assert sorted(p.name for p in out_dir.iterdir()) == ["bundle-1.tgz", "triton-cache.tgz.partaa"]
    with tarfile.open(out_dir / "bundle-1.tgz") as tar:
        names = set(tar.getnames())
        assert {"compare-d64.json", "sub/warm-0.log", "summary.txt"} <= names, names
        assert tar.extractfile("compare-d64.json").read() == b'{"rows": []}'
        assert "packing into bundle-1.tgz" in tar.extractfile("summary.txt").read().decode()
    (out_dir / "later.log").write_text("later")
    second = _run(tmp_path, "bundle")
    assert second.returncode == 0 and "bundle-2.tgz" in second.stdout, second
    with tarfile.open(out_dir / "bundle-2.tgz") as tar:
        assert set(tar.getnames()) == {"later.log", "summary.txt"}
    assert (out_dir / "bundle-1.tgz").exists()
