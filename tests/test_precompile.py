"""Ahead-of-time compile for compare: which variants get compiled, once each, and how failures are told."""

from __future__ import annotations

import torch

from dnprof.bench.precompile import compile_tasks, precompile, provider_family
from dnprof.providers.base import Resolved, Shape


class _FakeProvider:
    """Just what compile_tasks asks of a provider: availability and the resolved config."""

    def __init__(self, name: str, configs: dict[str, dict] | None = None, reason: str | None = None):
        self.name, self.configs, self.reason = name, configs or {}, reason
        self.resolved: list[tuple[int, str]] = []

    def unavailable_reason(self, device: str) -> str | None:
        return self.reason

    def shape_problem(self, shape: Shape) -> str | None:
        return "too big" if shape.K > 256 else None

    def resolve(self, shape: Shape, mode: str) -> Resolved:
        self.resolved.append((shape.T, mode))
        if mode not in self.configs:
            raise RuntimeError("no config")
        return Resolved(fn=print, variant=f"v-{mode}", config=self.configs[mode])


def _shapes(*dims_and_lengths, device="cuda"):
    return [Shape(B=32768 // t, T=t, H=2048 // d, K=d, V=d, dtype=torch.bfloat16, device=device)
            for d, t in dims_and_lengths]


def test_families_are_dnprof_providers_only():
    assert provider_family("dnprof-chunk") == provider_family("dnprof-chunk-c128") == "chunk"
    assert provider_family("dnprof-recurrent") == "recurrent"
    assert provider_family("fla-deltanet") is None and provider_family("flash-attn") is None


def test_one_task_per_variant_head_dim_and_mode_whatever_the_sequence_length():
    chunk = _FakeProvider("dnprof-chunk", {"fwd": {"chunk_size": 64, "fuse_output": True},
                                           "fwdbwd": {"chunk_size": 64, "fuse_output": False}})
    peer = _FakeProvider("fla-deltanet", {"fwd": {}, "fwdbwd": {}})
    shapes = _shapes((64, 4096), (64, 16384), (128, 4096), (512, 4096))
    tasks = compile_tasks([chunk, peer], shapes, ["fwd", "fwdbwd"])
    labels = [label for label, _ in tasks]
    assert labels == ["v-fwd D64 fwd", "v-fwdbwd D64 fwdbwd", "v-fwd D128 fwd", "v-fwdbwd D128 fwdbwd"]
    family, config, K, V, dtype, mode, B, T, H = tasks[2][1]
    assert (family, config, K, V, dtype, mode, B, T, H) == ("chunk", {"chunk_size": 64, "fuse_output": True},
                                                           128, 128, "bf16", "fwd", 8, 4096, 16)
    assert peer.resolved == []  # a peer is never resolved, let alone compiled


def test_auto_tiled_variants_get_a_task_per_sequence_count():
    """``rec="auto"`` picks the serial kernels' tiling from sequences x heads, so each batch compiles its own."""
    chunk = _FakeProvider("dnprof-chunk", {"fwd": {"chunk_size": 64, "rec": "auto"}})
    tasks = compile_tasks([chunk], _shapes((128, 4096), (128, 16384), (128, 8192)), ["fwd"])
    assert [args[6] for _, args in tasks] == [8, 2, 4]  # B of each task


def test_unavailable_cpu_and_unresolvable_providers_give_no_task():
    broken = _FakeProvider("dnprof-chunk-c128", {"fwd": {"chunk_size": 128}})  # fwdbwd raises in resolve
    missing = _FakeProvider("dnprof-recurrent", {"fwd": {"BV": 32}}, reason="not installed")
    tasks = compile_tasks([broken, missing], _shapes((64, 4096)), ["fwd", "fwdbwd"])
    assert [label for label, _ in tasks] == ["v-fwd D64 fwd"]
    assert compile_tasks([broken], _shapes((64, 4096), device="cpu"), ["fwd"]) == []


class _FakeCompiler:
    def __init__(self, results: dict[str, tuple]):
        self.results, self.ran = results, []

    def run(self, tasks, on_done, should_stop=None):
        for label, args in tasks:
            self.ran.append(label)
            on_done(label, self.results.get(label, ("ok", 1.0, None, None)))


def test_precompile_reports_failures_and_does_nothing_without_workers():
    chunk = _FakeProvider("dnprof-chunk", {"fwd": {"chunk_size": 64}, "fwdbwd": {"chunk_size": 64}})
    shapes = _shapes((64, 4096))
    compiler = _FakeCompiler({"v-fwdbwd D64 fwdbwd": ("out-of-resources", 2.0, "shared memory", None)})
    seen = []
    summary = precompile([chunk], shapes, ["fwd", "fwdbwd"], jobs=4, compiler=compiler,
                         on_done=lambda label, status: seen.append((label, status)))
    assert compiler.ran == ["v-fwd D64 fwd", "v-fwdbwd D64 fwdbwd"]
    assert seen == [("v-fwd D64 fwd", "ok"), ("v-fwdbwd D64 fwdbwd", "out-of-resources")]
    assert summary.tasks == 2 and summary.jobs == 4
    assert summary.failed == {"v-fwdbwd D64 fwdbwd": "out-of-resources: shared memory"}
    assert "compiled 2 dnprof kernel variants" in summary.line() and "1 failed" in summary.line()

    idle = _FakeCompiler({})
    assert precompile([chunk], shapes, ["fwd"], jobs=0, compiler=idle).tasks == 0 and idle.ran == []
