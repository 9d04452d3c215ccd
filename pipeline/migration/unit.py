"""One model's unit of work, the same wherever it runs (the local scheduler or a Ray task).

A model converts in a child process (``python -c _CHILD_CODE REQUEST``) in a process group
of its own, so that a timeout kills it together with its TensorFlow worker.  The request,
the answer and the log live in ``ROOT/.migrate/``; the run directory appears whole or not
at all (``convert`` stages it and renames it into place).  :func:`finish` turns the child's
answer into a :class:`ModelResult` and, for a converted model, records the fingerprint that
``--resume`` compares (``ROOT/<name>/.migrate.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from pipeline.export.client import death_reason
from pipeline.migration.child import _CHILD_CODE
from pipeline.migration.manifest import REPORT_NAME, STATE_JSON, WORK_DIR, ModelSpec
from pipeline.migration.results import ModelResult, _read_json, _write_json, worst_per_pair


def clean_leftovers(root: Path, name: str) -> None:
    """Remove staging directories a killed conversion of ``name`` left behind."""
    for pattern in (f".{name}.staging-*", f".{name}.old-*"):
        for stale in root.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the child's whole process group (the child and its TF worker), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _child_env() -> dict[str, str]:
    """The child's environment: our package importable, TensorFlow quiet."""
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _paths(root: Path, name: str) -> tuple[Path, Path, Path]:
    work = root / WORK_DIR
    return work / f"{name}.request.json", work / f"{name}.answer.json", work / f"{name}.log"


def start_child(root: Path, spec: ModelSpec) -> tuple[subprocess.Popen[str], IO[bytes]]:
    """Start the conversion of ``spec`` into ``root/<name>``: (process, its open log).

    The process prints its stages as JSON lines on stdout; everything else goes to the log.
    """
    clean_leftovers(root, spec.name)
    request, answer, log_path = _paths(root, spec.name)
    answer.unlink(missing_ok=True)
    _write_json(
        request,
        {
            "source": spec.source,
            "run_dir": str(root / spec.name),
            "settings": spec.settings,
            "answer": str(answer),
        },
    )
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD_CODE, str(request)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=_child_env(),
        start_new_session=True,  # its own process group: a timeout kills the TF worker too
    )
    return proc, log


def read_stages(proc: subprocess.Popen[str], on_stage: Callable[[str], None]) -> None:
    """Call ``on_stage`` for every stage line the child prints, until its stdout closes."""
    assert proc.stdout is not None
    for line in proc.stdout:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            on_stage(str(json.loads(line)["stage"]))


def finish(
    root: Path,
    spec: ModelSpec,
    print_: str,
    returncode: int,
    timed_out: bool,
    limit: float,
    seconds: float,
) -> ModelResult:
    """The result of a finished (or killed) child; records the fingerprint of a converted run."""
    name = spec.name
    run_dir = root / name
    request_path, answer_path, log_path = _paths(root, name)
    answer = _read_json(answer_path)
    answer_path.unlink(missing_ok=True)
    request_path.unlink(missing_ok=True)

    def result(verdict: str, kind: str | None = None, message: str | None = None) -> ModelResult:
        return ModelResult(
            name=name,
            source=spec.source,
            verdict=verdict,
            run_dir=run_dir,
            seconds=seconds,
            error_kind=kind,
            error_message=message,
            log=log_path,
            host=socket.gethostname(),
        )

    if timed_out:
        clean_leftovers(root, name)
        return result("timeout", "timeout", f"killed after the timeout of {limit:g} s")
    if answer is None:
        clean_leftovers(root, name)
        reason = death_reason(returncode)
        return result("error", "worker_crash", f"the conversion process {reason}; see {log_path}")
    if not answer["ok"]:
        message = answer["message"]
        if answer["kind"] == "internal":
            message += f" (traceback in {log_path})"
        return result("error", answer["kind"], message)
    report = _read_json(run_dir / REPORT_NAME) or {}
    _write_json(
        run_dir / STATE_JSON,
        {
            "fingerprint": print_,
            "verdict": answer["verdict"],
            "seconds": round(seconds, 2),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    converted = result(answer["verdict"])
    converted.worst = worst_per_pair(report)
    return converted


def run_model(
    root: Path,
    spec: ModelSpec,
    print_: str,
    limit: float,
    on_stage: Callable[[str], None] | None = None,
) -> ModelResult:
    """Convert one model in its child process and wait for it (at most ``limit`` seconds:
    then the child is killed with its TF worker and the result is a ``timeout``).

    The blocking form of what the local scheduler does for many models at once; a Ray task
    runs this.
    """
    started = time.perf_counter()
    proc, log = start_child(root, spec)
    reader = threading.Thread(
        target=read_stages, args=(proc, on_stage or (lambda _stage: None)), daemon=True
    )
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc)
    except BaseException:  # cancelled or interrupted: the conversion must not outlive us
        kill_group(proc)
        raise
    finally:
        reader.join(timeout=5)
        log.close()
    assert proc.returncode is not None
    seconds = time.perf_counter() - started
    return finish(root, spec, print_, proc.returncode, timed_out, limit, seconds)
