"""``dnprof env``: print the machine fingerprint that every results file embeds."""

from __future__ import annotations

import json

import click
from rich.table import Table

from dnprof.bench.fingerprint import fingerprint
from dnprof.cli.console import make_console


@click.command("env")
@click.option("--json", "as_json", is_flag=True, help="Print the fingerprint as JSON.")
def command(as_json: bool) -> None:
    """Show this machine's GPU, driver, CUDA and package versions."""
    fp = fingerprint()
    if as_json:
        click.echo(json.dumps(fp, indent=2, sort_keys=True))
        return
    console = make_console()
    table = Table(title="dnprof environment", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    gpu = fp["gpu"]
    if gpu is None:
        table.add_row("GPU", "none visible: dnprof's kernels run here only through the Triton interpreter "
                      "(TRITON_INTERPRET=1, CPU tensors, small shapes)")
    else:
        for key, value in gpu.items():
            table.add_row(f"GPU {key.replace('_', ' ')}", "-" if value is None else str(value))
    for key in ("cuda", "torch", "triton", "dnprof", "git_commit", "fla_core", "flash_attn", "python", "platform", "date"):
        value = fp[key]
        if key in ("fla_core", "flash_attn") and value is None:
            value = "not installed"
        table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    console.print(table)
