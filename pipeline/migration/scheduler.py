"""The scheduler: runs the manifest's models ``jobs`` at a time, with timeouts, progress events and resume."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from pipeline.core.errors import BadInputError
from pipeline.export.client import death_reason
from pipeline.migration.child import _CHILD_CODE
from pipeline.migration.fingerprint import fingerprint
from pipeline.migration.manifest import (
    DEFAULT_TIMEOUT,
    REPORT_NAME,
    STATE_JSON,
    SUMMARY_JSON,
    SUMMARY_SCHEMA,
    VERDICTS,
    WORK_DIR,
    Manifest,
    ModelSpec,
    load_manifest,
)
from pipeline.migration.results import (
    EventCallback,
    MigrationEvent,
    MigrationResult,
    ModelResult,
    _read_json,
    _resumable,
    _write_json,
    worst_per_pair,
)

# --------------------------------------------------------------------------- the scheduler


@dataclass
class _Running:
    spec: ModelSpec
    fingerprint: str
    proc: subprocess.Popen[str]
    reader: threading.Thread
    log: IO[bytes]
    started: float
    limit: float
    """Seconds this model may take."""


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _clean_leftovers(root: Path, name: str) -> None:
    """Remove staging directories a killed conversion of ``name`` left behind."""
    for pattern in (f".{name}.staging-*", f".{name}.old-*"):
        for stale in root.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    work = root / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    with (work / "lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInputError(f"another migration is running in {root}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Scheduler:
    def __init__(
        self,
        manifest: Manifest,
        root: Path,
        jobs: int,
        timeout: float,
        notify: EventCallback,
    ) -> None:
        self.manifest, self.root, self.jobs, self.timeout = manifest, root, jobs, timeout
        self.notify = notify
        self.work = root / WORK_DIR
        self.events: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self.running: dict[str, _Running] = {}
        self.results: dict[str, ModelResult] = {}
        self.started = time.perf_counter()

    # the child's environment: our package importable, TF quiet
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        package_parent = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return env

    def start(self, spec: ModelSpec, print_: str) -> None:
        _clean_leftovers(self.root, spec.name)
        request = self.work / f"{spec.name}.request.json"
        answer = self.work / f"{spec.name}.answer.json"
        answer.unlink(missing_ok=True)
        _write_json(
            request,
            {
                "source": spec.source,
                "run_dir": str(self.root / spec.name),
                "settings": spec.settings,
                "answer": str(answer),
            },
        )
        log = (self.work / f"{spec.name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD_CODE, str(request)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=self._env(),
            start_new_session=True,  # its own process group: a timeout kills the TF worker too
        )
        reader = threading.Thread(target=self._read_stages, args=(spec.name, proc), daemon=True)
        reader.start()
        now = time.perf_counter()
        limit = spec.timeout or self.timeout
        self.running[spec.name] = _Running(spec, print_, proc, reader, log, now, limit)
        self.notify(MigrationEvent(spec.name, "starting"))

    def _read_stages(self, name: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.events.put((name, str(json.loads(line)["stage"])))
        self.events.put((name, None))

    def _finish(self, run: _Running, timed_out: bool) -> ModelResult:
        name = run.spec.name
        seconds = time.perf_counter() - run.started
        run.reader.join(timeout=5)
        run.log.close()
        run_dir = self.root / name
        log_path = self.work / f"{name}.log"
        answer_path = self.work / f"{name}.answer.json"
        answer = _read_json(answer_path)
        answer_path.unlink(missing_ok=True)
        (self.work / f"{name}.request.json").unlink(missing_ok=True)

        def result(
            verdict: str, kind: str | None = None, message: str | None = None
        ) -> ModelResult:
            return ModelResult(
                name=name,
                source=run.spec.source,
                verdict=verdict,
                run_dir=run_dir,
                seconds=seconds,
                error_kind=kind,
                error_message=message,
                log=log_path,
            )

        if timed_out:
            _clean_leftovers(self.root, name)
            return result("timeout", "timeout", f"killed after the timeout of {run.limit:g} s")
        if answer is None:
            _clean_leftovers(self.root, name)
            assert run.proc.returncode is not None
            reason = death_reason(run.proc.returncode)
            return result(
                "error", "worker_crash", f"the conversion process {reason}; see {log_path}"
            )
        if not answer["ok"]:
            message = answer["message"]
            if answer["kind"] == "internal":
                message += f" (traceback in {log_path})"
            return result("error", answer["kind"], message)
        report = _read_json(run_dir / REPORT_NAME) or {}
        _write_json(
            run_dir / STATE_JSON,
            {
                "fingerprint": run.fingerprint,
                "verdict": answer["verdict"],
                "seconds": round(seconds, 2),
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        converted = result(answer["verdict"])
        converted.worst = worst_per_pair(report)
        return converted

    def done(self, result: ModelResult) -> None:
        self.results[result.name] = result
        self.write_summary(complete=False)
        self.notify(MigrationEvent(result.name, "done", result))

    def poll(self) -> None:
        """Handle stage events, finished processes and timeouts (waits up to 0.2 s)."""
        with contextlib.suppress(queue.Empty):
            name, stage = self.events.get(timeout=0.2)
            while True:
                if stage is not None and name in self.running:
                    self.notify(MigrationEvent(name, stage))
                name, stage = self.events.get_nowait()
        now = time.perf_counter()
        for name, run in list(self.running.items()):
            timed_out = run.proc.poll() is None and now - run.started > run.limit
            if timed_out:
                _kill_group(run.proc)
            if run.proc.poll() is not None:
                del self.running[name]
                self.done(self._finish(run, timed_out))

    def kill_all(self) -> None:
        for run in self.running.values():
            _kill_group(run.proc)
            run.log.close()
            _clean_leftovers(self.root, run.spec.name)
        self.running.clear()

    def ordered(self) -> list[ModelResult]:
        return [self.results[m.name] for m in self.manifest.models if m.name in self.results]

    def write_summary(self, complete: bool) -> Path:
        models = self.ordered()
        summary = {
            "schema": SUMMARY_SCHEMA,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "manifest": str(self.manifest.path.absolute()),
            "root": str(self.root),
            "complete": complete,
            "seconds": round(time.perf_counter() - self.started, 2),
            "counts": {v: sum(m.verdict == v for m in models) for v in VERDICTS},
            "models": [m.to_json() for m in models],
        }
        path = self.root / SUMMARY_JSON
        _write_json(path, summary)
        return path


def migrate(
    manifest: str | Path,
    root: str | Path,
    *,
    jobs: int = 1,
    resume: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    on_event: EventCallback | None = None,
) -> MigrationResult:
    """Convert every model of ``manifest`` into ``root/<name>``; see the module docstring.

    ``jobs`` models convert at once, each in its own process; one running past ``timeout``
    seconds (or its manifest ``timeout``) is killed with its worker processes and reported as ``timeout``.  With
    ``resume``, complete runs whose fingerprint is unchanged are kept, not redone.
    ``on_event`` receives each model's progress (:class:`MigrationEvent`).

    Returns a :class:`MigrationResult` (also written to ``root/summary.json``) whatever the
    models' verdicts.  Raises :class:`ManifestError` (a :class:`BadInputError`) for an
    invalid manifest, before converting anything; :class:`BadInputError` for a bad ``jobs``,
    ``timeout`` or ``root``, or when another migration holds ``root``.  On
    ``KeyboardInterrupt`` the running conversions are killed, the summary of the finished
    ones is written, and the interrupt propagates.  Never calls ``sys.exit``.
    """
    parsed = load_manifest(manifest)
    if jobs < 1:
        raise BadInputError(f"--jobs must be at least 1, got {jobs}")
    if not timeout > 0:
        raise BadInputError(f"--timeout must be > 0 seconds, got {timeout}")
    root = Path(root).absolute()
    if root.exists() and not root.is_dir():
        raise BadInputError(f"output path {root} exists and is not a directory")
    notify = on_event or (lambda _event: None)
    with _locked(root):
        scheduler = _Scheduler(parsed, root, jobs, timeout, notify)
        pending: deque[tuple[ModelSpec, str]] = deque()
        for spec in parsed.models:
            _clean_leftovers(root, spec.name)
            print_ = fingerprint(spec)
            kept = _resumable(spec, root / spec.name, print_) if resume else None
            if kept is not None:
                scheduler.results[spec.name] = kept
                notify(MigrationEvent(spec.name, "resumed", kept))
            else:
                pending.append((spec, print_))
                notify(MigrationEvent(spec.name, "queued"))
        try:
            while pending or scheduler.running:
                while pending and len(scheduler.running) < jobs:
                    scheduler.start(*pending.popleft())
                scheduler.poll()
        finally:
            scheduler.kill_all()
            complete = not pending and len(scheduler.results) == len(parsed.models)
            summary = scheduler.write_summary(complete=complete)
    return MigrationResult(
        models=scheduler.ordered(),
        root=root,
        summary_path=summary,
        seconds=time.perf_counter() - scheduler.started,
    )
