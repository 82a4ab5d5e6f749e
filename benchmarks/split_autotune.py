"""Run a dnprof command with every Triton autotuner trying only one share of its configs (share I of N).

``benchmarks/gpu_suite.sh warm-D`` with ``WARM_SPLIT=N`` starts N of these side by side per baseline:
together they compile every config the baseline's autotuners consider, each process its share, into
Triton's cache, so that the compare after them autotunes over all the configs from compiled binaries.
A baseline whose first call compiles for minutes in one process (fla-core's GLA fwd+bwd at D = 256: over
360 s on an H200) then compiles in about 1/N of the time on N cores. What these processes time is thrown
away (``gpu_suite.sh`` runs them with ``TRITON_CACHE_AUTOTUNING=0``): each saw only its share.

    python benchmarks/split_autotune.py I N -- compare --head-dim 256 --providers fla-gla ...
"""

from __future__ import annotations

import sys
from typing import Sequence, TypeVar

T = TypeVar("T")


def share_of(configs: Sequence[T], part: int, parts: int) -> list[T]:
    """Configs ``part``, ``part + parts``, ..., after the first config in every share: where all of a share's
    own configs fail to compile (out of shared memory), the autotuner still has one to run, and the process
    goes on to compile the kernels after it."""
    mine = list(configs[part::parts])
    return mine if part == 0 else list(configs[:1]) + mine


def install(part: int, parts: int) -> None:
    """Make every Triton autotuner in this process try only its share of the configs it would try."""
    from triton.runtime.autotuner import Autotuner

    prune = Autotuner.prune_configs

    def prune_to_share(self, kwargs):
        return share_of(prune(self, kwargs), part, parts)

    Autotuner.prune_configs = prune_to_share


def parse(argv: Sequence[str]) -> tuple[int, int, list[str]]:
    """``I N -- dnprof arguments`` -> (I, N, arguments); ValueError naming what is wrong."""
    if len(argv) < 3 or argv[2] != "--":
        raise ValueError("usage: split_autotune.py I N -- DNPROF_ARGS... (I: this share, 0 to N - 1; N: the shares)")
    try:
        part, parts = int(argv[0]), int(argv[1])
    except ValueError:
        raise ValueError(f"I and N: expected integers, got {argv[0]!r} and {argv[1]!r}") from None
    if parts < 1 or not 0 <= part < parts:
        raise ValueError(f"I and N: expected 0 <= I < N, got I = {part}, N = {parts}")
    return part, parts, list(argv[3:])


def main(argv: Sequence[str] | None = None) -> None:
    try:
        part, parts, args = parse(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        sys.exit(f"split_autotune: {exc}")
    install(part, parts)
    from dnprof.cli import main as dnprof_main

    dnprof_main(args=args, prog_name="dnprof")


if __name__ == "__main__":
    main()
