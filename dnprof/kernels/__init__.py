"""dnprof's hand-written Triton kernels and their autograd wrappers."""
