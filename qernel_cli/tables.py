"""Result tables on stdout: a rich table on a terminal, tab-separated text everywhere else.

In a pipe, a log file or a batch job (stdout not a terminal), a table is
written as ``# title`` followed by one tab-separated header line and one line
per row, never cut to a width: every digit the command computed reaches the
file, and ``pandas.read_csv(path, sep="\\t", comment="#")`` or ``cut -f``
read it. ``--json`` gives the same numbers unrounded.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table


def show(
    console: Console,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    header: bool = True,
    justify: str = "right",
) -> None:
    """Print one table on ``console``: rich when it is a terminal, else ``# title`` and tab-separated lines."""
    if not console.is_terminal:
        lines = [f"# {title}"]
        if header:
            lines.append("\t".join(columns))
        lines += ["\t".join(row) for row in rows]
        console.file.write("\n".join(lines) + "\n")  # not console.print: rich would expand the tabs
        console.file.flush()
        return
    table = Table(title=title, title_justify="left", show_header=header)
    for column in columns:
        table.add_column(column, justify=justify, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
