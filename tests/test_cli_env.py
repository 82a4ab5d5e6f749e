"""``dnprof env``, ``--version`` and ``--help`` work on a machine without a GPU."""

from __future__ import annotations

import json

from click.testing import CliRunner

import dnprof
from dnprof.cli import main


def test_version_and_help():
    runner = CliRunner()
    out = runner.invoke(main, ["--version"])
    assert out.exit_code == 0 and dnprof.__version__ in out.output
    out = runner.invoke(main, ["--help"])
    assert out.exit_code == 0 and "env" in out.output


def test_env_json_is_a_fingerprint():
    out = CliRunner().invoke(main, ["env", "--json"])
    assert out.exit_code == 0, out.output
    fp = json.loads(out.output)
    assert fp["dnprof"] == dnprof.__version__
    for key in ("gpu", "torch", "triton", "cuda", "date", "fla_core", "flash_attn", "git_commit"):
        assert key in fp
    import torch

    assert (fp["gpu"] is None) == (not torch.cuda.is_available())


def test_env_table_says_plainly_when_there_is_no_gpu():
    import torch

    out = CliRunner().invoke(main, ["env"])
    assert out.exit_code == 0
    if not torch.cuda.is_available():
        assert "none visible" in out.output
