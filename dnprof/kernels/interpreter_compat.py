"""Keeps Triton 3.6's CPU interpreter working with NumPy >= 2.4 for loops with a runtime trip count.

The interpreter hands a kernel's scalars around as one-element arrays and converts them with
``int(array)`` where Python needs an index (``range(0, n)``); NumPy 2.4 made that conversion of a
1-d array a TypeError. This wraps the interpreter's tensor patching so ``__index__`` takes the
single element explicitly. Compiled GPU kernels are untouched: the patch only exists while the
interpreter runs a kernel, and nothing is done when the interpreter's internals differ.
"""

from __future__ import annotations

import numpy as np


def _index(self) -> int:
    return int(np.asarray(self.handle.data).reshape(-1)[0])


def install() -> bool:
    """Wrap ``triton.runtime.interpreter._patch_lang_tensor`` once; True when the wrapper is in place."""
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover - a Triton without the interpreter module
        return False
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
