"""Rich consoles for the CLI: tables keep their full width when output goes to a file or CI log."""

from __future__ import annotations

from rich.console import Console

# Rich assumes 80 columns when stdout is not a terminal, which would truncate the
# comparison table in CI logs; a log has no width limit, so give tables room.
LOG_WIDTH = 140


def make_console(*, stderr: bool = False) -> Console:
    """A console without syntax highlighting, LOG_WIDTH wide when not writing to a terminal."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=LOG_WIDTH)
    return console
