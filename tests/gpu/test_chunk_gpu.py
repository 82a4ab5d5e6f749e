"""The chunkwise kernels on a real GPU: bf16 at T = 4096 against float64, and against fla-core.

The float64 reference is the chunkwise form (equal to the recurrent one to ~1e-12) computed on the
GPU from the same bf16-rounded inputs; gradients come from autograd through it.
"""

from __future__ import annotations

import functools
import re

import pytest
import torch

from dnprof.bench.verify import verify_delta_kernel
from dnprof.kernels.chunk import chunk_delta_rule
from dnprof.variants.chunk_config import ChunkConfig

pytestmark = pytest.mark.gpu

B, T, H = 2, 4096, 4


@functools.lru_cache(maxsize=None)
def _fla_errors(D: int) -> dict[str, float] | None:
    """fla-core's errors on the same seeded inputs as dnprof's check (computed once per head dim)."""
    try:
        from fla.ops.delta_rule import chunk_delta_rule as fla_chunk
    except Exception:  # noqa: BLE001 - fla-core missing or not importable here
        return None
    return verify_delta_kernel(fla_chunk, B, T, H, D, D, dtype=torch.bfloat16, device="cuda",
                               reference="chunk").errors


@pytest.mark.parametrize("chunk_size", [64, 128])
@pytest.mark.parametrize("D", [64, 128, 256])
def test_bf16_t4096_against_float64_and_fla(D, chunk_size):
    kernel = functools.partial(chunk_delta_rule, chunk_size=chunk_size)
    res = verify_delta_kernel(kernel, B, T, H, D, D, dtype=torch.bfloat16, device="cuda", reference="chunk")
    print(f"D={D} C={chunk_size} errors: " + " ".join(f"{k}={v:.2e}" for k, v in res.errors.items()))
    assert res.tolerance == 1e-2
    assert res.passed, res.errors
    fla = _fla_errors(D)
    if fla is None:
        pytest.skip("fla-core not importable: comparison with the peer skipped (float64 check passed)")
    for key, err in res.errors.items():
        assert err <= 1.1 * fla[key] + 1e-4, f"{key}: dnprof {err:.2e} vs fla {fla[key]:.2e}"


FAST_16BIT = [ChunkConfig(chunk_size=64, BK=64, BV=64, state_dtype="bf16", dot_operands="input"),
              ChunkConfig(chunk_size=128, BK=64, BV=64, num_warps=8, state_dtype="bf16", dot_operands="input")]


@pytest.mark.parametrize("cfg", FAST_16BIT, ids=[c.name for c in FAST_16BIT])
@pytest.mark.parametrize("D", [64, 128, 256])
def test_16bit_storage_variants_t4096_against_float64_and_fla(D, cfg):
    """The fastest family (16-bit dots and storage): within tolerance and no less accurate than fla-core."""
    kernel = functools.partial(chunk_delta_rule, config=cfg)
    res = verify_delta_kernel(kernel, B, T, H, D, D, dtype=torch.bfloat16, device="cuda", reference="chunk")
    print(f"D={D} {cfg.name} errors: " + " ".join(f"{k}={v:.2e}" for k, v in res.errors.items()))
    assert res.passed, res.errors
    fla = _fla_errors(D)
    if fla is None:
        pytest.skip("fla-core not importable: comparison with the peer skipped (float64 check passed)")
    print(f"D={D} fla-core errors: " + " ".join(f"{k}={v:.2e}" for k, v in fla.items()))
    for key, err in res.errors.items():
        assert err <= 1.1 * fla[key] + 1e-4, f"{key}: dnprof {err:.2e} vs fla {fla[key]:.2e}"


FAMILIES = [
    ChunkConfig(chunk_size=64, BK=64, BV=64, fuse_wy=False),
    ChunkConfig(chunk_size=64, BK=64, BV=64, fuse_output=True),
    ChunkConfig(chunk_size=128, BK=64, BV=32, num_warps=8, state_dtype="bf16"),
    ChunkConfig(chunk_size=32, BK=32, BV=64, num_warps=4, num_stages=3),
]


@pytest.mark.parametrize("cfg", FAMILIES, ids=[c.name for c in FAMILIES])
def test_variant_families_bf16(cfg):
    kernel = functools.partial(chunk_delta_rule, config=cfg)
    res = verify_delta_kernel(kernel, 2, 1000, 4, 128, 128, dtype=torch.bfloat16, device="cuda", reference="chunk")
    print(f"{cfg.name}: " + " ".join(f"{k}={v:.2e}" for k, v in res.errors.items()))
    assert res.passed, res.errors


def test_varlen_and_odd_head_dims_bf16():
    kernel = functools.partial(chunk_delta_rule, chunk_size=64)
    res = verify_delta_kernel(kernel, 1, 1500, 4, 100, 48, dtype=torch.bfloat16, device="cuda",
                              cu_seqlens=[0, 1, 300, 1111, 1500], reference="chunk")
    print("varlen K=100 V=48: " + " ".join(f"{k}={v:.2e}" for k, v in res.errors.items()))
    assert res.passed, res.errors


def test_fp16_and_fp32_on_gpu():
    for dtype in (torch.float16, torch.float32):
        kernel = functools.partial(chunk_delta_rule, chunk_size=64)
        res = verify_delta_kernel(kernel, 2, 777, 2, 64, 64, dtype=dtype, device="cuda", reference="chunk")
        print(f"{dtype}: " + " ".join(f"{k}={v:.2e}" for k, v in res.errors.items()))
        assert res.passed, (dtype, res.errors)


SERIAL_TILINGS = ["bv64w8s3", "bv64w4s3", "bv32w4s3", "bv32w4s2", "bk128bv64w4s3", "bk128bv32w4s3", "tbv64w8s2",
                  "tbv32w4s2", "tbv128w8s2", "tbv64w4s2", "tjbv64w4s2"]


@pytest.mark.parametrize("rec", SERIAL_TILINGS)
@pytest.mark.parametrize("D", [128, 256])
def test_serial_kernel_tilings_bf16(D, rec):
    """Every tiling ``rec="auto"`` can pick, forced explicitly at a test shape: the forward states and the
    reverse recurrence at that tiling agree with float64 like the variant's own tiling does."""
    import dataclasses

    default = ChunkConfig.default_for(D, D, 64, torch.bfloat16, "fwdbwd")
    # tensor-descriptor loads are for the slab loops: a transposed tiling runs without them
    cfg = dataclasses.replace(default, rec=rec, tma=default.tma and not rec.startswith("t"))
    kernel = functools.partial(chunk_delta_rule, config=cfg)
    res = verify_delta_kernel(kernel, 2, 1000, 4, D, D, dtype=torch.bfloat16, device="cuda", reference="chunk")
    print(f"D={D} {cfg.name}: " + " ".join(f"{k}={v:.2e}" for k, v in res.errors.items()))
    assert res.passed, res.errors


@pytest.mark.parametrize("D", [64, 128, 256])
def test_wy_in_loop_fwd_and_bwd_bf16(D):
    """The default fwd+bwd variant with ``wy_in_loop`` (X applied in the state loop, W recomputed for the
    backward): output, final state and every gradient agree with float64."""
    import dataclasses

    cfg = dataclasses.replace(ChunkConfig.default_for(D, D, 64, torch.bfloat16, "fwdbwd"), wy_in_loop=True,
                              rec=f"bk{D}bv64w4s2", tma=False)  # BV = 64: narrower is refused on sm_90; no W/U to load
    kernel = functools.partial(chunk_delta_rule, config=cfg)
    res = verify_delta_kernel(kernel, 2, 1000, 4, D, D, dtype=torch.bfloat16, device="cuda", reference="chunk")
    print(f"D={D} {cfg.name}: " + " ".join(f"{k}={v:.2e}" for k, v in res.errors.items()))
    assert res.passed, res.errors


def test_wy_in_loop_at_a_narrow_tiling_is_refused_on_sm90():
    """``auto`` takes BV = 32 at D = 128 with 8 streams; with ``wy_in_loop`` that returned wrong outputs on an
    H200, so the launch must be refused with a ValueError naming the config, before anything runs."""
    import dataclasses

    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the refusal is for sm_90")
    cfg = dataclasses.replace(ChunkConfig.default_for(128, 128, 64, torch.bfloat16, "fwdbwd"), wy_in_loop=True,
                              tma=False)
    kernel = functools.partial(chunk_delta_rule, config=cfg)
    with pytest.raises(ValueError, match="config: wy_in_loop"):
        verify_delta_kernel(kernel, 2, 1000, 4, 128, 128, dtype=torch.bfloat16, device="cuda", reference="chunk")


def test_auto_tiling_of_the_fused_forward_at_chunk_32_bf16():
    """``rec="auto"`` at C = 32 and D = 256 runs the fused-output state loop at BV = 64, 8 warps,
    3 stages (the tiling measured fastest there); it must agree with float64 like any other."""
    import dataclasses

    from dnprof.kernels import launch

    cfg = dataclasses.replace(ChunkConfig.default_for(256, 256, 32, torch.bfloat16, "fwdbwd"), fuse_output=True,
                              rec="auto")
    launch.reset_lowered()
    kernel = functools.partial(chunk_delta_rule, config=cfg)
    res = verify_delta_kernel(kernel, 2, 1000, 4, 256, 256, dtype=torch.bfloat16, device="cuda", reference="chunk")
    print(f"D=256 {cfg.name}: " + " ".join(f"{k}={v:.2e}" for k, v in res.errors.items()))
    assert res.passed, res.errors
    assert any(re.fullmatch(r"fwd_state_kernel(\+tma)? bk64 bv64 w8 s3", t) for t in launch.noted_tilings()), \
        launch.noted_tilings()


def test_chunk_128_wy_at_one_stage_is_refused_on_sm90():
    """On sm_90 a C = 128 config at one stage is refused with a ``config:`` error before any launch
    (its WY transform faulted once and returned wrong values once on an H200); elsewhere it runs."""
    cfg = ChunkConfig.from_name("c128-bk64-bv32-w8-s1-hbf16-wyf-os-m16")
    q, k, v = (torch.randn(1, 256, 2, 256, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    k = torch.nn.functional.normalize(k.float(), dim=-1).bfloat16()
    beta = torch.rand(1, 256, 2, device="cuda", dtype=torch.bfloat16)
    if torch.cuda.get_device_capability()[0] != 9:
        o, _ = chunk_delta_rule(q, k, v, beta, config=cfg)
        assert torch.isfinite(o).all()
        return
    with pytest.raises(ValueError, match="config: at chunk size 128"):
        chunk_delta_rule(q, k, v, beta, config=cfg)


@pytest.mark.parametrize("D,rec,want", [(128, "auto", "fwd_state_t_kernel bk128 bv64 w4 s2"),
                                        (256, "auto", "fwd_state_t_kernel+wq bk256 bv128 w8 s2"),
                                        (128, "tjbv64w4s2", "fwd_state_t_kernel+wq bk128 bv64 w4 s2"),
                                        (256, "tjbv128w8s2", "fwd_state_t_kernel+wq bk256 bv128 w8 s2"),
                                        (256, "tjbv64w4s2", "fwd_state_t_kernel+wq bk256 bv64 w4 s2"),
                                        (128, "tbv64w4s2+x", "fwd_state_t_kernel+x bk128 bv64 w4 s2"),
                                        (256, "tbv128w8s2+x", "fwd_state_t_kernel+x bk256 bv128 w8 s2"),
                                        (256, "auto+x", "fwd_state_t_kernel+x bk256 bv128 w8 s2")])
def test_transposed_state_in_a_fused_forward_without_backward_bf16(D, rec, want):
    """A no-grad forward with the output fused on the transposed state loop: what ``rec="auto"`` runs with
    programs enough (B * H = 64 streams and more on 132 SMs), and the ``tj`` tilings (W and Q read as one
    tile) and ``wy_in_loop`` (``+x``: X applied in the loop); output and final state agree with float64,
    and the noted launch is the one meant."""
    import dataclasses

    from dnprof.kernels import launch

    cfg = dataclasses.replace(ChunkConfig.default_for(D, D, 64, torch.bfloat16, "fwd"), fuse_output=True,
                              num_stages=2, rec=rec.removesuffix("+x"), wy_in_loop=rec.endswith("+x"), tma=False)
    launch.reset_lowered()
    kernel = functools.partial(chunk_delta_rule, config=cfg)
    res = verify_delta_kernel(kernel, 8, 1024, 2048 // D, D, D, dtype=torch.bfloat16, device="cuda", mode="fwd",
                              reference="chunk")
    print(f"D={D} {cfg.name} fwd: " + " ".join(f"{k}={v:.2e}" for k, v in res.errors.items()))
    assert res.passed, res.errors
    assert want in launch.noted_tilings()


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("D", [64, 128, 256])
def test_separate_output_kernel_forms_bf16(D, mode):
    """The separate output kernel's forms against float64, each as accurate as the plain one (the same
    products, summed over a longer span or in another order): ``-osv`` (one program walks a chunk's V
    blocks), the output kernel at one 8-warp tile over all of V (``-obv<D>w8``) and, in a forward that no
    backward follows, ``-os128`` (128-token output chunks, the loop storing every other state, noted as
    ``fwd_state_kernel+h2``)."""
    import dataclasses

    from dnprof.kernels import launch

    base = dataclasses.replace(ChunkConfig.default_for(D, D, 64, torch.bfloat16, "fwdbwd"), fuse_output=False)
    forms = [base, dataclasses.replace(base, output_vloop=True), dataclasses.replace(base, output_tiling=f"bv{D}w8")]
    if mode == "fwd":
        forms.append(dataclasses.replace(base, output_chunk=128))
    errors = {}
    for cfg in forms:
        launch.reset_lowered()
        kernel = functools.partial(chunk_delta_rule, config=cfg)
        res = verify_delta_kernel(kernel, 2, 4096, 2048 // D, D, D, dtype=torch.bfloat16, device="cuda", mode=mode,
                                  reference="chunk")
        print(f"D={D} {cfg.name} {mode}: " + " ".join(f"{k}={v:.2e}" for k, v in res.errors.items()))
        assert res.passed, res.errors
        errors[cfg.name] = res.errors
        if cfg.output_chunk:
            assert any(t.startswith("fwd_state_kernel+h2") for t in launch.noted_tilings()), launch.noted_tilings()
    for name, errs in errors.items():
        for key, err in errs.items():
            assert err <= 1.1 * errors[base.name][key] + 1e-4, f"{name} {key}: {err:.2e} vs {errors[base.name][key]:.2e}"


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("D", [64, 128, 256])
def test_tma_loads_bf16(D, mode):
    """The serial loops loading through tensor descriptors (``-tma``) against float64 at T = 4096 and at the
    long-sequence shape (B = 2, T = 16384 at D = 256, where ``auto`` takes BV = 32), the ``+tma`` launches
    noted, and equal to the per-thread loads of the same variant on a packed batch whose sequences end
    inside chunks."""
    import dataclasses

    from dnprof.bench.inputs import make_delta_inputs
    from dnprof.kernels import launch

    base = ChunkConfig.default_for(D, D, 64, torch.bfloat16, mode)
    cfg = dataclasses.replace(base, tma=True)
    for b, t in ((2, 4096), (2, 16384)) if D == 256 else ((2, 4096),):
        launch.reset_lowered()
        res = verify_delta_kernel(functools.partial(chunk_delta_rule, config=cfg), b, t, 2048 // D, D, D,
                                  dtype=torch.bfloat16, device="cuda", mode=mode, reference="chunk")
        print(f"D={D} T={t} {cfg.name} {mode}: " + " ".join(f"{k}={v:.2e}" for k, v in res.errors.items()))
        assert res.passed, res.errors
        assert any("+tma " in n for n in launch.noted_tilings()), launch.noted_tilings()
    cu = torch.tensor([0, 1000, 1001, 3500, 4096], device="cuda")
    outs = []
    for c in (base, cfg):
        inp = make_delta_inputs(1, 4096, 2048 // D, D, D, dtype=torch.bfloat16, device="cuda", seed=7,
                                requires_grad=mode == "fwdbwd", cu_seqlens=cu.tolist())
        o, ht = chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta, initial_state=inp.initial_state,
                                 output_final_state=True, cu_seqlens=cu, config=c)
        got = [o, ht]
        if mode == "fwdbwd":
            got += torch.autograd.grad((o.float() * inp.do.float()).sum() + ht.sum(),
                                       [inp.q, inp.k, inp.v, inp.beta, inp.initial_state])
        outs.append(got)
    for a, b in zip(*outs):
        assert torch.allclose(a.float(), b.float(), rtol=0, atol=0), (a.float() - b.float()).abs().max()


REFUSED_AT_D64 = ["c64-bk64-bv64-w8-s2-hbf16-wyf-os-m16-tma", "c64-bk32-bv64-w4-s2-hbf16-wyf-of-m16-tma"]
NEIGHBOURS_AT_D64 = ["c64-bk64-bv64-w4-s2-hbf16-wyf-os-m16-tma", "c128-bk64-bv64-w8-s2-hbf16-wyf-os-m16-tma",
                     "c64-bk64-bv64-w4-s2-hbf16-wyf-of-m16-tma"]


@pytest.mark.parametrize("name", REFUSED_AT_D64)
def test_variants_seen_wrong_at_d64_are_refused_on_sm90(name):
    """The tuner's two verification failures at D = 64 on an H200 (twelfth lease) are refused on sm_90 with
    the reason, before any kernel runs; elsewhere they must verify like any variant."""
    cfg = ChunkConfig.from_name(name)
    kernel = functools.partial(chunk_delta_rule, config=cfg)
    if torch.cuda.get_device_capability()[0] == 9:
        with pytest.raises(ValueError, match="config: .*returned wrong"):
            verify_delta_kernel(kernel, 8, 1024, 32, 64, 64, dtype=torch.bfloat16, device="cuda", reference="chunk")
    else:
        res = verify_delta_kernel(kernel, 8, 1024, 32, 64, 64, dtype=torch.bfloat16, device="cuda", reference="chunk")
        assert res.passed, res.errors


@pytest.mark.parametrize("name", NEIGHBOURS_AT_D64)
def test_neighbours_of_the_refused_variants_verify_at_d64(name):
    """At the tuner's D = 64 shape (B = 8, T = 1024, H = 32) the refused variants' neighbours (4 warps, chunk
    size 128, BK = the head dim) verify against float64, the guard's evidence that it is no wider than needed."""
    kernel = functools.partial(chunk_delta_rule, config=ChunkConfig.from_name(name))
    res = verify_delta_kernel(kernel, 8, 1024, 32, 64, 64, dtype=torch.bfloat16, device="cuda", reference="chunk")
    print(f"D=64 {name} errors: " + " ".join(f"{k}={v:.2e}" for k, v in res.errors.items()))
    assert res.passed, res.errors


@pytest.mark.parametrize("T, batch", [(16384, 2), (8192, 4), (4096, 8)])
def test_d64_forward_default_with_auto_tiling_against_float64(T, batch):
    """The forward-only default at D = 64 tiles its loop with ``auto`` (changes 35 and 39: BV = 32 at three stages
    where the programs at BV = 64 are fewer than three quarters of the SMs, so T = 16384 here and not T = 8192):
    verified against float64 at the compare's shapes (H = 32)."""
    cfg = ChunkConfig.default_for(64, 64, 64, "bf16", "fwd")
    assert cfg.rec == "auto"
    kernel = functools.partial(chunk_delta_rule, config=cfg)
    res = verify_delta_kernel(kernel, batch, T, 32, 64, 64, dtype=torch.bfloat16, device="cuda", mode="fwd",
                              reference="chunk")
    print(f"D=64 T={T} {cfg.name} forward errors: " + " ".join(f"{k}={v:.2e}" for k, v in res.errors.items()))
    assert res.passed, res.errors


def _shipped_here() -> list[dict]:
    """The shipped tuned configs for this GPU (none where no GPU is visible)."""
    import importlib.resources

    from dnprof.variants.db import read_export
    from dnprof.variants.selection import current_gpu

    gpu = current_gpu() if torch.cuda.is_available() else None
    text = (importlib.resources.files("dnprof") / "data" / "tuned_configs.json").read_text()
    return [e for e in read_export("tuned_configs.json", text=text)
            if gpu is not None and (e["gpu"], str(e["compute_capability"])) == gpu]


def test_every_shipped_config_for_this_gpu_at_its_streams_and_at_sixteen():
    """Each shipped config verifies against float64 at its own (sequence, head) streams (shorter sequences), and a
    call that names no config at 16 streams, where ``auto`` tiles differently, runs and verifies too (the shipped
    pick where the launch guard accepts it there, else the default)."""
    from dnprof.kernels.chunk import select_launchable
    from dnprof.variants.db import config_from_dict

    entries = _shipped_here()
    if not entries:
        pytest.skip("no shipped tuned config for this GPU")
    for e in entries:
        cfg = config_from_dict("chunk", e["config"])
        K, mode, shape = e["K"], e["mode"], e["shape"]
        with torch.set_grad_enabled(mode != "fwd"):
            res = verify_delta_kernel(functools.partial(chunk_delta_rule, config=cfg), shape["B"], 512, shape["H"],
                                      K, K, dtype=torch.bfloat16, device="cuda", mode=mode, reference="chunk")
        print(f"shipped {e['candidate']} {mode} B={shape['B']} H={shape['H']}: {res.errors}")
        assert res.passed, (e["candidate"], res.errors)
        H16 = 16 if shape["H"] >= 16 else shape["H"]
        B16 = max(1, 16 // H16)
        picked, source, _ = select_launchable(K, K, e["t_bucket"], torch.bfloat16, mode, B16 * H16, "cuda")
        with torch.set_grad_enabled(mode != "fwd"):  # a call picks its mode's config by whether grad is on
            res = verify_delta_kernel(chunk_delta_rule, B16, e["t_bucket"], H16, K, K, dtype=torch.bfloat16,
                                      device="cuda", mode=mode, reference="chunk")
        print(f"no config at {B16 * H16} streams, T={e['t_bucket']}: {picked.name} ({source}) {res.errors}")
        assert res.passed, (picked.name, res.errors)
