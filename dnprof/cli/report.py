"""``dnprof report``: turn results files from any GPUs into one HTML page, Markdown tables or CSV."""

from __future__ import annotations

import os
from pathlib import Path

import click

from dnprof.bench.results import ResultsFileError, atomic_write_text
from dnprof.reports.peer import DEFAULT_TARGETS

_DEFAULT_HTML = "report.html"


def _one_line(text: str) -> str:
    """Collapse whitespace so an error message stays on one line."""
    return " ".join(str(text).split())


@click.command("report")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"Where to write. Default: {_DEFAULT_HTML} for html, stdout for md and csv.")
@click.option("--format", "fmt", type=click.Choice(["html", "md", "csv"]), default="html", show_default=True,
              help="html: the full page with figures; md: tables for a pull request; csv: the flat rows.")
@click.option("--title", default="dnprof report", show_default=True, help="Page and document title.")
@click.option("--target-fwd", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TARGETS["fwd"],
              show_default=True, help="Forward speedup over fla-core's DeltaNet that the targets table asks for.")
@click.option("--target-fwdbwd", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TARGETS["fwdbwd"],
              show_default=True, help="Forward + backward speedup over fla-core's DeltaNet the targets table asks for.")
@click.pass_context
def command(ctx: click.Context, paths: tuple[Path, ...], output: Path | None, fmt: str, title: str,
            target_fwd: float, target_fwdbwd: float) -> None:
    """Report on results files and folders (searched recursively for *.json) from compare and tune runs."""
    from dnprof.reports import load_report_data, render_html, render_markdown, to_csv

    try:
        data = load_report_data(paths)
    except ResultsFileError as exc:
        click.echo(f"dnprof report: error: {_one_line(exc.path)}: {_one_line(exc.reason)}", err=True)
        ctx.exit(2)
        return
    targets = {"fwd": target_fwd, "fwdbwd": target_fwdbwd}
    if fmt == "html":
        text = render_html(data, title, targets)
    elif fmt == "md":
        text = render_markdown(data, title, targets)
    else:
        text = to_csv(data)
    if output is None and fmt != "html":
        click.echo(text, nl=False)
        return
    target = output or Path(_DEFAULT_HTML)
    try:
        atomic_write_text(target, text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(target, 0o666 & ~umask)  # a report is for sharing: the usual file mode, not the temp file's 0600
    except OSError as exc:
        click.echo(f"dnprof report: error: {_one_line(target)}: cannot write ({_one_line(exc.strerror or exc)})",
                   err=True)
        ctx.exit(2)
        return
    click.echo(f"wrote {target} ({fmt}: {len(data.rows)} rows from {len(data.runs)} files, "
               f"GPUs: {', '.join(data.gpus) or 'none'})", err=True)
