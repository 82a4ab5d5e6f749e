"""Test setup: without a GPU, Triton kernels run through the interpreter on CPU tensors."""

from __future__ import annotations

import os

import pytest


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


HAS_CUDA = _cuda_available()
if not HAS_CUDA:
    # Must be set before triton is imported by any test module.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip GPU-marked tests, visibly, on machines without CUDA."""
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: run `pytest -m gpu` on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device() -> str:
    """The device kernels run on in this session: CUDA when present, else the CPU interpreter."""
    return "cuda" if HAS_CUDA else "cpu"
