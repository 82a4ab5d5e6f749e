"""ChunkConfig: names, hashing, dict round trips, validation and the default variants."""

from __future__ import annotations

import itertools
import json

import pytest

from dnprof.variants.chunk_config import ChunkConfig, ConfigError, padded_dim


def test_default_is_valid_for_supported_head_dims():
    for K, V, c in itertools.product((16, 32, 64, 100, 128, 256), (16, 64, 128, 256), (16, 32, 64, 128)):
        cfg = ChunkConfig.default_for(K, V, chunk_size=c)
        assert cfg.chunk_size == c
        cfg.validate(K, V)


def test_hash_eq_and_name_round_trip():
    a = ChunkConfig(chunk_size=128, BK=64, BV=32, num_warps=8, num_stages=3, state_dtype="bf16", fuse_wy=False)
    b = ChunkConfig.from_dict(a.to_dict())
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.name == "c128-bk64-bv32-w8-s3-hbf16-wys-os" == str(a)
    assert ChunkConfig.from_name(a.name) == a
    assert ChunkConfig.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    with pytest.raises(Exception):
        a.BK = 16  # frozen
    m = ChunkConfig(dot_operands="input")
    assert m.name == "c64-bk64-bv64-w4-s2-hfp32-wyf-os-m16" and ChunkConfig.from_name(m.name) == m
    with pytest.raises(ConfigError, match="dot_operands"):
        ChunkConfig(dot_operands="fp8").validate()
    x = ChunkConfig(wy_in_loop=True)
    assert x.name == "c64-bk64-bv64-w4-s2-hfp32-wyx-os" and ChunkConfig.from_name(x.name) == x
    assert ChunkConfig.from_dict({k: v for k, v in a.to_dict().items() if k != "wy_in_loop"}) == a  # older records


def test_rec_tiling_names_and_validation():
    auto = ChunkConfig(dot_operands="input", rec="auto")
    assert auto.name == "c64-bk64-bv64-w4-s2-hfp32-wyf-os-m16-rauto" and ChunkConfig.from_name(auto.name) == auto
    exp = ChunkConfig(rec="bv32w4s3")
    assert exp.name == "c64-bk64-bv64-w4-s2-hfp32-wyf-os-rbv32w4s3" and ChunkConfig.from_name(exp.name) == exp
    assert ChunkConfig.from_dict({"chunk_size": 64}).rec == "main"  # records from before the field: main tiling
    for bad, match in (("fast", "rec must be one of"), ("bv48w4s3", "BV must be one of"),
                       ("bv32w3s2", "warps one of"), ("bv256w4s2", "exceeds")):
        with pytest.raises(ConfigError, match=match):
            ChunkConfig(chunk_size=128, rec=bad).validate()
    with pytest.raises(ConfigError, match="padded value head dim"):
        ChunkConfig(BV=32, rec="bv64w4s2").validate(64, 32)
    assert ChunkConfig.default_for(128, 128, 64, "bf16", "fwdbwd").rec == "auto"
    assert ChunkConfig.default_for(128, 128, 128, "bf16", "fwdbwd").rec == "main"  # measured at C = 64 only
    c32 = ChunkConfig.default_for(128, 128, 32, "bf16", "fwdbwd")
    assert c32.rec == "main" and not c32.fuse_output  # so is the fused output in fwd+bwd
    assert ChunkConfig.default_for(64, 64, 64, "bf16", "fwdbwd").rec == "main"  # and at D >= 128 only,
    assert ChunkConfig.default_for(64, 64, 64, "bf16", "fwd").rec == "auto"  # but for D = 64's forward (swept)
    assert ChunkConfig.default_for(32, 32, 64, "bf16", "fwd").rec == "main"  # never swept
    assert ChunkConfig.default_for(64, 64, 64, "fp32", "fwd").rec == "main"


def test_the_separate_output_forward_above_128_runs_three_stages():
    """Change 36: D = 256's 16-bit forward (output apart) at three stages; its fwd+bwd, fp32 and D <= 128 at two."""
    assert ChunkConfig.default_for(256, 256, 64, "bf16", "fwd").num_stages == 3
    assert ChunkConfig.default_for(256, 256, 64, "bf16", "fwd").name == "c64-bk64-bv64-w4-s3-hbf16-wyf-os-m16-rauto-tma"
    assert ChunkConfig.default_for(256, 256, 64, "bf16", "fwdbwd").num_stages == 2
    assert ChunkConfig.default_for(256, 256, 64, "fp32", "fwd").num_stages == 2
    assert ChunkConfig.default_for(128, 128, 64, "bf16", "fwd").num_stages == 2
    assert ChunkConfig.default_for(256, 256, 128, "bf16", "fwd").num_stages == 2
    assert ChunkConfig.default_for(128, 128, 64, "fp32", "fwdbwd").rec == "main"


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown ChunkConfig keys.*'bq'"):
        ChunkConfig.from_dict({"chunk_size": 64, "bq": 3})


@pytest.mark.parametrize("bad", ["c64", "c64-bk64-bv64-w4-s2-hfp32-wyq-os", "x-bk-bv-w-s-h-wy-o", "",
                                 "c64-bk64-bv64-w4-s2-hfp32-wyf-os-m8"])
def test_from_name_rejects_garbage(bad):
    with pytest.raises(ConfigError):
        ChunkConfig.from_name(bad)


@pytest.mark.parametrize("name", ["c64-bk64-bv64-w4-s2-hbf16-wyf-op", "c64-bk64-bv64-w4-s2-hfp32-wyf-op-m16-rauto-tma"])
def test_from_name_refuses_the_removed_op_output(name):
    """``-op`` (change 41, taken out after an H200 run timed it slower) is no name part any more: an old name
    is refused, and the message says which output forms a name may hold."""
    with pytest.raises(ConfigError, match=r"not a chunk variant name: .*-op.*o in 'f' or 's'"):
        ChunkConfig.from_name(name)


@pytest.mark.parametrize(
    "kw,K,V,match",
    [
        (dict(BK=48), 64, 64, "BK must be a power of two"),
        (dict(chunk_size=96), 64, 64, "chunk_size must be one of"),
        (dict(BK=128), 64, 64, "larger than the padded key head dim"),
        (dict(BV=128), 64, 100, None),  # padded V = 128: fine
        (dict(BV=256), 64, 100, "larger than the padded value head dim"),
        (dict(BK=32), 256, 64, "BK must be >= 64"),
        (dict(chunk_size=128, BK=256), 256, 64, "shared memory"),
        (dict(num_warps=3), 64, 64, "num_warps"),
        (dict(state_dtype="fp16"), 64, 64, "state_dtype"),
        (dict(fuse_wy=1), 64, 64, "fuse_wy must be True or False"),
        (dict(wy_in_loop="yes"), 64, 64, "wy_in_loop must be True or False"),
        (dict(wy_in_loop=True, fuse_wy=False), 64, 64, "fuse_wy .* has no meaning"),
        (dict(tma=1), 64, 64, "tma must be True or False"),
        (dict(tma=True, wy_in_loop=True), 64, 64, "tma loads .* wy_in_loop"),
        (dict(tma=True, rec="tbv64w8s2"), 128, 128, "slab-held serial loops, not the transposed"),
        (dict(tma=True, rec="bk128bv32w4s3"), 256, 256, None),
    ],
)
def test_validate(kw, K, V, match):
    cfg = ChunkConfig(**kw)
    if match is None:
        assert cfg.validate(K, V) is cfg
    else:
        with pytest.raises(ConfigError, match=match):
            cfg.validate(K, V)
        assert issubclass(ConfigError, ValueError)


def test_choices_generate_a_space_with_valid_members():
    space = ChunkConfig.choices()
    assert set(space) == set(ChunkConfig().to_dict())
    keys = list(space)
    valid = []
    for values in itertools.product(*space.values()):
        cfg = ChunkConfig(**dict(zip(keys, values)))
        try:
            valid.append(cfg.validate(128, 128))
        except ConfigError:
            pass
    assert ChunkConfig.default_for(128, 128) in valid
    assert len(valid) > 100


def test_padded_dim():
    assert [padded_dim(d) for d in (1, 16, 17, 64, 100, 128, 200, 256)] == [16, 16, 32, 64, 128, 128, 256, 256]


@pytest.mark.parametrize("dtype, dots, states", [(None, "fp32", "fp32"), ("fp32", "fp32", "fp32"),
                                                 ("bf16", "input", "bf16"), ("torch.float16", "input", "bf16")])
def test_default_is_the_16bit_family_only_for_16bit_inputs(dtype, dots, states):
    cfg = ChunkConfig.default_for(128, 128, dtype=dtype)
    assert (cfg.dot_operands, cfg.state_dtype) == (dots, states)
    assert (cfg.chunk_size, cfg.BK, cfg.BV) == (64, 64, 64)


@pytest.mark.parametrize("K, dtype, fused", [(64, "bf16", True), (128, "fp16", True), (256, "bf16", False),
                                             (128, "fp32", False), (128, None, False)])
def test_forward_default_fuses_the_output_for_16bit_up_to_128(K, dtype, fused):
    fwd = ChunkConfig.default_for(K, K, dtype=dtype, mode="fwd")
    assert fwd.fuse_output is fused
    # nothing is stored in a fused forward: the space keeps its fp32-state twin, so the default is that one
    assert fwd.state_dtype == ("fp32" if fused else ChunkConfig.default_for(K, K, dtype=dtype).state_dtype)
    assert ChunkConfig.default_for(K, K, dtype=dtype, mode="fwdbwd") == ChunkConfig.default_for(K, K, dtype=dtype)


def test_output_chunk_names_and_limits():
    """``-os128`` round-trips through its name and dict; the field needs the output apart, a larger power-of-two
    multiple of the chunk size within the tile bound, and a slab-held state loop."""
    cfg = ChunkConfig(output_chunk=128)
    assert cfg.name == "c64-bk64-bv64-w4-s2-hfp32-wyf-os128" and ChunkConfig.from_name(cfg.name) == cfg
    assert ChunkConfig.from_dict(cfg.to_dict()) == cfg and ChunkConfig.from_dict({"chunk_size": 64}).output_chunk == 0
    assert ChunkConfig(chunk_size=16, BK=16, BV=16, output_chunk=64).validate(32, 32).output_chunk == 64
    for kw, match in ((dict(output_chunk=128, fuse_output=True), "fuse_output"),
                      (dict(output_chunk=96), "power of two"),
                      (dict(output_chunk=64), "larger multiple"),
                      (dict(chunk_size=64, BV=128, output_chunk=256), "exceeds"),
                      (dict(output_chunk=128, rec="tbv64w4s2"), "slab tiling"),
                      (dict(output_chunk=True), "power of two")):
        with pytest.raises(ConfigError, match=match):
            ChunkConfig(**kw).validate()
    with pytest.raises(ConfigError, match="not a chunk variant name"):
        ChunkConfig.from_name("c64-bk64-bv64-w4-s2-hfp32-wyf-osx")


def test_output_tiling_names_and_limits():
    """The separate output kernel's own tiling round-trips through its name part (``-obv256w8``, before
    ``-m16`` and ``-r``) and is checked against the choices, the tile bound and the value head dim."""
    cfg = ChunkConfig(BV=32, dot_operands="input", rec="auto", output_vloop=True, output_tiling="bv256w8")
    assert cfg.name == "c64-bk64-bv32-w4-s2-hfp32-wyf-osv-obv256w8-m16-rauto"
    assert ChunkConfig.from_name(cfg.name) == cfg and ChunkConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.output_launch(64) == (256, 8) and ChunkConfig(BV=32).output_launch(64) == (32, 4)
    assert ChunkConfig(output_chunk=128).output_launch(128) == (64, 8)  # taller chunks: more warps
    assert "output_tiling" in ChunkConfig.SEPARATE_OUTPUT_FIELDS and ChunkConfig.choices()["output_tiling"] == ("main",)
    for kw, match in ((dict(output_tiling="bv256w8", fuse_output=True), "fuse_output"),
                      (dict(output_tiling="wide"), "like 'bv256w8'"),
                      (dict(output_tiling="bv48w8"), "BV must be one of"),
                      (dict(output_tiling="bv256w3"), "warps one of"),
                      (dict(output_tiling="bv256w8", output_chunk=128), "exceeds")):
        with pytest.raises(ConfigError, match=match):
            ChunkConfig(**kw).validate()
    with pytest.raises(ConfigError, match="padded value head dim"):
        ChunkConfig(output_tiling="bv256w8").validate(128, 128)


def test_tma_names_and_older_records():
    """``-tma`` ends a name and parses back; a record written before the field existed reads as without it;
    the 16-bit defaults carry it and the fp32 ones do not (measured for 16-bit inputs only)."""
    cfg = ChunkConfig(dot_operands="input", rec="auto", tma=True)
    assert cfg.name == "c64-bk64-bv64-w4-s2-hfp32-wyf-os-m16-rauto-tma" and ChunkConfig.from_name(cfg.name) == cfg
    assert ChunkConfig.from_name("c64-bk64-bv64-w4-s2-hfp32-wyf-os-tma") == ChunkConfig(tma=True)
    assert ChunkConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "tma"}).tma is False
    assert ChunkConfig.default_for(128, 128, 64, "bf16").tma and not ChunkConfig.default_for(128, 128, 64, "fp32").tma
    with pytest.raises(ConfigError):
        ChunkConfig.from_name("c64-bk64-bv64-w4-s2-hfp32-wyf-os-tma-m16")  # -tma comes last
