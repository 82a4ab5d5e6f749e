"""The compare loop and ``dnprof compare`` on the CPU: results files, failures recorded, speedups, bad options."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from dnprof.bench.compare import annotate_speedups, default_output_path, gpu_slug, run_compare
from dnprof.bench.compare_table import CompareTable, best_indices, format_rows
from dnprof.bench.results import ResultRow, load_results
from dnprof.cli import main
from dnprof.kernels.validation import interpreter_enabled
from dnprof.providers import Shape, get_provider
from dnprof.providers.deltanet import DeltaNetProvider
from dnprof.providers.task import TaskSettings
from dnprof.providers.torch_ref import torch_chunk_delta_rule

TINY = Shape(B=1, T=32, H=2, K=16, V=16, dtype=torch.float32, device="cpu")
FAST = TaskSettings(cpu_repeats=1)
FP = {"gpu": None, "torch": torch.__version__, "dnprof": "test"}
CPU_ARGS = ["compare", "--device", "cpu", "--seq-len", "32", "--head-dim", "16", "--heads", "2", "--batch", "1"]


def _wrong_kernel(q, k, v, beta, **kw):
    o, ht = torch_chunk_delta_rule(q, k, v, beta, **kw)
    return 1.5 * o, ht


def _oom_kernel(q, k, v, beta, **kw):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")


def _fake(name: str, kernel) -> DeltaNetProvider:
    return DeltaNetProvider(name, f"fake {name}", loader=lambda: kernel, devices=("cpu",))


def test_compare_run_writes_a_valid_results_file(tmp_path):
    providers = [get_provider("torch-chunk")]
    if interpreter_enabled():
        for name, module in (("dnprof-chunk", "dnprof.kernels.chunk"), ("dnprof-recurrent", "dnprof.kernels.recurrent")):
            try:
                pytest.importorskip(module)
            except pytest.skip.Exception:
                continue
            providers.append(get_provider(name))
    out = tmp_path / "cpu" / "compare.json"
    seen = []

    def on_row(row):
        seen.append(row)
        assert len(load_results(out).rows) == len(seen)  # rewritten after every row

    res = run_compare(providers, [TINY], ["fwd", "fwdbwd"], settings=FAST, baseline="torch-chunk", output=out,
                      command="dnprof compare --device cpu", fingerprint=FP, on_row=on_row)
    back = load_results(out)
    assert back.kind == "compare" and back.command == "dnprof compare --device cpu" and back.fingerprint == FP
    assert len(back.rows) == 2 * len(providers) == len(res.rows)
    for row in back.rows:
        assert row.status == "ok", (row.provider, row.message)
        assert row.ms > 0 and row.ms_p20 <= row.ms <= row.ms_p80
        assert row.tokens_per_s > 0 and row.device == "cpu" and row.dtype == "fp32"
        assert row.verify_T == 32 and row.errors and max(row.errors.values()) < row.tolerance
        expected = {"o", "ht"} | ({"dq", "dk", "dv", "dbeta", "dh0"} if row.mode == "fwdbwd" else set())
        assert set(row.errors) == expected
        assert row.extra["speedup"] > 0 and row.extra["baseline"] == "torch-chunk"
        if row.provider == "dnprof-chunk":
            assert row.variant and row.config and row.config_source in ("tuned", "shipped", "default")
    assert [r.provider for r in back.rows[:2]] == ["torch-chunk", "torch-chunk"]


def test_wrong_provider_fails_verification_and_is_not_timed(tmp_path):
    out = tmp_path / "r.json"
    res = run_compare([_fake("wrong", _wrong_kernel), get_provider("torch-chunk")], [TINY], ["fwd"],
                      settings=FAST, output=out, fingerprint=FP)
    wrong, ok = res.rows
    assert wrong.status == "failed-verification" and wrong.ms is None and wrong.tokens_per_s is None
    assert wrong.errors["o"] > wrong.tolerance and "o" in wrong.message
    assert ok.status == "ok" and ok.ms > 0
    assert [r.status for r in load_results(out).rows] == ["failed-verification", "ok"]


def test_oom_is_recorded_and_the_run_goes_on(tmp_path):
    res = run_compare([_fake("greedy", _oom_kernel), get_provider("torch-chunk")], [TINY], ["fwd", "fwdbwd"],
                      settings=FAST, output=tmp_path / "r.json", fingerprint=FP)
    statuses = [(r.provider, r.mode, r.status) for r in res.rows]
    assert statuses == [("greedy", "fwd", "oom"), ("greedy", "fwdbwd", "oom"),
                        ("torch-chunk", "fwd", "ok"), ("torch-chunk", "fwdbwd", "ok")]
    assert "out of memory" in res.rows[0].message and res.rows[0].ms is None


def test_compile_and_other_errors_are_recorded(tmp_path):
    class OutOfResources(Exception):
        pass

    def smem(q, k, v, beta, **kw):
        raise OutOfResources("out of resource: shared memory, Required: 262144")

    def broken(q, k, v, beta, **kw):
        raise ValueError("K: head dim 300 is larger than 256")

    res = run_compare([_fake("smem", smem), _fake("broken", broken)], [TINY], ["fwd"], settings=FAST,
                      fingerprint=FP)
    assert [r.status for r in res.rows] == ["compile-error", "error"]
    assert res.rows[1].message == "ValueError: K: head dim 300 is larger than 256"


def _row(provider, ms, mode="fwd", T=1024, status="ok"):
    return ResultRow(provider=provider, computes="deltanet", mode=mode, B=1, T=T, H=2, K=64, V=64, dtype="bf16",
                     status=status, ms=ms if status == "ok" else None)


def test_speedup_column_and_best_row():
    rows = [_row("base", 2.0), _row("fast", 1.0), _row("slow", 4.0), _row("fast", 3.0, mode="fwdbwd"),
            _row("fast", 1.0, T=2048), _row("broken", None, status="error")]
    annotate_speedups(rows, "base")
    assert rows[0].extra["speedup"] == 1.0 and rows[1].extra["speedup"] == 2.0 and rows[2].extra["speedup"] == 0.5
    assert "speedup" not in rows[3].extra and "speedup" not in rows[4].extra  # no baseline at that mode/shape
    assert "speedup" not in rows[5].extra
    assert best_indices(rows) == {1, 3, 4}
    table = CompareTable("base")
    table.rows = rows
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(table.render())
    text = console.export_text()
    assert "2.00x" in text and "0.50x" in text and "speedup" in text
    md = format_rows(rows, "md", "base")
    assert md.splitlines()[0].startswith("| provider") and "2.00x" in md
    csv_text = format_rows(rows, "csv", "base")
    assert csv_text.splitlines()[0].startswith("provider,variant") and len(csv_text.splitlines()) == 7
    assert len(json.loads(format_rows(rows, "json", "base"))) == 6


def test_off_a_terminal_each_start_and_row_is_logged_as_it_happens():
    """A log cut short (a time limit) still says what ran and what it measured."""
    import io

    from rich.console import Console

    out = io.StringIO()
    table = CompareTable("base", console=Console(file=out, width=200, force_terminal=False))

    class _P:
        name = "fla-deltanet"

    class _S:
        @staticmethod
        def label() -> str:
            return "B=8 T=4096 H=8 D=256 bf16"

    with table:
        table.start(_P(), _S(), "fwd")
        logged_start = out.getvalue()
        table.add(_row("fla-deltanet", 1.088))
        logged_row = out.getvalue()
        table.add(_row("broken", None, status="error"))
    assert "running fla-deltanet fwd at B=8 T=4096 H=8 D=256 bf16" in logged_start and " s] " in logged_start
    assert "fla-deltanet fwd" in logged_row and ": ok 1.088 ms" in logged_row
    assert "broken" in out.getvalue() and ": error" in out.getvalue()


def test_default_output_path():
    import datetime as dt

    when = dt.datetime(2025, 3, 1, 12, 30, 5, tzinfo=dt.timezone.utc)
    assert gpu_slug({"gpu": {"name": "NVIDIA H100 80GB HBM3"}}) == "nvidia-h100-80gb-hbm3"
    assert str(default_output_path({"gpu": None}, now=when)) == "results/cpu/compare-20250301T123005Z.json"


def test_cli_cpu_run_json_to_stdout(tmp_path):
    out = tmp_path / "c.json"
    res = CliRunner().invoke(main, CPU_ARGS + ["--providers", "torch-chunk,sdpa-math", "--mode", "fwd",
                                               "--format", "json", "--output", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [(r["provider"], r["status"]) for r in rows] == [("torch-chunk", "ok"), ("sdpa-math", "ok")]
    assert rows[1]["extra"]["baseline"] == "torch-chunk"
    back = load_results(out)
    assert back.kind == "compare" and "--providers torch-chunk,sdpa-math" in back.command
    assert back.command.startswith("dnprof compare") and back.fingerprint["torch"] == torch.__version__


def test_cli_cpu_run_table(tmp_path):
    res = CliRunner().invoke(main, CPU_ARGS + ["--providers", "torch-chunk", "--baseline", "sdpa-math",
                                               "--output", str(tmp_path / "t.json")])
    assert res.exit_code == 0, res.output
    assert "torch-chunk" in res.output and "sdpa-math" in res.output and "speedup" in res.output
    assert [r.provider for r in load_results(tmp_path / "t.json").rows] == ["sdpa-math"] * 2 + ["torch-chunk"] * 2


@pytest.mark.parametrize(
    "args, option",
    [
        (["--head-dim", "100"], "--head-dim"),
        (["--providers", "nope"], "--providers"),
        (["--seq-len", "65536", "--tokens", "32768"], "--seq-len"),
        (["--seq-len", "0"], "--seq-len"),
        (["--seq-len", "abc"], "--seq-len"),
        (["--mode", "bwd"], "--mode"),
        (["--heads", "2", "--model-dim", "64"], "--heads"),
        (["--batch", "1", "--tokens", "64"], "--batch"),
        (["--baseline", "nope"], "--baseline"),
        (["--jobs", "-1"], "--jobs"),
    ],
)
def test_bad_options_exit_2_naming_the_option(args, option):
    base = ["compare", "--device", "cpu", "--head-dim", "16", "--seq-len", "32"]
    res = CliRunner().invoke(main, base + args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and option in lines[0], res.output


def test_fp32_on_gpu_is_refused():
    res = CliRunner().invoke(main, ["compare", "--dtype", "fp32", "--seq-len", "32"])
    assert res.exit_code == 2 and "--dtype" in res.output


def test_no_gpu_without_device_cpu_exits_2_with_hint(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = CliRunner().invoke(main, ["compare", "--seq-len", "32"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and "--device cpu" in lines[0]


def test_list_providers():
    res = CliRunner().invoke(main, ["compare", "--list-providers", "--device", "cpu"])
    assert res.exit_code == 0 and "fla-deltanet" in res.output and "torch-chunk" in res.output
