"""``dnprof tune``: the run loop (resume, failures, crashes), parallel compile robustness, and a real
interpreter run on the kernels."""

from __future__ import annotations

import importlib.util
import json
import os
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from dnprof.bench.timing import Timing
from dnprof.bench.verify import VerifyResult
from dnprof.cli import main
from dnprof.variants.db import TuningDB
from dnprof.variants.limits import PROFILES
from dnprof.variants.errors import RefusedOnDevice
from dnprof.variants.search import Budget
from dnprof.variants.space import generate_space
from dnprof.variants.tuner import ParallelCompiler, Tuner, TuneRequest, classify_failure

GPU, CC = "NVIDIA Test GPU", "9.0"
HAS_KERNELS = importlib.util.find_spec("dnprof.kernels.chunk") is not None


def _space():
    return generate_space(32, 32, "fp16", PROFILES["h100"], ("chunk",), chunk_sizes=[32, 64])


def _req(**over) -> TuneRequest:
    base = dict(K=32, V=32, T=4096, B=8, H=8, dtype="fp16", mode="fwdbwd", device="cuda", strategy="exhaustive",
                budget=Budget(6), jobs=0, fla=False)
    base.update(over)
    return TuneRequest(**base)


def _ok_verifier(cand, req):
    return VerifyResult(errors={"o": 1e-3, "ht": 1e-4}, tolerance=5e-3)


class FakeTimer:
    """Known times per candidate; raises KeyboardInterrupt on call number ``interrupt_at``."""

    def __init__(self, interrupt_at: int | None = None):
        self.calls: list[str] = []
        self.interrupt_at = interrupt_at

    def __call__(self, cand, rep_ms):
        self.calls.append(cand.name)
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        ms = 1.0 + (hash(cand.name) % 1000) / 1000
        return Timing(ms, ms * 0.99, ms * 1.01)


def test_resume_after_interrupt_skips_what_is_done(tmp_path):
    path = tmp_path / "db.jsonl"
    space = _space()
    first = FakeTimer(interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        with TuningDB(path, GPU, CC) as db:
            Tuner(_req(), db, PROFILES["h100"], space, verifier=_ok_verifier, timer=first).run()
    assert len(first.calls) == 4  # 3 timed, the 4th interrupted
    second = FakeTimer()
    with TuningDB(path, GPU, CC) as db:
        out = Tuner(_req(), db, PROFILES["h100"], space, verifier=_ok_verifier, timer=second).run()
    assert set(first.calls[:3]).isdisjoint(second.calls)  # the 3 finished are not re-timed
    assert first.calls[3] in second.calls  # the one in flight is redone
    fam = out.families[0]
    assert len(fam.ranked()) == 6 and fam.winner.ms == min(r.ms for r in fam.ranked())
    third = FakeTimer()
    with TuningDB(path, GPU, CC) as db:
        out3 = Tuner(_req(), db, PROFILES["h100"], space, verifier=_ok_verifier, timer=third).run()
    assert third.calls == [] and out3.new_steps == 0
    assert out3.families[0].winner.candidate == fam.winner.candidate
    with TuningDB(path, GPU, CC) as db:  # --force retunes
        forced = FakeTimer()
        Tuner(_req(force=True), db, PROFILES["h100"], space, verifier=_ok_verifier, timer=forced).run()
    assert len(forced.calls) == 6


def test_named_variants_are_timed_whatever_the_budget(tmp_path):
    """A variant named with ``--include`` is timed even where the budget's count would stop before it."""
    named = "c32-bk32-bv32-w2-s2-hfp32-wys-os"
    space = generate_space(32, 32, "fp16", PROFILES["h100"], ("chunk",), chunk_sizes=[64], include=[named])
    timer = FakeTimer()
    with TuningDB(tmp_path / "db.jsonl", GPU, CC) as db:
        out = Tuner(_req(budget=Budget(1)), db, PROFILES["h100"], space, verifier=_ok_verifier, timer=timer).run()
    assert timer.calls == [space.defaults["chunk"].name, named]
    assert {r.candidate.name for r in out.families[0].ranked()} == set(timer.calls)


def test_failures_are_recorded_by_type_and_the_search_goes_on(tmp_path):
    from triton.runtime.errors import OutOfResources

    space = _space()
    order = space.ordered("chunk")[:5]

    def verifier(cand, req):
        i = order.index(cand)
        if i == 1:
            raise OutOfResources(300000, 232448, "shared memory")
        if i == 2:
            raise RuntimeError("an illegal memory access was encountered")
        if i == 3:
            return VerifyResult(errors={"o": 0.5, "ht": 1e-4}, tolerance=5e-3, failed=["o"])
        return _ok_verifier(cand, req)

    with TuningDB(tmp_path / "db.jsonl", GPU, CC) as db:
        out = Tuner(_req(budget=Budget(5)), db, PROFILES["h100"], space, verifier=verifier, timer=FakeTimer()).run()
    status = {r.candidate: r.status for r in out.families[0].results}
    assert [status[c] for c in order] == ["ok", "out-of-resources", "runtime-error", "failed-verification", "ok"]
    failed = next(r for r in out.families[0].results if r.status == "failed-verification")
    assert failed.errors["o"] == 0.5 and "0.5" in failed.message
    assert classify_failure(ValueError("x")) == "runtime-error"
    assert classify_failure(RefusedOnDevice("config: wy_in_loop in the fwd serial kernel at BV 32 ...")) == "invalid"


def test_a_candidate_that_kills_the_process_twice_is_recorded_not_retried(tmp_path):
    path = tmp_path / "db.jsonl"
    space = _space()
    victim = space.ordered("chunk")[0]
    with TuningDB(path, GPU, CC) as db:
        key = Tuner(_req(), db, PROFILES["h100"], space).key("chunk")
        for _ in range(2):  # two runs died inside this candidate: start records with no result
            db.record("start", key, victim.name, victim.to_dict(), what="verify")
    seen = []

    def verifier(cand, req):
        seen.append(cand)
        return _ok_verifier(cand, req)

    with TuningDB(path, GPU, CC) as db:
        out = Tuner(_req(), db, PROFILES["h100"], space, verifier=verifier, timer=FakeTimer()).run()
    assert victim not in seen
    res = next(r for r in out.families[0].results if r.candidate == victim)
    assert res.status == "runtime-error" and "died" in res.message


def test_parallel_compiler_survives_a_crashing_worker():
    done = {}
    tasks = [("good1", ("('ok', 0.5, None)",)), ("crash", ("__import__('os')._exit(3)",)),
             ("good2", ("('compile-error', 0.1, 'bad')",))]
    ParallelCompiler(2, worker=eval).run(tasks, lambda tag, res: done.__setitem__(tag, res))
    assert done["good1"][0] == "ok" and done["good2"][0] == "compile-error"
    assert done["crash"][0] == "compile-error" and "died" in done["crash"][2]


def test_parallel_compiler_drops_unstarted_tasks_once_told_to_stop():
    done = {}
    tasks = [(f"t{i}", ("('ok', 0.0, None)",)) for i in range(12)]
    ParallelCompiler(1, worker=eval).run(tasks, lambda tag, res: done.__setitem__(tag, res),
                                         should_stop=lambda: len(done) >= 2)
    assert 2 <= len(done) < 12 and all(r[0] == "ok" for r in done.values())


def test_no_gpu_without_device_cpu_exits_2():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = CliRunner().invoke(main, ["tune", "--head-dim", "64"])
    assert out.exit_code == 2 and "--device cpu" in out.output


def test_corrupt_db_exits_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not a database\nsecond line\n")
    out = CliRunner().invoke(main, ["tune", "--device", "cpu", "--head-dim", "16", "--db", str(bad)])
    assert out.exit_code == 2 and "bad.jsonl:1" in out.output


@pytest.mark.skipif(not HAS_KERNELS, reason="dnprof.kernels.chunk is not there yet")
def test_tiny_tuning_run_through_the_interpreter(tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("the interpreter run is the CPU test; GPU runs are measured on the device")
    monkeypatch.setenv("DNPROF_TUNING_DIR", str(tmp_path / "tuning"))
    args = ["tune", "--device", "cpu", "--head-dim", "16", "--seq-len", "32", "--chunk-size", "16,32", "--mode", "fwd",
            "--strategy", "exhaustive", "--budget", "2", "--no-fla"]
    out1 = tmp_path / "r1.json"
    res = CliRunner().invoke(main, args + ["-o", str(out1)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out1.read_text())
    assert doc["kind"] == "tune" and len(doc["rows"]) == 2
    assert all(r["status"] == "ok" and r["errors"]["o"] < 1e-3 for r in doc["rows"])
    assert sum(bool(r["extra"].get("winner")) for r in doc["rows"]) == 1
    out2 = tmp_path / "r2.json"
    res = CliRunner().invoke(main, args + ["-o", str(out2)])
    assert res.exit_code == 0 and "nothing new measured" in res.output
    rows1 = {r["variant"]: r["ms"] for r in doc["rows"]}
    rows2 = {r["variant"]: r["ms"] for r in json.loads(out2.read_text())["rows"]}
    assert rows1 == rows2  # reported from the database, not re-timed
    res = CliRunner().invoke(main, ["tune", "show"])
    assert res.exit_code == 0 and "K=16" in res.output and "current" in res.output


def test_timing_records_say_when_a_kernel_ran_below_its_named_depth(tmp_path):
    from dnprof.kernels import launch as launch_mod
    from triton.runtime.errors import OutOfResources

    class TightKernel:
        """Overflows shared memory above one stage, like a Triton compile would."""

        fn = SimpleNamespace(__name__="tight_kernel")
        params = []

        def __getitem__(self, grid):
            def run(*args, num_warps, num_stages):
                if num_stages > 1:
                    raise OutOfResources(300_000, 232448, "shared memory")
            return run

    class LoweringTimer(FakeTimer):
        lowered: set[str] = set()
        seen: dict[str, bool] = {}

        def __call__(self, cand, rep_ms):
            overflows = self.seen.setdefault(cand.name, len(self.seen) % 2 == 0)
            if overflows:  # every other candidate runs a kernel that overflows
                launch_mod.launch(TightKernel(), (1,), num_warps=4, num_stages=2)
                self.lowered.add(cand.name)
            return super().__call__(cand, rep_ms)

    space = _space()
    timer = LoweringTimer()
    with TuningDB(tmp_path / "db.jsonl", GPU, CC) as db:
        Tuner(_req(), db, PROFILES["h100"], space, verifier=_ok_verifier, timer=timer).run()
        times = [r for r in db.records if r["stage"] == "time"]
    names = {r["candidate"] for r in times}
    assert timer.lowered and names - timer.lowered  # both kinds of record are checked below
    for rec in times:
        expected = ["tight_kernel s2->s1"] if rec["candidate"] in timer.lowered else None
        assert rec.get("stages_lowered") == expected, rec


def test_fla_is_compiled_beside_the_candidates_and_finished_before_anything_is_timed(tmp_path, monkeypatch):
    """The peer's minutes-long first call overlaps the candidates' compile, never a measurement."""
    events: list[str] = []

    class FakePrewarm:
        def wait(self, timeout: float = 900.0) -> None:
            events.append("fla compiled")

    class OrderTimer(FakeTimer):
        def __call__(self, cand, rep_ms):
            events.append("timed")
            return super().__call__(cand, rep_ms)

    monkeypatch.setattr(Tuner, "_start_fla_prewarm", lambda self: FakePrewarm())
    with TuningDB(tmp_path / "db.jsonl", GPU, CC) as db:
        Tuner(_req(budget=Budget(3)), db, PROFILES["h100"], _space(), verifier=_ok_verifier, timer=OrderTimer()).run()
    assert events[0] == "fla compiled" and events.count("timed") >= 3


def test_no_fla_prewarm_without_the_real_compiler_and_peer_timer(tmp_path):
    with TuningDB(tmp_path / "db.jsonl", GPU, CC) as db:
        tuner = Tuner(_req(fla=True, jobs=0), db, PROFILES["h100"], _space(), verifier=_ok_verifier, timer=FakeTimer())
        assert tuner._start_fla_prewarm() is None  # no worker pool: nothing runs beside it to overlap


@pytest.mark.skipif(not HAS_KERNELS, reason="dnprof.kernels.chunk is not there yet")
def test_the_kernel_timer_draws_its_inputs_once(monkeypatch):
    """Drawing the inputs at a real timing shape costs seconds; every candidate shares one draw."""
    import dnprof.variants.tuner as tuner_mod
    from dnprof.variants.chunk_config import ChunkConfig
    from dnprof.variants.space import Candidate

    drawn = []
    real = tuner_mod.timing_inputs
    monkeypatch.setattr(tuner_mod, "timing_inputs", lambda *a, **k: drawn.append(a[1:]) or real(*a, **k))
    req = _req(K=16, V=16, T=16, B=1, H=1, dtype="fp32", mode="fwd", device="cpu")
    timer = tuner_mod.KernelTimer(req)
    for c in (16, 32):
        t = timer(Candidate("chunk", ChunkConfig(chunk_size=c, BK=16, BV=16)), 1)
        assert t.ms > 0
    assert drawn == [(1, 16, 1, "cpu")]


@pytest.mark.skipif(not HAS_KERNELS, reason="dnprof.kernels.chunk is not there yet")
def test_several_head_dims_are_tuned_one_after_another_into_one_results_file(tmp_path, monkeypatch):
    """``--head-dim 16,32`` tunes each head dim in turn (each its own space and database key) and writes every
    shape's rows to the one results file."""
    if torch.cuda.is_available():
        pytest.skip("the interpreter run is the CPU test; GPU runs are measured on the device")
    monkeypatch.setenv("DNPROF_TUNING_DIR", str(tmp_path / "tuning"))
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["tune", "--device", "cpu", "--head-dim", "16,32", "--seq-len", "32",
                                    "--chunk-size", "16", "--mode", "fwd", "--strategy", "exhaustive", "--budget", "1",
                                    "--no-fla", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "tuning chunk K=16 V=16 T=32" in res.output and "tuning chunk K=32 V=32 T=32" in res.output
    rows = json.loads(out.read_text())["rows"]
    assert sorted((r["K"], r["T"]) for r in rows) == [(16, 32), (32, 32)]
    assert all(r["status"] == "ok" and r["errors"]["o"] < 1e-3 and r["extra"].get("winner") for r in rows)
    (db_file,) = (tmp_path / "tuning").glob("*.jsonl")
    assert {key.K for key in TuningDB(db_file).keys()} == {16, 32}


@pytest.mark.parametrize("args, message", [
    (["--head-dim", "64,128", "--key-dim", "64"], "--key-dim/--value-dim: give a single --head-dim"),
    (["--seq-len", "2048,x"], "--seq-len: 'x' is not an integer"),
    (["--head-dim", "64,0"], "--head-dim: 0 is not a positive integer"),
    (["--head-dim", "64,512"], "key dim 512 is not supported"),
])
def test_bad_shape_lists_exit_2_naming_the_option(args, message):
    out = CliRunner().invoke(main, ["tune", "--list", "--device-profile", "h200", *args])
    assert out.exit_code == 2 and message in out.output, out.output


def test_listing_several_sequence_lengths_shows_each_shapes_space():
    """Each sequence length is its own shape (batch from --tokens, so its own stream count and launch guard)."""
    out = CliRunner().invoke(main, ["tune", "--list", "--device-profile", "h200", "--head-dim", "64",
                                    "--seq-len", "2048,16384", "--chunk-size", "64"])
    assert out.exit_code == 0, out.output
    assert "T=2048 B=16 H=32" in out.output and "T=16384 B=2 H=32" in out.output
    assert "at 512 (sequence, head) streams" in out.output and "at 64 (sequence, head) streams" in out.output


def test_ray_takes_one_shape_per_command():
    out = CliRunner().invoke(main, ["tune", "--ray", "--head-dim", "64,128"])
    assert out.exit_code == 2 and "--ray: tune one head dim and sequence length per command" in out.output


def test_a_bad_chunk_size_list_exits_2_naming_the_option():
    out = CliRunner().invoke(main, ["tune", "--list", "--device-profile", "h200", "--chunk-size", "64,x"])
    assert out.exit_code == 2 and "--chunk-size: 'x' is not an integer" in out.output, out.output
