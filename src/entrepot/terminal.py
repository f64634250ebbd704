"""Output of the command line: one console, and listings of rows.

The console reads no markup and no emoji codes, so a value such as ``[/x]`` or
``:ok:`` in a reason, a key or a ``--by`` name prints as it is. Control characters
in values, such as the escape sequences a remote error body may carry, print as
``\\x1b`` and the like, so they cannot clear or recolour the operator's terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from entrepot.printable import printable

console = Console(markup=False, emoji=False)

# Terminals narrower than this get the listings of orders, dead letters and pushes as
# blocks, because their seven columns, with long reasons, wrap a table into strips.
NARROW_WIDTH = 120


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Print ``message`` as an error and exit with ``code``."""
    console.print(Text(printable(message), style="red"), soft_wrap=True)
    raise typer.Exit(code)


def print_rows(
    columns: Sequence[str], rows: Iterable[Sequence[str]], *, blocks_when_narrow: bool = False
) -> None:
    """Print ``rows`` under ``columns`` as a table, or, when ``blocks_when_narrow`` and
    the terminal is narrower than NARROW_WIDTH, as one block of lines per row."""
    if blocks_when_narrow and console.width < NARROW_WIDTH:
        for row in rows:
            block = Table.grid(padding=(0, 2))
            block.add_column(no_wrap=True)
            block.add_column(overflow="fold")
            for column, value in zip(columns, row, strict=True):
                block.add_row(column, Text(printable(value)))
            console.print(block)
            console.print()
        return

    table = Table()
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(printable(value)) for value in row))
    console.print(table)
