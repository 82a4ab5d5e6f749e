"""The serial kernels' launch tiling: main, explicit, and the auto rule's choices."""

from __future__ import annotations

import dataclasses

import pytest

from dnprof.kernels.recurrence_tiling import Tiling, check_pipelined, check_wy_in_loop, recurrence_tiling
from dnprof.variants.chunk_config import ChunkConfig
from dnprof.variants.errors import ConfigError

AUTO = dataclasses.replace(ChunkConfig.default_for(128, 128, 64, "bf16", "fwdbwd"), tma=False)  # tma: its own tests
H200_SMS = 132
SM90 = 9


class _Launched(Exception):
    """Raised by the stand-in WY launch: the call got past its checks."""


def _stop_at_the_wy_launch(monkeypatch, chunk) -> list:
    """Replace ``chunk``'s WY launch by one that records its keyword arguments and raises :class:`_Launched`."""
    launched: list = []

    def fake_wy_forward(*args, **kwargs):
        launched.append(kwargs)
        raise _Launched

    monkeypatch.setattr(chunk, "wy_forward", fake_wy_forward)
    return launched


def test_main_and_explicit_tilings():
    main = ChunkConfig(BV=32, num_warps=8, num_stages=3)
    assert recurrence_tiling(main, "fwd", 128, 128, 4, H200_SMS, SM90) == Tiling(32, 8, 3, 2, 64)
    assert recurrence_tiling(ChunkConfig(), "bwd", 128, 128, 4, H200_SMS, SM90) == Tiling(64, 4, 2, 1, 64)
    explicit = ChunkConfig(rec="bv16w2s4")
    assert recurrence_tiling(explicit, "bwd", 128, 128, 4, H200_SMS, SM90) == Tiling(16, 2, 4, 2, 64)
    # at C = 128 a narrow tile may still be lowered to one stage (it verified there; two do not fit at D = 256)
    c128 = ChunkConfig(chunk_size=128, BV=32, num_warps=8)
    assert recurrence_tiling(c128, "bwd", 256, 256, 4, H200_SMS, SM90) == Tiling(32, 8, 2, 1, 64)
    # only sm_90 was seen to mis-compile unpipelined narrow tiles: elsewhere (and off-GPU) they may lower
    assert recurrence_tiling(main, "fwd", 128, 128, 4, H200_SMS, 8).min_stages == 1
    assert recurrence_tiling(main, "fwd", 128, 128, 4, H200_SMS, None).min_stages == 1


@pytest.mark.parametrize(
    "D,streams,kernel,fused,want",
    [
        (128, 8 * 16, "fwd", False, Tiling(64, 4, 2, 1, 128)),  # T = 4096: 256 programs at BV = 64, one slab
        (128, 8 * 16, "fwd", True, Tiling(64, 4, 3, 1, 128)),
        (128, 8 * 16, "bwd", False, Tiling(64, 4, 3, 1, 128)),  # one slab: 4 warps
        (128, 2 * 16, "fwd", False, Tiling(32, 4, 3, 2, 128)),  # T = 16384: 64 programs for 132 SMs
        (128, 2 * 16, "bwd", False, Tiling(32, 4, 3, 2, 128)),
        (256, 8 * 8, "fwd", False, Tiling(64, 4, 2, 1, 128)),  # slabs of 128 rows  # D = 256: the forward state kernel pipelines at 64
        (256, 8 * 8, "fwd", True, Tiling(32, 4, 3, 2, 128)),  # ... but not with the output fused in
        (256, 8 * 8, "bwd", False, Tiling(32, 4, 3, 2, 256)),  # the reverse never does at 64
        (16, 1, "fwd", False, Tiling(16, 4, 3, 2, 64)),  # never wider than the padded head dim
        (128, 4 * 16, "fwd", False, Tiling(64, 4, 3, 1, 128)),  # T = 8192: 128 programs, one wave, 3 stages
        (128, 4 * 16, "fwd", True, Tiling(64, 4, 3, 1, 128)),
        (128, 4 * 16, "bwd", False, Tiling(64, 4, 3, 1, 128)),
        (256, 4 * 8, "fwd", False, Tiling(64, 4, 2, 1, 128)),  # a third stage does not fit at D = 256
        (256, 4 * 8, "bwd", False, Tiling(32, 4, 3, 2, 256)),
        (64, 99, "bwd", False, Tiling(64, 4, 3, 1, 64)),  # 99 programs: three quarters of 132 SMs
        (64, 98, "bwd", False, Tiling(32, 4, 3, 2, 64)),  # 98: fewer, so BV = 32 for more programs
        (256, 8 * 8, "fwd", "c32", Tiling(64, 8, 3, 1, 64)),  # C = 32: half the tiles per stage, 64 pipelines
        (256, 2 * 8, "fwd", "c32", Tiling(64, 8, 3, 1, 64)),  # ... at few streams too (measured faster there)
        (256, 8 * 8, "bwd", "c32", Tiling(32, 4, 3, 2, 256)),  # the reverse keeps the measured rule
    ],
)
def test_auto_rule(D, streams, kernel, fused, want):
    cfg = dataclasses.replace(AUTO, fuse_output=bool(fused))
    if fused == "c32":
        cfg = dataclasses.replace(cfg, chunk_size=32)
    assert recurrence_tiling(cfg, kernel, D, D, streams, H200_SMS, SM90) == want


def test_auto_keeps_the_variants_slabs_where_it_was_not_measured():
    c128 = dataclasses.replace(AUTO, chunk_size=128, BV=32, num_warps=8)
    assert recurrence_tiling(c128, "bwd", 256, 256, 64, H200_SMS, SM90).BK == AUTO.BK  # C = 128: one slab is 32K elements
    d64 = dataclasses.replace(AUTO, rec="auto")
    assert recurrence_tiling(d64, "bwd", 64, 64, 64, H200_SMS, SM90).BK == 64


def test_explicit_tilings_may_set_the_slab_height():
    cfg = dataclasses.replace(AUTO, rec="bk256bv32w4s2")
    assert cfg.name.endswith("-rbk256bv32w4s2") and ChunkConfig.from_name(cfg.name) == cfg
    cfg.validate(256, 256)
    assert recurrence_tiling(cfg, "fwd", 256, 256, 64, H200_SMS, SM90) == Tiling(32, 4, 2, 2, 256)
    with pytest.raises(ConfigError, match="slab height BK 256"):
        cfg.validate(128, 128)  # taller than the padded key head dim
    with pytest.raises(ConfigError, match="slab height BK 32"):
        dataclasses.replace(AUTO, rec="bk32bv32w4s2").validate(256, 256)  # more than four slabs
    with pytest.raises(ConfigError, match="x BK 256"):
        dataclasses.replace(AUTO, chunk_size=128, rec="bk256bv32w4s2").validate()
    with pytest.raises(ConfigError, match="BK \\(when given\\)"):
        dataclasses.replace(AUTO, rec="bk48bv32w4s2").validate()


def test_explicit_tilings_may_hold_the_state_transposed():
    cfg = dataclasses.replace(AUTO, rec="tbv64w8s2")
    assert ChunkConfig.from_name(cfg.name) == cfg
    cfg.validate(256, 256)
    assert recurrence_tiling(cfg, "bwd", 256, 256, 64, H200_SMS, SM90) == Tiling(64, 8, 2, 1, 256, True)
    assert recurrence_tiling(cfg, "fwd", 100, 100, 64, H200_SMS, SM90).BK == 128  # one tile of the padded head dim
    assert not recurrence_tiling(AUTO, "fwd", 256, 256, 64, H200_SMS, SM90).transposed  # states stored: slabs
    with pytest.raises(ConfigError, match="transposed state"):
        dataclasses.replace(AUTO, chunk_size=128, rec="tbv32w8s2").validate(256, 256)
    with pytest.raises(ConfigError, match="rec must be one of"):
        dataclasses.replace(AUTO, rec="tbk128bv32w4s2").validate()  # one tile: no slab height to choose


def test_explicit_transposed_tilings_may_join_the_w_and_q_products():
    cfg = dataclasses.replace(AUTO, rec="tjbv128w8s2")
    assert cfg.name.endswith("-m16-rtjbv128w8s2") and ChunkConfig.from_name(cfg.name) == cfg
    cfg.validate(256, 256)
    assert recurrence_tiling(cfg, "fwd", 256, 256, 64, H200_SMS, SM90) == Tiling(128, 8, 2, 1, 256, True, True)
    assert not recurrence_tiling(dataclasses.replace(AUTO, rec="tbv128w8s2"), "fwd", 256, 256, 64, H200_SMS).joint
    with pytest.raises(ConfigError, match="16-bit dot operands"):
        dataclasses.replace(AUTO, dot_operands="fp32", rec="tjbv128w8s2").validate()
    with pytest.raises(ConfigError, match="rec must be one of"):
        dataclasses.replace(AUTO, rec="jbv128w8s2").validate()  # joining needs the transposed state


def test_wy_in_loop_marks_both_serial_tilings_whatever_the_rec():
    for rec in ("main", "auto", "bv32w4s3", "tbv128w8s2"):
        cfg = dataclasses.replace(AUTO, rec=rec, wy_in_loop=True)
        assert ChunkConfig.from_name(cfg.validate(256, 256).name) == cfg and "-wyx-" in cfg.name
        for kernel in ("fwd", "bwd"):
            tiling = recurrence_tiling(cfg, kernel, 256, 256, 64, H200_SMS, SM90)
            assert tiling.apply_x and tiling._replace(apply_x=False) == recurrence_tiling(
                dataclasses.replace(cfg, wy_in_loop=False), kernel, 256, 256, 64, H200_SMS, SM90)
    with pytest.raises(ConfigError, match="needs W, which wy_in_loop never forms"):
        dataclasses.replace(AUTO, rec="tjbv128w8s2", wy_in_loop=True).validate()
    with pytest.raises(ConfigError, match="rec must be one of"):
        dataclasses.replace(AUTO, rec="txbv128w8s2").validate()


@pytest.mark.parametrize(
    "D,streams,stores,want",
    [
        (256, 8 * 8, False, Tiling(128, 8, 2, 1, 256, True, True)),  # T = 4096: 128 programs at BV = 128, joined
        (128, 8 * 16, False, Tiling(64, 4, 2, 1, 128, True)),  # T = 4096: 256 programs at BV = 64
        (128, 2 * 16, False, Tiling(32, 4, 3, 2, 128)),  # T = 16384: 64 programs, too few; the slabs
        (256, 2 * 8, False, Tiling(32, 4, 3, 2, 128)),  # T = 16384 at D = 256 likewise
        (256, 8 * 8, True, Tiling(32, 4, 3, 2, 128)),  # storing states for a backward: the slabs
        (64, 32 * 32, False, Tiling(64, 4, 3, 1, 64)),  # D = 64 was not measured transposed
    ],
)
def test_auto_holds_the_state_transposed_for_a_fused_forward_with_programs_enough(D, streams, stores, want):
    cfg = dataclasses.replace(AUTO, fuse_output=True)
    assert recurrence_tiling(cfg, "fwd", D, D, streams, H200_SMS, SM90, stores_states=stores) == want
    assert not recurrence_tiling(cfg, "bwd", D, D, streams, H200_SMS, SM90, stores_states=stores).transposed
    c32 = dataclasses.replace(cfg, chunk_size=32)
    assert not recurrence_tiling(c32, "fwd", D, D, streams, H200_SMS, SM90, stores_states=stores).transposed
    unfused = dataclasses.replace(AUTO, fuse_output=False)
    assert not recurrence_tiling(unfused, "fwd", D, D, streams, H200_SMS, SM90, stores_states=False).transposed


def test_auto_counts_programs_against_this_gpus_sms():
    # 8 x 16 streams at BV = 64 are 256 programs: enough for 132 SMs, and for 340 (three quarters), not for 342
    assert recurrence_tiling(AUTO, "fwd", 128, 128, 8 * 16, 340).BV == 64
    assert recurrence_tiling(AUTO, "fwd", 128, 128, 8 * 16, 342).BV == 32


def test_a_run_notes_the_serial_tilings_it_launched():
    """A results row can say what tiling ``rec="auto"`` chose: the launches note it (interpreter run)."""
    import os

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("runs the kernels in the Triton interpreter")
    import torch

    from dnprof.bench.inputs import make_delta_inputs
    from dnprof.kernels.chunk import chunk_delta_rule
    from dnprof.providers.dnprof_kernels import DnprofChunkProvider

    inp = make_delta_inputs(1, 40, 2, 32, 32, dtype=torch.float32, requires_grad=True)
    provider = DnprofChunkProvider()
    provider.begin_run()
    o, _ = chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta, config=ChunkConfig(chunk_size=16, BK=16, BV=16,
                                                                              rec="bv32w4s2"))
    o.backward(inp.do)
    assert provider.run_notes()["serial_tilings"] == ["bwd_dh_kernel bk16 bv32 w4 s2", "fwd_state_kernel bk16 bv32 w4 s2"]
    provider.begin_run()
    assert "serial_tilings" not in provider.run_notes()


def test_an_unpipelined_narrow_tiling_is_refused_on_sm90_only():
    one_stage = ChunkConfig(BV=32, num_stages=1)
    with pytest.raises(ValueError, match="config: the bwd serial kernel at BV 32 needs at least 2"):
        check_pipelined(recurrence_tiling(one_stage, "bwd", 128, 128, 4, H200_SMS, SM90), "bwd")
    check_pipelined(recurrence_tiling(one_stage, "bwd", 128, 128, 4, H200_SMS, 8), "bwd")  # not seen elsewhere
    check_pipelined(recurrence_tiling(one_stage, "bwd", 128, 128, 4, H200_SMS, None), "bwd")  # interpreter
    check_pipelined(recurrence_tiling(ChunkConfig(BV=32), "bwd", 128, 128, 4, H200_SMS, SM90), "bwd")


def test_chunk_delta_rule_refuses_it_before_launching_anything(monkeypatch):
    """The call checks both serial tilings up front: no kernel runs when one of them must not."""
    import torch

    import dnprof.kernels.chunk as chunk
    from dnprof.bench.inputs import make_delta_inputs

    monkeypatch.setattr(chunk, "compute_major", lambda dev: SM90)  # as on an H100/H200
    launched = []
    monkeypatch.setattr(chunk, "wy_forward", lambda *a, **k: launched.append(a))
    inp = make_delta_inputs(1, 40, 2, 32, 32, dtype=torch.float32)
    with pytest.raises(ValueError, match="config: the fwd serial kernel at BV 16 needs at least 2"):
        chunk.chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta, config=ChunkConfig(chunk_size=16, BK=16, BV=16,
                                                                                 num_stages=1))
    assert launched == []


def test_a_one_stage_wy_transform_at_chunk_128_is_refused_on_sm90_only(monkeypatch):
    """C = 128 at one stage returned wrong values on an H200: refused there before anything launches."""
    import torch

    import dnprof.kernels.chunk as chunk
    from dnprof.bench.inputs import make_delta_inputs

    cfg = ChunkConfig(chunk_size=128, BK=32, BV=32, num_warps=8, num_stages=1)
    inp = make_delta_inputs(1, 40, 2, 32, 32, dtype=torch.float32)
    launched = _stop_at_the_wy_launch(monkeypatch, chunk)
    monkeypatch.setattr(chunk, "compute_major", lambda dev: SM90)
    with pytest.raises(ValueError, match="config: at chunk size 128 the WY transform needs at least 2"):
        chunk.chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta, config=cfg)
    assert launched == []
    # two stages pass the check, and the inverse launch is told it may not be lowered below two
    with pytest.raises(_Launched):
        chunk.chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta, config=dataclasses.replace(cfg, num_stages=2))
    assert launched[-1]["min_stages"] == 2
    monkeypatch.setattr(chunk, "compute_major", lambda dev: 8)  # not seen elsewhere: allowed
    with pytest.raises(_Launched):
        chunk.chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta, config=cfg)
    assert launched[-1]["min_stages"] == 1


def test_auto_joins_the_w_and_q_products_only_above_head_dim_128_with_16_bit_operands():
    fused = dataclasses.replace(AUTO, fuse_output=True)
    assert AUTO.dot_operands == "input"
    assert recurrence_tiling(fused, "fwd", 256, 256, 64, H200_SMS, SM90, stores_states=False).joint
    assert not recurrence_tiling(fused, "fwd", 128, 128, 128, H200_SMS, SM90, stores_states=False).joint
    fp32 = dataclasses.replace(fused, dot_operands="fp32")
    assert recurrence_tiling(fp32, "fwd", 256, 256, 64, H200_SMS, SM90, stores_states=False) == Tiling(
        128, 8, 2, 1, 256, True)
    x = dataclasses.replace(fused, wy_in_loop=True)
    assert recurrence_tiling(x, "fwd", 256, 256, 64, H200_SMS, SM90, stores_states=False) == Tiling(
        128, 8, 2, 1, 256, True, False, True)


def test_wy_in_loop_is_refused_at_narrow_tilings_on_sm90_only():
    x = dataclasses.replace(AUTO, wy_in_loop=True)
    narrow = recurrence_tiling(x, "fwd", 128, 128, 8, H200_SMS, SM90)  # few programs: auto takes BV = 32
    assert narrow.BV == 32 and narrow.apply_x
    with pytest.raises(ValueError, match="config: wy_in_loop in the fwd serial kernel at BV 32"):
        check_wy_in_loop(narrow, "fwd", SM90)
    check_wy_in_loop(narrow, "fwd", 8)  # not seen elsewhere
    check_wy_in_loop(narrow, "fwd", None)  # the interpreter verifies it
    check_wy_in_loop(recurrence_tiling(dataclasses.replace(x, rec="bk128bv64w4s2"), "fwd", 128, 128, 8, H200_SMS,
                                       SM90), "fwd", SM90)  # BV = 64 verified on the H200
    check_wy_in_loop(recurrence_tiling(AUTO, "fwd", 128, 128, 8, H200_SMS, SM90), "fwd", SM90)  # no X applied


def test_launch_plan_checks_only_the_serial_kernels_the_call_launches(monkeypatch):
    """A no-grad forward never runs the reverse recurrence, so a refusal of that tiling must not stop it;
    with a backward to follow, the kernels that launch are refused as a RefusedOnDevice (a ValueError)."""
    import types

    import torch

    import dnprof.kernels.chunk as chunk
    from dnprof.variants.errors import RefusedOnDevice

    monkeypatch.setattr(chunk, "compute_major", lambda dev: SM90)  # as on an H100/H200
    cfg = dataclasses.replace(AUTO, fuse_output=True, wy_in_loop=True)
    tables = types.SimpleNamespace(n_seqs=8)  # 8 sequences x 8 heads at D = 256: the transposed forward, BV 128
    plan = chunk.launch_plan(cfg, 256, 256, 8, tables, torch.device("cpu"), save=False)
    assert plan.fwd.BV == 128 and plan.bwd.BV == 32  # the reverse's tiling would be refused, were it launched
    # with a backward, the forward stores states (slabs at BV 32, refused too) and the reverse launches
    with pytest.raises(RefusedOnDevice, match="config: wy_in_loop in the fwd serial kernel at BV 32"):
        chunk.launch_plan(cfg, 256, 256, 8, tables, torch.device("cpu"), save=True)
    explicit = dataclasses.replace(cfg, rec="tbv128w8s2")  # wide enough for both kernels
    chunk.launch_plan(explicit, 256, 256, 8, tables, torch.device("cpu"), save=True)


def test_tma_marks_the_slab_loops_where_the_copy_engine_exists():
    """``tma`` reaches the slab-held loops on sm_90 and in the interpreter (no device), never a transposed
    loop or an older GPU; with it, a forward storing states at BV = 32 holds a head dim of 256 in one slab
    (tenth lease sweep), and without it in 128-row slabs as before."""
    cfg = dataclasses.replace(AUTO, tma=True, fuse_output=False)
    few = recurrence_tiling(cfg, "fwd", 256, 256, 16, H200_SMS, SM90)
    assert few.tma and few.BV == 32 and few.BK == 256
    assert recurrence_tiling(dataclasses.replace(cfg, tma=False), "fwd", 256, 256, 16, H200_SMS, SM90).BK == 128
    assert recurrence_tiling(cfg, "bwd", 256, 256, 16, H200_SMS, None).tma
    older = recurrence_tiling(cfg, "fwd", 256, 256, 16, H200_SMS, 8)
    assert not older.tma and older.BK == 128
    many = recurrence_tiling(cfg, "fwd", 256, 256, 64, H200_SMS, SM90)  # wide: BV 64, 128-row slabs as measured
    assert many.tma and many.BV == 64 and many.BK == 128
    fused = dataclasses.replace(AUTO, tma=True, fuse_output=True)
    transposed = recurrence_tiling(fused, "fwd", 256, 256, 64, H200_SMS, SM90, stores_states=False)
    assert transposed.transposed and not transposed.tma


def test_the_variants_seen_wrong_at_head_dim_64_are_refused_on_sm90_before_anything_launches(monkeypatch):
    """On sm_90 chunk size 64 at 8 warps with the keys in one tile is refused, and BK below a head dim of 64
    when a backward follows; elsewhere (another architecture, the interpreter) both launch."""
    import torch

    import dnprof.kernels.chunk as chunk
    from dnprof.bench.inputs import make_delta_inputs

    w8 = ChunkConfig.from_name("c64-bk64-bv64-w8-s2-hbf16-wyf-os-m16-tma")
    bk32 = ChunkConfig.from_name("c64-bk32-bv64-w4-s2-hbf16-wyf-of-m16-tma")
    with pytest.raises(ValueError, match="config: chunk size 64 at 8 warps with the keys in one tile"):
        chunk.plan_launch(w8, 64, 64, 256, H200_SMS, SM90, save=False)
    with pytest.raises(ValueError, match="config: BK 32 below a padded head dim of 64 returned wrong dk"):
        chunk.plan_launch(bk32, 64, 64, 256, H200_SMS, SM90, save=True)
    chunk.plan_launch(bk32, 64, 64, 256, H200_SMS, SM90, save=False)  # its forward was right
    chunk.plan_launch(w8, 128, 128, 256, H200_SMS, SM90)  # two key tiles at D = 128 verified
    for major in (8, None):
        chunk.plan_launch(w8, 64, 64, 256, H200_SMS, major)
        chunk.plan_launch(bk32, 64, 64, 256, H200_SMS, major)

    _stop_at_the_wy_launch(monkeypatch, chunk)
    monkeypatch.setattr(chunk, "compute_major", lambda dev: SM90)
    inp = make_delta_inputs(1, 40, 2, 64, 64, dtype=torch.float32)
    with pytest.raises(ValueError, match="config: chunk size 64 at 8 warps"):
        chunk.chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta, config=w8)
    q, k, v, beta = (t.detach().requires_grad_() for t in (inp.q, inp.k, inp.v, inp.beta))
    with pytest.raises(ValueError, match="config: BK 32 below a padded head dim of 64"):
        chunk.chunk_delta_rule(q, k, v, beta, config=bk32)
    with pytest.raises(_Launched):  # no gradient wanted: the forward alone runs
        chunk.chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta, config=bk32)


def test_a_shipped_pick_refused_at_this_batch_falls_back_to_the_default(monkeypatch):
    """A forward shipped for its sequence-length bucket with ``wy_in_loop`` (tuned at 64 streams, where ``auto``
    holds the state transposed) is refused on sm_90 at 16 streams, where ``auto`` narrows to BV 32: a call that
    named no config runs the default there instead of failing, and the shipped pick where it is accepted."""
    import torch

    import dnprof.kernels.chunk as chunk
    import dnprof.variants.selection as selection
    from dnprof.bench.inputs import make_delta_inputs

    shipped = ChunkConfig.from_name("c64-bk64-bv64-w4-s2-hfp32-wyx-of-m16-rauto")
    monkeypatch.setattr(selection, "select_chunk_config", lambda *a, **k: (shipped, "shipped"))
    monkeypatch.setattr(chunk, "compute_major", lambda dev: SM90)
    with pytest.raises(ValueError, match="config: wy_in_loop"):
        chunk.plan_launch(shipped, 128, 128, 16, H200_SMS, SM90, save=False)
    default = ChunkConfig.default_for(128, 128, 64, "bf16", "fwd")
    assert chunk.select_launchable(128, 128, 8192, "bf16", "fwd", 16, "cpu")[:2] == (default, "default")
    assert chunk.select_launchable(128, 128, 8192, "bf16", "fwd", 64, "cpu")[:2] == (shipped, "shipped")

    launched = _stop_at_the_wy_launch(monkeypatch, chunk)
    inp = make_delta_inputs(1, 64, 16, 128, 128, dtype=torch.float32)
    with torch.no_grad(), pytest.raises(_Launched):  # got past the guard: the default runs
        chunk.chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta)
    assert launched


def test_a_call_whose_inputs_need_no_gradient_runs_the_forward_pick_even_with_grad_on(monkeypatch):
    """Inference without ``torch.no_grad()`` (inputs that require no gradient) can have no backward: the call
    selects its config as a forward (the forward's tuned pick), not as fwd+bwd."""
    import torch

    import dnprof.kernels.chunk as chunk
    from dnprof.bench.inputs import make_delta_inputs

    modes: list = []
    real_select = chunk.select_launchable

    def recording_select(K, V, T, dtype, mode, *args, **kwargs):
        modes.append(mode)
        return real_select(K, V, T, dtype, mode, *args, **kwargs)

    monkeypatch.setattr(chunk, "select_launchable", recording_select)
    inp = make_delta_inputs(1, 64, 2, 32, 32, dtype=torch.float32)
    assert torch.is_grad_enabled() and not inp.q.requires_grad
    chunk.chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta)
    chunk.chunk_delta_rule(inp.q.requires_grad_(), inp.k, inp.v, inp.beta)
    assert modes == ["fwd", "fwdbwd"]
