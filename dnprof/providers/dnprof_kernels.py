"""dnprof's own kernels as providers: the chunkwise kernels (selected or named variant) and the fused recurrent one.

``dnprof-chunk`` runs the variant ``select_chunk_config`` picks for the shape (tuned, shipped or
default, recorded as ``config_source``); ``dnprof-chunk-<variant>`` runs a named one: ``c64``,
``c128`` (the variant selected at that chunk size: tuned, shipped or default) or a full
``ChunkConfig`` name such as ``c128-bk64-bv64-w8-s2-hfp32-wyf-os`` (source ``explicit``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
from typing import Any, Callable

from dnprof.kernels.validation import interpreter_enabled
from dnprof.providers.base import DEFAULT_VERIFY_SEQ_LEN, VERIFY_TOKENS, Resolved, Shape
from dnprof.providers.deltanet import DeltaNetProvider

CHUNK_PREFIX = "dnprof-chunk-"
_SHORT_VARIANT = re.compile(r"^c(\d+)$")


def _module_requirement(module: str) -> Callable[[str], str | None]:
    """A requirement check: the Triton interpreter on the CPU, and ``module`` importable."""

    def check(device: str) -> str | None:
        if device == "cpu" and not interpreter_enabled():
            return ("dnprof's Triton kernels run on the CPU only through the interpreter: "
                    "set TRITON_INTERPRET=1 in the environment and run again")
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not present in this dnprof checkout"
            importlib.import_module(module)
        except Exception as exc:  # an import error inside the kernels must not stop the run
            return f"{module} failed to import: {type(exc).__name__}: {exc}"
        return None

    return check


def _chunk_config_cls() -> Any:
    from dnprof.variants.chunk_config import ChunkConfig

    return ChunkConfig


def parse_chunk_variant(spec: str) -> tuple[str, Any]:
    """Check a variant spec (``c128`` or a full ChunkConfig name) and return (kind, value).

    ``kind`` is ``chunk_size`` (value an int) or ``config`` (value a ChunkConfig). Raises ValueError
    with the accepted forms on anything else.
    """
    m = _SHORT_VARIANT.match(spec)
    if m:
        size = int(m.group(1))
        try:
            allowed = _chunk_config_cls().choices()["chunk_size"]
        except ImportError:
            allowed = (16, 32, 64, 128)
        if size not in allowed:
            raise ValueError(f"chunk size {size} in {spec!r} is not one of {tuple(allowed)}")
        return "chunk_size", size
    try:
        return "config", _chunk_config_cls().from_name(spec)
    except ImportError:
        raise ValueError(f"variant {spec!r}: dnprof.variants.chunk_config is not importable, use c64 or c128") from None
    except ValueError as exc:
        raise ValueError(f"variant {spec!r}: expected c64, c128 or a full ChunkConfig name ({exc})") from None


def select_config(shape: Shape, mode: str, chunk_size: int | None = None) -> tuple[Any, str]:
    """The variant ``chunk_delta_rule`` would run for ``shape`` with no ``config`` (at ``chunk_size`` if given):
    the tuned or shipped pick where the launch guard accepts it at the shape's streams, else the default."""
    try:
        from dnprof.kernels.chunk import select_launchable
    except ImportError:
        cls = _chunk_config_cls()
        cfg = cls.default_for(shape.K, shape.V, 64 if chunk_size is None else chunk_size, shape.dtype, mode)
        return cfg, "default"
    cfg, source, _ = select_launchable(shape.K, shape.V, shape.T, shape.dtype, mode, shape.B * shape.H,
                                       shape.device, chunk_size=chunk_size)
    return cfg, source


class DnprofChunkProvider(DeltaNetProvider):
    """dnprof's chunkwise kernels, with the selected variant or a named one."""

    def __init__(self, variant: str | None = None) -> None:
        name = "dnprof-chunk" if variant is None else CHUNK_PREFIX + variant
        what = "the variant selected for the shape" if variant is None else f"variant {variant}"
        super().__init__(
            name,
            f"dnprof chunkwise kernels, {what}",
            devices=("cuda", "cpu"),
            default_devices=("cuda", "cpu") if variant is None else (),
            requirement=_module_requirement("dnprof.kernels.chunk"),
        )
        self.variant_spec = variant
        self._parsed = None if variant is None else parse_chunk_variant(variant)

    def config_for(self, shape: Shape, mode: str) -> tuple[Any, str]:
        """The ChunkConfig and its source (tuned / shipped / default / explicit) at this shape."""
        if self._parsed is None:
            return select_config(shape, mode)
        kind, value = self._parsed
        if kind == "chunk_size":  # the best known variant at that chunk size (tuned, shipped or default)
            return select_config(shape, mode, chunk_size=value)
        value.validate(shape.K, shape.V)
        return value, "explicit"

    def verify_shape(self, shape: Shape, max_T: int | None = None) -> Shape:
        """The base's token budget, reached by shortening the sequences, not dropping them: with
        ``rec="auto"`` the serial kernels tile by sequences x heads, so fewer sequences could
        verify another tiling than the one that is timed."""
        T = min(shape.T, max_T or DEFAULT_VERIFY_SEQ_LEN, max(1, VERIFY_TOKENS // shape.B))
        return shape.replace(T=T)

    def begin_run(self) -> None:
        from dnprof.kernels.launch import reset_lowered

        reset_lowered()

    def run_notes(self) -> dict[str, Any]:
        """Kernels that ran at fewer pipeline stages than the variant names (shared memory did not fit),
        and the tiling each serial kernel ran at (chosen at launch under ``rec="auto"``)."""
        from dnprof.kernels.launch import run_notes

        return run_notes()

    def resolve(self, shape: Shape, mode: str) -> Resolved:
        """``chunk_delta_rule`` bound to the chosen config."""
        from dnprof.kernels.chunk import chunk_delta_rule

        cfg, source = self.config_for(shape, mode)
        fn = functools.partial(chunk_delta_rule, chunk_size=cfg.chunk_size, config=cfg)
        return Resolved(fn=fn, variant=cfg.name, config=cfg.to_dict(), config_source=source,
                        chunk_size=cfg.chunk_size)


def _recurrent_config(shape: Shape, mode: str) -> tuple[Any, str] | tuple[None, None]:
    """The recurrent kernel's config: selected when a selector exists, else the default one."""
    try:
        from dnprof.variants import selection

        select = getattr(selection, "select_recurrent_config", None)
        if select is not None:
            return select(shape.K, shape.V, shape.T, shape.dtype, mode)
    except ImportError:
        pass
    try:
        from dnprof.variants.recurrent_config import RecurrentConfig
    except ImportError:
        return None, None
    return RecurrentConfig.default_for(shape.K, shape.V), "default"


class DnprofRecurrentProvider(DeltaNetProvider):
    """dnprof's fused recurrent kernel (one token at a time, state in registers)."""

    def __init__(self) -> None:
        super().__init__(
            "dnprof-recurrent",
            "dnprof fused recurrent kernel",
            devices=("cuda", "cpu"),
            requirement=_module_requirement("dnprof.kernels.recurrent"),
        )

    def resolve(self, shape: Shape, mode: str) -> Resolved:
        """``fused_recurrent_delta_rule`` bound to its config (when configs exist)."""
        from dnprof.kernels.recurrent import fused_recurrent_delta_rule

        cfg, source = _recurrent_config(shape, mode)
        if cfg is None:
            return Resolved(fn=fused_recurrent_delta_rule)
        fn = functools.partial(fused_recurrent_delta_rule, config=cfg)
        return Resolved(fn=fn, variant=cfg.name, config=cfg.to_dict(), config_source=source)
