"""Small synthetic results files for the report tests: two GPUs, compare and tune runs, failures.

Times are chosen so every speedup is known exactly: each baseline's time is dnprof's times BASELINE_FACTOR.
The second GPU's name is HTML that must never reach a page unescaped.
"""

from __future__ import annotations

from pathlib import Path

from dnprof.bench.results import ResultRow, ResultsFile, write_results

H100 = "NVIDIA H100 80GB HBM3"
EVIL_GPU = "<script>alert(1)</script>"
EVIL_MESSAGE = "<img src=x onerror=alert(2)> head dim 256 is not supported"
EVIL_COMMAND = "dnprof compare --seq-len 1024,4096 --note '<b>bold</b> & more'"
#: Baseline time / dnprof time at every compared shape.
BASELINE_FACTOR = {"fla-deltanet": 2.0, "flash-attn": 3.0, "fla-gla": 1.5, "fla-recurrent": 4.0,
                   "dnprof-recurrent": 5.0}
#: The evil GPU is measured against fla-deltanet only, at this factor.
EVIL_FACTOR = 1.25
TOLERANCE = 1e-2
TUNE_SHAPE = dict(mode="fwd", B=8, T=4096, H=16, K=128, V=128, dtype="bfloat16")
#: Tuning candidates on the H100: (BV, num_warps, chunk_size) -> ms; None marks the failed one.
TUNE_GRID = {
    (32, 4, 64): 1.40, (32, 8, 64): 1.30, (64, 4, 64): 1.20, (64, 8, 64): 1.60,
    (32, 4, 128): 1.10, (32, 8, 128): 1.00, (64, 4, 128): 0.90, (64, 8, 128): None,
}
TUNE_WINNER = (64, 4, 128)


def dnprof_ms(mode: str, K: int, T: int) -> float:
    """dnprof-chunk's (synthetic) time at a shape."""
    return {"fwd": 1.0, "fwdbwd": 3.0}[mode] * T / 1024 * K / 64


def fingerprint(gpu: str, sm: int = 132) -> dict:
    """A fingerprint as ``dnprof env --json`` would print it."""
    return {"gpu": {"name": gpu, "sm_count": sm, "compute_capability": "9.0", "driver": "570.86.15"},
            "cuda": "12.8", "torch": "2.11.0", "triton": "3.6.0", "dnprof": "0.1.0", "git_commit": "abc123def456",
            "fla_core": "0.6.0", "date": "2026-01-02T03:04:05+00:00"}


def _row(provider: str, mode: str, K: int, T: int, ms: float | None, **kw) -> ResultRow:
    """One row at the compare shapes' B and H (B*T = 32768 tokens, H*K = 2048)."""
    computes = {"flash-attn": "attention", "cudnn-attn": "attention", "fla-gla": "gla"}.get(provider, "deltanet")
    B, H = 32768 // T, 2048 // K
    status = kw.pop("status", "ok")
    tokens = B * T / (ms / 1e3) if ms else None
    return ResultRow(provider=provider, computes=computes, mode=mode, B=B, T=T, H=H, K=K, V=K, dtype="bfloat16",
                     status=status, ms=ms, tokens_per_s=tokens, **kw)


def compare_rows() -> list[ResultRow]:
    """The H100 compare run: all baselines at fwd/fwdbwd, K 64/128, T 1024/4096, plus failures."""
    rows = []
    for mode in ("fwd", "fwdbwd"):
        for K in (64, 128):
            for T in (1024, 4096):
                ms = dnprof_ms(mode, K, T)
                errs = {"o": 4e-3, "ht": 3.5e-3} if mode == "fwd" else \
                    {"o": 4e-3, "ht": 3.5e-3, "dq": 5e-3, "dk": 6e-3, "dv": 5e-3, "dbeta": 7e-3}
                rows.append(_row("dnprof-chunk", mode, K, T, ms, variant="c128", config={"chunk_size": 128, "BV": 64},
                                 peak_mem_mb=1000.0 + K, roofline_ms=ms / 4, errors=errs, tolerance=TOLERANCE))
                rows.append(_row("dnprof-chunk-c64", mode, K, T, ms * 1.25, variant="c64",
                                 config={"chunk_size": 64, "BV": 64}, peak_mem_mb=1500.0 + K))
                for provider, factor in BASELINE_FACTOR.items():
                    rows.append(_row(provider, mode, K, T, ms * factor, peak_mem_mb=2000.0 + K,
                                     roofline_ms=ms / 4 if provider == "fla-deltanet" else None,
                                     errors={"o": 4.5e-3} if provider == "fla-deltanet" else {},
                                     tolerance=TOLERANCE if provider == "fla-deltanet" else None))
    rows.append(_row("cudnn-attn", "fwd", 256, 4096, None, status="error", message=EVIL_MESSAGE))
    rows.append(_row("dnprof-chunk-wide", "fwdbwd", 128, 4096, None, variant="wide", status="failed-verification",
                     config={"chunk_size": 128, "BV": 128}, errors={"o": 4e-3, "dk": 0.5}, tolerance=TOLERANCE,
                     message="dk error 0.5 above tolerance 0.01"))
    return rows


def evil_rows() -> list[ResultRow]:
    """The second GPU's compare run: fwd at K 64 against fla-deltanet."""
    rows = []
    for T in (1024, 4096):
        ms = dnprof_ms("fwd", 64, T) * 0.8
        rows.append(_row("dnprof-chunk", "fwd", 64, T, ms, variant="c128", config={"chunk_size": 128},
                         peak_mem_mb=900.0, errors={"o": 4e-3}, tolerance=TOLERANCE))
        rows.append(_row("fla-deltanet", "fwd", 64, T, ms * EVIL_FACTOR, peak_mem_mb=1900.0))
    return rows


def tune_rows() -> list[ResultRow]:
    """The H100 tune run at TUNE_SHAPE: a BV x num_warps x chunk_size grid, one failed candidate, one error."""
    rows = []
    for (bv, warps, chunk), ms in TUNE_GRID.items():
        name = f"bv{bv}-w{warps}-c{chunk}"
        config = {"BV": bv, "num_warps": warps, "chunk_size": chunk}
        if ms is None:
            rows.append(ResultRow(provider="dnprof-chunk", computes="deltanet", status="failed-verification",
                                  variant=name, config=config, errors={"o": 4e-3, "dk": 0.3}, tolerance=TOLERANCE,
                                  message="dk error 0.3 above tolerance 0.01", **TUNE_SHAPE))
            continue
        winner = (bv, warps, chunk) == TUNE_WINNER
        rows.append(ResultRow(provider="dnprof-chunk", computes="deltanet", status="ok", variant=name,
                              config=config, ms=ms, errors={"o": 4e-3, "ht": 3e-3}, tolerance=TOLERANCE,
                              extra={"winner": True} if winner else {}, **TUNE_SHAPE))
    rows.append(ResultRow(provider="dnprof-chunk", computes="deltanet", status="compile-error", variant="bv128-w8-c128",
                          config={"BV": 128, "num_warps": 8, "chunk_size": 128},
                          message="out of shared memory: 262144 > 232448", **TUNE_SHAPE))
    return rows


def write_fixture_results(folder: Path) -> dict[str, Path]:
    """Write the three results files (two GPUs, compare and tune) under ``folder``; return their paths."""
    folder = Path(folder)
    paths = {
        "h100_compare": write_results(folder / "h100" / "compare.json",
                                      ResultsFile("compare", "dnprof compare --seq-len 1024,4096 --head-dim 64,128",
                                                  fingerprint(H100), compare_rows())),
        "h100_tune": write_results(folder / "h100" / "tune.json",
                                   ResultsFile("tune", "dnprof tune --head-dim 128 --seq-len 4096",
                                               fingerprint(H100), tune_rows())),
        "evil_compare": write_results(folder / "evil" / "compare.json",
                                      ResultsFile("compare", EVIL_COMMAND, fingerprint(EVIL_GPU, sm=108),
                                                  evil_rows())),
    }
    return paths
