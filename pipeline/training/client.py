"""Drives the training TF worker (:mod:`pipeline.training.tf_worker`) from the orchestrator.

One worker process runs any number of jobs on one model (the tests batch many optimizer,
schedule and loss combinations into one call); each job comes back as a
:class:`TfTraining` or as the error that stopped it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ERROR_KINDS, Tf2TorchError
from pipeline.core.signature import TensorSpec
from pipeline.export.client import run_worker
from pipeline.export.sources import Source
from pipeline.training.config import TrainingConfig, registered_names
from pipeline.training.data import Batch, read_batches

WORKER_MODULE = "pipeline.training.tf_worker"
WORKER_LOG = "tf_training_worker.log"


@dataclass(frozen=True)
class TfJob:
    """One training run for the worker: ``description`` is a description file's contents
    (None: the model's own ``compile()``), batches drawn from ``seed`` or cut from ``data``."""

    name: str
    steps: int = 10
    batch: int = 8
    seed: int = 0
    description: Mapping[str, Any] | None = None
    origin: str = "description"
    data: Path | None = None
    input_ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    evaluate: bool = False
    """Run Keras's ``evaluate`` on all of ``data`` (batches of ``batch``) instead of training."""
    eager: bool = False
    """Run Keras's ``train_step`` eagerly (``compile(run_eagerly=True)``) instead of as a
    traced ``tf.function``: no tracing cost, same kernels without graph rewrites."""
    float64: bool = True
    """Also train the model's float64 twin (TF's own float32 drift, for the noise floors)."""


@dataclass
class TfTraining:
    """What Keras did in one job: the config it trained with, the loss and learning rate of
    each step, every variable before (index 0) and after each step, and the batches."""

    name: str
    config: TrainingConfig
    losses: list[float]
    learning_rates: list[float]
    values: list[list[np.ndarray]]
    batches: list[Batch]
    timings: dict[str, float] = field(default_factory=dict)
    losses64: list[float] = field(default_factory=list)
    """The float64 twin's loss per step (empty without a twin)."""
    values64: list[list[np.ndarray]] = field(default_factory=list)
    """The float64 twin's variables before (index 0) and after each step (empty without)."""
    float64_error: str | None = None
    """Why the twin did not train (None when it did)."""
    evaluation: dict[str, Any] | None = None
    """For an ``evaluate`` job: Keras's ``logs`` and the ``metrics`` it built; ``batches``
    then holds the whole data set as one batch."""


@dataclass
class TfTrainingAnswer:
    """The worker's answer: the model's signature, output names, variables (``path``,
    ``shape``, ``trainable``), the dropout layers it switched off, and each job's result."""

    inputs: list[TensorSpec]
    outputs: list[str]
    variables: list[dict[str, Any]]
    dropout: list[dict[str, Any]]
    jobs: dict[str, TfTraining | Tf2TorchError]
    versions: dict[str, str]

    def job(self, name: str) -> TfTraining:
        """The job's result; raises the error that stopped it."""
        result = self.jobs[name]
        if isinstance(result, Tf2TorchError):
            raise result
        return result


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def train_in_tf(
    source: Source,
    jobs: Sequence[TfJob],
    work_dir: Path,
    *,
    custom_objects: str | None = None,
    safe_mode: bool = True,
    input_specs: Sequence[TensorSpec] = (),
    scale: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    log_path: Path | None = None,
) -> TfTrainingAnswer:
    """Run ``jobs`` on the model ``source`` in one TF worker process (files in ``work_dir``).

    ``scale`` replays a run's ``scaling`` record so TF trains the model convert compared.
    The worker's output goes to ``log_path`` (default ``work_dir/tf_training_worker.log``).
    Raises the worker's error when the model cannot be loaded, :class:`WorkerError` when the
    worker dies; a job's own error is kept in the answer (:meth:`TfTrainingAnswer.job`).
    """
    request: dict[str, Any] = {
        "source": {
            "kind": source.kind.value,
            "location": source.location,
            "function": source.function,
        },
        "result": str(work_dir / "training.result.json"),
        "cwd": os.getcwd(),
        "input_specs": [s.to_json() for s in input_specs],
        "custom_objects": custom_objects,
        "safe_mode": safe_mode,
        "scale": dict(scale) if scale else None,
        "registered": registered_names(),
        "jobs": [
            {
                "name": job.name,
                "description": dict(job.description) if job.description is not None else None,
                "origin": job.origin,
                "steps": job.steps,
                "batch": job.batch,
                "seed": job.seed,
                "data": str(Path(job.data).resolve()) if job.data else None,
                "input_ranges": {k: list(v) for k, v in job.input_ranges.items()},
                "eager": job.eager,
                "float64": job.float64,
                "evaluate": job.evaluate,
                "out_npz": str(work_dir / f"job{i}.npz"),
            }
            for i, job in enumerate(jobs)
        ],
    }
    answer = run_worker(
        WORKER_MODULE,
        request,
        work_dir / "training.request.json",
        "train-check",
        log_path or work_dir / WORKER_LOG,
        timeout,
    )
    n_variables = len(answer["variables"])
    results: dict[str, TfTraining | Tf2TorchError] = {}
    for job, entry in zip(jobs, answer["jobs"], strict=True):
        if "error" in entry:
            kind = entry["error"]["kind"]
            results[job.name] = ERROR_KINDS.get(kind, ERROR_KINDS["error"])(
                entry["error"]["message"]
            )
            continue
        steps = len(entry["losses"])
        arrays = _load(work_dir / f"job{jobs.index(job)}.npz")
        results[job.name] = TfTraining(
            name=job.name,
            config=TrainingConfig.from_json(entry["config"]),
            losses=[float(x) for x in entry["losses"]],
            learning_rates=[float(x) for x in entry["learning_rates"]],
            values=[
                [arrays[f"value/{k}/{i}"] for i in range(n_variables)] for k in range(steps + 1)
            ],
            batches=read_batches(_load(Path(entry["batches_npz"])), max(steps, 1)),
            timings=dict(entry.get("timings", {})),
            losses64=[float(x) for x in entry.get("losses64", [])],
            values64=[
                [arrays[f"value64/{k}/{i}"] for i in range(n_variables)] for k in range(steps + 1)
            ]
            if entry.get("losses64")
            else [],
            float64_error=entry.get("float64_error"),
            evaluation=entry.get("evaluation"),
        )
    return TfTrainingAnswer(
        inputs=[TensorSpec.from_json(d) for d in answer["inputs"]],
        outputs=list(answer["outputs"]),
        variables=list(answer["variables"]),
        dropout=list(answer["dropout"]),
        jobs=results,
        versions=dict(answer.get("versions", {})),
    )
