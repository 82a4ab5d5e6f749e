"""The variant space of dnprof's chunkwise kernels: a typed config (``ChunkConfig``) naming one variant."""
