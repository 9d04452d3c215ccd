"""Unexpected exceptions (bugs, not bad input): which stage was running, and a log file.

A :class:`~pipeline.core.errors.Tf2TorchError` is a failure the pipeline understood and
explains in one line.  Anything else is a bug in tf2torch or in a library under it; the CLI
still ends with one line and exit code 2, never a traceback on the terminal:

    internal error in <stage>: <ExceptionType>: <message> (details: <log path>)

The stage is the last one announced with :func:`enter_stage` (the API, ``check`` and
``diff`` announce theirs as they start; the CLI announces the command first).  The traceback
goes to a log file in ``$TF2TORCH_LOG_DIR`` (default ``<temp dir>/tf2torch-logs``).  A failed
TF worker's log is kept beside the run instead (``<out>.failed/tf_worker.log``, see
:mod:`pipeline.core.run_dir`).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import traceback
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path

LOG_DIR_ENV = "TF2TORCH_LOG_DIR"

_stage: ContextVar[str] = ContextVar("tf2torch_stage", default="tf2torch")


def enter_stage(name: str) -> None:
    """Record that stage ``name`` is now running (named by :func:`internal_error_line`)."""
    _stage.set(name)


def current_stage() -> str:
    """The stage announced last."""
    return _stage.get()


def log_dir() -> Path:
    """Where internal-error logs go: ``$TF2TORCH_LOG_DIR``, else ``<temp dir>/tf2torch-logs``."""
    configured = os.environ.get(LOG_DIR_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "tf2torch-logs"


def write_internal_log(err: BaseException, stage: str, argv: list[str]) -> Path:
    """Write the command line, versions, stage and ``err``'s traceback to a new log file and
    return its path (``internal-<time>-<pid>.log``)."""
    directory = log_dir()
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = directory / f"internal-{stamp}-{os.getpid()}.log"
    text = "".join(
        [
            f"command: {' '.join(argv)}\n",
            f"cwd: {os.getcwd()}\n",
            f"stage: {stage}\n",
            f"python: {platform.python_version()} ({sys.executable})\n\n",
            *traceback.format_exception(err),
        ]
    )
    path.write_text(text)
    return path


def describe(err: BaseException) -> str:
    """``<ExceptionType>: <first line of the message>`` (at most 300 characters)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def internal_error_line(err: BaseException, argv: list[str]) -> str:
    """Log ``err`` (see :func:`write_internal_log`) and return the CLI's one line for it."""
    stage = current_stage()
    try:
        where = str(write_internal_log(err, stage, argv))
    except OSError as log_err:
        where = f"no log written: {describe(log_err)}"
    return f"internal error in {stage}: {describe(err)} (details: {where})"
