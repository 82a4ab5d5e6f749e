"""``--ray`` on the CPU: a local two-node Ray cluster with declared (fake) GPUs runs interpreter-mode tasks.

Checks that a Ray run finds what a serial run finds, that a killed worker costs only its task (one
retry, then a failure record), that the database stays consistent, that GPU models tune into their
own databases, and that nothing imports Ray without ``--ray``. Ray is a dev dependency: these tests
fail, not skip, when it is missing.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import ray
import torch
from click.testing import CliRunner
from ray.cluster_utils import Cluster

from dnprof.bench.compare import run_compare
from dnprof.bench.results import load_results
from dnprof.cli import main
from dnprof.distributed import InlineExecutor, TaskOutcome
from dnprof.distributed.ray_executor import RayExecutor, WorkerInfo, discover, group_nodes, tune_groups
from dnprof.providers import Shape, get_provider
from dnprof.providers.deltanet import DeltaNetProvider
from dnprof.providers.task import TaskSettings
from dnprof.variants.db import TuningDB
from dnprof.variants.limits import PROFILES
from dnprof.variants.search import Budget
from dnprof.variants.space import generate_space
from dnprof.variants.tuner import Tuner, TuneRequest

GPU, CC = "Triton interpreter (CPU)", "interpreter"
#: Five chunk candidates at a tiny shape; halving over the verified ones takes a few rounds.
TUNE_ARGS = ["tune", "--device", "cpu", "--head-dim", "16", "--seq-len", "16", "--heads", "1", "--batch", "1",
             "--chunk-size", "16", "--mode", "fwd", "--strategy", "halving", "--budget", "5", "--no-fla"]
COMPARE_ARGS = ["compare", "--device", "cpu", "--seq-len", "32", "--head-dim", "16", "--heads", "2", "--batch", "1",
                "--providers", "torch-chunk,sdpa-math", "--mode", "fwd,fwdbwd", "--format", "json"]
TINY = Shape(B=1, T=32, H=2, K=16, V=16, dtype=torch.float32, device="cpu")


@pytest.fixture(scope="module")
def cluster():
    """Two local Ray nodes declaring one GPU and one CPU each (tasks run the Triton interpreter); node ids."""
    if torch.cuda.is_available():
        pytest.skip("the CPU test of --ray; on a GPU machine --ray runs real GPU tasks")
    os.environ["TRITON_INTERPRET"] = "1"  # inherited by the nodes' workers
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1, num_gpus=1)
    ray.init(address=nodes.address, log_to_driver=False)
    nodes.wait_for_nodes()
    yield sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    ray.shutdown()
    nodes.shutdown()


def _space():
    return generate_space(16, 16, "fp32", PROFILES["interpreter"], ("chunk",), mode="fwd", chunk_sizes=[16])


def _req(**over) -> TuneRequest:
    base = dict(K=16, V=16, T=16, B=1, H=1, dtype="fp32", mode="fwd", device="cpu", strategy="halving",
                budget=Budget(5), jobs=0, fla=False)
    base.update(over)
    return TuneRequest(**base)


def _consistent(path: Path, gpu: str = GPU, cc: str = CC) -> tuple[dict, Counter]:
    """Check a database the way a resumed run reads it; returns its states and time records per round."""
    db = TuningDB(path, gpu, cc)
    assert db.warnings == []
    (key,) = db.keys()
    states = db.candidates(key)
    recs = db.records_for(key)
    verifies = Counter(r["candidate"] for r in recs if r["stage"] == "verify")
    times = Counter((r["candidate"], r["round"]) for r in recs if r["stage"] == "time")
    assert set(verifies.values()) == {1}, verifies  # each candidate checked exactly once
    assert set(times.values()) == {1}, times  # each round of each candidate timed once
    assert all(st.crashes == 0 for st in states.values())  # no step left open
    for name, _ in times:
        assert next(st for st in states.values() if st.candidate == name).verified  # only verified ones timed
    return states, Counter(r for _, r in times)


def _halving_rounds(rounds: Counter, verified: int) -> None:
    """Each round times the faster half of the last (plus the default, pinned): a valid halving search."""
    alive, r = verified, 0
    while alive >= 1:
        assert rounds[r] - alive in (0, 1), (r, rounds)
        if alive == 1:
            break
        alive, r = math.ceil(alive / 2), r + 1
    assert set(rounds) == set(range(r + 1)), rounds


def _verdicts(states: dict) -> dict[str, tuple[str, dict]]:
    return {st.candidate: (st.verify["status"], st.verify.get("errors") or {}) for st in states.values()}


def _same_verdicts(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name, (status, errors) in want.items():
        assert got[name][0] == status, name
        assert got[name][1].keys() == errors.keys()
        for k, v in errors.items():
            assert got[name][1][k] == pytest.approx(v, rel=1e-3, abs=1e-9), (name, k)


def test_without_ray_nothing_imports_ray(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from dnprof.cli import main
        tune = {TUNE_ARGS!r}[:-3] + ["--budget", "1", "--no-fla", "--db", {str(tmp_path / "db.jsonl")!r}]
        r = CliRunner().invoke(main, tune + ["-o", {str(tmp_path / "t.json")!r}])
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(main, {COMPARE_ARGS!r} + ["--providers", "torch-chunk", "--mode", "fwd",
                                                         "-o", {str(tmp_path / "c.json")!r}])
        assert r.exit_code == 0, r.output
        loaded = [m for m in sys.modules if m == "ray" or m.startswith("ray.")]
        assert not loaded, loaded
        sys.modules["ray"] = None  # as if Ray were not installed
        for args in (tune, {COMPARE_ARGS!r}):
            r = CliRunner().invoke(main, args + ["--ray"])
            assert r.exit_code == 2 and "pip install 'dnprof[ray]'" in r.output, r.output
        print("no ray")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1", DNPROF_TUNING_DIR=str(tmp_path / "tuning"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "no ray" in proc.stdout, proc.stdout + proc.stderr


def test_ray_option_takes_an_optional_address():
    from dnprof.cli.tune import command

    ctx = command.make_context("tune", ["--ray", "--device", "cpu"])
    assert ctx.params["ray_address"] == "local" and ctx.params["device"] == "cpu"
    ctx = command.make_context("tune", ["--ray", "ray://head:10001"])
    assert ctx.params["ray_address"] == "ray://head:10001"
    assert command.make_context("tune", []).params["ray_address"] is None


def test_nodes_are_grouped_by_gpu_model():
    def info(gpu, cc):
        return WorkerInfo(gpu, cc, PROFILES["h100"], {"gpu": {"name": gpu, "count": 1}})

    groups = group_nodes([("n1", 8, info("NVIDIA H100 80GB HBM3", "9.0")), ("n2", 4, info("NVIDIA A100-SXM4-80GB", "8.0")),
                          ("n3", 8, info("NVIDIA H100 80GB HBM3", "9.0"))])
    assert [(g.gpu, g.node_ids, g.gpus) for g in groups] == [("NVIDIA H100 80GB HBM3", ("n1", "n3"), 16),
                                                            ("NVIDIA A100-SXM4-80GB", ("n2",), 4)]
    fp = groups[0].fingerprint()
    assert fp["gpu"]["count"] == 16 and fp["ray"] == {"nodes": 2, "gpus": 16}


def test_tune_on_ray_matches_a_serial_run(cluster, tmp_path, monkeypatch):
    serial_db, serial_out = tmp_path / "serial.jsonl", tmp_path / "serial.json"
    res = CliRunner().invoke(main, TUNE_ARGS + ["--db", str(serial_db), "-o", str(serial_out)])
    assert res.exit_code == 0, res.output
    monkeypatch.setenv("DNPROF_TUNING_DIR", str(tmp_path / "tuning"))
    out = tmp_path / "ray.json"
    res = CliRunner().invoke(main, TUNE_ARGS + ["-o", str(out), "--ray"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "on 2 x Triton interpreter (CPU) (cc interpreter) (2 Ray nodes)" in text, text
    (ray_db,) = (tmp_path / "tuning").glob("*.jsonl")
    assert ray_db.name == "triton-interpreter-cpu-ccinterpreter.jsonl"  # the GPU's own database file
    got, got_rounds = _consistent(ray_db)
    want, want_rounds = _consistent(serial_db)
    _same_verdicts(_verdicts(got), _verdicts(want))
    verified = sum(st.verified for st in got.values())
    assert verified >= 2 and got_rounds[0] == want_rounds[0] == verified
    _halving_rounds(got_rounds, verified)  # the same search, round by round (finalists follow the timings)
    _halving_rounds(want_rounds, verified)
    steps = int(re.search(r"(\d+) new steps recorded", text).group(1))
    assert steps == len(got) + sum(got_rounds.values())
    recs = [json.loads(ln) for ln in ray_db.read_text().splitlines()[1:]]
    workers = [r["worker"] for r in recs if r["stage"] in ("verify", "time")]
    assert all(w["gpu_ids"] and w["pid"] != os.getpid() for w in workers)
    assert {w["node"] for w in workers} == {n[:16] for n in cluster}  # both nodes took tasks
    rows, serial_rows = load_results(out).rows, load_results(serial_out).rows
    assert sorted((r.variant, r.status) for r in rows) == sorted((r.variant, r.status) for r in serial_rows)
    assert sum(bool(r.extra.get("winner")) for r in rows) == 1
    res = CliRunner().invoke(main, TUNE_ARGS + ["-o", str(tmp_path / "again.json"), "--ray"])
    assert res.exit_code == 0 and "nothing new measured" in " ".join(res.output.split())  # resumed from the database


class _Killing:
    """Wraps an executor so that chosen steps kill their worker process (first try only, or always)."""

    def __init__(self, inner, plan: dict[tuple[str, str], str], markers: Path):
        self.inner = inner
        plan, markers = dict(plan), str(markers)

        def die_or_run(fn, req, step):  # a closure: shipped to the workers by value
            import os
            from pathlib import Path

            rule = plan.get((step.stage, step.candidate.name))
            marker = Path(markers) / f"{step.stage}-{step.candidate.name}"
            if rule == "always" or (rule == "once" and not marker.exists()):
                marker.touch()
                os._exit(1)
            return fn(req, step)

        self.wrap = die_or_run

    def map(self, fn, args, on_done, stop=None):
        self.inner.map(functools.partial(self.wrap, fn), args, on_done, stop)

    def call(self, fn, *args) -> TaskOutcome:
        return self.inner.call(functools.partial(self.wrap, fn), *args)


def test_a_killed_worker_costs_only_its_task(cluster, tmp_path):
    space = _space()
    cands = space.ordered("chunk")[:5]
    with TuningDB(tmp_path / "inline.jsonl", GPU, CC) as db:  # the reference: every step here, one by one
        Tuner(_req(strategy="exhaustive"), db, space.limits, space, executor=InlineExecutor(GPU, CC)).run()
    want = _verdicts(_consistent(tmp_path / "inline.jsonl")[0])
    ok = [c for c in cands if want[c.name][0] == "ok"]
    assert len(ok) >= 3
    victim, retried = ok[0], ok[1]
    plan = {("verify", victim.name): "always", ("time", retried.name): "once"}
    (group,) = discover("cpu")
    markers = tmp_path / "markers"
    markers.mkdir()
    path = tmp_path / "db.jsonl"
    with TuningDB(path, GPU, CC) as db:
        out = Tuner(_req(strategy="exhaustive"), db, space.limits, space,
                    executor=_Killing(RayExecutor(group, "cpu"), plan, markers)).run()
    assert sorted(p.name for p in markers.iterdir()) == sorted([f"verify-{victim.name}", f"time-{retried.name}"])
    status = {r.candidate.name: r for r in out.families[0].results}
    assert status[victim.name].status == "runtime-error" and "died on both tries" in status[victim.name].message
    assert status[retried.name].status == "ok" and status[retried.name].ms > 0  # measured on the retry
    states, rounds = _consistent(path)
    got = _verdicts(states)
    assert got.pop(victim.name)[0] == "runtime-error"
    del want[victim.name]
    _same_verdicts(got, want)  # every other candidate as without Ray
    assert rounds == Counter({0: len(ok) - 1})
    assert all(status[c.name].ms > 0 for c in ok[1:])


def test_compare_on_ray_matches_a_serial_run(cluster, tmp_path):
    serial = CliRunner().invoke(main, COMPARE_ARGS + ["-o", str(tmp_path / "s.json")])
    assert serial.exit_code == 0, serial.output
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, COMPARE_ARGS + ["-o", str(out), "--ray"])
    assert res.exit_code == 0, res.output
    rows, want = load_results(out).rows, load_results(tmp_path / "s.json").rows
    assert [(r.provider, r.mode, r.status) for r in rows] == [(r.provider, r.mode, r.status) for r in want]
    for r, w in zip(rows, want):  # the file keeps the serial loop's order
        assert r.errors.keys() == w.errors.keys()
        assert all(r.errors[k] == pytest.approx(w.errors[k], rel=1e-3, abs=1e-9) for k in w.errors)
        assert r.ms > 0 and r.extra["speedup"] > 0
    assert load_results(out).fingerprint["ray"] == {"nodes": 2, "gpus": 2}


def test_a_provider_that_kills_its_worker_is_an_error_row(cluster, tmp_path):
    def kernel(q, k, v, beta, **kw):
        os._exit(1)

    dies = DeltaNetProvider("dies", "kills its worker", loader=lambda: kernel, devices=("cpu",))
    out = tmp_path / "r.json"
    res = run_compare([dies, get_provider("torch-chunk")], [TINY], ["fwd"], settings=TaskSettings(cpu_repeats=1),
                      output=out, fingerprint={"gpu": None}, executor=RayExecutor(None, "cpu"))
    assert [(r.provider, r.status) for r in res.rows] == [("dies", "error"), ("torch-chunk", "ok")]
    assert "died on both tries" in res.rows[0].message
    assert [r.status for r in load_results(out).rows] == ["error", "ok"]


def test_gpu_models_tune_into_their_own_databases(cluster, tmp_path):
    models = {node: (f"Fake GPU {'AB'[i]}", f"{8 + i}.0") for i, node in enumerate(cluster)}

    def identity(device):  # each node reports another GPU model
        import ray

        return models[ray.get_runtime_context().get_node_id()]

    groups = discover("cpu", identity=identity)
    assert sorted((g.gpu, g.node_ids, g.gpus) for g in groups) == sorted((m[0], (n,), 1) for n, m in models.items())
    space = _space()
    done = tune_groups(_req(strategy="exhaustive", budget=Budget(2)), groups, lambda g: space,
                       lambda g: TuningDB(tmp_path / f"{g.gpu[-1]}.jsonl", g.gpu, g.compute_capability),
                       identity=identity)
    for group, outcome in done:
        (node,) = group.node_ids
        path = tmp_path / f"{group.gpu[-1]}.jsonl"
        states, rounds = _consistent(path, group.gpu, group.compute_capability)
        assert len(states) == 2 and rounds[0] == sum(st.verified for st in states.values())
        assert outcome.families[0].key.gpu == group.gpu
        recs = [json.loads(ln) for ln in path.read_text().splitlines()[1:]]
        assert {r["worker"]["node"] for r in recs if "worker" in r} == {node[:16]}  # ran on that model only
