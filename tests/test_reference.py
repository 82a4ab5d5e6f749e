"""The float64 references agree with each other: the ground truth every kernel is checked against."""

from __future__ import annotations

import pytest
import torch

from dnprof.bench.equivalence import relative_error
from dnprof.bench.inputs import make_delta_inputs
from dnprof.reference import (
    causal_softmax_attention,
    chunk_delta_rule_reference,
    gla_recurrent,
    l2norm,
    recurrent_delta_rule,
)


def _inputs(T=45, K=8, V=6, B=2, H=3, seed=0, **kw):
    return make_delta_inputs(B, T, H, K, V, dtype=torch.float64, seed=seed, **kw)


@pytest.mark.parametrize("chunk_size", [1, 16, 64, 128])
@pytest.mark.parametrize("T", [1, 45, 130])
def test_chunkwise_equals_recurrent(chunk_size, T):
    x = _inputs(T=T)
    o_r, h_r = recurrent_delta_rule(x.q, x.k, x.v, x.beta, initial_state=x.initial_state, output_final_state=True)
    o_c, h_c = chunk_delta_rule_reference(
        x.q, x.k, x.v, x.beta, chunk_size=chunk_size, initial_state=x.initial_state, output_final_state=True
    )
    assert relative_error(o_c, o_r) < 1e-10
    assert relative_error(h_c, h_r) < 1e-10


def test_recurrent_matches_explicit_formula_for_one_token():
    x = _inputs(T=1, B=1, H=1)
    scale = 0.3
    o, h = recurrent_delta_rule(x.q, x.k, x.v, x.beta, scale=scale, initial_state=x.initial_state, output_final_state=True)
    s0 = x.initial_state[0, 0].double()  # [K, V], the transpose of the paper's S
    k, v, q, b = x.k[0, 0, 0], x.v[0, 0, 0], x.q[0, 0, 0], x.beta[0, 0, 0]
    s1 = s0 + b * torch.outer(k, v - k @ s0)
    assert torch.allclose(h[0, 0], s1)
    assert torch.allclose(o[0, 0, 0], (scale * q) @ s1)


def test_state_passing_equals_one_run():
    x = _inputs(T=70)
    o_full, h_full = recurrent_delta_rule(x.q, x.k, x.v, x.beta, initial_state=x.initial_state, output_final_state=True)
    cut = 33
    o1, h1 = chunk_delta_rule_reference(x.q[:, :cut], x.k[:, :cut], x.v[:, :cut], x.beta[:, :cut],
                                        chunk_size=16, initial_state=x.initial_state, output_final_state=True)
    o2, h2 = chunk_delta_rule_reference(x.q[:, cut:], x.k[:, cut:], x.v[:, cut:], x.beta[:, cut:],
                                        chunk_size=16, initial_state=h1, output_final_state=True)
    assert relative_error(torch.cat([o1, o2], 1), o_full) < 1e-12
    assert relative_error(h2, h_full) < 1e-12


@pytest.mark.parametrize("fn", ["recurrent", "chunk"])
def test_varlen_equals_separate_runs(fn):
    cu = [0, 5, 40, 41, 77]
    x = _inputs(T=77, B=1, cu_seqlens=cu)
    run = recurrent_delta_rule if fn == "recurrent" else (lambda *a, **k: chunk_delta_rule_reference(*a, chunk_size=16, **k))
    o, h = run(x.q, x.k, x.v, x.beta, initial_state=x.initial_state, output_final_state=True, cu_seqlens=x.cu_seqlens)
    assert h.shape == (4, 3, 8, 6)
    for n, (s, e) in enumerate(zip(cu[:-1], cu[1:])):
        o_n, h_n = recurrent_delta_rule(x.q[:, s:e], x.k[:, s:e], x.v[:, s:e], x.beta[:, s:e],
                                        initial_state=x.initial_state[n : n + 1], output_final_state=True)
        assert relative_error(o[:, s:e], o_n) < 1e-12
        assert relative_error(h[n : n + 1], h_n) < 1e-12


def test_l2norm_in_kernel_matches_normalising_first():
    x = _inputs(T=20)
    q_raw, k_raw = 3 * x.q, 2 * x.k + 0.1
    o1, _ = recurrent_delta_rule(q_raw, k_raw, x.v, x.beta, use_qk_l2norm_in_kernel=True)
    o2, _ = recurrent_delta_rule(l2norm(q_raw), l2norm(k_raw), x.v, x.beta)
    assert relative_error(o1, o2) < 1e-14


def test_default_scale_is_inverse_sqrt_head_dim():
    x = _inputs(T=10, K=16)
    o1, _ = recurrent_delta_rule(x.q, x.k, x.v, x.beta)
    o2, _ = recurrent_delta_rule(x.q, x.k, x.v, x.beta, scale=0.25)
    assert relative_error(o1, o2) < 1e-14


def test_gradients_agree_with_finite_differences():
    x = _inputs(T=6, K=3, V=2, B=1, H=1, requires_grad=True)
    for fn in (recurrent_delta_rule, lambda *a, **k: chunk_delta_rule_reference(*a, chunk_size=4, **k)):
        def loss(q, k, v, beta, h0):
            o, ht = fn(q, k, v, beta, initial_state=h0, output_final_state=True)
            return (o * x.do.double()).sum() + (ht * x.dht.double()).sum()

        leaves = [t.detach().double().requires_grad_(True) for t in x.leaves()]
        assert torch.autograd.gradcheck(loss, leaves, eps=1e-6, atol=1e-7)


def test_causal_attention_first_token_attends_to_itself_only():
    x = _inputs(T=12, K=8, V=8)
    o = causal_softmax_attention(x.q, x.k, x.v)
    assert torch.allclose(o[:, 0], x.v[:, 0].double())
    # Against a direct per-token softmax for the last token.
    q, k, v = x.q[0, -1, 0], x.k[0, :, 0], x.v[0, :, 0]
    w = torch.softmax((k @ q) * 8 ** -0.5, 0)
    assert torch.allclose(o[0, -1, 0], w @ v)


def test_gla_with_zero_log_gate_is_plain_linear_attention():
    x = _inputs(T=15, K=4, V=5)
    g = torch.zeros(2, 15, 3, 4, dtype=torch.float64)
    o, h = gla_recurrent(x.q, x.k, x.v, g, scale=1.0, output_final_state=True)
    qh, kh, vh = (t.transpose(1, 2) for t in (x.q, x.k, x.v))
    lin = ((qh @ kh.transpose(-1, -2)).tril() @ vh).transpose(1, 2)
    assert relative_error(o, lin) < 1e-12
    assert relative_error(h, torch.einsum("bthk,bthv->bhkv", x.k, x.v)) < 1e-12


def test_gla_gate_decays_the_state():
    x = _inputs(T=2, K=4, V=5, B=1, H=1)
    g = torch.full((1, 2, 1, 4), -1.0, dtype=torch.float64)
    _, h = gla_recurrent(x.q, x.k, x.v, g, output_final_state=True)
    k0, k1, v0, v1 = x.k[0, 0, 0], x.k[0, 1, 0], x.v[0, 0, 0], x.v[0, 1, 0]
    want = torch.exp(torch.tensor(-1.0)) * torch.outer(k0, v0) + torch.outer(k1, v1)
    assert torch.allclose(h[0, 0], want)


def test_chunk_reference_rejects_bad_chunk_size():
    x = _inputs(T=4)
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_delta_rule_reference(x.q, x.k, x.v, x.beta, chunk_size=0)
