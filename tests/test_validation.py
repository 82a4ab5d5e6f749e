"""Bad input to the kernels is refused with a ValueError that names the argument."""

from __future__ import annotations

import pytest
import torch

from dnprof.kernels.validation import check_delta_inputs


def _t(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


def _ok():
    return dict(q=_t(1, 10, 2, 8), k=_t(1, 10, 2, 8), v=_t(1, 10, 2, 4), beta=torch.rand(1, 10, 2))


def test_good_input_gives_shape(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    s = check_delta_inputs(**_ok(), initial_state=_t(1, 2, 8, 4))
    assert (s.B, s.T, s.H, s.K, s.V, s.N) == (1, 10, 2, 8, 4, 1)
    s = check_delta_inputs(**_ok(), cu_seqlens=torch.tensor([0, 3, 10]), initial_state=_t(2, 2, 8, 4))
    assert s.N == 2


@pytest.mark.parametrize(
    "change,name",
    [
        (dict(q=_t(10, 2, 8)), "q"),
        (dict(k=_t(1, 10, 2, 4)), "k"),
        (dict(v=_t(1, 9, 2, 4)), "v"),
        (dict(beta=torch.rand(1, 10)), "beta"),
        (dict(k=_t(1, 10, 2, 8, dtype=torch.float16)), "k"),
        (dict(q=torch.ones(1, 10, 2, 8, dtype=torch.int32), k=torch.ones(1, 10, 2, 8, dtype=torch.int32)), "q"),
        (dict(initial_state=_t(1, 2, 4, 8)), "initial_state"),
        (dict(cu_seqlens=torch.tensor([0, 5, 5, 10])), "cu_seqlens"),
        (dict(cu_seqlens=torch.tensor([0, 5, 9])), "cu_seqlens"),
        (dict(cu_seqlens=torch.tensor([0.0, 10.0])), "cu_seqlens"),
        (dict(scale=-1.0), "scale"),
        (dict(q=_t(1, 10, 2, 512), k=_t(1, 10, 2, 512)), "head dim"),
    ],
)
def test_bad_input_names_the_argument(monkeypatch, change, name):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    args = _ok()
    args.update(change)
    with pytest.raises(ValueError, match=name):
        check_delta_inputs(**args)


def test_varlen_needs_batch_of_one(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    args = dict(q=_t(2, 10, 2, 8), k=_t(2, 10, 2, 8), v=_t(2, 10, 2, 4), beta=torch.rand(2, 10, 2))
    with pytest.raises(ValueError, match="cu_seqlens.*B = 1"):
        check_delta_inputs(**args, cu_seqlens=torch.tensor([0, 10]))


def test_cpu_tensor_without_interpreter_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="q: is a CPU tensor.*TRITON_INTERPRET"):
        check_delta_inputs(**_ok())
