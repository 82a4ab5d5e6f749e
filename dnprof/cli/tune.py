"""``dnprof tune``: list, search and record the fastest verified kernel variant for a GPU and shape.

``dnprof tune --head-dim 256`` tunes (or, with a warm database, just reports); ``--list`` prints the
variant space without timing; ``tune show``, ``tune export FILE`` and ``tune import FILE`` manage the
tuning database. ``--ray [ADDRESS]`` spreads the candidates over every GPU of a Ray cluster (a local
instance without an address); each GPU model tunes into its own database and results file.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import sys
import threading
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.table import Table

from dnprof.cli.console import make_console
from dnprof.cli.options import int_list

FAMILY_CHOICES = ("chunk", "recurrent", "all")
DTYPES = ("bf16", "fp16", "fp32")
#: Results-file status of each tuner failure type (the precise type goes to ``extra["failure"]``).
STATUS_MAP = {"ok": "ok", "failed-verification": "failed-verification", "invalid": "error",
              "out-of-resources": "compile-error", "compile-error": "compile-error", "runtime-error": "error",
              "out-of-memory": "oom", "pending": "unavailable"}
CPU_DEFAULTS = {"seq_len": 64, "batch": 1, "heads": 2, "dtype": "fp32", "budget": "4"}


class TuneError(click.ClickException):
    """Bad input, no GPU, or an unusable database: one line on stderr, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def _gpu_identity(device: str) -> tuple[str, str]:
    """(GPU name, compute capability) of the tuned device; the interpreter has its own identity."""
    from dnprof.variants.tuner import gpu_identity

    return gpu_identity(device)


def _command_line() -> str:
    if sys.argv and Path(sys.argv[0]).name == "dnprof":
        return shlex.join(["dnprof", *sys.argv[1:]])
    return "dnprof tune"


def _open_db(path: Path | None, gpu: str, cc: str):
    from dnprof.variants.db import DatabaseError, open_db

    try:
        return open_db(path, gpu, cc)
    except DatabaseError as exc:
        raise TuneError(str(exc)) from None


def _dims(head_dim: int | None, key_dim: int | None, value_dim: int | None) -> tuple[int, int]:
    K = key_dim or head_dim or 128
    V = value_dim or head_dim or K
    for label, d in (("key dim", K), ("value dim", V)):
        if not 1 <= d <= 256:
            raise TuneError(f"head dim: {label} {d} is not supported (dnprof's kernels take 1..256)")
    return K, V


def _shapes(head_dim: str | None, key_dim: int | None, value_dim: int | None, seq_len: str | None, batch: int | None,
            tokens: int, heads: int | None, model_dim: int, cpu: bool) -> list[tuple[int, int, int, int, int]]:
    """(K, V, T, B, H) of every shape to tune, head dim by head dim and each at every sequence length."""
    try:
        dims = int_list("--head-dim", head_dim) if head_dim else [None]
        lens = int_list("--seq-len", seq_len) if seq_len else [CPU_DEFAULTS["seq_len"] if cpu else 4096]
    except ValueError as exc:
        raise TuneError(str(exc)) from None
    if len(dims) > 1 and (key_dim or value_dim):
        raise TuneError("--key-dim/--value-dim: give a single --head-dim with them")
    shapes = []
    for d in dims:
        K, V = _dims(d, key_dim, value_dim)
        for T in lens:
            B = batch or (CPU_DEFAULTS["batch"] if cpu else max(1, tokens // T))
            H = heads or (CPU_DEFAULTS["heads"] if cpu else max(1, model_dim // V))
            for label, val in (("--batch", B), ("--heads", H)):
                if val < 1:
                    raise TuneError(f"{label}: must be >= 1, got {val}")
            shapes.append((K, V, T, B, H))
    return shapes


# ------------------------------------------------------------------------------------------ listing
def _print_space(console: Console, space, strategy: str, budget, seed: int) -> None:
    from dnprof.variants.space import FLAG_NOTES, RULE_NOTES

    lim = space.limits
    shape = f" at {space.n_streams} (sequence, head) streams" if space.n_streams else ""
    console.print(f"[bold]Variant space[/] K={space.K} V={space.V} {space.dtype} {space.mode}{shape} on {lim.name} "
                  f"(cc {lim.compute_capability}, {lim.smem_per_block // 1024} KiB shared memory per block, "
                  f"{lim.regs_per_sm} registers per SM; limits from {lim.source})")
    table = Table(title="Size before and after pruning")
    table.add_column("family")
    table.add_column("generated", justify="right")
    table.add_column("pruned", justify="right")
    table.add_column("kept", justify="right")
    table.add_column(f"{strategy}, budget {budget}", justify="right")
    for fam in space.families:
        kept = space.kept_of(fam)
        names = set(_choices(fam))
        pruned = sum(1 for p in space.pruned if (p.candidate.family == fam if p.candidate else set(p.raw) == names))
        chosen = space.searched(fam, strategy, budget, seed=seed)
        table.add_row(fam, str(len(kept) + pruned), str(pruned), str(len(kept)), str(len(chosen)))
    table.add_row("all", str(space.total), str(len(space.pruned)), str(len(space.kept)), "", style="bold")
    console.print(table)
    for fam, named in space.included.items():
        console.print(f"named with --include ({fam}, searched after the default): {', '.join(c.name for c in named)}")
    reasons = Table(title="Why variants were pruned (grouped by rule)")
    reasons.add_column("rule")
    reasons.add_column("count", justify="right")
    reasons.add_column("why")
    reasons.add_column("example", overflow="fold")
    examples = space.examples()
    for rule, n in sorted(space.reasons().items(), key=lambda x: -x[1]):
        reasons.add_row(rule, str(n), RULE_NOTES.get(rule, ""), examples.get(rule, ""))
    for flag, cands in space.flags.items():
        reasons.add_row(f"{flag} (flag, kept)", str(len(cands)), FLAG_NOTES.get(flag, ""), cands[0].name)
    console.print(reasons)


def _choices(family: str) -> dict[str, tuple]:
    from dnprof.variants.space import _config_classes

    return _config_classes(family).choices()


# ------------------------------------------------------------------------------------------ progress
class _Live:
    """A rich progress bar with ETA and a live top-5 of the fastest verified variants."""

    def __init__(self, console: Console, enabled: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console
        self.enabled = enabled
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
        self.tasks: dict[str | None, Any] = {}  # one bar per GPU model (--ray), else one
        self.best: dict[str, tuple[float, int]] = {}
        self.live = None
        self.lock = threading.Lock()  # --ray: GPU models report from their own threads

    def _render(self):
        top = Table(title="live top 5 (verified, fastest deepest round)", expand=False)
        top.add_column("#", justify="right")
        top.add_column("variant")
        top.add_column("round", justify="right")
        top.add_column("ms", justify="right")
        ranked = sorted(self.best.items(), key=lambda x: (-x[1][1], x[1][0]))[:5]
        for i, (name, (ms, rnd)) in enumerate(ranked, 1):
            top.add_row(str(i), name, str(rnd), f"{ms:.3f}")
        return Group(self.progress, top)

    def __enter__(self):
        if self.enabled:
            from rich.live import Live

            self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(*exc)

    def event(self, kind: str, gpu: str | None = None, **info: Any) -> None:
        """A tuner event; ``gpu`` names the GPU model when several tune at once (--ray)."""
        with self.lock:
            self._event(kind, gpu, **info)

    def _event(self, kind: str, gpu: str | None, **info: Any) -> None:
        task = self.tasks.get(gpu)
        if kind == "phase":
            desc = {"verify": "compile + verify", "time": "time", "fla": "time fla-core"}[info["phase"]]
            desc = f"{gpu + ' ' if gpu else ''}{info['family']}: {desc}"
            if task is None:
                self.tasks[gpu] = self.progress.add_task(desc, total=info["total"])
            else:
                self.progress.reset(task, total=info["total"], description=desc)
        elif kind in ("verified", "measured") and task is not None:
            self.progress.advance(task)
            name = (f"{gpu}: " if gpu else "") + info["candidate"].name
            if kind == "measured" and info.get("ms"):
                self.best[name] = (info["ms"], info["round"])
            elif kind == "measured":
                self.best.pop(name, None)
        if self.live is not None:
            self.live.update(self._render())


# ------------------------------------------------------------------------------------------ output
def _fmt_err(errors: dict[str, float]) -> str:
    if not errors:
        return "-"
    worst = max(errors, key=lambda k: errors[k])
    return f"max {errors[worst]:.2g} ({worst}); o {errors.get('o', float('nan')):.2g}"


def _print_outcome(console: Console, outcome, top: int = 8) -> None:
    from dnprof.bench.timing import tokens_per_second

    req = outcome.request
    for fam in outcome.families:
        ranked = fam.ranked()
        default = fam.default_result()
        table = Table(title=f"{fam.family}: top variants, K={req.K} V={req.V} T={req.T} B={req.B} H={req.H} "
                            f"{req.dtype} {req.mode} on {fam.key.gpu}")
        for col, j in (("#", "right"), ("variant", "left"), ("ms", "right"), ("tokens/s", "right"),
                       ("errors vs float64", "left"), ("vs default", "right"), ("vs fla", "right")):
            table.add_column(col, justify=j)
        for i, r in enumerate(ranked[:top], 1):
            tps = tokens_per_second(req.B, req.T, r.ms)
            vs_def = f"{default.ms / r.ms:.2f}x" if default is not None and default.ms else "-"
            vs_fla = f"{fam.fla_ms / r.ms:.2f}x" if fam.fla_ms else "-"
            name = r.candidate.name + (" (default)" if r.candidate == fam.default else "")
            table.add_row(str(i), name, f"{r.ms:.3f}", f"{tps:.3g}", _fmt_err(r.errors), vs_def, vs_fla)
        console.print(table)
        counts: dict[str, int] = {}
        for r in fam.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        console.print(f"{fam.family}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        if fam.fla_ms:
            console.print(f"fla-core chunk_delta_rule at this shape: {fam.fla_ms:.3f} ms")
        elif fam.fla_message:
            console.print(f"fla-core: {fam.fla_message}")
        win = fam.winner
        if win is not None:
            console.print(f"[bold green]winner[/] {fam.family}: {win.candidate.name} {win.ms:.3f} ms"
                          + (f", {default.ms / win.ms:.2f}x the default" if default is not None and default.ms else ""))


def _rows(outcome) -> list:
    from dnprof.bench.results import ResultRow
    from dnprof.bench.timing import tokens_per_second

    req = outcome.request
    rows = []
    space_summary = {"generated": outcome.space.total, "kept": len(outcome.space.kept),
                     "pruned": outcome.space.reasons(), "limits": outcome.space.limits.source}
    for fam in outcome.families:
        win = fam.winner
        default = fam.default_result()
        provider = f"dnprof-{fam.family}"
        for r in fam.results:
            if r.status == "pending" and not r.verify_shape:
                continue  # never reached within the budget
            extra: dict[str, Any] = {"family": fam.family, "round": r.round, "rep_ms": r.rep_ms,
                                     "strategy": req.strategy}
            if r.status != "ok":
                extra["failure"] = r.status
            if r.verify_shape:
                extra["verify_B"], extra["verify_H"] = r.verify_shape.get("B"), r.verify_shape.get("H")
            if r.candidate == fam.default:
                extra["default"] = True
            if win is not None and r is win:
                extra["winner"] = True
                extra["space"] = space_summary
                if default is not None and default.ms:
                    extra["speedup_vs_default"] = default.ms / r.ms
                if fam.fla_ms:
                    extra["speedup_vs_fla"] = fam.fla_ms / r.ms
            ok = r.status == "ok" and bool(r.ms)
            rows.append(ResultRow(
                provider=provider, computes="deltanet", mode=req.mode, B=req.B, T=req.T, H=req.H, K=req.K, V=req.V,
                dtype=req.dtype, status=STATUS_MAP.get(r.status, "error") if ok or r.status != "ok" else "unavailable",
                device=req.device, variant=r.candidate.name, config=r.candidate.to_dict(), config_source="explicit",
                message=r.message, ms=r.ms if ok else None, ms_p20=r.ms_p20 if ok else None,
                ms_p80=r.ms_p80 if ok else None, tokens_per_s=tokens_per_second(req.B, req.T, r.ms) if ok else None,
                errors=dict(r.errors), tolerance=r.tolerance,
                verify_T=(r.verify_shape or {}).get("T"), extra=extra))
        if fam.fla_ms:
            rows.append(ResultRow(provider="fla-chunk", computes="deltanet", mode=req.mode, B=req.B, T=req.T, H=req.H,
                                  K=req.K, V=req.V, dtype=req.dtype, status="ok", device=req.device,
                                  variant="chunk_delta_rule", ms=fam.fla_ms,
                                  tokens_per_s=tokens_per_second(req.B, req.T, fam.fla_ms),
                                  extra={"baseline": True, "family": fam.family}))
    return rows


def _default_output(fp: dict[str, Any]) -> Path:
    from dnprof.variants.db import gpu_slug

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = fp["gpu"]["name"] if fp.get("gpu") else "cpu"
    return Path("results") / gpu_slug(name) / f"tune-{stamp}.json"


def _write_rows(rows: list, output: Path, fp: dict[str, Any]) -> Path:
    """Tuning rows as a results file at ``output`` (written atomically, so a rewrite never loses what was there)."""
    from dnprof.bench.results import ResultsFile, write_results

    return write_results(output, ResultsFile(kind="tune", command=_command_line(), fingerprint=fp, rows=rows))


# ------------------------------------------------------------------------------------------ command
@click.group("tune", invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--head-dim", "-d", type=str, default=None,
              help="K = V = this head dim, or a comma list (64,128,256) tuned one after another (default 128).")
@click.option("--key-dim", type=int, default=None, help="Key head dim K (overrides --head-dim).")
@click.option("--value-dim", type=int, default=None, help="Value head dim V (overrides --head-dim).")
@click.option("--seq-len", "-T", type=str, default=None,
              help="Sequence length T, or a comma list (2048,8192): each its own bucket (default 4096; 64 with --device cpu).")
@click.option("--batch", "-B", type=int, default=None, help="Batch size B (default tokens / T).")
@click.option("--tokens", type=int, default=32768, show_default=True, help="B * T when --batch is not given.")
@click.option("--heads", type=int, default=None, help="Heads H (default model dim / V).")
@click.option("--model-dim", type=int, default=2048, show_default=True, help="H * V when --heads is not given.")
@click.option("--dtype", type=click.Choice(DTYPES), default=None, help="Input dtype (default bf16; fp32 on cpu).")
@click.option("--mode", type=click.Choice(("fwd", "fwdbwd")), default="fwdbwd", show_default=True)
@click.option("--family", type=click.Choice(FAMILY_CHOICES), default="chunk", show_default=True)
@click.option("--chunk-size", type=str, default=None, help="Comma list of chunk sizes to search, e.g. 64,128.")
@click.option("--rec", "rec", type=str, default=None,
              help="Comma list of serial-loop tilings to search: main, auto or explicit like bk256bv64w4s2 "
                   "(default main,auto).")
@click.option("--include", type=str, default=None,
              help="Comma list of chunk variant names to time whatever the budget, --chunk-size and --rec (e.g. a "
                   "lead worth a GPU run): each is checked as every kept variant is, then searched right after the default.")
@click.option("--strategy", type=click.Choice(("exhaustive", "random", "halving")), default="halving", show_default=True)
@click.option("--budget", type=str, default=None,
              help="Candidates (48), time (300s, 5m) or both (48,300s); default 48,240s (4 with --device cpu).")
@click.option("--jobs", "-j", type=int, default=None, help="Parallel compile workers (default min(8, CPUs) on a GPU; 0 = in-process).")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Tuning database file (default ~/.cache/dnprof/tuning/<gpu>-cc<cc>.jsonl).")
@click.option("--force", is_flag=True, help="Retune: ignore earlier results of this shape in the database.")
@click.option("--list", "list_only", is_flag=True, help="Print the variant space and pruning; time nothing.")
@click.option("--device-profile", type=click.Choice(("h100", "h200", "a100", "interpreter")), default=None,
              help="Use a GPU's published limits instead of the local device (listing on another machine).")
@click.option("--device", type=click.Choice(("cuda", "cpu")), default=None,
              help="cuda (default) or cpu (the Triton interpreter, tiny shapes).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random orders.")
@click.option("--no-fla", is_flag=True, help="Do not time fla-core's chunk_delta_rule for comparison.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Results file (default results/<gpu>/tune-<UTC time>.json).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run each candidate as a Ray task on one GPU of the cluster at ADDRESS (no ADDRESS: a local "
                   "Ray instance using every local GPU). Needs pip install 'dnprof[ray]'.")
@click.pass_context
def command(ctx: click.Context, head_dim, key_dim, value_dim, seq_len, batch, tokens, heads, model_dim, dtype, mode,
            family, chunk_size, rec, include, strategy, budget, jobs, db_path, force, list_only, device_profile, device,
            seed, no_fla, output, ray_address) -> None:
    """Find the fastest verified kernel variant for this GPU and shape, and remember it."""
    if ctx.invoked_subcommand is not None:
        return
    console = make_console()
    has_cuda = _has_cuda()
    device = device or "cuda"
    if device == "cuda" and not has_cuda and not list_only and ray_address is None:
        raise TuneError("no CUDA GPU is visible: run on a GPU machine, use --device cpu to tune tiny shapes through "
                        "the Triton interpreter, or --list to see the variant space")
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    cpu = device == "cpu"
    shapes = _shapes(head_dim, key_dim, value_dim, seq_len, batch, tokens, heads, model_dim, cpu)
    dtype = dtype or (CPU_DEFAULTS["dtype"] if cpu else "bf16")
    families = ("chunk", "recurrent") if family == "all" else (family,)

    from dnprof.variants.limits import device_limits
    from dnprof.variants.search import DEFAULT_BUDGET, parse_budget
    from dnprof.variants.space import generate_space

    try:
        budget_v = parse_budget(budget or (CPU_DEFAULTS["budget"] if cpu else DEFAULT_BUDGET))
        space_opts = dict(chunk_sizes=int_list("--chunk-size", chunk_size) if chunk_size else None,
                          recs=rec.split(",") if rec else None, include=include.split(",") if include else ())
        limits = device_limits(device_profile, device=device)
        spaces = [generate_space(K, V, dtype, limits, families, mode=mode, n_streams=B * H, **space_opts)
                  for K, V, T, B, H in shapes]
    except ValueError as exc:
        raise TuneError(str(exc)) from None
    if list_only:
        if device == "cuda" and not has_cuda and not device_profile:
            console.print("[yellow]no GPU visible: listing with the H100 profile's limits (--device-profile to choose)[/]")
        for (K, V, T, B, H), space in zip(shapes, spaces):
            if len(shapes) > 1:
                console.print(f"[bold]T={T} B={B} H={H}[/]")
            _print_space(console, space, strategy, budget_v, seed)
        return
    for (K, V, *_), space in zip(shapes, spaces):
        if not space.kept and ray_address is None:
            raise TuneError(f"no variant of {', '.join(families)} fits K={K} V={V} on {limits.name}")

    from dnprof.variants.tuner import TuneRequest, default_jobs

    def request(K: int, V: int, T: int, B: int, H: int, jobs_n: int) -> TuneRequest:
        return TuneRequest(K=K, V=V, T=T, B=B, H=H, dtype=dtype, mode=mode, device=device, families=families,
                           strategy=strategy, budget=budget_v, jobs=jobs_n, force=force, seed=seed, fla=not no_fla)

    if ray_address is not None:
        if len(shapes) > 1:
            raise TuneError("--ray: tune one head dim and sequence length per command")
        _tune_on_ray(console, request(*shapes[0], 0), ray_address, db_path, output, device_profile, space_opts)
        return

    from dnprof.bench.fingerprint import fingerprint

    gpu, cc = _gpu_identity(device)
    db = _open_db(db_path, gpu, cc)
    for w in db.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    fp = fingerprint()
    path = output or _default_output(fp)
    rows: list = []
    workers = 0 if cpu else default_jobs() if jobs is None else jobs
    for shape, space in zip(shapes, spaces):
        req = request(*shape, workers)
        outcome = _tune_one(console, req, db, limits, space, strategy, budget_v, gpu)
        rows += _rows(outcome)
        _write_rows(rows, path, fp)  # after each shape, so an interrupted run keeps the shapes it finished
        console.print(f"results written to {path}")


def _tune_one(console: Console, req, db, limits, space, strategy: str, budget_v, gpu: str):
    """Tune one shape into ``db`` with a live view, print its outcome and return it; on Ctrl-C exit 130 (the
    database keeps every finished step, so the same command resumes)."""
    from dnprof.variants.tuner import Tuner

    console.print(f"tuning {', '.join(req.families)} K={req.K} V={req.V} T={req.T} B={req.B} H={req.H} {req.dtype} "
                  f"{req.mode} on {gpu}: {len(space.kept)} of {space.total} variants kept, {strategy} with budget "
                  f"{budget_v}, {req.jobs} compile workers; database {db.path}")
    live = _Live(console, enabled=console.is_terminal)
    try:
        with live, db:
            outcome = Tuner(req, db, limits, space, on_event=live.event).run()
    except KeyboardInterrupt:
        console.print(f"interrupted: every finished step is in {db.path}; run the same command again to resume")
        raise SystemExit(130) from None
    _print_outcome(console, outcome)
    done = "nothing new measured: reported from the database" if outcome.new_steps == 0 else \
        f"{outcome.new_steps} new steps recorded"
    console.print(f"{done} ({outcome.elapsed_s:.1f} s)" + (f"; stopped early: {outcome.stopped}" if outcome.stopped else ""))
    return outcome


def _tune_on_ray(console: Console, req, address: str, db_path: Path | None, output: Path | None,
                 device_profile: str | None, space_opts: dict[str, Any]) -> None:
    """``tune --ray``: every GPU model of the cluster tunes at once, candidates as one-GPU Ray tasks."""
    from dnprof.distributed import ray_cluster
    from dnprof.variants.db import DatabaseError, gpu_slug
    from dnprof.variants.limits import device_limits
    from dnprof.variants.space import generate_space

    with ray_cluster(address, req.device, TuneError) as (rx, groups):
        if db_path is not None and len(groups) > 1:
            raise TuneError(f"--db names one GPU's database, but the Ray cluster has {len(groups)} GPU models "
                            f"({', '.join(g.label for g in groups)}): leave --db out")
        spaces = {}
        for g in groups:
            limits = device_limits(device_profile) if device_profile else g.info.limits
            spaces[g.label] = space = generate_space(req.K, req.V, req.dtype, limits, req.families, mode=req.mode,
                                                     n_streams=req.B * req.H, **space_opts)
            if not space.kept:
                raise TuneError(f"no variant of {', '.join(req.families)} fits K={req.K} V={req.V} on {g.label}")
        dbs = {g.label: _open_db(db_path, g.gpu, g.compute_capability) for g in groups}
        for db in dbs.values():
            for w in db.warnings:
                console.print(f"[yellow]warning:[/] {w}")
        for g in groups:
            space = spaces[g.label]
            console.print(f"tuning {', '.join(req.families)} K={req.K} V={req.V} T={req.T} B={req.B} H={req.H} "
                          f"{req.dtype} {req.mode} on {g.gpus} x {g.label} ({len(g.node_ids)} Ray nodes): "
                          f"{len(space.kept)} of {space.total} variants kept, {req.strategy} with budget "
                          f"{req.budget}; database {dbs[g.label].path}")
        live = _Live(console, enabled=console.is_terminal)
        several = len(groups) > 1

        def on_event(group, kind: str, **info: Any) -> None:
            live.event(kind, gpu=group.label if several else None, **info)

        try:
            with live:
                done = rx.tune_groups(req, groups, lambda g: spaces[g.label], lambda g: dbs[g.label], on_event,
                                      cancel=threading.Event())
        except KeyboardInterrupt:
            paths = ", ".join(str(db.path) for db in dbs.values())
            console.print(f"interrupted: every finished step is in {paths}; run the same command again to resume")
            raise SystemExit(130) from None
        except DatabaseError as exc:
            raise TuneError(str(exc)) from None
        for group, outcome in done:
            _print_outcome(console, outcome)
            new = "nothing new measured: reported from the database" if outcome.new_steps == 0 else \
                f"{outcome.new_steps} new steps recorded"
            console.print(f"{group.label}: {new} ({outcome.elapsed_s:.1f} s)"
                          + (f"; stopped early: {outcome.stopped}" if outcome.stopped else ""))
            out = output
            if out is not None and several:
                out = out.with_name(f"{out.stem}-{gpu_slug(group.gpu)}{out.suffix}")
            fp = group.fingerprint()
            path = _write_rows(_rows(outcome), out or _default_output(fp), fp)
            console.print(f"results written to {path}")


def _all_dbs(db_path: Path | None):
    from dnprof.variants.db import DatabaseError, TuningDB, iter_db_files

    paths = [db_path] if db_path else list(iter_db_files())
    try:
        return [TuningDB(p) for p in paths if p.exists()]
    except DatabaseError as exc:
        raise TuneError(str(exc)) from None


@command.command("show")
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="One database file (default: every file in the tuning folder).")
@click.option("--all", "show_stale", is_flag=True, help="Also show keys made stale by another Triton or kernel source.")
def show(db_path: Path | None, show_stale: bool) -> None:
    """Table of the best config per key in the tuning database(s)."""
    from dnprof.variants.db import kernel_source_hash, triton_version

    console = make_console()
    dbs = _all_dbs(db_path)
    if not dbs:
        console.print("no tuning database yet: run dnprof tune")
        return
    table = Table(title="best tuned variant per key")
    for col in ("gpu", "shape", "best variant", "ms", "tried", "state"):
        table.add_column(col, overflow="fold")
    for db in dbs:
        for w in db.warnings:
            console.print(f"[yellow]warning:[/] {w}")
        for key in db.keys():
            stale = key.triton != triton_version() or key.kernel_hash != kernel_source_hash()
            if stale and not show_stale:
                continue
            states = db.candidates(key)
            best = db.best(key)
            shape = f"{key.family} {key.dtype} K={key.K} V={key.V} {key.mode} T<={key.t_bucket}"
            table.add_row(f"{key.gpu} (cc {key.compute_capability})", shape, best.candidate if best else "-",
                          f"{best.best_time['ms']:.3f}" if best else "-", str(len(states)),
                          "stale" if stale else "current")
    console.print(table)


@command.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def export(file: Path, db_path: Path | None) -> None:
    """Write the best record per key as a small JSON file (the shipped-configs format)."""
    from dnprof.bench.results import atomic_write_text
    from dnprof.variants.db import export_best

    doc = export_best(_all_dbs(db_path))
    atomic_write_text(file, json.dumps(doc, indent=1) + "\n")
    click.echo(f"{len(doc['entries'])} tuned configs written to {file}")


@command.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Target database (default: each entry's GPU file in the tuning folder).")
def import_(file: Path, db_path: Path | None) -> None:
    """Validate an exported file and append its configs to the matching GPU's database."""
    from dnprof.variants import selection
    from dnprof.variants.db import DatabaseError, TuningDB, default_db_path, import_entries, read_export

    try:
        entries = read_export(file)
        groups: dict[tuple[str, str], list] = {}
        for e in entries:
            groups.setdefault((e["gpu"], str(e["compute_capability"])), []).append(e)
        total = 0
        for (gpu, cc), group in groups.items():
            if db_path is not None:
                db = TuningDB(db_path)
                if db.gpu is None:
                    db = TuningDB(db_path, gpu=gpu, compute_capability=cc)
                elif (db.gpu, db.compute_capability) != (gpu, cc):
                    click.echo(f"skipping {len(group)} entries of {gpu} (cc {cc}): {db_path} belongs to {db.gpu}", err=True)
                    continue
            else:
                db = TuningDB(default_db_path(gpu, cc), gpu=gpu, compute_capability=cc)
            with db:
                n = import_entries(db, group, source=str(file))
            click.echo(f"{n} tuned configs of {gpu} (cc {cc}) imported into {db.path}")
            total += n
    except DatabaseError as exc:
        raise TuneError(str(exc)) from None
    selection.clear_cache()
