"""``dnprof report``: the results frame, speedups and tuning figures, and the HTML, Markdown and CSV outputs."""

from __future__ import annotations

import html
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from dnprof.bench.results import SCHEMA_VERSION, ResultRow, ResultsFile, write_results
from dnprof.cli import main
from dnprof.reports import frame_from_results, load_report_data
from dnprof.reports.html import SECTIONS, render_html
from dnprof.reports.speedup import (
    accuracy_table,
    chunk_size_comparison,
    roofline_shares,
    speedup_summary,
    speedups,
    tuning_heatmaps,
    tuning_winners,
)
from report_fixtures import (
    BASELINE_FACTOR,
    EVIL_COMMAND,
    EVIL_FACTOR,
    EVIL_GPU,
    EVIL_MESSAGE,
    H100,
    compare_rows,
    dnprof_ms,
    evil_rows,
    fingerprint,
    tune_rows,
    write_fixture_results,
)

DANGEROUS = (EVIL_GPU, EVIL_MESSAGE, "<b>bold</b>")


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    write_fixture_results(folder)
    return folder


@pytest.fixture(scope="module")
def data(results_dir: Path):
    return load_report_data([results_dir])


@pytest.fixture(scope="module")
def page(data) -> str:
    return render_html(data)


def _frame(*files: tuple[str, list[ResultRow]]):
    """A ReportData from in-memory results files: (kind, rows) on one H100."""
    return frame_from_results((Path(f"run{i}.json"), ResultsFile(kind, "dnprof x", fingerprint(H100), rows))
                              for i, (kind, rows) in enumerate(files))


def _row(provider: str, ms: float | None, status: str = "ok", **kw) -> ResultRow:
    kw = {"mode": "fwd", "B": 2, "T": 256, "H": 4, "K": 64, "V": 64, "dtype": "bfloat16", **kw}
    return ResultRow(provider=provider, computes="deltanet", status=status, ms=ms, **kw)


# -- the frame ------------------------------------------------------------------------------------------------


def test_frame_has_one_row_per_result_row_with_its_run(data) -> None:
    rows = data.rows
    assert len(rows) == len(compare_rows()) + len(tune_rows()) + len(evil_rows())
    assert set(rows["gpu"]) == {H100, EVIL_GPU}
    assert set(rows["kind"]) == {"compare", "tune"}
    assert rows["file"].str.endswith(".json").all()
    evil = rows[rows["gpu"] == EVIL_GPU]
    assert (evil["command"] == EVIL_COMMAND).all() and (evil["sm_count"] == 108).all()
    assert {"driver", "cuda", "torch", "triton", "dnprof_version", "git_commit", "date"} <= set(rows.columns)
    for col in ("err_o", "err_ht", "err_dq", "err_dk", "err_dv", "err_dbeta", "cfg_BV", "cfg_num_warps"):
        assert col in rows.columns
    assert str(rows["chunk_size"].dtype) == "Int64"
    assert rows["winner"].sum() == 1
    assert len(data.runs) == 3 and data.runs["rows"].sum() == len(rows)
    assert sorted(data.gpus) == sorted([H100, EVIL_GPU])


# -- speedups -------------------------------------------------------------------------------------------------


def test_speedups_are_baseline_over_dnprof_at_every_shape(data) -> None:
    sp = speedups(data.rows)
    h100 = sp[sp["gpu"] == H100]
    assert len(h100) == 2 * 2 * 2 * len(BASELINE_FACTOR)  # modes x head dims x lengths x baselines
    for _, r in h100.iterrows():
        assert r["dnprof_ms"] == pytest.approx(dnprof_ms(r["mode"], r["K"], r["T"]))
        assert r["speedup"] == pytest.approx(BASELINE_FACTOR[r["baseline"]])
        assert r["dnprof_provider"] == "dnprof-chunk"  # faster than the c64 variant; the failed 'wide' never counts
    evil = sp[sp["gpu"] == EVIL_GPU]
    assert list(evil["baseline"]) == ["fla-deltanet", "fla-deltanet"]
    assert list(evil["speedup"]) == pytest.approx([EVIL_FACTOR, EVIL_FACTOR])
    assert "cudnn-attn" not in set(sp["baseline"])  # its only row is an error
    fam = dict(zip(sp["baseline"], sp["family"]))
    assert fam == {"fla-deltanet": "fla DeltaNet", "flash-attn": "FlashAttention", "fla-gla": "GLA",
                   "fla-recurrent": "recurrent", "dnprof-recurrent": "recurrent"}


def test_speedup_takes_the_fastest_variant_of_the_same_run_and_only_ok_compare_rows() -> None:
    d = _frame(
        ("compare", [_row("dnprof-chunk", 2.0), _row("dnprof-chunk-wide", 1.0, variant="wide"),
                     _row("fla-deltanet", 3.0), _row("fla-deltanet", None, status="error", message="x"),
                     _row("flash-attn", 4.0, dtype="float16"), _row("fla-gla", 5.0, T=512)]),
        # a later run whose dnprof row failed: its fla-core time pairs with nothing
        ("compare", [_row("fla-deltanet", 2.5), _row("dnprof-chunk", 0.1, status="failed-verification")]),
        ("tune", [_row("dnprof-chunk", 0.5, variant="cand")]),
    )
    sp = speedups(d.rows)
    assert list(sp["baseline"]) == ["fla-deltanet"]  # flash-attn and fla-gla were at other shapes
    r = sp.iloc[0]
    assert (r["dnprof_provider"], r["dnprof_variant"], r["dnprof_ms"]) == ("dnprof-chunk-wide", "wide", 1.0)
    assert (r["baseline_ms"], r["speedup"]) == (3.0, 3.0)
    assert r["file"] == "run0.json"
    paired = d.rows.loc[[r["dnprof_row"], r["baseline_row"]]]  # the two rows themselves, for their other figures
    assert list(paired["provider"]) == ["dnprof-chunk-wide", "fla-deltanet"] and list(paired["ms"]) == [1.0, 3.0]


def test_speedup_never_divides_times_of_different_runs_and_takes_the_most_recent_pair() -> None:
    def run(rows, date):
        fp = dict(fingerprint(H100), date=date)
        return rows, fp

    files = [
        run([_row("dnprof-chunk", 2.0), _row("fla-deltanet", 3.0)], "2026-01-01T00:00:00+00:00"),
        run([_row("dnprof-chunk", 1.0), _row("fla-deltanet", 3.2)], "2026-03-01T00:00:00+00:00"),
        run([_row("dnprof-chunk", 0.5)], "2026-04-01T00:00:00+00:00"),  # dnprof alone: no pair
        run([_row("fla-deltanet", 9.0)], "2026-05-01T00:00:00+00:00"),  # the baseline alone: no pair
        run([_row("dnprof-chunk", 1.5), _row("fla-deltanet", 2.0)], "2026-02-01T00:00:00+00:00"),
    ]
    d = frame_from_results((Path(f"r{i}.json"), ResultsFile("compare", "dnprof compare", fp, rows))
                           for i, (rows, fp) in enumerate(files))
    sp = speedups(d.rows)
    assert len(sp) == 1
    r = sp.iloc[0]
    assert (r["file"], r["dnprof_ms"], r["baseline_ms"]) == ("r1.json", 1.0, 3.2)
    assert r["speedup"] == pytest.approx(3.2)


def test_speedup_summary_is_a_geometric_mean() -> None:
    d = _frame(("compare", [_row("dnprof-chunk", 1.0), _row("fla-deltanet", 2.0),
                            _row("dnprof-chunk", 1.0, T=512), _row("fla-deltanet", 8.0, T=512)]))
    s = speedup_summary(speedups(d.rows))
    assert len(s) == 1
    assert (s.iloc[0]["geomean"], s.iloc[0]["min"], s.iloc[0]["max"], s.iloc[0]["shapes"]) == (4.0, 2.0, 8.0, 2)


def test_chunk_size_and_roofline(data) -> None:
    cs = chunk_size_comparison(data.rows)
    one = cs[(cs["mode"] == "fwd") & (cs["K"] == 64) & (cs["T"] == 1024)].iloc[0]
    assert (one["ms_64"], one["ms_128"], one["ratio"]) == (1.25, 1.0, 1.25)
    tuned = cs[(cs["mode"] == "fwd") & (cs["K"] == 128) & (cs["T"] == 4096)].iloc[0]
    assert (tuned["ms_64"], tuned["ms_128"]) == (1.2, 0.9)  # tuning candidates count: best per chunk size
    assert len(cs) == 8 and set(cs["gpu"]) == {H100}  # the evil GPU only ran chunk size 128
    rs = roofline_shares(data.rows)
    assert set(rs["provider"]) == {"dnprof-chunk", "fla-deltanet"}
    assert rs[rs["provider"] == "dnprof-chunk"]["x_floor"].tolist() == pytest.approx([4.0] * 8)
    assert rs[rs["provider"] == "fla-deltanet"]["x_floor"].tolist() == pytest.approx([8.0] * 8)


# -- tuning ---------------------------------------------------------------------------------------------------


def test_tuning_winner_counts_and_heatmap(data) -> None:
    win = tuning_winners(data.rows)
    assert len(win) == 1
    w = win.iloc[0]
    assert (w["variant"], w["ms"], w["flagged"]) == ("bv64-w4-c128", 0.9, True)
    assert (w["candidates"], w["ok"], w["failed"], w["median_ms"], w["worst_ms"]) == (9, 7, 2, 1.2, 1.6)
    assert w["config"] == {"BV": 64, "num_warps": 4, "chunk_size": 128}
    (hm,) = tuning_heatmaps(data.rows)
    assert (hm["x_param"], hm["y_param"], hm["x"], hm["y"]) == ("BV", "num_warps", [32, 64], [4, 8])
    # best ms per (BV, num_warps) over chunk sizes; the failed (64, 8, 128) candidate is left out
    assert hm["ms"] == [[1.1, 0.9], [1.0, 1.6]]
    assert [v for row in hm["z"] for v in row] == pytest.approx([1.1 / 0.9, 1.0, 1.0 / 0.9, 1.6 / 0.9])


def test_tuning_winner_falls_back_to_fastest_ok_when_none_flagged() -> None:
    d = _frame(("tune", [_row("dnprof-chunk", 2.0, variant="a", config={"BV": 32}),
                         _row("dnprof-chunk", 1.5, variant="b", config={"BV": 64}),
                         _row("dnprof-chunk", None, status="error", variant="c", message="boom")]))
    w = tuning_winners(d.rows).iloc[0]
    assert (w["variant"], w["ms"], w["flagged"], w["failed"]) == ("b", 1.5, False, 1)
    assert tuning_heatmaps(d.rows) == []  # one varying parameter: no heatmap


# -- accuracy -------------------------------------------------------------------------------------------------


def test_accuracy_table_flags_failures(data) -> None:
    acc = accuracy_table(data.rows)
    failing = acc[acc["fails"]]
    assert set(failing["variant"]) == {"wide", "bv64-w8-c128"}
    assert not acc[~acc["fails"]]["status"].ne("ok").any()
    tune = acc[acc["kind"] == "tune"]
    assert set(tune["variant"]) == {"bv64-w4-c128", "bv64-w8-c128"}  # winner and failure, not every candidate
    assert acc.loc[acc["variant"] == "wide", "err_dk"].item() == 0.5


# -- HTML -----------------------------------------------------------------------------------------------------


def _without_plotly_bundle(page: str) -> str:
    """The page with the one big inline plotly.js script removed."""
    return re.sub(r"<script>/\*\*\s*\* plotly\.js v.*?</script>", "", page, count=1, flags=re.S)


def test_html_has_every_section_and_plotly_once_offline(page: str) -> None:
    for sid, title in SECTIONS:
        assert f'<section id="{sid}">' in page and html.escape(title) in page
    assert len(re.findall(r"\* plotly\.js v\d", page)) == 1
    assert len(re.findall(r"<script>/\*\*\s*\* plotly\.js v", page)) == 1
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, flags=re.I)
    rest = _without_plotly_bundle(page)
    assert len(rest) < len(page) - 1_000_000
    assert "cdn.plot.ly" not in rest and "https://" not in rest and "http://" not in rest
    for fid in ("fig-throughput", "fig-speedup", "fig-memory", "fig-chunk-size", "fig-roofline",
                "fig-tuning-spread", "fig-tuning-heatmap"):
        assert page.count(f'id="{fid}"') == 1
    assert 'class="empty"' not in page  # every section has data here


def test_html_escapes_text_from_results_files(page: str) -> None:
    for text in DANGEROUS:
        assert text not in page
    assert html.escape(EVIL_GPU) in page
    assert html.escape(EVIL_MESSAGE) in page
    assert html.escape(EVIL_COMMAND) in page
    assert "out of shared memory: 262144 &gt; 232448" in page  # failure messages are listed
    assert re.search(r"<script>\s*alert", page) is None and "onerror=alert" not in page.replace(
        html.escape(EVIL_MESSAGE), "")


def test_html_says_plainly_when_sections_have_no_data(tmp_path: Path) -> None:
    d = _frame(("compare", [_row("fla-deltanet", 2.0, tokens_per_s=256e3)]))
    page = render_html(d)
    assert page.count('class="empty"') == 9  # all but throughput and runs
    for message in ("No speedups", "No run has both an ok dnprof-chunk row and an ok fla-deltanet row",
                    "No tuning results", "No rows carry error figures",
                    "None: every row has status ok", "No ok compare rows carry a roofline floor"):
        assert message in page
    assert 'id="fig-throughput"' in page


# -- CLI: html, md, csv ---------------------------------------------------------------------------------------


def test_cli_html_writes_the_report(results_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "report.html"
    res = CliRunner().invoke(main, ["report", str(results_dir), "-o", str(out), "--title", "H100 <vs> fla"])
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<title>H100 &lt;vs&gt; fla</title>" in text
    assert str(out) in res.stderr
    assert not list(out.parent.glob(".*.tmp"))


def test_cli_markdown_to_stdout_and_file(results_dir: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["report", str(results_dir), "--format", "md"])
    assert res.exit_code == 0, res.output
    md = res.stdout
    for heading in ("## Speedup", "## Chunk size 64 against 128", "## Tuning winners", "## Accuracy",
                    "## Failed and errored rows", "## Runs"):
        assert heading in md
    assert "| fla DeltaNet (fla-deltanet) | fwd |" in md and "2.00x" in md and "1.25x" in md
    assert "bv64-w4-c128" in md and "**failed-verification**" in md
    for text in DANGEROUS:
        assert text not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "<" not in md.replace("<br>", "")
    out = tmp_path / "report.md"
    res = CliRunner().invoke(main, ["report", str(results_dir), "--format", "md", "-o", str(out)])
    assert res.exit_code == 0 and res.stdout == "" and out.read_text(encoding="utf-8") == md


def test_markdown_cells_escape_pipes_and_newlines(tmp_path: Path) -> None:
    d = _frame(("compare", [_row("fla-deltanet", None, status="error", message="a | b\nc")]))
    from dnprof.reports.markdown import render_markdown

    assert "a \\| b c" in render_markdown(d)


def test_cli_csv_is_the_flat_frame(results_dir: Path, data) -> None:
    res = CliRunner().invoke(main, ["report", str(results_dir), "--format", "csv"])
    assert res.exit_code == 0, res.output
    back = pd.read_csv(io.StringIO(res.stdout))
    assert len(back) == len(data.rows)
    assert list(back.columns) == list(data.rows.columns)
    tune = back[back["kind"] == "tune"]
    configs = [json.loads(c) for c in tune["config"]]
    assert {"BV", "num_warps", "chunk_size"} <= set(configs[0])
    assert set(back["gpu"]) == {H100, EVIL_GPU}


# -- bad input ------------------------------------------------------------------------------------------------


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Each bad input: the path to pass, and the words its error must contain."""
    (tmp / "empty").mkdir()
    (tmp / "other.json").write_text(json.dumps({"hello": "world"}))
    (tmp / "notes.json").write_text("these are notes\n")
    newer = ResultsFile("compare", "dnprof compare", fingerprint(H100), [], schema_version=SCHEMA_VERSION + 1)
    write_results(tmp / "newer.json", newer)
    return {
        "missing": (tmp / "nowhere.json", "no such file"),
        "empty folder": (tmp / "empty", "no results files"),
        "not dnprof's": (tmp / "other.json", "not a dnprof results file"),
        "not JSON": (tmp / "notes.json", "not valid JSON"),
        "newer schema": (tmp / "newer.json", f"schema version {SCHEMA_VERSION + 1} is newer"),
    }


@pytest.mark.parametrize("case", ["missing", "empty folder", "not dnprof's", "not JSON", "newer schema"])
@pytest.mark.parametrize("fmt", ["html", "md"])
def test_bad_input_exits_2_with_one_line_naming_the_file(case: str, fmt: str, results_dir: Path,
                                                         tmp_path: Path) -> None:
    path, reason = _bad_inputs(tmp_path)[case]
    out = tmp_path / "report.out"
    res = CliRunner().invoke(main, ["report", str(results_dir), str(path), "--format", fmt, "-o", str(out)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert str(path) in lines[0] and reason in lines[0]
    assert res.stdout == "" and not out.exists()


def test_headline_table_names_the_run_each_pair_comes_from() -> None:
    from dnprof.reports import tables

    d = _frame(("compare", [_row("dnprof-chunk", 1.0), _row("fla-deltanet", 2.0)]),
               ("compare", [_row("dnprof-chunk", 1.6), _row("flash-attn", 0.8)]))
    t = tables.headline(speedups(d.rows), H100)
    assert t.headers[-1] == "run" and t.code_columns == {len(t.headers) - 1}
    by_run = {row[-1]: row for row in t.rows}
    assert set(by_run) == {"run0.json", "run1.json"}
    fla = t.headers.index("vs fla DeltaNet (fla-deltanet)")
    flash = t.headers.index("vs FlashAttention (flash-attn)")
    assert (by_run["run0.json"][7], by_run["run0.json"][fla], by_run["run0.json"][flash]) == ("1.000", "2.00x", "-")
    assert (by_run["run1.json"][7], by_run["run1.json"][flash]) == ("1.600", "0.50x")
    i = t.rows.index(by_run["run1.json"])
    assert t.flags[(i, flash)] == "bad" and (i, fla) not in t.flags


def test_chunk_sizes_compare_within_one_run_and_take_the_most_recent() -> None:
    def c(ms, size):
        return _row("dnprof-chunk", ms, config={"chunk_size": size})

    files = [([c(1.0, 64), c(2.0, 128)], "2026-01-01T00:00:00+00:00"),
             ([c(0.5, 64)], "2026-04-01T00:00:00+00:00"),  # chunk size 64 alone: nothing to compare
             ([c(0.4, 128)], "2026-05-01T00:00:00+00:00"),
             ([c(1.5, 64), c(1.0, 128)], "2026-02-01T00:00:00+00:00")]
    d = frame_from_results((Path(f"r{i}.json"), ResultsFile("compare", "dnprof compare",
                                                            dict(fingerprint(H100), date=date), rows))
                           for i, (rows, date) in enumerate(files))
    cs = chunk_size_comparison(d.rows)
    assert len(cs) == 1
    assert (cs.iloc[0]["ms_64"], cs.iloc[0]["ms_128"], cs.iloc[0]["ratio"]) == (1.5, 1.0, 1.5)


# -- the targets against fla-core ------------------------------------------------------------------------------


def test_targets_judge_speed_memory_and_accuracy_per_shape_from_one_run() -> None:
    """Each shape is judged from the run the headline pairs: the speedup against its mode's target, peak
    memory no higher than fla-core's and every shared error figure no higher (the worst ratio kept); a
    missing figure leaves its part unjudged (None) and the shape not met."""
    from dnprof.reports.peer import peer_scorecard

    errs = {"o": 4e-3, "dk": 5e-3}
    d = _frame(("compare", [
        # fwd at T = 256: 2x faster (target 1.5x), less memory, smaller errors -> meets
        _row("dnprof-chunk", 1.0, peak_mem_mb=100.0, errors={"o": 3e-3, "dk": 4e-3}),
        _row("fla-deltanet", 2.0, peak_mem_mb=200.0, errors=errs),
        # fwdbwd at T = 256: 1.2x (target 1.25x), more memory, one error above fla-core's -> three misses
        _row("dnprof-chunk", 5.0, mode="fwdbwd", peak_mem_mb=300.0, errors={"o": 3e-3, "dk": 6e-3}),
        _row("fla-deltanet", 6.0, mode="fwdbwd", peak_mem_mb=250.0, errors=errs),
        # fwd at T = 512: fast and accurate but no memory figure for fla-core -> memory not judged
        _row("dnprof-chunk", 1.0, T=512, peak_mem_mb=100.0, errors={"o": 3e-3}),
        _row("fla-deltanet", 2.0, T=512, errors=errs),
    ]))
    card = peer_scorecard(d.rows).set_index(["mode", "T"])
    ok = card.loc[("fwd", 256)]
    assert (ok["speedup"], ok["target"]) == (2.0, 1.5)
    assert (ok["fast_enough"], ok["lean_enough"], ok["accurate_enough"], ok["meets"]) == (True, True, True, True)
    assert ok["error_ratio"] == pytest.approx(0.8) and ok["error_name"] in ("dk", "o")
    short = card.loc[("fwdbwd", 256)]
    assert (short["fast_enough"], short["lean_enough"], short["accurate_enough"], short["meets"]) == (
        False, False, False, False)
    assert short["error_ratio"] == pytest.approx(1.2) and short["error_name"] == "dk"
    unknown = card.loc[("fwd", 512)]
    assert unknown["lean_enough"] is None and unknown["fast_enough"] and not unknown["meets"]
    assert unknown["error_ratio"] == pytest.approx(0.75) and unknown["error_name"] == "o"  # the one shared figure
    # other targets are the caller's
    assert not peer_scorecard(d.rows, {"fwd": 2.5, "fwdbwd": 1.1}).set_index(["mode", "T"]).loc[("fwd", 256), "meets"]


def test_targets_in_every_format_and_on_the_command_line(results_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    md = runner.invoke(main, ["report", str(results_dir), "--format", "md"])
    assert md.exit_code == 0, md.output
    assert "## Against fla-core's DeltaNet (speedup targets: fwd 1.50x, fwdbwd 1.25x" in md.output
    strict = runner.invoke(main, ["report", str(results_dir), "--format", "md", "--target-fwd", "50",
                                  "--target-fwdbwd", "50"])
    section = strict.output.split("## Against fla-core's DeltaNet", 1)[1].split("\n## ", 1)[0]
    assert "fwd 50.00x, fwdbwd 50.00x" in section and "| yes |" not in section and "| **no** |" in section
    bad = runner.invoke(main, ["report", str(results_dir), "--target-fwd", "0"])
    assert bad.exit_code == 2 and "--target-fwd" in bad.output
