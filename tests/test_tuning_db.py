"""The tuning database: durable records, torn and corrupt lines, staleness, export/import, selection order."""

from __future__ import annotations

import json

import pytest

from dnprof.variants import selection
from dnprof.variants.chunk_config import ChunkConfig
from dnprof.variants.db import (DatabaseError, TuneKey, TuningDB, export_best, import_entries, read_export,
                                seq_bucket)

GPU, CC = "NVIDIA Test GPU", "9.0"


def _key(**over) -> TuneKey:
    base = dict(dtype="bf16", K=64, V=64, mode="fwdbwd", T=4096, family="chunk", triton="3.6.0", kernel_hash="abc")
    base.update(over)
    return TuneKey.make(GPU, CC, **base)


def _add(db: TuningDB, key: TuneKey, cfg: ChunkConfig, ms: float, round_: int = 0) -> None:
    db.record("verify", key, cfg.name, cfg.to_dict(), status="ok", errors={"o": 1e-3}, tolerance=1e-2)
    db.record("time", key, cfg.name, cfg.to_dict(), status="ok", ms=ms, round=round_, rep_ms=25)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "gpu.jsonl"


def test_header_records_and_best(db_path):
    key = _key()
    with TuningDB(db_path, GPU, CC) as db:
        _add(db, key, ChunkConfig(chunk_size=64), 2.0)
        _add(db, key, ChunkConfig(chunk_size=128, num_warps=8), 1.5)
    lines = db_path.read_text().splitlines()
    assert lines[0].startswith('{"dnprof_tuning_db": 1') and json.loads(lines[0])["gpu"] == GPU
    db = TuningDB(db_path, GPU, CC)
    assert db.best(key).config["chunk_size"] == 128
    assert seq_bucket(100) == 1024 and seq_bucket(5000) == 8192 and seq_bucket(10**6) == 65536


def test_torn_last_line_is_tolerated_and_cut_before_the_next_write(db_path):
    key = _key()
    with TuningDB(db_path, GPU, CC) as db:
        _add(db, key, ChunkConfig(), 2.0)
    with open(db_path, "ab") as fh:
        fh.write(b'{"stage": "time", "key": {"gpu"')  # a crash mid-write
    db = TuningDB(db_path, GPU, CC)
    assert db.warnings and "torn" in db.warnings[0] and db.best(key) is not None
    _add(db, key, ChunkConfig(chunk_size=32), 1.0)
    db.close()
    db2 = TuningDB(db_path, GPU, CC)
    assert not db2.warnings and db2.best(key).config["chunk_size"] == 32


def test_corrupt_middle_line_names_file_and_line(db_path):
    with TuningDB(db_path, GPU, CC) as db:
        _add(db, _key(), ChunkConfig(), 2.0)
    lines = db_path.read_text().splitlines()
    lines.insert(2, "this is not json")
    db_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatabaseError) as err:
        TuningDB(db_path, GPU, CC)
    assert err.value.line == 3 and str(db_path) in str(err.value) and ":3:" in str(err.value)
    lines[2] = json.dumps({"stage": "teleport", "key": {}})
    db_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatabaseError, match=":3: corrupt record"):
        TuningDB(db_path, GPU, CC)


def test_foreign_file_and_other_gpu_are_errors(db_path, tmp_path):
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text('{"hello": 1}\n{"world": 2}\n')
    with pytest.raises(DatabaseError, match=r"notes.jsonl:1: not a dnprof tuning database"):
        TuningDB(foreign, GPU, CC)
    text = tmp_path / "text.jsonl"
    text.write_text("just some words\nmore words\n")
    with pytest.raises(DatabaseError, match=":1:"):
        TuningDB(text, GPU, CC)
    with TuningDB(db_path, GPU, CC) as db:
        _add(db, _key(), ChunkConfig(), 2.0)
    with pytest.raises(DatabaseError, match="not of this GPU"):
        TuningDB(db_path, "NVIDIA A100-SXM4-80GB", "8.0")
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({"dnprof_tuning_db": 99, "gpu": GPU, "compute_capability": CC}) + "\n")
    with pytest.raises(DatabaseError, match="newer"):
        TuningDB(newer, GPU, CC)


def test_changed_kernel_source_or_triton_makes_records_stale(db_path):
    with TuningDB(db_path, GPU, CC) as db:
        _add(db, _key(), ChunkConfig(), 2.0)
    db = TuningDB(db_path, GPU, CC)
    assert db.best(_key()) is not None
    assert db.best(_key(kernel_hash="def")) is None
    assert db.best(_key(triton="3.7.0")) is None
    assert db.best(_key(T=16384)) is None  # another sequence bucket


def test_force_reset_hides_earlier_records(db_path):
    key = _key()
    with TuningDB(db_path, GPU, CC) as db:
        _add(db, key, ChunkConfig(), 2.0)
        db.reset(key)
        assert db.best(key) is None and db.candidates(key) == {}
        _add(db, key, ChunkConfig(chunk_size=32), 3.0)
    assert TuningDB(db_path, GPU, CC).best(key).config["chunk_size"] == 32


def test_export_import_round_trip(db_path, tmp_path):
    key = _key()
    with TuningDB(db_path, GPU, CC) as db:
        _add(db, key, ChunkConfig(chunk_size=64), 2.0)
        _add(db, key, ChunkConfig(chunk_size=128, num_warps=8), 1.25)
    doc = export_best([TuningDB(db_path, GPU, CC)])
    assert len(doc["entries"]) == 1 and doc["entries"][0]["ms"] == 1.25
    path = tmp_path / "export.json"
    path.write_text(json.dumps(doc))
    entries = read_export(path)
    other = tmp_path / "machine2.jsonl"
    with TuningDB(other, GPU, CC) as db2:
        assert import_entries(db2, entries, source=str(path)) == 1
    best = TuningDB(other, GPU, CC).best(key)
    assert best.config == ChunkConfig(chunk_size=128, num_warps=8).to_dict() and best.imported
    bad = dict(doc, entries=[dict(doc["entries"][0], config={"chunk_size": 48})])
    path.write_text(json.dumps(bad))
    with pytest.raises(DatabaseError, match="entry 0"):
        read_export(path)
    path.write_text('{"something": "else"}')
    with pytest.raises(DatabaseError, match="not a dnprof tuned-configs file"):
        read_export(path)


def test_selection_order_user_db_then_shipped_then_default(tmp_path, monkeypatch):
    from dnprof.variants import db as dbmod

    monkeypatch.setattr(dbmod, "kernel_source_hash", lambda: "abc")
    monkeypatch.setattr(dbmod, "triton_version", lambda: "3.6.0")
    selection.clear_cache()
    gpu = (GPU, CC)
    default = ChunkConfig.default_for(64, 64, dtype="bf16")
    user, shipped = ChunkConfig(chunk_size=128, num_warps=8), ChunkConfig(chunk_size=32)
    db_path, ship_path = tmp_path / "user.jsonl", tmp_path / "shipped.json"
    where = dict(gpu=gpu, db_path=str(db_path), shipped_path=str(ship_path))
    ship_path.write_text(json.dumps({"dnprof_tuned_configs": 1, "entries": []}))
    assert selection.select_chunk_config(64, 64, 4096, "bf16", "fwdbwd", **where) == (default, "default")
    # shipped: same GPU, cc, triton major.minor and dnprof version
    import dnprof

    entry = dict(_key().to_dict(), dnprof=dnprof.__version__, candidate=shipped.name, config=shipped.to_dict(), ms=1.0)
    ship_path.write_text(json.dumps({"dnprof_tuned_configs": 1, "entries": [entry]}))
    selection.clear_cache()
    assert selection.select_chunk_config(64, 64, 4096, "bf16", "fwdbwd", **where) == (shipped, "shipped")
    assert selection.select_chunk_config(64, 64, 4096, "bf16", "fwd", **where) == (shipped, "shipped")  # other mode
    assert selection.select_chunk_config(64, 64, 4096, "bf16", "fwdbwd", gpu=("Other", "8.0"),
                                         db_path=str(db_path), shipped_path=str(ship_path))[1] == "default"
    with TuningDB(db_path, GPU, CC) as db:
        _add(db, _key(), user, 0.5)
    assert selection.select_chunk_config(64, 64, 4096, "bf16", "fwdbwd", **where)[1] == "shipped"  # cached
    selection.clear_cache()
    assert selection.select_chunk_config(64, 64, 4096, "bf16", "fwdbwd", **where) == (user, "tuned")
    # a record counts at its own bucket only (2000 -> 2048): neither the user's nor the shipped 4096 one
    assert selection.select_chunk_config(64, 64, 2000, "bf16", "fwdbwd", **where) == (default, "default")
    assert selection.select_chunk_config(64, 64, 4096, "bf16", "fwdbwd", chunk_size=32, **where) == (shipped, "shipped")
    monkeypatch.setattr(dbmod, "kernel_source_hash", lambda: "edited")  # kernels changed: user records stale
    selection.clear_cache()
    assert selection.select_chunk_config(64, 64, 4096, "bf16", "fwdbwd", **where) == (shipped, "shipped")
    selection.clear_cache()


def test_selection_warns_on_a_corrupt_user_db_and_falls_back(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("garbage\nmore garbage\n")
    (tmp_path / "none.json").write_text(json.dumps({"dnprof_tuned_configs": 1, "entries": []}))
    selection.clear_cache()
    with pytest.warns(RuntimeWarning, match="bad.jsonl:1"):
        cfg, source = selection.select_chunk_config(64, 64, 4096, "bf16", gpu=(GPU, CC), db_path=str(bad),
                                                    shipped_path=str(tmp_path / "none.json"))
    assert source == "default"
    selection.clear_cache()


def test_shipped_file_is_valid():
    import importlib.resources

    text = (importlib.resources.files("dnprof") / "data" / "tuned_configs.json").read_text()
    assert isinstance(read_export("tuned_configs.json", text=text), list)


def test_every_shipped_entry_is_what_its_own_shape_runs_on_its_gpu(monkeypatch, tmp_path):
    """Each shipped config validates for its head dims and is selected (source ``shipped``) at its own GPU,
    dtype, mode and bucket when no user database exists: one key per entry, none shadowed."""
    import importlib.resources

    from dnprof.variants import db as dbmod
    from dnprof.variants.db import config_from_dict

    text = (importlib.resources.files("dnprof") / "data" / "tuned_configs.json").read_text()
    entries = read_export("tuned_configs.json", text=text)
    assert entries
    keys = [(e["gpu"], e["compute_capability"], e["dtype"], e["K"], e["V"], e["mode"], e["t_bucket"]) for e in entries]
    assert len(set(keys)) == len(keys)
    for e in entries:
        monkeypatch.setattr(dbmod, "triton_version", lambda e=e: e["triton"])
        selection.clear_cache()
        cfg = config_from_dict(e["family"], e["config"])
        cfg.validate(e["K"], e["V"])
        assert cfg.name == e["candidate"]
        got = selection.select_chunk_config(e["K"], e["V"], e["t_bucket"], e["dtype"], e["mode"],
                                            gpu=(e["gpu"], str(e["compute_capability"])),
                                            db_path=str(tmp_path / "none.jsonl"))
        assert got == (cfg, "shipped"), e["candidate"]
    selection.clear_cache()


def test_a_forward_winner_never_runs_a_fwd_bwd_call_but_a_fwd_bwd_winner_may_run_a_forward(tmp_path, monkeypatch):
    """A forward tuned with the output fused would cost the backward (4.04 against 3.20 ms at D = 256 on an
    H200): a fwd+bwd call falls through to the shipped entry or the default instead; the exact mode from
    either source comes before the other mode."""
    from dnprof.variants import db as dbmod

    monkeypatch.setattr(dbmod, "kernel_source_hash", lambda: "abc")
    monkeypatch.setattr(dbmod, "triton_version", lambda: "3.6.0")
    selection.clear_cache()
    fwd_winner = ChunkConfig(fuse_output=True)
    fwdbwd_shipped = ChunkConfig(chunk_size=32)
    db_path, ship_path = tmp_path / "user.jsonl", tmp_path / "shipped.json"
    where = dict(gpu=(GPU, CC), db_path=str(db_path), shipped_path=str(ship_path))
    ship_path.write_text(json.dumps({"dnprof_tuned_configs": 1, "entries": []}))
    with TuningDB(db_path, GPU, CC) as db:
        _add(db, _key(mode="fwd"), fwd_winner, 0.5)
    default = ChunkConfig.default_for(64, 64, dtype="bf16", mode="fwdbwd")
    assert selection.select_chunk_config(64, 64, 4096, "bf16", "fwdbwd", **where) == (default, "default")
    assert selection.select_chunk_config(64, 64, 4096, "bf16", "fwd", **where) == (fwd_winner, "tuned")
    import dnprof

    entry = dict(_key().to_dict(), dnprof=dnprof.__version__, candidate=fwdbwd_shipped.name,
                 config=fwdbwd_shipped.to_dict(), ms=1.0)
    ship_path.write_text(json.dumps({"dnprof_tuned_configs": 1, "entries": [entry]}))
    selection.clear_cache()
    assert selection.select_chunk_config(64, 64, 4096, "bf16", "fwdbwd", **where) == (fwdbwd_shipped, "shipped")
    assert selection.select_chunk_config(64, 64, 4096, "bf16", "fwd", **where) == (fwd_winner, "tuned")
    assert selection.select_chunk_config(64, 64, 16384, "bf16", "fwd", **where)[1] == "default"  # other bucket
    selection.clear_cache()
