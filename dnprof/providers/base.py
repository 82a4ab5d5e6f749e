"""What every provider is: a name, what it computes, where it runs, its inputs, callables and check.

A provider is anything ``dnprof compare`` can time. Each one knows

- ``name`` and ``computes`` (``deltanet``, ``attention`` or ``gla``: this decides the reference);
- whether it can run on a device, and if not, why (``unavailable_reason``);
- what exactly it runs at a shape and mode (``resolve``: the callable, plus the variant, config and
  config source that the results row records);
- how to draw inputs for a shape (``make_inputs``), and from them zero-argument callables for the
  forward and for forward + backward (``build_callable``);
- how to check itself against its float64 reference (``verify``), at the full shape or at a
  reduced one (``verify_shape``) where float64 would be too slow or too large.

Family classes (DeltaNet, attention, GLA) live next to this module and fill these in.
"""

from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from dnprof.bench.verify import VerifyResult

Tensor = torch.Tensor

#: Accepted dtype names (CLI spelling, also the spelling in results rows).
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

#: Default cap on the sequence length a verification runs at (longer shapes verify at this T).
DEFAULT_VERIFY_SEQ_LEN = 4096
#: Most tokens (B * T) a verification runs at: B is reduced to stay under it (never below 1).
VERIFY_TOKENS = 16384


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a dtype (``bf16``, ``fp16``, ``fp32``), or torch's own name for others."""
    for name, dt in DTYPES.items():
        if dt == dtype:
            return name
    return str(dtype).replace("torch.", "")


def parse_dtype(name: str) -> torch.dtype:
    """``bf16`` / ``fp16`` / ``fp32`` (also ``bfloat16``, ``float16``, ``float32``) to a torch dtype."""
    aliases = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}
    key = aliases.get(name.strip().lower(), name.strip().lower())
    if key not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[key]


@dataclass(frozen=True)
class Shape:
    """One problem size: batch, tokens, heads, key and value head dims, dtype and device."""

    B: int
    T: int
    H: int
    K: int
    V: int
    dtype: torch.dtype = torch.bfloat16
    device: str = "cuda"

    def __post_init__(self) -> None:
        for name in ("B", "T", "H", "K", "V"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.device not in ("cuda", "cpu"):
            raise ValueError(f"device must be 'cuda' or 'cpu', got {self.device!r}")

    @property
    def dtype_name(self) -> str:
        """The dtype as results rows spell it (``bf16``, ``fp16``, ``fp32``)."""
        return dtype_name(self.dtype)

    @property
    def tokens(self) -> int:
        """Tokens per call, ``B * T``."""
        return self.B * self.T

    def replace(self, **changes: Any) -> "Shape":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def label(self) -> str:
        """A compact printable form, e.g. ``B8 T4096 H16 D128 bf16``."""
        d = f"D{self.K}" if self.K == self.V else f"K{self.K} V{self.V}"
        return f"B{self.B} T{self.T} H{self.H} {d} {self.dtype_name}"


@dataclass
class Resolved:
    """What a provider runs at one shape and mode: the callable and what the row records about it."""

    fn: Callable[..., Any]
    variant: str | None = None
    config: dict[str, Any] | None = None
    config_source: str | None = None
    chunk_size: int | None = None  # for the FLOP count of chunkwise DeltaNet
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Inputs:
    """Call arguments by name, which of them take gradients, and upstream grads for the outputs."""

    args: dict[str, Tensor]
    leaves: list[str]
    grad_outputs: list[Tensor]

    def leaf_tensors(self) -> list[Tensor]:
        """The tensors gradients are taken with respect to, in ``leaves`` order."""
        return [self.args[name] for name in self.leaves]


def cuda_requirement(device: str) -> str | None:
    """None when ``device`` is usable, else why not (``needs a CUDA GPU``)."""
    if device == "cuda" and not torch.cuda.is_available():
        return "needs a CUDA GPU (none is visible)"
    return None


def free_memory() -> None:
    """Collect garbage and return cached CUDA blocks, so one provider's leftovers do not hit the next."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class Provider:
    """Base class of every provider; family subclasses define inputs, the call and the check."""

    #: What it computes: ``deltanet``, ``attention`` or ``gla``.
    computes: str = ""

    def __init__(
        self,
        name: str,
        description: str,
        devices: tuple[str, ...] = ("cuda",),
        default_devices: tuple[str, ...] | None = None,
        requirement: Callable[[str], str | None] | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.devices = devices
        self.default_devices = devices if default_devices is None else default_devices
        self._requirement = requirement
        self._reasons: dict[str, str | None] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # ------------------------------------------------------------------------------ availability
    def unavailable_reason(self, device: str) -> str | None:
        """None when the provider can run on ``device`` here, else a one-line reason (cached)."""
        if device not in self._reasons:
            self._reasons[device] = self._check(device)
        return self._reasons[device]

    def _check(self, device: str) -> str | None:
        # Installation first (the most actionable reason), then the device.
        if self._requirement is not None:
            reason = self._requirement(device)
            if reason:
                return reason
        if device not in self.devices:
            return "needs a CUDA GPU" if "cuda" in self.devices else f"does not run on {device}"
        return cuda_requirement(device)

    def available(self, device: str) -> bool:
        """True when the provider can run on ``device`` here."""
        return self.unavailable_reason(device) is None

    def shape_problem(self, shape: Shape) -> str | None:
        """None when the provider supports ``shape``, else why not (the row is then 'unavailable')."""
        return None

    # ------------------------------------------------------------------------------ what runs
    def resolve(self, shape: Shape, mode: str) -> Resolved:
        """The callable this provider runs at ``shape`` and ``mode``, and its variant/config."""
        raise NotImplementedError

    def make_inputs(self, shape: Shape, seed: int = 0, requires_grad: bool = False) -> Inputs:
        """Fresh non-zero random inputs and upstream gradients for ``shape``."""
        raise NotImplementedError

    def call(self, resolved: Resolved, inputs: Inputs) -> tuple[Tensor, ...]:
        """Run once; return the outputs that ``inputs.grad_outputs`` belong to."""
        raise NotImplementedError

    def verify(self, shape: Shape, mode: str, resolved: Resolved, seed: int = 0) -> VerifyResult:
        """Relative errors against the float64 reference on fresh inputs at ``shape``."""
        raise NotImplementedError

    def verify_shape(self, shape: Shape, max_T: int | None = None) -> Shape:
        """The shape verification runs at: T capped at ``max_T``, B reduced to ``VERIFY_TOKENS``."""
        T = min(shape.T, max_T or DEFAULT_VERIFY_SEQ_LEN)
        B = max(1, min(shape.B, VERIFY_TOKENS // T))
        return shape.replace(B=B, T=T)

    # ------------------------------------------------------------------------------ figures
    def flops(self, shape: Shape, mode: str, resolved: Resolved) -> float | None:
        """FLOPs of one call, where the count is defined (else None)."""
        return None

    def roofline_ms(self, shape: Shape, mode: str) -> float | None:
        """A lower bound on the time of one call on the reference GPU, where defined (else None)."""
        return None

    def begin_run(self) -> None:
        """Called before a row's verification and timing (see :meth:`run_notes`)."""

    def run_notes(self) -> dict[str, Any]:
        """Facts about how the row's calls actually ran, for the row's ``extra`` (none by default)."""
        return {}

    # ------------------------------------------------------------------------------ callables
    def build_callable(self, shape: Shape, mode: str, resolved: Resolved, seed: int = 0) -> Callable[[], object]:
        """A zero-argument callable for ``mode`` on fresh inputs (drawn now, outside the timing).

        ``fwd`` runs the forward under ``torch.no_grad``. ``fwdbwd`` runs the forward and the
        backward of a fixed random upstream gradient through ``torch.autograd.grad``, so gradients
        are returned and dropped, never accumulated between calls.
        """
        if mode == "fwd":
            inputs = self.make_inputs(shape, seed=seed, requires_grad=False)

            def forward() -> object:
                with torch.no_grad():
                    return self.call(resolved, inputs)

            return forward
        if mode == "fwdbwd":
            inputs = self.make_inputs(shape, seed=seed, requires_grad=True)
            leaves = inputs.leaf_tensors()

            def forward_backward() -> object:
                outs = self.call(resolved, inputs)
                return torch.autograd.grad(outs, leaves, inputs.grad_outputs, allow_unused=True)

            return forward_backward
        raise ValueError(f"mode: expected 'fwd' or 'fwdbwd', got {mode!r}")
