"""``migrate --ray ADDRESS``: each model is a Ray task that runs the same unit of work as a
local job (:func:`pipeline.migration.unit.run_model`: the per-model child process, its
timeout that kills the TF worker, the atomic run directory, the fingerprint for ``--resume``).

- **Where results land**: the run directories, logs and ``summary.json`` are written under
  ROOT by the node that converts the model, so ROOT (and every path in the manifest) must be
  the same path on every node: shared storage (NFS, EFS, a Kubernetes volume; an S3 bucket
  mounted with a FUSE driver such as mountpoint-s3 or s3fs).  Nothing large travels through
  Ray's object store: a task returns its :class:`ModelResult`.  A task on a node that cannot
  see ROOT is that model's ``error`` (kind ``root_not_shared``) rather than a run lost on a
  node's local disk.  A local cluster (``--ray local``) shares this machine's disk.
- **Resources**: each task asks for ``num_cpus`` :data:`CPUS_PER_MODEL` and ``memory``
  :func:`memory_request` (the manifest's ``memory``, or the weights' size times the measured
  multiple), so Ray packs models onto nodes by memory.  A model that asks for more than the
  largest live node offers is that model's ``error`` (kind ``too_large``), never a task that
  waits forever.
- **Retries**: ``max_retries`` is ``ray_retries`` (``--ray-retries``, default 1): Ray reruns a
  task whose worker process died or whose node was lost (including Ray's own out-of-memory
  killer); the rerun starts the conversion afresh.  ``retry_exceptions`` is False: a model
  that fails, errors or times out is a result, not an exception, and an exception would be a
  bug that a rerun would only repeat.  When the retries are spent the model is an ``error``
  (kind ``ray_task_failed``); the other models go on.
- **Concurrency**: ``--ray local`` starts a private Ray instance on this machine with
  ``--jobs`` CPUs for this run and stops it at the end.  On a cluster (an address, or
  ``auto``) every model is submitted at once and Ray runs as many as the cluster's CPUs and
  memory hold.  The driver only waits: interrupting it cancels (kills) the running tasks.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import BadInputError, MissingExtraError
from pipeline.core.extras import missing_modules
from pipeline.migration.manifest import WORK_DIR, ModelSpec
from pipeline.migration.resources import CPUS_PER_MODEL, memory_request
from pipeline.migration.results import MigrationEvent, ModelResult
from pipeline.migration.unit import clean_leftovers, run_model

if TYPE_CHECKING:
    from pipeline.migration.scheduler import Collector

RAY_EXTRA = "tf2torch[ray]"
LOCAL_OBJECT_STORE = 256 * 2**20
"""Object store of a ``--ray local`` instance: tasks return small results, not arrays."""


def require_ray() -> None:
    """Raise :class:`MissingExtraError` (one line, exit 2) when Ray is not installed."""
    if missing_modules(("ray",)):
        raise MissingExtraError(f"--ray needs Ray (ray not installed): pip install '{RAY_EXTRA}'")


def _stage_file(root: Path, name: str) -> Path:
    return root / WORK_DIR / f"{name}.stage"


def _attempts_file(root: Path, name: str) -> Path:
    return root / WORK_DIR / f"{name}.attempts"


def convert_task(root: str, spec: ModelSpec, print_: str, limit: float) -> ModelResult:
    """The body of one model's Ray task (runs on a Ray worker, on any node)."""
    root_path = Path(root)
    if not (root_path / WORK_DIR).is_dir():
        return ModelResult(
            name=spec.name,
            source=spec.source,
            verdict="error",
            run_dir=root_path / spec.name,
            seconds=0.0,
            error_kind="root_not_shared",
            error_message=f"{root} is not visible on Ray node {socket.gethostname()}: put the "
            "output root on storage every node mounts at the same path",
            host=socket.gethostname(),
        )
    attempts = _attempts_file(root_path, spec.name)
    try:
        attempt = int(attempts.read_text()) + 1
    except (OSError, ValueError):
        attempt = 1
    attempts.write_text(str(attempt))
    stage = _stage_file(root_path, spec.name)

    def on_stage(name: str) -> None:
        stage.write_text(name)

    on_stage("starting")
    result = run_model(root_path, spec, print_, limit, on_stage=on_stage)
    result.attempts = attempt
    return result


@contextlib.contextmanager
def connected(address: str, jobs: int) -> Iterator[Any]:
    """The ``ray`` module, initialised for ``address`` (shut down afterwards when this call
    started it); raises :class:`BadInputError` when Ray cannot start or reach the cluster."""
    import ray

    if ray.is_initialized():  # the caller's own session (the Python API inside a Ray job)
        yield ray
        return
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address == "local":
        options.update(
            num_cpus=jobs, include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE
        )
    try:
        ray.init(address=address, **options)
    except Exception as err:  # ConnectionError, ValueError, RuntimeError, ... from Ray
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadInputError(f"--ray {address}: cannot start or reach Ray: {first}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _largest_node_memory(ray: Any) -> float:
    return max(
        (float(n["Resources"].get("memory", 0.0)) for n in ray.nodes() if n.get("Alive")),
        default=0.0,
    )


def _error(root: Path, spec: ModelSpec, kind: str, message: str, attempts: int) -> ModelResult:
    clean_leftovers(root, spec.name)
    return ModelResult(
        name=spec.name,
        source=spec.source,
        verdict="error",
        run_dir=root / spec.name,
        seconds=0.0,
        error_kind=kind,
        error_message=message,
        log=root / WORK_DIR / f"{spec.name}.log",
        attempts=attempts,
    )


def run_on_ray(
    collector: Collector,
    pending: deque[tuple[ModelSpec, str]],
    ray: Any,
    timeout: float,
    retries: int,
) -> None:
    """Convert ``pending`` as Ray tasks (``ray``: the module, from :func:`connected`); results
    go to ``collector`` as they finish."""
    root, notify = collector.root, collector.notify
    largest = _largest_node_memory(ray)
    remote = ray.remote(convert_task)
    refs: dict[Any, ModelSpec] = {}
    stages: dict[str, str] = {}
    try:
        while pending:
            spec, print_ = pending.popleft()
            memory = memory_request(spec)
            if memory > largest:
                collector.done(
                    _error(
                        root,
                        spec,
                        "too_large",
                        f"asks for {memory / 1e9:.1f} GB of memory and the largest Ray node "
                        f"offers {largest / 1e9:.1f} GB: set its manifest `memory` or add "
                        "a larger node",
                        0,
                    )
                )
                continue
            for stale in (_attempts_file(root, spec.name), _stage_file(root, spec.name)):
                stale.unlink(missing_ok=True)
            options = {
                "num_cpus": CPUS_PER_MODEL,
                "memory": memory,
                "max_retries": retries,
                "retry_exceptions": False,
                "name": f"tf2torch:{spec.name}",
            }
            ref = remote.options(**options).remote(str(root), spec, print_, spec.timeout or timeout)
            refs[ref] = spec
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            for ref in ready:
                collector.done(_collect(ray, ref, refs.pop(ref), root))
            for spec in refs.values():  # stages, from the files the tasks write
                with contextlib.suppress(OSError):
                    stage = _stage_file(root, spec.name).read_text().strip()
                    if stage and stages.get(spec.name) != stage:
                        stages[spec.name] = stage
                        notify(MigrationEvent(spec.name, stage))
    finally:
        for ref, spec in refs.items():  # interrupted: kill what still runs
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
            clean_leftovers(root, spec.name)
        if refs:
            time.sleep(1)  # the children notice their Ray worker died (0.5 s) and exit


def _collect(ray: Any, ref: Any, spec: ModelSpec, root: Path) -> ModelResult:
    """The finished task's result, or the model's ``error`` when Ray lost it for good."""
    attempts_path = _attempts_file(root, spec.name)
    try:
        result: ModelResult = ray.get(ref)
    except ray.exceptions.RayError as err:
        try:
            attempts = int(attempts_path.read_text())
        except (OSError, ValueError):
            attempts = 0
        lines = str(err).strip().splitlines()
        reason = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
        result = _error(
            root,
            spec,
            "ray_task_failed",
            f"the Ray task was lost after {attempts} attempt(s): {reason}",
            attempts,
        )
    finally:
        attempts_path.unlink(missing_ok=True)
        _stage_file(root, spec.name).unlink(missing_ok=True)
    return result
