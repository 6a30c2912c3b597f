"""Where the reports print, and how their tables look: a rich table on a terminal; one line per row when the
output is piped (a log, CI, ``| less``), so that a long reason never wraps a row over several lines; or
Markdown to paste into an issue or a README (``--format markdown``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

PIPED_WIDTH = 400  # columns of free text (titles, notes) when not on a terminal
TABLE_FORMATS = ("auto", "rich", "plain", "markdown")  # auto: rich on a terminal, plain when piped


@dataclass(frozen=True)
class Column:
    name: str
    right: bool = False  # numbers are right-aligned
    style: str | None = None  # rich style on a terminal


def report_console() -> Console:
    """The console reports print to (colours only on a terminal)."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=PIPED_WIDTH, no_color=True, highlight=False, soft_wrap=False)


def print_table(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]], fmt: str = "auto") -> None:
    """Cells may carry rich markup (``[green]cat[/]``); plain and Markdown output drop it."""
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"table format {fmt!r}: one of {', '.join(TABLE_FORMATS)}")
    if fmt == "auto":
        fmt = "rich" if sys.stdout.isatty() else "plain"
    if fmt == "rich":
        table = Table(title=title)
        for c in columns:
            table.add_column(c.name, style=c.style, overflow="fold", justify="right" if c.right else "left")
        for row in rows:
            table.add_row(*row)
        report_console().print(table)
        return
    plain = [[Text.from_markup(cell).plain for cell in row] for row in rows]
    print(render_plain(title, columns, plain) if fmt == "plain" else render_markdown(title, columns, plain))


def render_plain(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns, a rule under the header, one line per row however long (the last column is free)."""
    widths = [max([len(c.name)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, (cell, c) in enumerate(zip(cells, columns, strict=True)):
            last = i == len(columns) - 1
            out.append(cell.rjust(widths[i]) if c.right else (cell if last else cell.ljust(widths[i])))
        return "  ".join(out).rstrip()

    lines = [title, line([c.name for c in columns]), "  ".join("-" * w for w in widths)]
    lines += [line(r) for r in rows]
    return "\n".join(lines)


def render_markdown(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"**{title}**", "", "| " + " | ".join(c.name for c in columns) + " |",
             "|" + "|".join("---:" if c.right else "---" for c in columns) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)
