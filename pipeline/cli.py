"""The ``tf2torch`` command line (also ``python -m pipeline``): a thin layer over the API.

Exit codes: 0 equivalent / success, 1 not equivalent, 2 could not convert or bad input,
130 interrupted.  Errors print one line on stderr, never a traceback: an unexpected exception
(a bug) is ``internal error in <stage>: ...`` with the traceback in a log file it names
(:mod:`pipeline.core.internal_error`), also exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from pipeline.commands import check as check_command
from pipeline.commands import convert as convert_command
from pipeline.commands import demo as demo_command
from pipeline.commands import diff as diff_command
from pipeline.commands import evaluate as evaluate_command
from pipeline.commands import migrate as migrate_command
from pipeline.commands import migrate_merge as migrate_merge_command
from pipeline.commands import patches as patches_command
from pipeline.commands import train_check as train_check_command
from pipeline.core.errors import Tf2TorchError
from pipeline.core.internal_error import enter_stage, internal_error_line

EXIT_OK, EXIT_FAIL, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

COMMANDS = (
    convert_command,
    check_command,
    diff_command,
    demo_command,
    migrate_command,
    migrate_merge_command,
    patches_command,
    train_check_command,
    evaluate_command,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per module in :mod:`pipeline.commands`."""
    parser = argparse.ArgumentParser(
        prog="tf2torch",
        description="Migrate TensorFlow/Keras models to PyTorch through ONNX and prove each "
        "migration numerically (TensorFlow vs ONNX Runtime vs PyTorch).",
        epilog="Exit codes: 0 all pairs agree, 1 a pair disagrees, 2 could not convert or bad "
        "input. Run 'tf2torch COMMAND --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        doc = command.__doc__ or ""
        command.add_parser(sub, help=doc.strip().splitlines()[0], description=doc)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    err_console = Console(stderr=True, highlight=False, soft_wrap=True)
    enter_stage(args.command)
    try:
        code: int = args.run(args)
        return code
    except Tf2TorchError as err:
        err_console.print(f"tf2torch: error: {err}", markup=False)
        return EXIT_ERROR
    except KeyboardInterrupt:
        err_console.print("tf2torch: interrupted", markup=False)
        return EXIT_INTERRUPTED
    except Exception as err:  # a bug: one line and a log file, not a traceback and exit 1
        line = internal_error_line(err, ["tf2torch", *argv])
        err_console.print(f"tf2torch: {line}", markup=False)
        return EXIT_ERROR


def console_main() -> None:
    """Console-script entry point."""
    sys.exit(main())
