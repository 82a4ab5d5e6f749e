"""``dnprof verify`` through click's CliRunner (CPU: the Triton interpreter, tiny shapes)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dnprof.cli import main

SMALL = ["--device", "cpu", "--seq-len", "20", "--head-dim", "16", "--heads", "1", "--chunk-size", "16"]


def _run(args):
    return CliRunner().invoke(main, ["verify", *args])


def test_default_variant_and_recurrent_pass():
    res = _run(SMALL)
    assert res.exit_code == 0, res.output
    assert "c16-bk16-bv16" in res.output and "pass" in res.output
    assert "interpreter" in res.output  # says why bf16 is not checked on the CPU
    assert "dbeta" in res.output and "dh0" in res.output


def test_named_variant_and_fp16():
    res = _run([*SMALL, "--dtype", "fp16", "--variants", "c16-bk16-bv16-w4-s1-hfp32-wys-of", "--mode", "fwd"])
    assert res.exit_code == 0, res.output
    assert "c16-bk16-bv16-w4-s1-hfp32-wys-of" in res.output


def test_failing_variant_exits_1():
    # bf16-stored states cannot meet the fp32 tolerance (1e-3) on o/dq/dk.
    res = _run([*SMALL, "--seq-len", "40", "--variants", "c16-bk16-bv16-w4-s1-hbf16-wyf-os"])
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--head-dim", "0"], "head dim"),
        (["--head-dim", "a,b"], "integers"),
        (["--variants", "c64-nonsense"], "variant"),
        (["--variants", "c16-bk64-bv16-w4-s1-hfp32-wyf-os"], "BK"),
        (["--chunk-size", "48"], "chunk sizes"),
        (["--dtype", "bf16"], "interpreter"),
        (["--seq-len", "0"], "seq-len"),
    ],
)
def test_bad_options_exit_2(args, needle):
    res = _run([*SMALL, *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output


def test_cuda_without_gpu_exits_2():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    res = _run(["--device", "cuda"])
    assert res.exit_code == 2 and "no CUDA GPU" in res.output


def test_all_families_include_the_wy_transform_applied_in_the_loop():
    res = _run([*SMALL, "--variants", "all", "--mode", "fwd"])
    rows = [line for line in res.output.splitlines() if "-hfp32-wyx-" in line]
    assert len(rows) == 2, res.output  # output fused and not
    assert all("pass" in line for line in rows), res.output
    # the separate output kernel's forms: V blocks walked by one program, and 32-token output chunks (fp32
    # states: bf16 ones round beyond fp32's tolerance, as with every separate output)
    for form in ("-hfp32-wyf-osv ", "-hfp32-wyf-os32 "):
        rows = [line for line in res.output.splitlines() if form in line]
        assert len(rows) == 1 and "pass" in rows[0], res.output


def test_a_variant_refused_on_this_gpu_is_shown_as_refused_not_failed(monkeypatch):
    """On sm_90 ``wy_in_loop`` at BV <= 32 is refused before launch (a known mis-compile): verify lists it
    as refused with the reason, checks the rest, and exits 0 when those pass."""
    import dnprof.kernels.chunk as chunk

    monkeypatch.setattr(chunk, "compute_major", lambda dev: 9)  # as on an H100/H200
    names = "c16-bk16-bv16-w4-s2-hfp32-wyx-of,c16-bk16-bv16-w4-s2-hfp32-wyf-of"
    res = _run([*SMALL, "--variants", names, "--mode", "fwd"])
    assert res.exit_code == 0, res.output
    wyx = next(line for line in res.output.splitlines() if "-wyx-" in line)
    wyf = next(line for line in res.output.splitlines() if "-wyf-" in line)
    assert "refused" in wyx and "pass" not in wyx
    assert "pass" in wyf
    assert "1 variant(s) refused" in res.output


def test_the_default_variant_follows_the_mode():
    """``--mode fwd`` checks the variant a forward alone runs untuned: at D = 64 in 16 bits the output fused
    into the loop, nothing stored, the loop tiled by ``auto``; fwd+bwd keeps its own default."""
    from dnprof.cli.verify import _select_variants
    from dnprof.variants.chunk_config import ChunkConfig

    (fwd,) = _select_variants("default", [64], 64, 64, "fp16", "fwd")
    (both,) = _select_variants("default", [64], 64, 64, "fp16", "fwdbwd")
    assert fwd == ChunkConfig.default_for(64, 64, 64, "fp16", "fwd") and fwd.rec == "auto" and fwd.state_dtype == "fp32"
    assert both == ChunkConfig.default_for(64, 64, 64, "fp16", "fwdbwd") and both.rec == "main"
