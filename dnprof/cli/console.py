"""The rich console the commands print to: the terminal's width, or a readable fixed one when piped."""

from __future__ import annotations

from rich.console import Console

#: Width used when output goes to a file or a log: wide enough that variant names are not cut.
LOG_WIDTH = 160


def make_console(stderr: bool = False) -> Console:
    """A console on stdout (or ``stderr``); piped or captured output gets ``LOG_WIDTH`` columns, not 80."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=LOG_WIDTH)
    return console
