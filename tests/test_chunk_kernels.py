"""The chunkwise Triton kernels (forward and backward) against the float64 references.

On a machine without a GPU these run through the Triton interpreter (tests/conftest.py sets
TRITON_INTERPRET=1), so shapes stay small. bf16 runs too: dnprof.kernels.interpreter_compat makes
the interpreter's bf16 products and rounding match the GPU's (tests/gpu/test_chunk_gpu.py covers
bf16 at full size on the GPU).
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from dnprof.bench.equivalence import relative_error
from dnprof.bench.inputs import make_delta_inputs
from dnprof.bench.verify import verify_delta_kernel
from dnprof.kernels.chunk import chunk_delta_rule, select_config
from dnprof.reference import recurrent_delta_rule
from dnprof.variants.chunk_config import ChunkConfig


def _cfg(**kw) -> ChunkConfig:
    base = dict(chunk_size=16, BK=16, BV=16, num_warps=4, num_stages=1)
    base.update(kw)
    return ChunkConfig(**base)


# (config, B, T, H, K, V, tolerance): every variant family on fp32 inputs, all outputs and gradients.
VARIANTS = [
    (_cfg(), 2, 37, 2, 16, 32, 1e-5),
    (_cfg(chunk_size=32, BK=16, BV=32, fuse_wy=False), 1, 70, 2, 32, 32, 1e-5),  # 2 K slabs, split WY
    (_cfg(chunk_size=64, BK=16, BV=32, fuse_output=True), 1, 131, 1, 64, 32, 1e-5),  # 4 K slabs, fused output
    (_cfg(chunk_size=128, BK=32, BV=16), 1, 131, 2, 32, 16, 1e-5),
    (_cfg(chunk_size=32, BK=32, BV=32, state_dtype="bf16"), 1, 50, 2, 32, 32, 1e-2),  # bf16 stored states
    (_cfg(chunk_size=64, BK=16, BV=16, fuse_wy=False, fuse_output=True), 2, 1, 2, 16, 16, 1e-5),  # T = 1
    (_cfg(chunk_size=32, BK=16, BV=16, rec="bv32w4s2"), 2, 45, 2, 32, 32, 1e-5),  # serial kernels at their own BV
    (_cfg(chunk_size=64, BK=32, BV=16, rec="auto"), 2, 70, 2, 32, 48, 1e-5),  # auto, V = 48 padded to 64
    (_cfg(chunk_size=32, BK=16, BV=16, rec="bk64bv16w4s2"), 1, 70, 2, 64, 32, 1e-5),  # serial state in one slab
    (_cfg(chunk_size=32, BK=16, BV=16, rec="tbv16w4s2"), 2, 45, 2, 32, 48, 1e-5),  # transposed state, V padded
    (_cfg(chunk_size=16, BK=16, BV=16, fuse_output=True, rec="tbv32w4s2"), 1, 37, 2, 16, 32, 1e-5),  # ... output fused
    # ... with the W and Q products joined (fp32 inputs: W is fp32 like q), K padded
    (_cfg(chunk_size=16, BK=32, BV=16, fuse_output=True, dot_operands="input", rec="tjbv16w4s2"), 2, 45, 2, 24, 48,
     1e-5),
    # one output program per chunk walking its V blocks (V = 48 padded to 64: 4 blocks), 2 K slabs
    (_cfg(chunk_size=32, BK=16, BV=16, output_vloop=True), 2, 45, 2, 32, 48, 1e-5),
    # ... and the output kernel at its own tiling: one V tile for all of V, and two walked by one program
    (_cfg(chunk_size=16, BK=16, BV=16, output_tiling="bv64w8"), 1, 37, 2, 32, 48, 1e-5),
    (_cfg(chunk_size=16, BK=16, BV=16, output_vloop=True, output_tiling="bv32w4"), 1, 37, 2, 16, 48, 1e-5),
    # X applied in the forward loop (W and U never formed): transposed, output fused; slabs, 2 K slabs
    (_cfg(chunk_size=16, BK=32, BV=16, fuse_output=True, wy_in_loop=True, rec="tbv16w4s2"), 2, 45, 2, 24, 48, 1e-5),
    (_cfg(chunk_size=32, BK=16, BV=16, wy_in_loop=True), 1, 70, 2, 32, 32, 1e-5),
    (_cfg(chunk_size=64, BK=16, BV=16, fuse_output=True, wy_in_loop=True, rec="bv32w4s2"), 2, 70, 1, 64, 48, 1e-5),
    # the slab loops' tiles through tensor descriptors: 2 K slabs, V padded; 4 K slabs, output fused; K padded
    (_cfg(chunk_size=32, BK=16, BV=16, tma=True), 2, 45, 2, 32, 48, 1e-5),
    (_cfg(chunk_size=64, BK=16, BV=32, fuse_output=True, tma=True), 1, 131, 1, 64, 32, 1e-5),
    (_cfg(chunk_size=16, BK=16, BV=16, rec="bv32w4s2", tma=True), 2, 37, 2, 24, 32, 1e-5),
]


@pytest.mark.parametrize("cfg,B,T,H,K,V,tol", VARIANTS, ids=[f"{v[0].name}-T{v[2]}-K{v[4]}-V{v[5]}" for v in VARIANTS])
def test_variant_fp32_against_float64(device, cfg, B, T, H, K, V, tol):
    kernel = functools.partial(chunk_delta_rule, config=cfg)
    res = verify_delta_kernel(kernel, B, T, H, K, V, dtype=torch.float32, device=device, tolerance=tol,
                              reference="recurrent")
    assert set(res.errors) == {"o", "ht", "dq", "dk", "dv", "dbeta", "dh0"}
    assert res.passed, res.errors


@pytest.mark.parametrize("chunk_size", [16, 64])
def test_fp16_against_float64(device, chunk_size):
    kernel = functools.partial(chunk_delta_rule, chunk_size=chunk_size)
    res = verify_delta_kernel(kernel, 2, 45, 2, 32, 16, dtype=torch.float16, device=device, reference="recurrent")
    assert res.passed, res.errors


@pytest.mark.parametrize("cfg", [_cfg(chunk_size=32, BK=16, BV=16, dot_operands="input"),
                                 _cfg(chunk_size=64, BK=32, BV=16, dot_operands="input", fuse_output=True),
                                 _cfg(chunk_size=32, BK=16, BV=16, dot_operands="input", rec="tbv16w4s2"),
                                 _cfg(chunk_size=32, BK=32, BV=16, dot_operands="input", fuse_output=True,
                                      rec="tjbv16w4s2"),
                                 _cfg(chunk_size=32, BK=32, BV=16, dot_operands="input", wy_in_loop=True)],
                         ids=lambda c: c.name)
def test_16bit_dot_operands_fp16_against_float64(device, cfg):
    """Rounding the computed operands to fp16 stays within fp16's tolerance, and does change the result."""
    kernel = functools.partial(chunk_delta_rule, config=cfg)
    res = verify_delta_kernel(kernel, 1, 70, 2, 32, 16, dtype=torch.float16, device=device, reference="recurrent")
    assert res.passed, res.errors
    fp32_ops = dataclasses.replace(cfg, dot_operands="fp32", rec=cfg.rec.replace("tj", "t"))  # joining needs -m16
    exact = verify_delta_kernel(functools.partial(chunk_delta_rule, config=fp32_ops),
                                1, 70, 2, 32, 16, dtype=torch.float16, device=device, reference="recurrent")
    assert res.errors["o"] != exact.errors["o"]  # the 16-bit path really ran


@pytest.mark.parametrize("fuse_output", [False, True], ids=["os", "of"])
@pytest.mark.parametrize("chunk_size", [64, 128])
def test_bf16_default_family_against_float64(device, chunk_size, fuse_output):
    """The default variants for bf16 (16-bit X, W, U, Vn, dVn and states), every output and gradient."""
    cfg = dataclasses.replace(ChunkConfig.default_for(32, 32, chunk_size, torch.bfloat16), fuse_output=fuse_output)
    assert cfg.dot_operands == "input" and cfg.state_dtype == "bf16"
    kernel = functools.partial(chunk_delta_rule, config=cfg)
    res = verify_delta_kernel(kernel, 1, chunk_size + 37, 2, 32, 32, dtype=torch.bfloat16, device=device,
                              reference="recurrent")
    assert set(res.errors) == {"o", "ht", "dq", "dk", "dv", "dbeta", "dh0"}
    assert res.passed, res.errors
    assert max(res.errors.values()) > 1e-4  # bf16 rounding really happened (an fp32 path would be ~1e-6)


def test_16bit_dot_operands_are_ignored_for_fp32_inputs(device):
    inp = make_delta_inputs(1, 40, 1, 16, 16, dtype=torch.float32, device=device)
    outs = [chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta, initial_state=inp.initial_state,
                             config=_cfg(dot_operands=d))[0] for d in ("fp32", "input")]
    assert torch.equal(outs[0], outs[1])


def test_l2norm_in_kernel(device):
    kernel = functools.partial(chunk_delta_rule, chunk_size=16)
    res = verify_delta_kernel(kernel, 1, 33, 2, 16, 16, dtype=torch.float32, device=device,
                              use_qk_l2norm_in_kernel=True, tolerance=1e-5, reference="recurrent")
    assert res.passed, res.errors


@pytest.mark.parametrize("cfg", [_cfg(), _cfg(rec="tbv16w4s2"),
                                 _cfg(rec="tjbv16w4s2", fuse_output=True, dot_operands="input"),
                                 _cfg(rec="tbv16w4s2", fuse_output=True, wy_in_loop=True)],
                         ids=["slabs", "transposed", "joined", "x-in-loop"])
def test_varlen_against_float64(device, cfg):
    kernel = functools.partial(chunk_delta_rule, config=cfg)
    res = verify_delta_kernel(kernel, 1, 67, 2, 16, 16, dtype=torch.float32, device=device,
                              cu_seqlens=[0, 13, 50, 67], tolerance=1e-5, reference="recurrent")
    assert res.passed, res.errors


@pytest.mark.parametrize("config", [None, ChunkConfig(chunk_size=16, BK=32, BV=16, rec="tbv16w4s2")],
                         ids=["default", "transposed"])
def test_head_dim_100_is_padded(device, config):
    kernel = functools.partial(chunk_delta_rule, chunk_size=16, config=config)
    res = verify_delta_kernel(kernel, 1, 20, 1, 100, 48, dtype=torch.float32, device=device, tolerance=1e-5,
                              reference="recurrent")
    assert res.passed, res.errors


def _fwd(inp, **kw):
    with torch.no_grad():
        return chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta, initial_state=inp.initial_state,
                                output_final_state=True, **kw)


def test_chunk_sizes_agree_with_each_other_and_recurrent(device):
    inp = make_delta_inputs(1, 131, 2, 32, 32, dtype=torch.float32, device=device, seed=3)
    ref_o, ref_ht = recurrent_delta_rule(inp.q, inp.k, inp.v, inp.beta, initial_state=inp.initial_state,
                                         output_final_state=True)
    outs = {c: _fwd(inp, chunk_size=c) for c in (16, 32, 64, 128)}
    for c, (o, ht) in outs.items():
        assert relative_error(o, ref_o) < 1e-5, c
        assert relative_error(ht, ref_ht) < 1e-5, c
        assert relative_error(o, outs[16][0].double()) < 1e-5, c


def test_fused_output_no_grad_matches_grad_path(device):
    inp = make_delta_inputs(1, 40, 2, 16, 16, dtype=torch.float32, device=device, seed=4)
    cfg = _cfg(fuse_output=True)
    o1, ht1 = _fwd(inp, config=cfg)  # stores no per-chunk state
    q = inp.q.clone().requires_grad_(True)
    o2, ht2 = chunk_delta_rule(q, inp.k, inp.v, inp.beta, initial_state=inp.initial_state,
                               output_final_state=True, config=cfg)
    assert torch.equal(o1, o2.detach()) and torch.equal(ht1, ht2.detach())


def test_auto_holds_a_fused_forwards_state_transposed_only_without_a_backward(device, monkeypatch):
    """``rec="auto"`` with programs enough (one SM here) runs the transposed loop for a no-grad fused forward,
    and the slab loop when the forward stores states for a backward; both match float64."""
    import dnprof.kernels.chunk as ck
    from dnprof.providers.dnprof_kernels import DnprofChunkProvider

    monkeypatch.setattr(ck, "sm_count", lambda dev: 1)
    inp = make_delta_inputs(1, 70, 1, 128, 128, dtype=torch.float32, device=device, seed=8)
    ref_o, ref_ht = recurrent_delta_rule(inp.q.double(), inp.k.double(), inp.v.double(), inp.beta.double(),
                                         initial_state=inp.initial_state.double(), output_final_state=True)
    cfg = ChunkConfig(chunk_size=64, BK=64, BV=64, fuse_output=True, rec="auto")
    provider = DnprofChunkProvider()
    provider.begin_run()
    o, ht = _fwd(inp, config=cfg)
    assert provider.run_notes()["serial_tilings"] == ["fwd_state_t_kernel bk128 bv64 w4 s2"]
    assert relative_error(o, ref_o) < 1e-5 and relative_error(ht, ref_ht) < 1e-5
    provider.begin_run()
    q = inp.q.clone().requires_grad_(True)
    o2, _ = chunk_delta_rule(q, inp.k, inp.v, inp.beta, initial_state=inp.initial_state, config=cfg)
    assert provider.run_notes()["serial_tilings"] == ["fwd_state_kernel bk128 bv64 w4 s3"]
    assert relative_error(o2.detach(), ref_o) < 1e-5


@pytest.mark.parametrize("change,form", [(dict(rec="tjbv32w4s2"), "+wq"), (dict(wy_in_loop=True), "+x")],
                         ids=["joined", "x-in-loop"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_transposed_forward_forms_match_the_plain_one_without_a_backward(device, dtype, change, form):
    """``tj`` (W and Q read as one tile) and ``wy_in_loop`` (X applied in the loop) give the ``t`` forward's
    output and final state with no states stored (the inference path they are for), and agree with
    float64; the run notes name the form that ran."""
    from dnprof.providers.dnprof_kernels import DnprofChunkProvider

    inp = make_delta_inputs(2, 45, 2, 32, 48, dtype=dtype, device=device, seed=9)
    ref_o, ref_ht = recurrent_delta_rule(inp.q.double(), inp.k.double(), inp.v.double(), inp.beta.double(),
                                         initial_state=inp.initial_state.double(), output_final_state=True)
    base = _cfg(chunk_size=16, BK=32, BV=16, fuse_output=True, dot_operands="input", rec="tbv32w4s2")
    provider = DnprofChunkProvider()
    provider.begin_run()
    o_j, ht_j = _fwd(inp, config=dataclasses.replace(base, **change))
    assert provider.run_notes()["serial_tilings"] == [f"fwd_state_t_kernel{form} bk32 bv32 w4 s2"]
    o_t, ht_t = _fwd(inp, config=base)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert relative_error(o_j, ref_o) < tol and relative_error(ht_j, ref_ht) < tol
    # tj does the same arithmetic as t; X in the loop rounds elsewhere (an fp32 X, no 16-bit W and U)
    agree = tol if "wy_in_loop" in change else tol / 10
    assert relative_error(o_j, o_t.double()) < agree and relative_error(ht_j, ht_t.double()) < agree


def test_state_passing_two_halves_equal_one_run(device):
    inp = make_delta_inputs(2, 64, 2, 16, 16, dtype=torch.float32, device=device, seed=5)
    o, ht = _fwd(inp, chunk_size=16)
    cut = 40
    with torch.no_grad():
        o1, h1 = chunk_delta_rule(inp.q[:, :cut], inp.k[:, :cut], inp.v[:, :cut], inp.beta[:, :cut],
                                  initial_state=inp.initial_state, output_final_state=True, chunk_size=16)
        o2, h2 = chunk_delta_rule(inp.q[:, cut:], inp.k[:, cut:], inp.v[:, cut:], inp.beta[:, cut:],
                                  initial_state=h1, output_final_state=True, chunk_size=16)
    assert relative_error(torch.cat([o1, o2], 1), o) < 1e-5
    assert relative_error(h2, ht) < 1e-5


def test_varlen_equals_separate_runs(device):
    cu = [0, 5, 38, 60]
    inp = make_delta_inputs(1, 60, 2, 16, 32, dtype=torch.float32, device=device, seed=6, cu_seqlens=cu)
    with torch.no_grad():
        o, ht = chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta, initial_state=inp.initial_state,
                                 output_final_state=True, cu_seqlens=inp.cu_seqlens, chunk_size=16)
        for n, (s, e) in enumerate(zip(cu[:-1], cu[1:])):
            o_n, ht_n = chunk_delta_rule(inp.q[:, s:e], inp.k[:, s:e], inp.v[:, s:e], inp.beta[:, s:e],
                                         initial_state=inp.initial_state[n:n + 1], output_final_state=True,
                                         chunk_size=16)
            assert relative_error(o[:, s:e], o_n) < 1e-6
            assert relative_error(ht[n:n + 1], ht_n) < 1e-6


def test_without_initial_or_final_state(device):
    inp = make_delta_inputs(1, 30, 2, 16, 16, dtype=torch.float32, device=device, seed=7, initial_state=False,
                            requires_grad=True)
    o, ht = chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta, chunk_size=16)
    assert ht is None and o.dtype == torch.float32 and o.shape == (1, 30, 2, 16)
    (o * inp.do).sum().backward()
    leaves = [t.detach().double().requires_grad_(True) for t in inp.leaves()]
    ro, _ = recurrent_delta_rule(*leaves)
    (ro * inp.do.double()).sum().backward()
    for got, want in zip(inp.leaves(), leaves):
        assert relative_error(got.grad, want.grad) < 1e-5


def test_fp16_output_dtype_and_fp32_state(device):
    inp = make_delta_inputs(1, 20, 1, 16, 16, dtype=torch.float16, device=device)
    o, ht = _fwd(inp, chunk_size=16)
    assert o.dtype == torch.float16 and ht.dtype == torch.float32


def test_select_config_without_a_gpu_is_the_default():
    cfg = select_config(128, 64, 4096, torch.bfloat16, "fwdbwd")
    assert cfg == ChunkConfig.default_for(128, 64, dtype=torch.bfloat16)
    assert (cfg.dot_operands, cfg.state_dtype) == ("input", "bf16")  # 16-bit inputs: the 16-bit family
    assert cfg.fuse_output  # at C = 64, D <= 128 the output is fused in fwd+bwd too (states still stored)
    assert not select_config(256, 256, 4096, torch.bfloat16, "fwdbwd").fuse_output
    assert not select_config(128, 128, 4096, torch.bfloat16, "fwdbwd", chunk_size=128).fuse_output
    fwd = select_config(128, 64, 4096, torch.bfloat16, "fwd")
    assert fwd == ChunkConfig.default_for(128, 64, dtype=torch.bfloat16, mode="fwd")
    assert fwd.fuse_output and fwd.dot_operands == "input"  # a 16-bit forward at D <= 128: output in the state loop
    assert not select_config(256, 256, 4096, torch.bfloat16, "fwd").fuse_output  # at D = 256 it lost
    assert select_config(128, 64, 4096, torch.float32, "fwd").dot_operands == "fp32"
    assert select_config(64, 64, 4096, torch.bfloat16, "fwd", chunk_size=128).chunk_size == 128


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(beta_shape=(1, 8, 3)), "beta"),
        (dict(chunk_size=48), "chunk_size"),
        (dict(config="c64"), "config"),
        (dict(config=ChunkConfig(chunk_size=16, BK=64, BV=16)), "config"),
        (dict(h0_shape=(2, 2, 16, 16)), "initial_state"),
        (dict(scale=-1.0), "scale"),
        (dict(k_dtype=torch.float64), "k"),
    ],
)
def test_bad_input_names_the_argument(device, kwargs, name):
    inp = make_delta_inputs(1, 8, 2, 16, 16, dtype=torch.float32, device=device)
    beta = inp.beta
    if "beta_shape" in kwargs:
        beta = torch.rand(*kwargs.pop("beta_shape"), device=device)
    h0 = inp.initial_state
    if "h0_shape" in kwargs:
        h0 = torch.zeros(*kwargs.pop("h0_shape"), device=device)
    k = inp.k
    if "k_dtype" in kwargs:
        k = k.to(kwargs.pop("k_dtype"))
    with pytest.raises(ValueError, match=name):
        chunk_delta_rule(inp.q, k, inp.v, beta, initial_state=h0, **kwargs)


def test_head_dim_above_256_is_rejected(device):
    inp = make_delta_inputs(1, 4, 1, 16, 16, dtype=torch.float32, device=device)
    v = torch.randn(1, 4, 1, 300, device=device)
    with pytest.raises(ValueError, match="head dim"):
        chunk_delta_rule(inp.q, inp.k, v, inp.beta)


def test_wy_in_loop_forms_no_w_in_the_backward_either(device, monkeypatch):
    """With ``wy_in_loop`` both serial kernels apply X themselves (their launches are noted ``+x``), and the
    backward never recomputes W; the gradients match float64."""
    import dnprof.kernels.chunk as ck
    from dnprof.kernels import launch

    monkeypatch.setattr(ck, "wy_recompute_w", lambda *a, **k: pytest.fail("W recomputed under wy_in_loop"))
    launch.reset_lowered()
    cfg = _cfg(chunk_size=16, BK=16, BV=16, wy_in_loop=True)
    res = verify_delta_kernel(functools.partial(chunk_delta_rule, config=cfg), 1, 40, 2, 32, 32, dtype=torch.float32,
                              device=device, tolerance=1e-5, reference="recurrent")
    assert res.passed, res.errors
    assert launch.noted_tilings() == ["bwd_dh_kernel+x bk16 bv16 w4 s1", "fwd_state_kernel+x bk16 bv16 w4 s1"]


def test_wy_in_loop_reads_no_x_block_past_a_shorter_sequence(device, monkeypatch):
    """The serial loops run to the longest sequence's chunk count; on a shorter sequence's extra steps the X
    block they would read belongs to another sequence or lies past the end of X. Whatever is there (inf
    here, right after X) must not reach the result: those reads are masked."""
    import dnprof.kernels.chunk as ck

    real = ck.wy_forward

    def x_with_inf_after(*args, **kwargs):
        X, W, U = real(*args, **kwargs)
        padded = torch.full((X.shape[0] + 4,) + tuple(X.shape[1:]), float("inf"), dtype=X.dtype, device=X.device)
        padded[: X.shape[0]] = X
        return padded[: X.shape[0]], W, U

    monkeypatch.setattr(ck, "wy_forward", x_with_inf_after)
    for rec in ("main", "tbv16w4s2"):
        cfg = _cfg(rec=rec, fuse_output=True, wy_in_loop=True)
        res = verify_delta_kernel(functools.partial(chunk_delta_rule, config=cfg), 1, 67, 2, 16, 16,
                                  dtype=torch.float32, device=device, cu_seqlens=[0, 13, 50, 67], tolerance=1e-5,
                                  reference="recurrent")
        assert res.passed, (rec, res.errors)


@pytest.mark.parametrize("chunk_size,output_chunk,BK,BV,vloop", [(16, 32, 16, 16, False), (16, 64, 32, 16, False),
                                                               (32, 64, 16, 32, False), (16, 32, 16, 16, True)])
def test_output_chunk_forward_matches_float64_and_stores_fewer_states(device, monkeypatch, chunk_size, output_chunk,
                                                                      BK, BV, vloop):
    """A no-grad forward whose output kernel spans ``output_chunk`` tokens (the loop storing only those
    chunks' first states) agrees with float64 and with the per-chunk output kernel, across packed
    sequences whose lengths are not multiples of either chunk; with a backward the field is moot."""
    import dnprof.kernels.chunk as ck

    cu = [0, 37, 117, 133, 134]
    inp = make_delta_inputs(1, 134, 2, 32, 32, dtype=torch.float32, device=device, seed=11, cu_seqlens=cu)
    refs = [recurrent_delta_rule(inp.q[:, s:e].double(), inp.k[:, s:e].double(), inp.v[:, s:e].double(),
                                 inp.beta[:, s:e].double(), initial_state=inp.initial_state[n:n + 1].double(),
                                 output_final_state=True) for n, (s, e) in enumerate(zip(cu[:-1], cu[1:]))]
    ref_o, ref_ht = torch.cat([r[0] for r in refs], 1), torch.cat([r[1] for r in refs], 0)
    base = _cfg(chunk_size=chunk_size, BK=BK, BV=BV)
    wide = dataclasses.replace(base, output_chunk=output_chunk, output_vloop=vloop)
    assert wide.name.endswith(f"-os{output_chunk}{'v' if vloop else ''}") and ChunkConfig.from_name(wide.name) == wide
    sizes = []
    real_empty = torch.empty

    def spy_empty(*shape, **kw):  # the per-chunk state buffer is the only 4-d one with K x V trailing
        out = real_empty(*shape, **kw)
        if len(shape) == 4 and shape[2:] == (32, 32) and kw.get("dtype") == torch.float32 and shape[0] != 4:
            sizes.append(shape[0])
        return out

    monkeypatch.setattr(ck.torch, "empty", spy_empty)
    o_w, ht_w = _fwd(inp, config=wide, cu_seqlens=inp.cu_seqlens)
    slots = sizes[-1]
    o_b, ht_b = _fwd(inp, config=base, cu_seqlens=inp.cu_seqlens)
    monkeypatch.undo()
    lengths = [e - s for s, e in zip(cu[:-1], cu[1:])]
    assert slots == sum(-(-n // output_chunk) for n in lengths)
    assert sizes[-1] == sum(-(-n // chunk_size) for n in lengths)
    assert relative_error(o_w, ref_o) < 1e-5 and relative_error(ht_w, ref_ht) < 1e-5
    assert relative_error(o_w, o_b.double()) < 1e-5 and torch.equal(ht_w, ht_b)
    q = inp.q.clone().requires_grad_(True)
    o_g, _ = chunk_delta_rule(q, inp.k, inp.v, inp.beta, initial_state=inp.initial_state, cu_seqlens=inp.cu_seqlens,
                              config=wide)
    assert relative_error(o_g.detach(), ref_o) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("fuse_output", [False, True], ids=["os", "of"])
def test_tma_loads_equal_per_thread_loads(device, dtype, fuse_output):
    """Tensor-descriptor loads read exactly what the masked per-thread loads read, at sequence ends that cut
    a chunk and past a padded head dim (K = 24 of 32): outputs and every gradient equal bit for bit, and
    the run notes name the ``+tma`` launches of both serial loops."""
    from dnprof.kernels import launch

    cu = [0, 13, 50, 67]
    grads = []
    for tma in (False, True):
        inp = make_delta_inputs(1, 67, 2, 24, 48, dtype=dtype, device=device, seed=4, requires_grad=True,
                                cu_seqlens=cu)
        launch.reset_lowered()
        cfg = _cfg(chunk_size=16, BK=16, BV=16, fuse_output=fuse_output, dot_operands="input", tma=tma)
        o, ht = chunk_delta_rule(inp.q, inp.k, inp.v, inp.beta, initial_state=inp.initial_state,
                                 output_final_state=True, cu_seqlens=torch.tensor(cu, device=device), config=cfg)
        g = torch.autograd.grad((o * inp.do).sum() + ht.sum(), [inp.q, inp.k, inp.v, inp.beta, inp.initial_state])
        grads.append((o, ht, *g))
        forms = [t.split(" ")[0] for t in launch.noted_tilings()]
        assert forms == (["bwd_dh_kernel+tma", "fwd_state_kernel+tma"] if tma else ["bwd_dh_kernel", "fwd_state_kernel"])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_tma_is_left_out_where_the_copy_engine_cannot_read(device):
    """A row of K = 36 bf16 values (72 bytes) or a base address off a 16-byte boundary cannot be read by the
    copy engine: those launches load per thread (no ``+tma`` in the notes) and compute the same result."""
    from dnprof.kernels import launch
    from dnprof.kernels.chunk import tma_ready

    cfg = _cfg(chunk_size=16, BK=16, BV=16, dot_operands="input", tma=True)
    inp = make_delta_inputs(1, 40, 2, 36, 32, dtype=torch.bfloat16, device=device, seed=2)
    assert not tma_ready(inp.q.reshape(40, 2, 36))
    launch.reset_lowered()
    o_odd, _ = _fwd(inp, config=cfg)
    assert [t.split(" ")[0] for t in launch.noted_tilings()] == ["fwd_state_kernel"]
    assert torch.equal(o_odd, _fwd(inp, config=dataclasses.replace(cfg, tma=False))[0])
    inp = make_delta_inputs(1, 40, 2, 32, 32, dtype=torch.bfloat16, device=device, seed=2)
    shifted = torch.empty(inp.q.numel() + 1, dtype=inp.q.dtype, device=device)[1:].view_as(inp.q)
    shifted.copy_(inp.q)
    assert shifted.data_ptr() % 16 and not tma_ready(shifted.reshape(40, 2, 32)) and tma_ready(inp.q.reshape(40, 2, 32))
    launch.reset_lowered()
    with torch.no_grad():
        o_shift, _ = chunk_delta_rule(shifted, inp.k, inp.v, inp.beta, initial_state=inp.initial_state, config=cfg)
    assert [t.split(" ")[0] for t in launch.noted_tilings()] == ["fwd_state_kernel"]
    assert torch.equal(o_shift, _fwd(inp, config=cfg)[0])


@pytest.mark.parametrize("grad", [False, True])
def test_a_forward_with_its_output_apart_frees_w_and_u_before_it_allocates_the_output(device, monkeypatch, grad):
    """With no backward to follow, W and U are gone when the output launch runs (its peak is the larger of
    W, U, states, Vn and states, Vn, o, not all five), and the output still matches float64; with a backward,
    W and U stay (the backward reads them)."""
    import weakref

    import dnprof.kernels.chunk as ck

    made, alive_at_output = [], []
    wy_forward, launch = ck.wy_forward, ck.launch

    def tracked_wy(*args, **kwargs):
        X, W, U = wy_forward(*args, **kwargs)
        made.extend(weakref.ref(t) for t in (W, U))
        return X, W, U

    def tracked_launch(kernel, *args, **kwargs):
        if kernel is ck.fwd_output_kernel:
            alive_at_output.append([ref() is not None for ref in made])
        return launch(kernel, *args, **kwargs)

    monkeypatch.setattr(ck, "wy_forward", tracked_wy)
    monkeypatch.setattr(ck, "launch", tracked_launch)
    inp = make_delta_inputs(2, 45, 2, 32, 32, dtype=torch.float32, device=device, seed=7)
    cfg = _cfg(chunk_size=16, fuse_output=False, state_dtype="fp32")
    q = inp.q.clone().requires_grad_(grad)
    o, ht = chunk_delta_rule(q, inp.k, inp.v, inp.beta, initial_state=inp.initial_state, output_final_state=True,
                             config=cfg)
    assert alive_at_output == [[grad, grad]]
    ref_o, ref_ht = recurrent_delta_rule(*(t.double() for t in (inp.q, inp.k, inp.v, inp.beta)),
                                         initial_state=inp.initial_state.double(), output_final_state=True)
    assert relative_error(o.detach(), ref_o) < 1e-5 and relative_error(ht.detach(), ref_ht) < 1e-5
