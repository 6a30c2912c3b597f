"""Where the reports print: a rich console as wide as the terminal, or, when the output is piped (a log, CI,
``| less``), wide enough that every table row stays on one line instead of wrapping at 80 columns."""

from __future__ import annotations

import sys

from rich.console import Console

PIPED_WIDTH = 400  # columns when not on a terminal: long reasons and shapes stay on their row


def report_console() -> Console:
    """The console reports print to (colours only on a terminal)."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=PIPED_WIDTH, no_color=True, highlight=False, soft_wrap=False)
