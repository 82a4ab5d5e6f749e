"""The fused recurrent Triton kernels against float64 autograd through the recurrent reference.

On a CPU machine the kernels run through the Triton interpreter (conftest sets TRITON_INTERPRET),
so shapes stay small; fp32, fp16 and bf16 inputs (bf16 through dnprof.kernels.interpreter_compat;
long bf16 sequences are checked on the GPU).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from dnprof.bench.equivalence import relative_error, tolerance_for
from dnprof.bench.inputs import make_delta_inputs
from dnprof.reference import recurrent_delta_rule
from dnprof.variants.errors import ConfigError
from dnprof.variants.recurrent_config import RecurrentConfig

NAMES = ("o", "final_state", "dq", "dk", "dv", "dbeta", "dh0")


def _kernel():
    from dnprof.kernels.recurrent import fused_recurrent_delta_rule

    return fused_recurrent_delta_rule


def _run_kernel(x, config=None, use_dht=True, **kwargs):
    """Forward and backward through the kernel; returns (o, ht, grads of the leaves)."""
    o, ht = _kernel()(
        x.q, x.k, x.v, x.beta, initial_state=x.initial_state, output_final_state=True,
        cu_seqlens=x.cu_seqlens, config=config, **kwargs,
    )
    loss = (o.float() * x.do.float()).sum()
    if use_dht:
        loss = loss + (ht * x.dht).sum()
    grads = torch.autograd.grad(loss, x.leaves())
    return o, ht, grads


def _run_reference(x, use_dht=True, **kwargs):
    """The same in float64 through autograd on the token-by-token reference."""
    leaves = [t.detach().double().requires_grad_() for t in x.leaves()]
    h0 = leaves[4] if x.initial_state is not None else None
    o, ht = recurrent_delta_rule(
        *leaves[:4], initial_state=h0, output_final_state=True, cu_seqlens=x.cu_seqlens, **kwargs
    )
    loss = (o * x.do.double()).sum()
    if use_dht:
        loss = loss + (ht * x.dht.double()).sum()
    grads = torch.autograd.grad(loss, leaves)
    return o, ht, grads


def _errors(x, config=None, use_dht=True, **kwargs) -> dict[str, float]:
    o, ht, g = _run_kernel(x, config, use_dht, **kwargs)
    ro, rht, rg = _run_reference(x, use_dht, **kwargs)
    assert o.dtype == x.v.dtype and ht.dtype == torch.float32
    for a, leaf in zip(g, x.leaves()):
        assert a.dtype == leaf.dtype and a.shape == leaf.shape
    errs = [relative_error(o, ro), relative_error(ht, rht)] + [relative_error(a, b) for a, b in zip(g, rg)]
    return dict(zip(NAMES, errs))


def _assert_close(errs: dict[str, float], dtype: torch.dtype) -> None:
    tol = tolerance_for(dtype)
    bad = {n: e for n, e in errs.items() if not e <= tol}
    assert not bad, f"errors above {tol}: {bad} (all: {errs})"


R = RecurrentConfig
CASES = [
    # B, T, H, K, V, dtype, config (forward and backward tilings differ in most: they share nothing)
    pytest.param(2, 37, 2, 16, 16, torch.float32, None, id="odd-T-default"),
    pytest.param(1, 1, 2, 16, 16, torch.float32, None, id="T1"),
    pytest.param(1, 45, 1, 32, 24, torch.float16, R(BV=8, num_warps=1, bwd_BV=16, bwd_num_warps=1, checkpoint=16, atomic=False),
                 id="KneV-fp16-partials"),
    pytest.param(1, 20, 1, 100, 100, torch.float32, R(BV=64, num_warps=8, bwd_BV=8, bwd_num_warps=4, checkpoint=8, atomic=True),
                 id="D100-atomic"),
    pytest.param(1, 30, 2, 24, 40, torch.float32, R(BV=32, num_warps=1, bwd_BV=8, bwd_num_warps=1, checkpoint=8, atomic=False),
                 id="mixed-bv32-bbv8"),
    pytest.param(1, 40, 1, 16, 32, torch.float16, R(BV=32, num_warps=2, bwd_BV=32, bwd_num_warps=1, checkpoint=64),
                 id="fp16-bv32"),
    pytest.param(1, 33, 2, 32, 32, torch.bfloat16, None, id="bf16-default"),
]


@pytest.mark.parametrize("B,T,H,K,V,dtype,config", CASES)
def test_matches_float64_reference(device, B, T, H, K, V, dtype, config):
    x = make_delta_inputs(B, T, H, K, V, dtype=dtype, device=device, seed=T + K, requires_grad=True)
    _assert_close(_errors(x, config), dtype)


def test_beta_near_one_rebuild_is_stable(device):
    """beta -> 1 with unit keys makes the update singular; the backward's rebuild must not care."""
    x = make_delta_inputs(1, 64, 1, 16, 16, dtype=torch.float32, device=device, seed=3, requires_grad=True)
    with torch.no_grad():
        x.beta.fill_(1.0)
    errs = _errors(x, RecurrentConfig(BV=16, num_warps=1, checkpoint=1024))  # no reload after token 0
    assert max(errs.values()) < 1e-5, errs


def test_without_initial_state_and_without_dht(device):
    x = make_delta_inputs(1, 19, 2, 16, 8, dtype=torch.float32, device=device, seed=5, initial_state=False, requires_grad=True)
    _assert_close(_errors(x, use_dht=False), torch.float32)


def test_scale_and_l2norm_in_kernel(device):
    x = make_delta_inputs(1, 17, 2, 16, 16, dtype=torch.float32, device=device, seed=6, requires_grad=True)
    with torch.no_grad():
        x.k.mul_(3.0)  # not unit norm: the in-kernel normalisation must handle it
    _assert_close(_errors(x, scale=0.3, use_qk_l2norm_in_kernel=True), torch.float32)


def test_only_final_state_used(device):
    """A loss on the final state alone reaches the kernel with no gradient for o."""
    x = make_delta_inputs(1, 12, 1, 16, 16, dtype=torch.float32, device=device, seed=7, requires_grad=True)
    _, ht = _kernel()(x.q, x.k, x.v, x.beta, initial_state=x.initial_state, output_final_state=True)
    grads = torch.autograd.grad((ht * x.dht).sum(), x.leaves(), allow_unused=True)
    leaves = [t.detach().double().requires_grad_() for t in x.leaves()]
    _, rht = recurrent_delta_rule(*leaves[:4], initial_state=leaves[4], output_final_state=True)
    rgrads = torch.autograd.grad((rht * x.dht.double()).sum(), leaves, allow_unused=True)
    for name, a, b in zip(("dq", "dk", "dv", "dbeta", "dh0"), grads, rgrads):
        if b is None or not b.abs().sum():
            assert a is None or not a.abs().sum(), name
        else:
            assert relative_error(a, b) < 1e-4, name


def test_no_grad_forward_equals_training_forward(device):
    x = make_delta_inputs(2, 23, 1, 16, 16, dtype=torch.float32, device=device, seed=8)
    fn = _kernel()
    o1, h1 = fn(x.q, x.k, x.v, x.beta, initial_state=x.initial_state, output_final_state=True)
    o2, h2 = fn(x.q, x.k, x.v, x.beta, initial_state=x.initial_state)
    assert h2 is None
    xs = [t.clone().requires_grad_() for t in (x.q, x.k, x.v, x.beta)]
    o3, h3 = fn(*xs, initial_state=x.initial_state, output_final_state=True)
    assert torch.equal(o1, o2) and torch.equal(o1, o3.detach()) and torch.equal(h1, h3.detach())


def test_varlen_equals_separate_runs(device):
    bounds = [0, 7, 20, 21, 30]
    x = make_delta_inputs(1, 30, 1, 16, 16, dtype=torch.float32, device=device, seed=9, cu_seqlens=bounds, requires_grad=True)
    cfg = RecurrentConfig(BV=8, bwd_BV=8, checkpoint=8)  # two V blocks, checkpoints inside sequences
    o, ht, g = _run_kernel(x, cfg)
    outs, finals, gs = [], [], []
    for n, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        leaves = [t.detach()[:, a:b].clone().requires_grad_() for t in (x.q, x.k, x.v, x.beta)]
        h0 = x.initial_state.detach()[n : n + 1].clone().requires_grad_()
        on, hn = _kernel()(*leaves, initial_state=h0, output_final_state=True, config=cfg)
        loss = (on * x.do[:, a:b]).sum() + (hn * x.dht[n : n + 1]).sum()
        gs.append(torch.autograd.grad(loss, leaves + [h0]))
        outs.append(on.detach())
        finals.append(hn.detach())
    assert relative_error(o, torch.cat(outs, 1)) < 1e-6
    assert relative_error(ht, torch.cat(finals, 0)) < 1e-6
    for i in range(4):
        assert relative_error(g[i], torch.cat([s[i] for s in gs], 1)) < 1e-6, i
    assert relative_error(g[4], torch.cat([s[4] for s in gs], 0)) < 1e-6
    ro, rht, rg = _run_reference(x)  # and the packed run against the reference directly
    errs = [relative_error(o, ro), relative_error(ht, rht)] + [relative_error(a, b) for a, b in zip(g, rg)]
    _assert_close(dict(zip(NAMES, errs)), torch.float32)


def test_state_passing_two_halves_equal_one_run(device):
    x = make_delta_inputs(2, 30, 1, 16, 16, dtype=torch.float32, device=device, seed=10)
    fn = _kernel()
    o, ht = fn(x.q, x.k, x.v, x.beta, initial_state=x.initial_state, output_final_state=True)
    o1, h1 = fn(x.q[:, :13], x.k[:, :13], x.v[:, :13], x.beta[:, :13], initial_state=x.initial_state, output_final_state=True)
    o2, h2 = fn(x.q[:, 13:], x.k[:, 13:], x.v[:, 13:], x.beta[:, 13:], initial_state=h1, output_final_state=True)
    assert relative_error(torch.cat([o1, o2], 1), o) < 1e-6
    assert relative_error(h2, ht) < 1e-6


def _good(device):
    x = make_delta_inputs(1, 8, 2, 16, 16, dtype=torch.float32, device=device)
    return dict(q=x.q, k=x.k, v=x.v, beta=x.beta, initial_state=x.initial_state)


@pytest.mark.parametrize(
    "change,name",
    [
        (lambda a: dict(q=a["q"][0]), "q"),
        (lambda a: dict(k=a["k"][..., :8]), "k"),
        (lambda a: dict(v=a["v"][:, :4]), "v"),
        (lambda a: dict(beta=a["beta"][..., None]), "beta"),
        (lambda a: dict(initial_state=a["initial_state"][..., :8]), "initial_state"),
        (lambda a: dict(cu_seqlens=torch.tensor([0, 5, 5, 8], device=a["q"].device)), "cu_seqlens"),
        (lambda a: dict(scale=-1.0), "scale"),
        (lambda a: dict(config={"BV": 16}), "config"),
    ],
)
def test_bad_input_names_the_argument(device, change, name):
    args = _good(device)
    args.update(change(args))
    with pytest.raises(ValueError, match=name):
        _kernel()(**args)


def test_head_dim_above_256_is_refused(device):
    x = make_delta_inputs(1, 2, 1, 8, 300, dtype=torch.float32, device=device)
    with pytest.raises(ValueError, match="head dim"):
        _kernel()(x.q, x.k, x.v, x.beta)


def test_impossible_config_is_refused_before_launch(device):
    x = make_delta_inputs(1, 4, 1, 256, 256, dtype=torch.float32, device=device)
    with pytest.raises(ConfigError, match="registers"):
        _kernel()(x.q, x.k, x.v, x.beta, config=RecurrentConfig(BV=128, num_warps=1))


# --- RecurrentConfig -------------------------------------------------------------------------


def test_config_round_trip_hash_and_name():
    a = RecurrentConfig(BV=16, num_warps=2, bwd_BV=8, bwd_num_warps=1, checkpoint=64, atomic=False)
    b = RecurrentConfig.from_dict(a.to_dict())
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.name == "rec-bv16-w2-bbv8-bw1-ck64-partial" and str(a) == a.name
    assert RecurrentConfig(BV=16, num_warps=2, checkpoint=64).name == "rec-bv16-w2-bbv16-bw1-ck64-atomic"
    with pytest.raises(Exception):
        a.BV = 32  # frozen


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown keys \\['BK'\\]"):
        RecurrentConfig.from_dict({"BV": 16, "BK": 64})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(BV=24), "power of two"),
        (dict(BV=4), "power of two"),
        (dict(num_warps=3), "num_warps"),
        (dict(checkpoint=0), "checkpoint"),
        (dict(BV=16.0), "int"),
        (dict(atomic=1), "bool"),
        (dict(bwd_BV=12), "bwd_BV"),
        (dict(bwd_num_warps=64), "bwd_num_warps"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RecurrentConfig(**kwargs)


def test_config_validate():
    assert issubclass(ConfigError, ValueError)
    RecurrentConfig(BV=32, num_warps=8, bwd_BV=8, bwd_num_warps=2).validate(256, 256)
    RecurrentConfig(BV=16, num_warps=1).validate(64, 64)
    with pytest.raises(ConfigError, match="registers"):
        RecurrentConfig(BV=32, num_warps=4, bwd_BV=8, bwd_num_warps=2).validate(256, 256)
    with pytest.raises(ConfigError, match="bwd_BV or more bwd_num_warps"):
        RecurrentConfig(BV=32, num_warps=8, bwd_BV=16, bwd_num_warps=2).validate(256, 256)
    with pytest.raises(ConfigError, match="wider than"):
        RecurrentConfig(BV=64, num_warps=1).validate(16, 16)
    with pytest.raises(ConfigError, match="head dim"):
        RecurrentConfig().validate(512, 64)
    with pytest.raises(ConfigError, match="threads"):
        RecurrentConfig(BV=8, num_warps=8).validate(16, 8)


def test_config_space_and_defaults():
    choices = RecurrentConfig.choices()
    assert set(choices) == set(RecurrentConfig().to_dict())
    names = set()
    for values in itertools.product(*choices.values()):
        names.add(RecurrentConfig(**dict(zip(choices, values))).name)
    assert len(names) == 5 * 4 * 5 * 4 * 3 * 2
    for K, V in [(1, 1), (8, 300 // 3), (16, 16), (64, 64), (100, 100), (128, 64), (256, 256), (256, 8), (32, 256)]:
        RecurrentConfig.default_for(K, V).validate(K, V)
