"""dnprof's Triton kernels (chunkwise and recurrent DeltaNet, forward and backward)."""

from dnprof.kernels.interpreter_compat import install as _install_interpreter_compat

_install_interpreter_compat()
