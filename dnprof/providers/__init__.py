"""The provider registry: every thing ``dnprof compare`` can time, by name.

Names: ``dnprof-chunk`` (selected variant), ``dnprof-chunk-<variant>`` (``c64``, ``c128`` or a full
ChunkConfig name; on request only), ``dnprof-recurrent``, ``torch-chunk``, ``fla-deltanet``,
``fla-recurrent``, ``fla-gla``, ``flash-attn`` (SDPA FlashAttention backend), ``cudnn-attn``
(SDPA cuDNN backend), ``flash-attn-pkg`` (the flash-attn package) and ``sdpa-math`` (SDPA math
backend; default on the CPU only). Nothing here imports a kernel or touches a GPU until asked.
"""

from __future__ import annotations

from dnprof.providers.attention import AttentionProvider, attention_providers
from dnprof.providers.base import (
    DTYPES,
    Inputs,
    Provider,
    Resolved,
    Shape,
    dtype_name,
    parse_dtype,
)
from dnprof.providers.deltanet import DeltaNetProvider
from dnprof.providers.dnprof_kernels import CHUNK_PREFIX, DnprofChunkProvider, DnprofRecurrentProvider
from dnprof.providers.fla import fla_providers
from dnprof.providers.gla import GLAProvider
from dnprof.providers.task import TaskSettings, classify_exception, run_task
from dnprof.providers.torch_ref import TorchChunkProvider

__all__ = [
    "AttentionProvider", "DTYPES", "DeltaNetProvider", "GLAProvider", "Inputs", "Provider", "Resolved",
    "Shape", "TaskSettings", "UnknownProviderError", "BASELINE_PREFERENCE", "all_providers",
    "available_providers", "classify_exception", "default_baseline", "dtype_name", "get_provider",
    "parse_dtype", "parse_providers", "provider_names", "run_task",
]

#: Default baseline, first available wins: the peer, then FlashAttention, then plain PyTorch.
BASELINE_PREFERENCE = ("fla-deltanet", "flash-attn", "torch-chunk")


class UnknownProviderError(ValueError):
    """A provider name that is not registered (the message lists the known ones)."""


def all_providers() -> list[Provider]:
    """Every registered provider (fresh instances), in display order; named chunk variants excluded."""
    return [
        DnprofChunkProvider(),
        DnprofRecurrentProvider(),
        TorchChunkProvider(),
        *fla_providers(),
        *attention_providers(),
    ]


def provider_names() -> list[str]:
    """Registered names, plus the ``dnprof-chunk-<variant>`` pattern."""
    return [p.name for p in all_providers()] + [CHUNK_PREFIX + "<variant>"]


def get_provider(name: str) -> Provider:
    """The provider called ``name``; UnknownProviderError (a ValueError) naming the known ones otherwise."""
    name = name.strip()
    for p in all_providers():
        if p.name == name:
            return p
    if name.startswith(CHUNK_PREFIX):
        spec = name[len(CHUNK_PREFIX):]
        try:
            return DnprofChunkProvider(spec)
        except ValueError as exc:
            raise UnknownProviderError(f"unknown provider {name!r}: {exc}") from None
    raise UnknownProviderError(f"unknown provider {name!r}; known: {', '.join(provider_names())}")


def available_providers(device: str) -> list[Provider]:
    """Providers that run by default on ``device`` and are available here."""
    return [p for p in all_providers() if device in p.default_devices and p.available(device)]


def parse_providers(spec: str | None, device: str) -> list[Provider]:
    """A comma list of names (duplicates dropped, order kept), or every available default when empty."""
    if spec is None or not spec.strip():
        return available_providers(device)
    out: list[Provider] = []
    seen: set[str] = set()
    for raw in spec.split(","):
        if not raw.strip():
            continue
        p = get_provider(raw)
        if p.name not in seen:
            seen.add(p.name)
            out.append(p)
    if not out:
        raise UnknownProviderError("no provider named")
    return out


def default_baseline(providers: list[Provider], device: str) -> str | None:
    """The first of BASELINE_PREFERENCE that is among ``providers`` and available, else None."""
    names = {p.name: p for p in providers}
    for name in BASELINE_PREFERENCE:
        if name in names and names[name].available(device):
            return name
    return None
