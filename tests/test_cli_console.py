"""Commands printing to a pipe or a log get a fixed readable width, so variant names are not cut."""

from __future__ import annotations

from dnprof.cli.console import LOG_WIDTH, make_console


def test_captured_output_is_wide_enough_for_variant_names(capsys):
    console = make_console()
    assert not console.is_terminal and console.width == LOG_WIDTH
    name = "c64-bk64-bv64-w4-s2-hbf16-wyf-of-m16 (default)"
    from rich.table import Table

    table = Table()
    for col in ("#", "variant", "ms", "tokens/s", "errors vs float64", "vs default", "vs fla"):
        table.add_column(col)
    table.add_row("1", name, "2.276", "1.44e+07", "max 0.0051 (dk); o 0.0042", "1.00x", "1.25x")
    console.print(table)
    assert name in capsys.readouterr().out
