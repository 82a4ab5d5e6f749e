"""Provider registry, availability reasons, input builders, checks and the one-task helper (CPU)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from dnprof import providers as registry
from dnprof.bench.timing import deltanet_chunk_flops
from dnprof.providers import Shape, get_provider, parse_providers, run_task
from dnprof.providers.attention import VERIFY_SCORE_ELEMENTS
from dnprof.providers.base import DEFAULT_VERIFY_SEQ_LEN, VERIFY_TOKENS, Resolved
from dnprof.providers.deltanet import H100_CEILINGS, DeltaNetProvider, deltanet_min_bytes, deltanet_roofline_ms
from dnprof.providers.fla import INSTALL_HINT
from dnprof.providers.gla import GLAProvider, gla_reference_checkpointed
from dnprof.providers.task import TaskSettings, classify_exception
from dnprof.reference import gla_recurrent

TINY = Shape(B=1, T=32, H=2, K=16, V=16, dtype=torch.float32, device="cpu")
FAST = TaskSettings(cpu_repeats=1)
REQUIRED = ("dnprof-chunk", "dnprof-recurrent", "torch-chunk", "flash-attn", "cudnn-attn", "flash-attn-pkg",
            "fla-gla", "fla-deltanet", "fla-recurrent", "sdpa-math")


def test_registry_names_and_lookup():
    names = registry.provider_names()
    for name in REQUIRED:
        assert name in names
        p = get_provider(name)
        assert p.name == name and p.computes in ("deltanet", "attention", "gla") and p.description
    assert get_provider("fla-gla").computes == "gla" and get_provider("flash-attn").computes == "attention"
    with pytest.raises(registry.UnknownProviderError, match="unknown provider 'nope'.*torch-chunk"):
        get_provider("nope")


def test_named_chunk_variants():
    p = get_provider("dnprof-chunk-c128")
    assert p.name == "dnprof-chunk-c128" and p.default_devices == ()
    for bad in ("dnprof-chunk-c100", "dnprof-chunk-fast"):
        with pytest.raises(ValueError, match="unknown provider"):
            get_provider(bad)


def test_named_variant_resolves_to_that_chunk_size():
    pytest.importorskip("dnprof.variants.chunk_config")
    r = get_provider("dnprof-chunk-c128")
    cfg, source = r.config_for(TINY, "fwd")
    assert cfg.chunk_size == 128 and source in ("tuned", "shipped", "default")
    full = get_provider("dnprof-chunk-c64-bk16-bv16-w4-s2-hfp32-wyf-os")
    cfg, source = full.config_for(TINY, "fwdbwd")
    assert cfg.name == "c64-bk16-bv16-w4-s2-hfp32-wyf-os" and source == "explicit"


def test_parse_providers_lists_and_defaults():
    got = parse_providers("torch-chunk, sdpa-math,torch-chunk", "cpu")
    assert [p.name for p in got] == ["torch-chunk", "sdpa-math"]
    defaults = [p.name for p in parse_providers(None, "cpu")]
    assert "torch-chunk" in defaults and "sdpa-math" in defaults
    assert not {"flash-attn", "fla-deltanet", "fla-gla", "cudnn-attn"} & set(defaults)
    with pytest.raises(ValueError, match="unknown provider"):
        parse_providers("torch-chunk,bogus", "cpu")


@pytest.mark.skipif(importlib.util.find_spec("fla") is not None, reason="fla-core is installed here")
def test_fla_unavailable_with_install_hint():
    for name in ("fla-deltanet", "fla-recurrent", "fla-gla"):
        for device in ("cuda", "cpu"):
            assert get_provider(name).unavailable_reason(device) == INSTALL_HINT
    assert "pip install 'dnprof[baselines]'" in INSTALL_HINT


def test_gpu_only_providers_say_so_on_cpu():
    for name in ("flash-attn", "cudnn-attn"):
        reason = get_provider(name).unavailable_reason("cpu")
        assert reason is not None and "CUDA GPU" in reason
    if not torch.cuda.is_available():
        assert "CUDA GPU" in get_provider("torch-chunk").unavailable_reason("cuda")
    if importlib.util.find_spec("flash_attn") is None:
        assert "not installed" in get_provider("flash-attn-pkg").unavailable_reason("cuda")
    assert get_provider("torch-chunk").unavailable_reason("cpu") is None
    assert get_provider("sdpa-math").unavailable_reason("cpu") is None


def test_dnprof_kernels_on_cpu_need_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    for name in ("dnprof-chunk", "dnprof-recurrent"):
        reason = get_provider(name).unavailable_reason("cpu")
        assert reason is not None and "TRITON_INTERPRET=1" in reason


def test_flash_attention_rejects_fp32():
    assert "fp16 or bf16" in get_provider("flash-attn").shape_problem(TINY)
    assert get_provider("flash-attn").shape_problem(TINY.replace(dtype=torch.bfloat16)) is None


@pytest.mark.parametrize("name", ["torch-chunk", "sdpa-math", "fla-gla"])
def test_input_builders_follow_the_rules(name):
    p = get_provider(name)
    shape = Shape(B=2, T=24, H=3, K=8, V=16, dtype=torch.float32, device="cpu")
    inp = p.make_inputs(shape, seed=3, requires_grad=True)
    q, k, v = inp.args["q"], inp.args["k"], inp.args["v"]
    assert q.shape == (2, 24, 3, 8) and k.shape == (2, 24, 3, 8) and v.shape == (2, 24, 3, 16)
    for t in inp.args.values():
        assert (t != 0).all() and t.dtype == torch.float32 and t.requires_grad
    torch.testing.assert_close(k.norm(dim=-1), torch.ones(2, 24, 3), atol=1e-5, rtol=0)
    assert inp.grad_outputs[0].shape == (2, 24, 3, 16) and (inp.grad_outputs[0] != 0).all()
    if p.computes == "deltanet":
        beta = inp.args["beta"]
        assert beta.shape == (2, 24, 3) and (beta > 0).all() and (beta < 1).all()
    if p.computes == "gla":
        g = inp.args["g"]
        assert g.shape == (2, 24, 3, 8) and (g < 0).all()
    # same seed, same draws; another seed, other draws
    again = p.make_inputs(shape, seed=3)
    assert torch.equal(again.args["q"], q.detach()) and not torch.equal(p.make_inputs(shape, seed=4).args["q"], q)


def test_verify_shape_reductions():
    long = Shape(B=2, T=16384, H=16, K=128, V=128)
    v = get_provider("torch-chunk").verify_shape(long)
    assert v.T == DEFAULT_VERIFY_SEQ_LEN and v.B == 2
    v = get_provider("torch-chunk").verify_shape(Shape(B=16, T=2048, H=16, K=128, V=128), max_T=1024)
    assert v.T == 1024 and v.B == min(16, VERIFY_TOKENS // 1024)
    a = get_provider("flash-attn").verify_shape(Shape(B=8, T=4096, H=16, K=128, V=128))
    assert a.T == 4096 and a.B == 1 and a.B * a.H * a.T**2 <= max(VERIFY_SCORE_ELEMENTS, a.H * a.T**2)


def test_dnprof_chunk_verifies_every_sequence_of_the_timed_batch():
    """Its serial kernels tile by sequences x heads (rec="auto"), so verification shortens T, never B."""
    p = get_provider("dnprof-chunk")
    v = p.verify_shape(Shape(B=8, T=4096, H=16, K=128, V=128))
    assert (v.B, v.T) == (8, VERIFY_TOKENS // 8)
    v = p.verify_shape(Shape(B=2, T=16384, H=16, K=128, V=128))
    assert (v.B, v.T) == (2, DEFAULT_VERIFY_SEQ_LEN)
    assert p.verify_shape(Shape(B=4, T=512, H=16, K=128, V=128), max_T=256).T == 256


def test_roofline_matches_the_guide_floor():
    shape = Shape(B=8, T=4096, H=16, K=128, V=128)
    assert deltanet_min_bytes(shape, "fwd") == pytest.approx(0.54e9, rel=0.02)
    assert deltanet_roofline_ms(shape, "fwd") == pytest.approx(0.18, rel=0.03)  # bandwidth-bound
    flops = deltanet_chunk_flops(8, 4096, 16, 128, 128, 64, "fwdbwd")
    assert deltanet_roofline_ms(shape, "fwdbwd") >= flops / H100_CEILINGS.flops_per_s * 1e3
    assert get_provider("torch-chunk").roofline_ms(TINY, "fwd") is None  # CPU rows carry no H100 floor
    assert get_provider("flash-attn").roofline_ms(shape, "fwd") is None


def test_classify_exception():
    assert classify_exception(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried"))[0] == "oom"
    assert classify_exception(RuntimeError("CUDA error: out of memory"))[0] == "oom"

    class CompilationError(Exception):
        pass

    class OutOfResources(Exception):
        pass

    assert classify_exception(CompilationError("at 3:4: bad"))[0] == "compile-error"
    assert classify_exception(OutOfResources("out of resource: shared memory"))[0] == "compile-error"
    try:
        try:
            raise OutOfResources("smem")
        except OutOfResources as inner:
            raise RuntimeError("launch failed") from inner
    except RuntimeError as outer:
        assert classify_exception(outer)[0] == "compile-error"
    status, message = classify_exception(ValueError("K: head dim 300 is too large\nmore"))
    assert status == "error" and message == "ValueError: K: head dim 300 is too large"


def test_fwdbwd_callable_returns_grads_and_never_accumulates():
    p = get_provider("torch-chunk")
    resolved = p.resolve(TINY, "fwdbwd")
    fn = p.build_callable(TINY, "fwdbwd", resolved)
    g1 = fn()
    g2 = fn()
    assert len(g1) == 4 and all(g is not None and (g != 0).any() for g in g1)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    fwd = p.build_callable(TINY, "fwd", resolved)
    (o,) = fwd()
    assert o.shape == (1, 32, 2, 16) and not o.requires_grad


def test_attention_check_through_sdpa_math():
    p = get_provider("sdpa-math")
    res = p.verify(TINY, "fwdbwd", p.resolve(TINY, "fwdbwd"))
    assert res.passed and set(res.errors) == {"o", "dq", "dk", "dv"} and res.max_error < 1e-5


def test_gla_checkpointed_reference_equals_plain():
    p = GLAProvider("x", "x", loader=lambda: None, devices=("cpu",))
    inp = p.make_inputs(TINY.replace(T=40), seed=1)
    a = inp.args
    h0 = torch.randn(1, 2, 16, 16)
    o1, h1 = gla_reference_checkpointed(a["q"], a["k"], a["v"], a["g"], h0, segment=16)
    o2, h2 = gla_recurrent(a["q"], a["k"], a["v"], a["g"], initial_state=h0, output_final_state=True)
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(h1, h2)


def _fp32_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False):
    o, h = gla_recurrent(q, k, v, g, scale=scale, initial_state=initial_state,
                         output_final_state=output_final_state, dtype=torch.float32)
    return o, h


def test_gla_check_passes_a_right_kernel_and_fails_a_wrong_one():
    good = GLAProvider("fake-gla", "gla in fp32", loader=lambda: _fp32_gla, devices=("cpu",))
    res = good.verify(TINY, "fwdbwd", good.resolve(TINY, "fwdbwd"))
    assert res.passed and set(res.errors) == {"o", "ht", "dq", "dk", "dv", "dg", "dh0"}

    def no_decay(q, k, v, g, **kw):
        return _fp32_gla(q, k, v, torch.zeros_like(g) + 0 * g, **kw)

    bad = GLAProvider("bad-gla", "ignores the gate", loader=lambda: no_decay, devices=("cpu",))
    res = bad.verify(TINY, "fwd", bad.resolve(TINY, "fwd"))
    assert not res.passed and "o" in res.failed


def test_run_task_helper_returns_a_row():
    row = run_task("torch-chunk", TINY, "fwdbwd", FAST)
    assert row.status == "ok" and row.ms > 0 and row.tokens_per_s > 0 and row.tflops > 0
    assert row.verify_T == 32 and row.errors["dbeta"] < row.tolerance and row.device == "cpu"
    assert row.variant == "c64" and row.extra["compute_dtype"] == "float32"
    row = run_task(get_provider("flash-attn"), TINY, "fwd", FAST)
    assert row.status == "unavailable" and row.ms is None and row.message


def test_run_task_reduced_verification_is_recorded():
    row = run_task("torch-chunk", TINY.replace(T=48), "fwd", TaskSettings(cpu_repeats=1, verify_seq_len=16))
    assert row.status == "ok" and row.T == 48 and row.verify_T == 16


def test_deltanet_provider_records_resolved_variant():
    def kernel(q, k, v, beta, **kw):
        from dnprof.providers.torch_ref import torch_chunk_delta_rule

        return torch_chunk_delta_rule(q, k, v, beta, **kw)

    class Named(DeltaNetProvider):
        def resolve(self, shape, mode):
            return Resolved(fn=kernel, variant="v1", config={"a": 1}, config_source="explicit", chunk_size=64)

    row = run_task(Named("named", "test", devices=("cpu",)), TINY, "fwd", FAST)
    assert (row.status, row.variant, row.config, row.config_source) == ("ok", "v1", {"a": 1}, "explicit")
