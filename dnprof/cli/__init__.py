"""The ``dnprof`` command line: click commands only; each command lives in its own module."""

from __future__ import annotations

import importlib

import click

from dnprof import __version__

#: Command modules, each exposing a click command called ``command``. A module that is not
#: present is simply not offered, so no command appears before it works.
COMMAND_MODULES = ("env", "verify", "compare", "tune", "report")


class _LazyGroup(click.Group):
    """Imports each command module on first use, so ``dnprof --help`` stays fast and GPU-free."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMAND_MODULES if importlib.util.find_spec(f"dnprof.cli.{name}") is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.list_commands(ctx):
            return None
        return importlib.import_module(f"dnprof.cli.{name}").command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dnprof")
def main() -> None:
    """dnprof: generate, verify, autotune and compare Triton kernels for DeltaNet."""


if __name__ == "__main__":  # pragma: no cover
    main()
