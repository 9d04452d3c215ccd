"""The K-step proof: Keras and the converted torch module train side by side.

The TF worker runs K steps of Keras's own ``train_step`` (:mod:`pipeline.training.tf_worker`)
and records every variable after each step; torch starts from the very same values
(:meth:`MappedVariable.assign`), sees the very same batches and runs K steps of
:meth:`TorchTraining.step`.  After each step the loss and every variable (parameters and
buffers, e.g. BatchNorm's moving statistics) are compared through the parameter table:

- a variable's error is ``max |torch - tf|`` over its elements, and its relative error that
  divided by ``max |tf|`` (the variable's scale: an elementwise ratio explodes on entries
  that happen to be near zero);
- the loss's relative error is ``|torch - tf| / |tf|``.

A step passes when every relative error is at most ``rtol`` (default 1e-5).
:func:`train_check` does it for a run directory and writes ``report.json``'s ``training``.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import BadInputError
from pipeline.core.run_dir import atomic_write_bytes
from pipeline.core.signature import TensorSpec
from pipeline.training.build import TorchTraining, build_training
from pipeline.training.client import WORKER_LOG, TfJob, TfTraining, TfTrainingAnswer, train_in_tf
from pipeline.training.config import TrainingConfig, check_supported, read_description
from pipeline.training.report import training_markdown
from pipeline.training.script import write_train_script
from pipeline.training.variables import VariableError
from pipeline.verify import report

DEFAULT_RTOL = 1e-5
DEFAULT_STEPS = 10
DEFAULT_BATCH = 8
NOISE_GRADIENT = 1e-6
"""A gradient whose norm is below this fraction of the step's largest is rounding noise."""
_TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class StepRecord:
    """One step of the comparison: the losses, the learning rate Keras used, and the worst
    variable (by relative error) after the step."""

    step: int
    loss_tf: float
    loss_torch: float
    learning_rate: float
    worst: VariableError

    @property
    def loss_rel(self) -> float:
        """``|torch - tf| / |tf|`` of the loss."""
        return abs(self.loss_torch - self.loss_tf) / max(abs(self.loss_tf), _TINY)

    def passed(self, rtol: float) -> bool:
        """Whether the loss and every variable agree within ``rtol``."""
        return self.worst.rel <= rtol and self.loss_rel <= rtol and np.isfinite(self.loss_torch)

    def to_json(self) -> dict[str, Any]:
        """The report's record of this step."""
        return {
            "step": self.step,
            "loss": {"tf": self.loss_tf, "torch": self.loss_torch},
            "loss_rel_error": self.loss_rel,
            "learning_rate": self.learning_rate,
            "worst": self.worst.to_json(),
        }


@dataclass
class TrainCheckResult:
    """The outcome of a K-step check; truth-tests as "every step passed"."""

    steps: list[StepRecord]
    config: TrainingConfig
    rtol: float
    final: list[dict[str, Any]] = field(default_factory=list)
    """Every variable's error after the last step (``variable``, ``torch_name``,
    ``max_abs``, ``rel``)."""
    dropout: list[dict[str, Any]] = field(default_factory=list)
    noise_gradients: list[str] = field(default_factory=list)
    """Trainable variables whose torch gradient was at rounding level (below
    :data:`NOISE_GRADIENT` of the step's largest) at some step."""
    batch: int = DEFAULT_BATCH
    data: str = ""
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        """``pass`` or ``fail``."""
        return "pass" if self.steps and all(s.passed(self.rtol) for s in self.steps) else "fail"

    def __bool__(self) -> bool:
        return self.verdict == "pass"

    @property
    def notes(self) -> list[str]:
        """Explanations for failing variables whose gradient was rounding noise."""
        failing = {s.worst.variable for s in self.steps if not s.passed(self.rtol)}
        failing |= {str(e["variable"]) for e in self.final if e["rel"] > self.rtol}
        return [
            f"{name}: its gradient is rounding noise (below {NOISE_GRADIENT:g} of the largest; "
            "e.g. a bias right before BatchNorm, whose exact gradient is 0) and "
            f"{self.config.optimizer.class_name} scales such noise up to full steps, which no two "
            "frameworks reproduce; drop the variable (use_bias=False) to compare the rest"
            for name in self.noise_gradients
            if name in failing
        ]

    def to_json(self) -> dict[str, Any]:
        """``report.json``'s ``training`` section."""
        return {
            "verdict": self.verdict,
            "rtol": self.rtol,
            "error_formula": "rel = ||torch - tf||_2 / ||tf||_2 per variable (max_rel = "
            "max|torch - tf| / max|tf|); |torch - tf| / |tf| for the loss",
            "batch": self.batch,
            "data": self.data,
            "config": self.config.to_json(),
            "dropout": self.dropout,
            "notes": self.notes,
            "steps": [s.to_json() for s in self.steps],
            "final": self.final,
            "seconds": round(self.seconds, 3),
        }


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def replay_in_torch(
    module: torch.nn.Module,
    table: Sequence[Mapping[str, Any]],
    answer: TfTrainingAnswer,
    tf_run: TfTraining,
    *,
    rtol: float = DEFAULT_RTOL,
    training: TorchTraining | None = None,
) -> TrainCheckResult:
    """Train ``module`` (a converted run's module, changed in place) through ``tf_run``'s
    batches from ``tf_run``'s initial values and compare it with Keras after every step.

    ``training`` replaces what :func:`build_training` would build for ``module`` (e.g. to
    show that a torch built-in optimizer does not reproduce Keras's)."""
    names = [str(v["path"]) for v in answer.variables]
    training = training or build_training(module, tf_run.config, table, names)
    for variable, value in zip(training.variables, tf_run.values[0], strict=True):
        variable.assign(value)
    input_names = [s.name for s in answer.inputs]
    records = []
    final: list[dict[str, Any]] = []
    noise: set[str] = set()
    for step, batch in enumerate(tf_run.batches, start=1):
        loss = training.step(
            [_tensor(batch.inputs[n]) for n in input_names],
            [
                _tensor(batch.targets[name]) if name in batch.targets else torch.empty(0)
                for name in answer.outputs
            ],
        )
        norms = {
            v.tf_name: math.sqrt(
                sum(float(torch.sum(t.grad.double() ** 2)) for t in v.tensors if t.grad is not None)
            )
            for v in training.variables
            if v.trainable
        }
        largest = max(norms.values(), default=0.0)
        noise.update(name for name, norm in norms.items() if norm <= NOISE_GRADIENT * largest)
        errors = [
            variable.error(value)
            for variable, value in zip(training.variables, tf_run.values[step], strict=True)
        ]
        worst = max(errors, key=lambda e: (e.rel, e.max_abs))
        records.append(
            StepRecord(step, tf_run.losses[step - 1], loss, tf_run.learning_rates[step - 1], worst)
        )
        final = [e.to_json() for e in errors]
    return TrainCheckResult(records, tf_run.config, rtol, final, answer.dropout, sorted(noise))


def _read_report(run_dir: Path) -> dict[str, Any]:
    path = run_dir / report.REPORT_JSON
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(f"{run_dir} is not a tf2torch run directory (no report.json)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise BadInputError(f"cannot read {path}: {err}") from None
    if not data.get("parameters"):
        raise BadInputError(f"{path} has no parameter table: convert the model again")
    return data


def train_check(
    run_dir: str | Path,
    *,
    steps: int = DEFAULT_STEPS,
    batch: int = DEFAULT_BATCH,
    seed: int = 0,
    data: Path | None = None,
    training_config: Path | None = None,
    rtol: float = DEFAULT_RTOL,
    source: str | None = None,
    custom_objects: str | None = None,
    safe_mode: bool = True,
    input_specs: Sequence[TensorSpec] = (),
    input_ranges: Mapping[str, tuple[int, int]] | None = None,
    worker_timeout: float | None = None,
    update_report: bool = True,
) -> TrainCheckResult:
    """Run the K-step check for a run directory and write ``report.json``'s ``training``
    (unless ``update_report`` is false; a passing check also writes ``train.py`` and
    ``training_config.json``, see :mod:`pipeline.training.script`).

    The TF model is the report's ``source`` (or ``source``), loaded as convert loaded it
    (``custom_objects``, ``safe_mode``, ``input_specs``; a ``--scale`` is replayed).  Its
    compiled training configuration is used unless ``training_config`` names a description
    file (:func:`pipeline.training.config.read_description`).  Batches are drawn from the
    signature with ``seed`` (``input_ranges`` for integer inputs) or cut from ``data``.

    Raises :class:`BadInputError` (a bad run, option, data file or an unsupported
    configuration, all before training) and the TF worker's errors.
    """
    from pipeline.export.sources import parse_source
    from pipeline.to_torch.stage import load_run_module

    start = time.perf_counter()
    run_dir = Path(run_dir)
    if steps < 1:
        raise BadInputError("--steps must be at least 1")
    if batch < 1:
        raise BadInputError("--batch must be at least 1")
    if data is not None and not Path(data).is_file():
        raise BadInputError(f"data file not found: {data}")
    rep = _read_report(run_dir)
    description = read_description(training_config) if training_config else None
    module = load_run_module(Path(run_dir))
    try:
        parsed = parse_source(source or str(rep["source"]))
    except BadInputError as err:
        raise BadInputError(
            f"{err} (the run's source, as given to convert; run from the directory convert "
            "ran in or pass --source)"
        ) from None
    job = TfJob(
        name="train-check",
        steps=steps,
        batch=batch,
        seed=seed,
        description=description,
        origin=str(training_config) if training_config else "compiled model",
        data=data,
        input_ranges=dict(input_ranges or {}),
    )
    with tempfile.TemporaryDirectory(prefix="tf2torch-train-") as tmp:
        answer = train_in_tf(
            parsed,
            [job],
            Path(tmp),
            custom_objects=custom_objects,
            safe_mode=safe_mode,
            input_specs=input_specs,
            scale=rep.get("scaling"),
            timeout=worker_timeout,
            log_path=run_dir / WORKER_LOG if update_report else None,
        )
    tf_run = answer.job(job.name)
    check_supported(tf_run.config)
    result = replay_in_torch(module, rep["parameters"], answer, tf_run, rtol=rtol)
    result.batch = batch
    result.data = str(data) if data else f"seed={seed}"
    result.seconds = time.perf_counter() - start
    if update_report:
        if result:
            write_train_script(
                run_dir,
                tf_run.config,
                [s.name for s in answer.inputs],
                answer.outputs,
                steps=steps,
                rtol=rtol,
            )
        rep["training"] = result.to_json()
        text = json.dumps(rep, indent=2, allow_nan=False) + "\n"
        try:
            atomic_write_bytes(run_dir / report.REPORT_JSON, text.encode())
            markdown = report.render_markdown(rep) + "\n".join(training_markdown(rep["training"]))
            atomic_write_bytes(run_dir / report.REPORT_MD, (markdown + "\n").encode())
        except OSError as err:
            raise BadInputError(f"cannot update {run_dir / report.REPORT_JSON}: {err}") from None
    return result
