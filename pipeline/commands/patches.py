"""List the fixup passes and custom-op patches a conversion would run, in order.

Built-in passes come first, then the patches in the repository's patches/ package, then
those of every --patches DIR (the same option as convert's).  A patch file that fails to
import is named in a one-line error (exit 2).
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from pipeline.core.console import make_console


def add_parser(subparsers: Any, help: str, description: str) -> None:
    """Register ``tf2torch patches``."""
    p = subparsers.add_parser("patches", help=help, description=description)
    p.add_argument(
        "--patches",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="also load the patches in DIR (repeatable)",
    )
    p.set_defaults(run=run)


def _origin(obj: object) -> str:
    path = inspect.getsourcefile(type(obj)) or "?"
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def run(args: argparse.Namespace) -> int:
    """Print the passes in the order they run; returns 0."""
    # Imported here, not at the top: `tf2torch --help` and option errors stay fast (torch
    # takes seconds to import).
    from pipeline.passes import check_unique, default_passes, load_patch_dir

    passes = [*default_passes(), *(p for d in args.patches for p in load_patch_dir(d))]
    check_unique(passes)
    table = Table(title="Fixup passes and patches, in order")
    for column in ("#", "name", "description", "from"):
        table.add_column(column)
    for number, p in enumerate(passes, 1):
        table.add_row(str(number), escape(p.name), escape(p.description), escape(_origin(p)))
    make_console().print(table)
    return 0
