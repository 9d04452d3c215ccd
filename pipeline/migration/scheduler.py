"""The scheduler: runs the manifest's models ``jobs`` at a time (or on a Ray cluster), with
timeouts, progress events, resume and shards."""

from __future__ import annotations

import contextlib
import fcntl
import queue
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pipeline.core.errors import BadInputError
from pipeline.migration.fingerprint import fingerprint
from pipeline.migration.manifest import (
    DEFAULT_TIMEOUT,
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
    _resumable,
    _write_json,
)
from pipeline.migration.shard import Shard, parse_shard, select, shard_json
from pipeline.migration.unit import clean_leftovers, finish, kill_group, read_stages, start_child

DEFAULT_RAY_RETRIES = 1
"""Times Ray reruns a model whose worker process or node was lost (``--ray-retries``)."""

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


class Collector:
    """The results so far, whichever backend produced them; rewrites ``summary.json`` after
    each model.  ``models`` are the models this run is responsible for (its shard)."""

    def __init__(
        self,
        manifest: Manifest,
        models: list[ModelSpec],
        root: Path,
        notify: EventCallback,
        shard: Shard | None,
    ) -> None:
        self.manifest, self.models, self.root, self.notify = manifest, models, root, notify
        self.shard = shard
        self.results: dict[str, ModelResult] = {}
        self.started = time.perf_counter()

    def done(self, result: ModelResult) -> None:
        """Record a finished model, rewrite the summary, tell the display."""
        self.results[result.name] = result
        self.write_summary(complete=False)
        self.notify(MigrationEvent(result.name, "done", result))

    def ordered(self) -> list[ModelResult]:
        """The results in manifest order."""
        return [self.results[m.name] for m in self.models if m.name in self.results]

    def write_summary(self, complete: bool) -> Path:
        """Write ``ROOT/summary.json`` (atomically) and return its path."""
        models = self.ordered()
        summary: dict[str, Any] = {
            "schema": SUMMARY_SCHEMA,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "manifest": str(self.manifest.path.absolute()),
            "root": str(self.root),
            "complete": complete,
            "seconds": round(time.perf_counter() - self.started, 2),
            "counts": {v: sum(m.verdict == v for m in models) for v in VERDICTS},
            "models": [m.to_json() for m in models],
        }
        if self.shard is not None:
            summary["shard"] = shard_json(self.shard, self.manifest, self.models)
        path = self.root / SUMMARY_JSON
        _write_json(path, summary)
        return path


class _Scheduler:
    """The local backend: ``jobs`` child processes at a time on this machine."""

    def __init__(self, collector: Collector, jobs: int, timeout: float) -> None:
        self.collector, self.jobs, self.timeout = collector, jobs, timeout
        self.root, self.notify = collector.root, collector.notify
        self.events: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self.running: dict[str, _Running] = {}

    def start(self, spec: ModelSpec, print_: str) -> None:
        proc, log = start_child(self.root, spec)
        reader = threading.Thread(target=self._read_stages, args=(spec.name, proc), daemon=True)
        reader.start()
        now = time.perf_counter()
        limit = spec.timeout or self.timeout
        self.running[spec.name] = _Running(spec, print_, proc, reader, log, now, limit)
        self.notify(MigrationEvent(spec.name, "starting"))

    def _read_stages(self, name: str, proc: subprocess.Popen[str]) -> None:
        read_stages(proc, lambda stage: self.events.put((name, stage)))
        self.events.put((name, None))

    def _finish(self, run: _Running, timed_out: bool) -> ModelResult:
        seconds = time.perf_counter() - run.started
        run.reader.join(timeout=5)
        run.log.close()
        assert run.proc.returncode is not None
        return finish(
            self.root, run.spec, run.fingerprint, run.proc.returncode, timed_out, run.limit, seconds
        )

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
                kill_group(run.proc)
            if run.proc.poll() is not None:
                del self.running[name]
                self.collector.done(self._finish(run, timed_out))

    def kill_all(self) -> None:
        for run in self.running.values():
            kill_group(run.proc)
            run.log.close()
            clean_leftovers(self.root, run.spec.name)
        self.running.clear()

    def run(self, pending: deque[tuple[ModelSpec, str]]) -> None:
        """Convert ``pending`` (consumed as models start); kills what runs on the way out."""
        try:
            while pending or self.running:
                while pending and len(self.running) < self.jobs:
                    self.start(*pending.popleft())
                self.poll()
        finally:
            self.kill_all()


def migrate(
    manifest: str | Path,
    root: str | Path,
    *,
    jobs: int = 1,
    resume: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    on_event: EventCallback | None = None,
    shard: str | Shard | None = None,
    ray: str | None = None,
    ray_retries: int = DEFAULT_RAY_RETRIES,
    junit: str | Path | None = None,
) -> MigrationResult:
    """Convert every model of ``manifest`` into ``root/<name>``; see the module docstring.

    ``jobs`` models convert at once, each in its own process; one running past ``timeout``
    seconds (or its manifest ``timeout``) is killed with its worker processes and reported as
    ``timeout``.  With ``resume``, complete runs whose fingerprint is unchanged are kept, not
    redone.  ``on_event`` receives each model's progress (:class:`MigrationEvent`).
    ``shard`` (``"K/N"``) converts only the K-th of N slices of the manifest
    (:mod:`pipeline.migration.shard`).  ``ray`` (a Ray address, ``auto`` or ``local``) runs
    each model as a Ray task instead of a local process (:mod:`pipeline.migration.ray_backend`);
    a task whose worker or node is lost is rerun up to ``ray_retries`` times.  ``junit``
    writes a JUnit XML file with one test case per model.

    Returns a :class:`MigrationResult` (also written to ``root/summary.json``) whatever the
    models' verdicts.  Raises :class:`ManifestError` (a :class:`BadInputError`) for an
    invalid manifest, before converting anything; :class:`BadInputError` for a bad ``jobs``,
    ``timeout``, ``shard`` or ``root``, when another migration holds ``root`` or when the Ray
    cluster cannot be reached; :class:`MissingExtraError` for ``ray`` without Ray installed.
    On ``KeyboardInterrupt`` the running conversions are killed, the summary of the finished
    ones is written, and the interrupt propagates.  Never calls ``sys.exit``.
    """
    parsed = load_manifest(manifest)
    if jobs < 1:
        raise BadInputError(f"--jobs must be at least 1, got {jobs}")
    if not timeout > 0:
        raise BadInputError(f"--timeout must be > 0 seconds, got {timeout}")
    if ray_retries < 0:
        raise BadInputError(f"--ray-retries must be at least 0, got {ray_retries}")
    slice_ = parse_shard(shard) if isinstance(shard, str) else shard
    root = Path(root).absolute()
    if root.exists() and not root.is_dir():
        raise BadInputError(f"output path {root} exists and is not a directory")
    notify = on_event or (lambda _event: None)
    models = select(parsed.models, slice_)
    with contextlib.ExitStack() as stack:
        session = None
        if ray is not None:  # before ROOT is made: an unreachable cluster leaves nothing behind
            from pipeline.migration.ray_backend import connected, require_ray

            require_ray()
            session = stack.enter_context(connected(ray, jobs))
        stack.enter_context(_locked(root))
        collector = Collector(parsed, models, root, notify, slice_)
        pending: deque[tuple[ModelSpec, str]] = deque()
        for spec in models:
            clean_leftovers(root, spec.name)
            print_ = fingerprint(spec)
            kept = _resumable(spec, root / spec.name, print_) if resume else None
            if kept is not None:
                collector.results[spec.name] = kept
                notify(MigrationEvent(spec.name, "resumed", kept))
            else:
                pending.append((spec, print_))
                notify(MigrationEvent(spec.name, "queued"))
        try:
            if session is None:
                _Scheduler(collector, jobs, timeout).run(pending)
            elif pending:
                from pipeline.migration.ray_backend import run_on_ray

                run_on_ray(collector, pending, session, timeout, ray_retries)
        finally:
            complete = len(collector.results) == len(models)
            summary = collector.write_summary(complete=complete)
            if junit is not None:
                from pipeline.migration.junit import write_junit

                write_junit(summary, junit)
    return MigrationResult(
        models=collector.ordered(),
        root=root,
        summary_path=summary,
        seconds=time.perf_counter() - collector.started,
    )
