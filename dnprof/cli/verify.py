"""``dnprof verify``: check chunk variants and the recurrent kernel against the float64 reference."""

from __future__ import annotations

import math
import os

import click
from rich.table import Table

from dnprof.cli.console import make_console

_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_KEYS = ("o", "ht", "dq", "dk", "dv", "dbeta", "dh0")
#: Defaults per device: the CPU runs kernels through the Triton interpreter, so shapes stay tiny.
_DEFAULTS = {
    "cpu": dict(head_dim="32", seq_len=64, batch=1, heads=2, dtype="fp32"),
    "cuda": dict(head_dim="64,128", seq_len=1024, batch=2, heads=4, dtype="bf16"),
}


def _int_list(value: str, option: str) -> list[int]:
    try:
        out = [int(x) for x in str(value).split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint=option) from None
    if not out:
        raise click.BadParameter("expected at least one value", param_hint=option)
    return out


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _select_variants(spec: str, chunk_sizes: list[int], K: int, V: int, dtype: str | None = None,
                     mode: str = "fwdbwd"):
    """Resolve ``--variants`` to ChunkConfigs for one head dim; ConfigError on bad names. ``default`` is the
    variant a call of ``mode`` runs untuned (a forward alone fuses its output at D <= 128)."""
    from dnprof.variants.chunk_config import ChunkConfig, ConfigError

    spec = spec.strip()
    if spec in ("default", "all"):
        out = []
        for c in chunk_sizes:
            base = ChunkConfig.default_for(K, V, chunk_size=c, dtype=dtype, mode=mode)
            if spec == "default":
                out.append(base)
                continue
            # "all": every fusion/storage family at the default tiles.
            # The WY step fused, split, or applied in the state loop (fuse_wy is moot there).
            for sd in ChunkConfig.choices()["state_dtype"]:
                for fw, wl in ((True, False), (False, False), (True, True)):
                    for fo in ChunkConfig.choices()["fuse_output"]:
                        out.append(ChunkConfig(**{**base.to_dict(), "state_dtype": sd, "fuse_wy": fw, "wy_in_loop": wl,
                                                  "fuse_output": fo}))
                # the separate output kernel's own forms: a chunk's V blocks in one program, and (without a
                # backward) chunks twice as long; and the serial loops' loads the other way than the default
                apart = {**base.to_dict(), "state_dtype": sd, "fuse_output": False}
                for form in ({"output_vloop": True}, {"output_chunk": 2 * c}, {"tma": not base.tma}):
                    try:
                        out.append(ChunkConfig(**{**apart, **form}).validate(K, V))
                    except ConfigError:  # e.g. chunks too tall for the tiles: nothing to verify
                        pass
        return out
    return [ChunkConfig.from_name(name).validate(K, V) for name in spec.split(",") if name.strip()]


def _fmt(err: float | None, tol: float) -> str:
    if err is None:
        return "-"
    if not math.isfinite(err):
        return "[red]inf/nan[/red]"
    text = f"{err:.2e}"
    return text if err <= tol else f"[red]{text}[/red]"


@click.command("verify")
@click.option("--head-dim", "head_dim", default=None, help="Head dim(s) for K = V, comma-separated (e.g. 64,128).")
@click.option("--seq-len", "seq_len", type=int, default=None, help="Tokens per sequence T.")
@click.option("--chunk-size", "chunk_size", default="64", show_default=True,
              help="Chunk size(s) for the default/all variants, comma-separated (16, 32, 64, 128).")
@click.option("--dtype", type=click.Choice(sorted(_DTYPES)), default=None, help="Input dtype (cuda: bf16, cpu: fp32).")
@click.option("--variants", default="default", show_default=True,
              help="'default', 'all' (every fusion/storage family), or comma-separated variant names.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="cuda when a GPU is present, else cpu (Triton interpreter, small shapes).")
@click.option("--batch", type=int, default=None, help="Batch size B.")
@click.option("--heads", type=int, default=None, help="Number of heads H.")
@click.option("--mode", type=click.Choice(["fwd", "fwdbwd"]), default="fwdbwd", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def command(head_dim, seq_len, chunk_size, dtype, variants, device, batch, heads, mode, seed) -> None:
    """Run every selected chunk variant and the recurrent kernel against float64; exit 1 on any failure."""
    console = make_console()
    device = device or ("cuda" if _cuda_available() else "cpu")
    if device == "cuda" and not _cuda_available():
        raise click.UsageError("--device cuda: no CUDA GPU is visible on this machine (use --device cpu)")
    d = _DEFAULTS[device]
    head_dims = _int_list(head_dim if head_dim is not None else d["head_dim"], "--head-dim")
    chunk_sizes = _int_list(chunk_size, "--chunk-size")
    seq_len = d["seq_len"] if seq_len is None else seq_len
    batch = d["batch"] if batch is None else batch
    heads = d["heads"] if heads is None else heads
    dtype = dtype or d["dtype"]
    for name, val, lo in (("--seq-len", seq_len, 1), ("--batch", batch, 1), ("--heads", heads, 1)):
        if val < lo:
            raise click.BadParameter(f"must be >= {lo}, got {val}", param_hint=name)
    for D in head_dims:
        if not 1 <= D <= 256:
            raise click.BadParameter(f"head dims must be between 1 and 256, got {D}", param_hint="--head-dim")
    for c in chunk_sizes:
        if c not in (16, 32, 64, 128):
            raise click.BadParameter(f"chunk sizes must be 16, 32, 64 or 128, got {c}", param_hint="--chunk-size")
    if device == "cpu":
        if dtype == "bf16":
            raise click.BadParameter(
                "bf16 cannot be checked on the CPU: tl.dot on bf16 operands is wrong in the Triton interpreter; "
                "use fp32 or fp16, or a GPU", param_hint="--dtype")
        os.environ.setdefault("TRITON_INTERPRET", "1")

    from dnprof.variants.errors import ConfigError, RefusedOnDevice

    try:
        plan = {D: _select_variants(variants, chunk_sizes, D, D, dtype, mode) for D in head_dims}
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="--variants") from None

    import functools

    import torch

    from dnprof.bench.verify import verify_delta_kernel
    from dnprof.kernels.chunk import chunk_delta_rule
    from dnprof.kernels.validation import interpreter_enabled

    if device == "cpu" and not interpreter_enabled():
        raise click.UsageError("--device cpu needs TRITON_INTERPRET=1 set before Triton is imported")
    try:
        from dnprof.kernels.recurrent import fused_recurrent_delta_rule
    except Exception as e:  # noqa: BLE001 - report any import problem, do not hide the chunk results
        fused_recurrent_delta_rule = None
        recurrent_note = f"recurrent kernel not checked: dnprof.kernels.recurrent is not importable ({type(e).__name__}: {e})"
    else:
        recurrent_note = None

    tdtype = getattr(torch, _DTYPES[dtype])
    console.print(f"dnprof verify: device={device}, dtype={dtype}, B={batch}, T={seq_len}, H={heads}, mode={mode}, "
                  f"seed={seed}; errors are ||x - ref|| / ||ref|| against float64")
    if device == "cpu":
        console.print("note: CPU run through the Triton interpreter (small shapes; bf16 is not checked here because "
                      "tl.dot on bf16 operands is wrong in the interpreter)")
    if recurrent_note:
        console.print(f"note: {recurrent_note}")

    keys = _KEYS if mode == "fwdbwd" else _KEYS[:2]
    table = Table(title="dnprof verify")
    for col in ("kernel", "D"):
        table.add_column(col)
    for key in keys:
        table.add_column(key, justify="right")
    table.add_column("tol", justify="right")
    table.add_column("status")
    any_failed = False
    refused = 0

    def run(label: str, kernel, D: int) -> None:
        nonlocal any_failed, refused
        try:
            res = verify_delta_kernel(kernel, batch, seq_len, heads, D, D, dtype=tdtype, device=device,
                                      mode=mode, seed=seed)
        except RefusedOnDevice as e:  # a known mis-compile on this GPU: nothing ran, so nothing failed
            refused += 1
            table.add_row(label, str(D), *["-"] * len(keys), "-", f"[yellow]refused: {e}[/yellow]")
            return
        except Exception as e:  # noqa: BLE001 - a crashing variant is a recorded failure
            any_failed = True
            table.add_row(label, str(D), *["-"] * len(keys), "-", f"[red]error: {type(e).__name__}: {e}[/red]")
            return
        any_failed |= not res.passed
        status = "[green]pass[/green]" if res.passed else f"[red]FAIL ({', '.join(res.failed)})[/red]"
        table.add_row(label, str(D), *[_fmt(res.errors.get(k), res.tolerance) for k in keys],
                      f"{res.tolerance:.0e}", status)

    for D, cfgs in plan.items():
        for cfg in cfgs:
            run(cfg.name, functools.partial(chunk_delta_rule, config=cfg), D)
        if fused_recurrent_delta_rule is not None:
            run("recurrent", fused_recurrent_delta_rule, D)
    console.print(table)
    if refused:
        console.print(f"[yellow]{refused} variant(s) refused on this GPU before launch (see each row's reason); "
                      f"not counted as failures[/yellow]")
    if any_failed:
        console.print("[red]verification failed[/red]")
        raise SystemExit(1)
    console.print("[green]all checks passed[/green]")
