"""``dnprof compare``: DeltaNet kernels against fla-core, FlashAttention and GLA, verified, side by side.

``--ray [ADDRESS]`` runs every provider x shape x mode as a one-GPU Ray task across a cluster (a
local Ray instance without an address); each GPU model gets its own comparison and results file.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from dnprof.cli.console import make_console
from dnprof.cli.options import int_list

MODES = ("fwd", "fwdbwd")
#: Elements (B * T * H * D) above which a CPU run gets a "this will be slow" hint.
CPU_LARGE = 2**20


class OptionError(click.ClickException):
    """A bad option: one line on stderr naming it, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def _int_list(option: str, raw: str) -> list[int]:
    try:
        return int_list(option, raw)
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def _command_line(ctx: click.Context) -> str:
    """The command as typed when run as ``dnprof``; otherwise rebuilt from the options given."""
    argv0 = Path(sys.argv[0]).name if sys.argv else ""
    if len(sys.argv) > 1 and sys.argv[1] == "compare":
        if argv0 == "dnprof":
            return shlex.join(["dnprof", *sys.argv[1:]])
        if argv0 == "__main__.py" and Path(sys.argv[0]).parent.name == "dnprof":
            return shlex.join(["python", "-m", "dnprof", *sys.argv[1:]])
    parts = ["dnprof", "compare"]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) != click.core.ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        flag = param.opts[0]
        if isinstance(param, click.Option) and param.is_flag:
            parts.append(flag)
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


@click.command("compare")
@click.option("--seq-len", "seq_len", default="4096", show_default=True, metavar="T[,T...]",
              help="Sequence lengths, e.g. 16384 or 2048,4096,8192,16384.")
@click.option("--head-dim", "head_dim", default="128", show_default=True, metavar="D[,D...]",
              help="Head dims (K = V = D).")
@click.option("--heads", type=int, default=None, help="Heads H (instead of --model-dim).")
@click.option("--model-dim", "model_dim", type=int, default=None,
              help="Model width; H = model-dim / head-dim.  [default: 2048]")
@click.option("--batch", type=int, default=None, help="Batch B (instead of --tokens).")
@click.option("--tokens", type=int, default=None, help="Tokens per step; B = tokens // T.  [default: 32768]")
@click.option("--mode", "mode", default="fwd,fwdbwd", show_default=True, help="fwd, fwdbwd or both.")
@click.option("--dtype", "dtype", type=click.Choice(["bf16", "fp16", "fp32"]), default=None,
              help="Input dtype (fp32 on cpu only).  [default: bf16 on cuda, fp32 on cpu]")
@click.option("--providers", default=None, metavar="NAME[,NAME...]",
              help="Providers to run (default: every available one). See --list-providers.")
@click.option("--baseline", default=None, help="Provider speedups are quoted against (default: fla-deltanet, "
              "else flash-attn).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Results file (default: results/<gpu>/compare-<UTC time>.json).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "md"]), default="table",
              show_default=True, help="table: live table on the console; csv/json/md: rows on stdout at the end.")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True)
@click.option("--verify-seq-len", "verify_seq_len", type=int, default=None,
              help="Cap on the sequence length of the float64 check (default 4096).")
@click.option("--warmup", type=float, default=25.0, show_default=True, help="Warm-up per timing, ms (GPU).")
@click.option("--rep", type=float, default=100.0, show_default=True, help="Measured time per timing, ms (GPU).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--list-providers", is_flag=True, help="List providers, whether each runs here and why not.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run each provider x shape x mode as a Ray task on one GPU of the cluster at ADDRESS (no "
                   "ADDRESS: a local Ray instance using every local GPU). Needs pip install 'dnprof[ray]'.")
@click.option("--jobs", "-j", type=int, default=None,
              help="Worker processes that compile dnprof's kernel variants before anything is timed "
                   "(default min(8, CPUs) on a GPU; 0 = compile at first launch, in the timed process).")
@click.pass_context
def command(ctx: click.Context, seq_len: str, head_dim: str, heads: int | None, model_dim: int | None,
            batch: int | None, tokens: int | None, mode: str, dtype: str | None, providers: str | None,
            baseline: str | None, output: Path | None, fmt: str, device: str, verify_seq_len: int | None,
            warmup: float, rep: float, seed: int, list_providers: bool, ray_address: str | None,
            jobs: int | None) -> None:
    """Time dnprof's DeltaNet kernels against fla-core, FlashAttention and GLA, each verified first.

    Every provider is checked against a float64 reference at each shape; one that fails is
    recorded and not timed. Rows go to a results file (rewritten after each row) and to the console.
    """
    import torch

    from dnprof import providers as registry

    if list_providers:
        _list_providers(device)
        return

    # -- options -> shapes -------------------------------------------------------------------
    seq_lens = _int_list("--seq-len", seq_len)
    head_dims = _int_list("--head-dim", head_dim)
    modes = [m.strip() for m in mode.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise OptionError(f"--mode: expected fwd, fwdbwd or fwd,fwdbwd, got {mode!r}")
    modes = list(dict.fromkeys(modes))
    if jobs is not None and jobs < 0:
        raise OptionError(f"--jobs: expected 0 or more worker processes, got {jobs}")
    if heads is not None and model_dim is not None:
        raise OptionError("--heads and --model-dim: give one of them, not both")
    if batch is not None and tokens is not None:
        raise OptionError("--batch and --tokens: give one of them, not both")
    for name, value in (("--heads", heads), ("--model-dim", model_dim), ("--batch", batch), ("--tokens", tokens),
                        ("--verify-seq-len", verify_seq_len)):
        if value is not None and value < 1:
            raise OptionError(f"{name}: {value} is not a positive integer")
    if warmup < 0 or rep <= 0:
        raise OptionError("--warmup/--rep: warm-up must be >= 0 ms and rep > 0 ms")
    if heads is None:
        model_dim = 2048 if model_dim is None else model_dim
        for d in head_dims:
            if model_dim % d:
                raise OptionError(f"--head-dim: {d} does not divide --model-dim {model_dim}")
    if batch is None:
        tokens = 32768 if tokens is None else tokens
        for t in seq_lens:
            if t > tokens:
                raise OptionError(f"--seq-len: {t} is longer than --tokens {tokens} (B = tokens // T would be 0)")
    dtype = dtype or ("bf16" if device == "cuda" else "fp32")
    if dtype == "fp32" and device == "cuda":
        raise OptionError("--dtype: fp32 is for --device cpu; on a GPU use bf16 or fp16")
    try:
        chosen = registry.parse_providers(providers, device)
    except ValueError as exc:
        raise OptionError(f"--providers: {exc}") from None
    names = [p.name for p in chosen]
    if baseline is not None:
        try:
            base_provider = registry.get_provider(baseline)
        except ValueError as exc:
            raise OptionError(f"--baseline: {exc}") from None
        if base_provider.name not in names:
            chosen = [base_provider, *chosen]
        baseline = base_provider.name

    # -- device ------------------------------------------------------------------------------
    if device == "cuda" and not torch.cuda.is_available() and ray_address is None:
        raise OptionError("no CUDA GPU is visible on this machine: run on a GPU machine, or add --device cpu "
                          "(with TRITON_INTERPRET=1 for dnprof's kernels) for a small CPU run")

    table_mode = fmt == "table"
    console = make_console(stderr=not table_mode)
    if device == "cpu":
        from dnprof.kernels.validation import interpreter_enabled

        note = "CPU run: wall-clock times, not comparable with GPU figures"
        if not interpreter_enabled():
            note += "; dnprof's kernels are skipped: set TRITON_INTERPRET=1 to run them through the Triton interpreter"
        console.print(f"[yellow]{note}[/yellow]")
    if ray_address is not None:
        _compare_on_ray(ctx, console, ray_address, device, providers, baseline, output, fmt, modes, seed, warmup, rep,
                        verify_seq_len, _shapes(registry, head_dims, seq_lens, heads, model_dim, batch, tokens,
                                                registry.parse_dtype(dtype), device))
        return
    if providers is None:
        skipped = [p for p in registry.all_providers() if device in p.default_devices and not p.available(device)]
        for p in skipped:
            console.print(Text(f"skipping {p.name}: {p.unavailable_reason(device)}", style="dim"))
    if not chosen:
        raise OptionError("--providers: none of the providers is available here (see --list-providers)")
    if baseline is None:
        baseline = registry.default_baseline(chosen, device)

    shapes = _shapes(registry, head_dims, seq_lens, heads, model_dim, batch, tokens, registry.parse_dtype(dtype), device)
    if device == "cpu" and any(sh.tokens * sh.H * sh.K > CPU_LARGE for sh in shapes):
        console.print("[yellow]these shapes are large for a CPU run (the Triton interpreter is very slow); "
                      "for a quick check try --seq-len 64 --head-dim 16 --heads 2 --batch 1[/yellow]")

    # -- run -----------------------------------------------------------------------------------
    from dnprof.bench.compare import default_output_path
    from dnprof.bench.fingerprint import fingerprint

    fp = fingerprint()
    output = output or default_output_path(fp)
    settings = registry.TaskSettings(seed=seed, warmup_ms=warmup, rep_ms=rep, verify_seq_len=verify_seq_len)
    if device == "cuda":
        _precompile(console, chosen, shapes, modes, jobs)
    title = f"dnprof compare on {fp['gpu']['name'] if fp.get('gpu') and device == 'cuda' else 'cpu'}"
    _run(ctx, console, chosen, shapes, modes, settings, baseline, output, fp, title, fmt)


def _precompile(console: Console, chosen: list, shapes: list, modes: list[str], jobs: int | None) -> None:
    """Compile dnprof's variants in worker processes first (see dnprof.bench.precompile); say what it did."""
    from dnprof.bench.precompile import precompile
    from dnprof.variants.tuner import default_jobs

    n = default_jobs() if jobs is None else jobs
    if n <= 0:
        return
    with console.status(f"compiling dnprof's kernel variants on {n} workers ..."):
        summary = precompile(chosen, shapes, modes, n)
    if summary.tasks:
        console.print(Text(summary.line(), style="dim"))


def _shapes(registry, head_dims: list[int], seq_lens: list[int], heads: int | None, model_dim: int | None,
            batch: int | None, tokens: int | None, torch_dtype, device: str) -> list:
    """Every (head dim, sequence length) shape of the run."""
    shapes = []
    for d in head_dims:
        H = heads if heads is not None else model_dim // d
        for t in seq_lens:
            B = batch if batch is not None else tokens // t
            shapes.append(registry.Shape(B=B, T=t, H=H, K=d, V=d, dtype=torch_dtype, device=device))
    return shapes


def _run(ctx: click.Context, console: Console, chosen: list, shapes: list, modes: list[str], settings,
         baseline: str | None, output: Path, fp: dict, title: str, fmt: str, executor=None) -> None:
    """Measure with a live table, write ``output`` as rows land, and print the summary (and rows for --format)."""
    from dnprof.bench.compare import run_compare
    from dnprof.bench.compare_table import CompareTable, format_rows

    live = CompareTable(baseline, console=console, title=title)
    try:
        with live:
            results = run_compare(chosen, shapes, modes, settings=settings, baseline=baseline, output=output,
                                  command=_command_line(ctx), fingerprint=fp, on_row=live.add,
                                  on_start=live.start, executor=executor)
    except KeyboardInterrupt:
        kept = f"{len(live.rows)} rows kept in {output}" if live.rows else "nothing measured yet"
        click.echo(f"interrupted: {kept}", err=True)
        ctx.exit(130)
    if fmt != "table":
        click.echo(format_rows(results.rows, fmt, baseline))
    counts: dict[str, int] = {}
    for r in results.rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    if not console.is_terminal:
        console.line()
    console.print(Text(f"{len(results.rows)} rows ({summary}) written to {output}"))


def _compare_on_ray(ctx: click.Context, console: Console, address: str, device: str, providers: str | None,
                    baseline: str | None, output: Path | None, fmt: str, modes: list[str], seed: int, warmup: float,
                    rep: float, verify_seq_len: int | None, shapes: list) -> None:
    """``compare --ray``: the whole comparison once per GPU model of the cluster, its tasks spread over that model's GPUs."""
    from dnprof import providers as registry
    from dnprof.bench.compare import default_output_path
    from dnprof.distributed import ray_cluster
    from dnprof.variants.db import gpu_slug

    with ray_cluster(address, device, OptionError) as (rx, groups):
        settings = registry.TaskSettings(seed=seed, warmup_ms=warmup, rep_ms=rep, verify_seq_len=verify_seq_len)
        for group in groups:
            usable = group.info.providers
            if providers is None:
                chosen = [registry.get_provider(n) for n in usable]
                for p in registry.all_providers():
                    if device in p.default_devices and p.name not in usable:
                        console.print(Text(f"skipping {p.name}: not available on the {group.label} workers", style="dim"))
            else:
                chosen = registry.parse_providers(providers, device)
            base = baseline or next((n for n in registry.BASELINE_PREFERENCE
                                     if n in usable and n in {p.name for p in chosen}), None)
            if base is not None and base not in {p.name for p in chosen}:
                chosen = [registry.get_provider(base), *chosen]
            if not chosen:
                raise OptionError(f"--providers: none of the providers is available on the {group.label} workers")
            fp = group.fingerprint()
            out = output or default_output_path(fp)
            if output is not None and len(groups) > 1:
                out = output.with_name(f"{output.stem}-{gpu_slug(group.gpu)}{output.suffix}")
            title = f"dnprof compare on {group.gpus} x {group.label if device == 'cuda' else 'cpu'} (Ray)"
            _run(ctx, console, chosen, shapes, modes, settings, base, out, fp, title, fmt,
                 executor=rx.RayExecutor(group, device))


def _list_providers(device: str) -> None:
    from rich.table import Table

    from dnprof import providers as registry

    table = Table(title=f"dnprof compare providers ({device})")
    for col in ("name", "computes", "what", "default", "available here"):
        table.add_column(col)
    for p in registry.all_providers():
        reason = p.unavailable_reason(device)
        table.add_row(p.name, p.computes, Text(p.description), "yes" if device in p.default_devices else "on request",
                      Text("yes" if reason is None else f"no: {reason}"))
    table.add_row(registry.CHUNK_PREFIX + "<variant>", "deltanet", "a named chunk variant: c64, c128 or a full name",
                  "on request", "as dnprof-chunk")
    make_console().print(table)
