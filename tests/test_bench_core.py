"""Error metric, inputs, results files and the verification harness."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dnprof.bench.equivalence import passes, relative_error, tolerance_for
from dnprof.bench.inputs import make_delta_inputs
from dnprof.bench.results import (
    ResultRow,
    ResultsFile,
    ResultsFileError,
    find_results_files,
    load_results,
    write_results,
)
from dnprof.bench.verify import verify_delta_kernel
from dnprof.reference import recurrent_delta_rule


def test_relative_error_values_and_nan():
    ref = torch.tensor([3.0, 4.0])
    assert relative_error(ref, ref) == 0.0
    assert relative_error(torch.tensor([3.0, 4.5]), ref) == pytest.approx(0.1)
    assert relative_error(torch.tensor([float("nan"), 4.0]), ref) == math.inf
    assert not passes(float("nan"), 1.0) and not passes(math.inf, 1.0) and passes(1e-3, 1e-2)
    with pytest.raises(ValueError, match="shape"):
        relative_error(torch.zeros(3), torch.zeros(2))


def test_tolerances_are_ordered_by_precision():
    assert tolerance_for(torch.float32) < tolerance_for(torch.float16) < tolerance_for(torch.bfloat16)
    with pytest.raises(ValueError, match="dtype"):
        tolerance_for(torch.int8)


def test_inputs_follow_the_standards():
    x = make_delta_inputs(2, 33, 3, 16, 8, dtype=torch.float32, seed=1)
    norms = x.k.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
    assert (x.beta > 0).all() and (x.beta < 1).all()
    assert x.initial_state.dtype == torch.float32 and x.initial_state.abs().sum() > 0
    assert (x.q != 0).all() and (x.v != 0).all()
    y = make_delta_inputs(2, 33, 3, 16, 8, dtype=torch.float32, seed=2)
    assert not torch.equal(x.q, y.q)


def _row(**kw):
    base = dict(provider="dnprof-chunk", computes="deltanet", mode="fwd", B=1, T=64, H=2, K=32, V=32,
                dtype="bf16", status="ok", ms=1.5, errors={"o": 1e-3})
    base.update(kw)
    return ResultRow(**base)


def test_results_round_trip(tmp_path):
    rf = ResultsFile(kind="compare", command="dnprof compare", fingerprint={"gpu": None}, rows=[_row(), _row(status="oom", ms=None)])
    path = write_results(tmp_path / "sub" / "r.json", rf)
    back = load_results(path)
    assert back.rows == rf.rows and back.kind == "compare"
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["r.json"]  # no temporary left behind


def test_row_rejects_inconsistent_values():
    with pytest.raises(ValueError, match="status"):
        _row(status="great")
    with pytest.raises(ValueError, match="ms"):
        _row(ms=None)
    with pytest.raises(ValueError, match="mode"):
        _row(mode="bwd")


@pytest.mark.parametrize(
    "content,reason",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"hello": 1}), "not a dnprof results file"),
        (json.dumps({"schema": "dnprof-results", "schema_version": 99, "kind": "compare", "fingerprint": {}, "rows": []}), "newer"),
        (json.dumps({"schema": "dnprof-results", "schema_version": 1, "kind": "compare", "fingerprint": {}, "rows": [{"x": 1}]}), "row 0"),
    ],
)
def test_bad_results_files_name_file_and_reason(tmp_path, content, reason):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ResultsFileError, match=reason) as info:
        load_results(path)
    assert "bad.json" in str(info.value)


def test_find_results_files(tmp_path):
    with pytest.raises(ResultsFileError, match="no such"):
        find_results_files([tmp_path / "missing"])
    with pytest.raises(ResultsFileError, match="no results files"):
        find_results_files([tmp_path])
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.json").write_text("{}")
    assert find_results_files([tmp_path]) == [tmp_path / "a" / "x.json"]


def test_verify_passes_the_reference_and_catches_a_wrong_kernel():
    def exact(q, k, v, beta, **kw):
        return recurrent_delta_rule(q, k, v, beta, dtype=torch.float64, **kw)

    good = verify_delta_kernel(exact, 1, 20, 2, 8, 8, dtype=torch.float32, mode="fwdbwd")
    assert good.passed and set(good.errors) == {"o", "ht", "dq", "dk", "dv", "dbeta", "dh0"}
    assert good.max_error < 1e-6

    def forgets_initial_state(q, k, v, beta, initial_state=None, **kw):
        return recurrent_delta_rule(q, k, v, beta, initial_state=None if initial_state is None else 0 * initial_state, **kw)

    bad = verify_delta_kernel(forgets_initial_state, 1, 20, 2, 8, 8, dtype=torch.float32, mode="fwd")
    assert not bad.passed and "ht" in bad.failed and "o" in bad.failed
