"""Drives the TensorFlow worker process (:mod:`pipeline.export.worker`) from the orchestrator.

The orchestrator never imports TensorFlow; it writes a request, runs the worker, and turns
the worker's answer (or its death) into a result or a :class:`Tf2TorchError`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import ERROR_KINDS, Tf2TorchError, WorkerError
from pipeline.core.extras import require_tensorflow
from pipeline.core.signature import TensorSpec
from pipeline.export.forkserver import WorkerTimeout, prestart, run_module
from pipeline.export.sources import Source

WORKER_LOG = "tf_worker.log"


@dataclass(frozen=True)
class TfExport:
    """What the worker produced: the raw ONNX, the inputs and the TF reference outputs."""

    raw_onnx: Path
    inputs_npz: Path
    tf_outputs_npz: Path
    inputs: list[TensorSpec]
    outputs: list[str]
    timings: dict[str, float]
    versions: dict[str, str]
    variables: list[dict[str, Any]]
    """Every TF variable in model order: ``path``, ``shape``, ``dtype``, ``trainable``,
    ``has_grad``; for Keras models also ``layer``, ``layer_class``, ``layer_kind`` and
    ``initializer`` (``class_name``, ``config``); values and gradients are in :attr:`variables_npz`."""
    variables_npz: Path
    floors_npz: Path
    """TF's gradient floors (``grad_noise/<i>``) and float64 twin outputs (``output64/<name>``)."""
    gradient_error: str | None = None
    """Why TensorFlow could not differentiate the fixed loss (then no variable has a
    gradient), or None."""
    gradient_noise_unmeasured: str | None = None
    """Why TF's own gradient noise floor (its float64 twin, ``grad_noise/<i>`` in
    :attr:`variables_npz`) was not measured, or None."""
    scaling: dict[str, Any] | None = None
    """What ``scale`` did to the model before export (report.json's ``scaling``), or None."""
    model_name: str | None = None
    """The Keras model's name (None for a SavedModel)."""
    layers: list[dict[str, str]] = field(default_factory=list)
    """Every Keras layer, nested ones included, as ``{"name", "class"}``."""


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # A worker that crashes in native code leaves its Python stack in the kept log.
    env.setdefault("PYTHONFAULTHANDLER", "1")
    # On a GPU machine TensorFlow would otherwise reserve all device memory and starve
    # ONNX Runtime's CUDA provider and torch in the parent process.
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    return env


def prestart_tf_worker() -> None:
    """Start importing TensorFlow for the TF workers to come (the fork server, see
    :mod:`pipeline.export.forkserver`) while the caller goes on, e.g. to import torch."""
    prestart(_worker_env())


def death_reason(returncode: int) -> str:
    """How a child process ended without answering: the signal that killed it, or its code."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode} without an answer"


def _log_tail(log: Path) -> str:
    """The last line the worker printed itself: a native crash's stack dump (Python's
    faulthandler, which starts "Fatal Python error") stays in the log, not in the message."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    own = text.split("Fatal Python error:", 1)[0]
    lines = [ln for ln in own.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def keep_failure_log(log_path: Path, keep_log: Path | None) -> Path:
    """Copy a failed worker's log to ``keep_log`` (which outlives the work directory) and
    return where the log now is: ``keep_log``, or ``log_path`` when there is none or the
    copy fails."""
    if keep_log is None or not log_path.is_file():
        return log_path
    try:
        keep_log.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_path, keep_log)
    except OSError:
        return log_path
    return keep_log


def run_worker(
    module: str,
    request: dict[str, Any],
    request_path: Path,
    stage: str,
    log_path: Path,
    timeout: float | None,
    keep_log: Path | None = None,
) -> dict[str, Any]:
    """Run ``python -m <module> <request_path>`` (a TensorFlow worker) and return its answer.

    The request must name its ``result`` file.  The worker's output goes to ``log_path``.
    Raises the worker's own error class for an error it reported, or :class:`WorkerError`
    naming ``stage`` when it crashed, died or ran past ``timeout`` seconds, and
    :class:`~pipeline.core.errors.MissingExtraError` when TensorFlow is not installed.  When it fails,
    its log is copied to ``keep_log`` (if given: the work directory may be thrown away) and
    the error's one line ends with ``(worker log: <path>)``.
    """
    require_tensorflow(f"the {stage} stage")
    try:
        return _run_worker(module, request, request_path, stage, log_path, timeout)
    except Tf2TorchError as err:
        kept = keep_failure_log(log_path, keep_log)
        err.args = (f"{err} (worker log: {kept})",)
        raise


def _run_worker(
    module: str,
    request: dict[str, Any],
    request_path: Path,
    stage: str,
    log_path: Path,
    timeout: float | None,
) -> dict[str, Any]:
    request_path.write_text(json.dumps(request, indent=2))
    result_path = Path(request["result"])
    try:
        returncode = run_module(module, [str(request_path)], log_path, _worker_env(), timeout)
    except WorkerTimeout:
        raise WorkerError(stage, f"TensorFlow worker timed out after {timeout:g} s") from None
    finally:
        request_path.unlink(missing_ok=True)
    if not result_path.is_file():
        tail = _log_tail(log_path)
        raise WorkerError(
            stage,
            f"TensorFlow worker {death_reason(returncode)}"
            + (f"; last log line: {tail}" if tail else ""),
        )
    answer: dict[str, Any] = json.loads(result_path.read_text())
    result_path.unlink()
    if not answer["ok"]:
        kind, message = answer["kind"], answer["message"]
        if kind == "worker_crash":
            raise WorkerError(stage, f"TensorFlow worker failed: {message}")
        raise ERROR_KINDS.get(kind, ERROR_KINDS["error"])(message)
    return answer


def export_with_tf(
    source: Source,
    work_dir: Path,
    *,
    opset: int,
    batch: int,
    seed: int,
    input_ranges: Mapping[str, tuple[int, int]],
    inputs_npz: Path | None,
    input_specs: Sequence[TensorSpec],
    custom_objects: str | None,
    safe_mode: bool,
    timeout: float | None = None,
    scale: Mapping[str, Any] | None = None,
    keep_log: Path | None = None,
) -> TfExport:
    """Load the model in the TF worker, export ``model.raw.onnx`` and run the TF reference.

    ``scale`` scales the Keras model's weights before anything else runs:
    ``{"spec": "conv=0.7,dense=0.3", "calibration": path or None}``, or a recorded
    ``scaling`` (``{"layers": [{"layer", "factor"}, ...]}``) to replay its factors exactly
    (see :func:`pipeline.export.worker.scaling.apply_scaling`).

    Everything lands in ``work_dir``.  Raises the worker's own error class (bad input,
    export failure) or :class:`WorkerError` if the worker dies or times out; the worker's log
    is then copied to ``keep_log`` and named in the message (see :func:`run_worker`).
    """
    request: dict[str, Any] = {
        "source": {
            "kind": source.kind.value,
            "location": source.location,
            "function": source.function,
        },
        "work_dir": str(work_dir),
        "result": str(work_dir / "tf_worker.result.json"),
        "cwd": os.getcwd(),
        "opset": opset,
        "batch": batch,
        "seed": seed,
        "input_ranges": {k: list(v) for k, v in input_ranges.items()},
        "inputs_npz": str(inputs_npz.resolve()) if inputs_npz else None,
        "input_specs": [s.to_json() for s in input_specs],
        "custom_objects": custom_objects,
        "safe_mode": safe_mode,
        "scale": dict(scale) if scale else None,
    }
    answer = run_worker(
        "pipeline.export.worker",
        request,
        work_dir / "tf_worker.request.json",
        "export",
        work_dir / WORKER_LOG,
        timeout,
        keep_log,
    )
    return TfExport(
        raw_onnx=work_dir / "model.raw.onnx",
        inputs_npz=work_dir / "inputs.npz",
        tf_outputs_npz=work_dir / "tf_outputs.npz",
        inputs=[TensorSpec.from_json(d) for d in answer["inputs"]],
        outputs=list(answer["outputs"]),
        timings=answer["timings"],
        versions=answer["versions"],
        variables=answer["variables"],
        variables_npz=work_dir / "tf_variables.npz",
        floors_npz=work_dir / "tf_floors.npz",
        gradient_error=answer.get("gradient_error"),
        gradient_noise_unmeasured=answer.get("gradient_noise_unmeasured"),
        scaling=answer.get("scaling"),
        model_name=answer.get("model_name"),
        layers=list(answer.get("layers", [])),
    )
