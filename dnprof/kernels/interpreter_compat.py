"""Two fixes that keep Triton 3.6's CPU interpreter exact for dnprof's kernels; GPU kernels are untouched.

1. Loops with a runtime trip count under NumPy >= 2.4. The interpreter hands a kernel's scalars
   around as one-element arrays and converts them with ``int(array)`` where Python needs an index
   (``range(0, n)``); NumPy 2.4 made that conversion of a 1-d array a TypeError. The interpreter's
   tensor patching is wrapped so ``__index__`` takes the single element explicitly.
2. bfloat16 arithmetic. The interpreter stores bf16 values as their uint16 bit patterns, and
   ``tl.dot`` multiplied those integers as if they were numbers; the wrapped dot widens bf16
   operands to fp32 first (exact: a bf16 value is the top half of an fp32). Its fp32 -> bf16 cast
   truncated, where the GPU rounds to nearest even; the wrapped cast rounds to nearest even. With
   both, bf16 kernels can be checked on the CPU like fp16 ones, with the GPU's rounding.

Both patches exist only inside the interpreter; nothing is done when its internals differ.
"""

from __future__ import annotations

import numpy as np


def _index(self) -> int:
    return int(np.asarray(self.handle.data).reshape(-1)[0])


def _bf16_bits_to_fp32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values stored as uint16 bit patterns -> the same values as float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _fp32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values -> bfloat16 bit patterns (uint16), rounded to nearest even as the GPU does."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
    return np.where(np.isnan(values), 0x7FC0, rounded).astype(np.uint16)


def _install_index_fix(interpreter) -> bool:
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None:
        return False
    if getattr(original, "_dnprof_index_fix", False):
        return True

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", _index)

    patch_lang_tensor._dnprof_index_fix = True
    interpreter._patch_lang_tensor = patch_lang_tensor
    return True


def _install_bf16_dot_fix(interpreter) -> bool:
    builder = getattr(interpreter, "InterpreterBuilder", None)
    handle = getattr(interpreter, "TensorHandle", None)
    original = getattr(builder, "create_dot", None)
    if builder is None or handle is None or original is None:
        return False
    if getattr(original, "_dnprof_bf16_fix", False):
        return True
    import triton.language as tl

    def widen(x):
        if x.dtype.scalar == tl.bfloat16:
            return handle(_bf16_bits_to_fp32(x.data), tl.float32)
        return x

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return original(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    original_cast = builder.cast_impl

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            return handle(_fp32_to_bf16_bits(src.data), tl.bfloat16)
        return original_cast(self, src, dst_type)

    create_dot._dnprof_bf16_fix = True
    builder.create_dot = create_dot
    builder.cast_impl = cast_impl
    return True


def install() -> bool:
    """Put both fixes in place once; True when they are (idempotent)."""
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover - a Triton without the interpreter module
        return False
    index_ok = _install_index_fix(interpreter)
    dot_ok = _install_bf16_dot_fix(interpreter)
    return index_ok and dot_ok
