"""The K-step proof: Keras and the converted torch module train side by side.

The TF worker runs K steps of Keras's own ``train_step`` (:mod:`pipeline.training.tf_worker`)
and, the same K steps, of the model's float64 twin; it records every variable after each
step.  torch starts from the very same values (:meth:`MappedVariable.assign`), sees the very
same batches and runs K steps of the emitted training code (:mod:`pipeline.training.emit`,
the run's ``torch_model/training.py``), once on the module and once on a float64 copy of
it.  After each step the loss and every variable (parameters and buffers, e.g.
BatchNorm's moving statistics) are judged through the parameter table against both
frameworks' own float32 drift (:mod:`pipeline.training.judge`).

:func:`train_check` does it for a run directory and writes ``report.json``'s ``training``.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import BadInputError
from pipeline.core.run_dir import atomic_write_bytes
from pipeline.core.signature import TensorSpec
from pipeline.training.build import TorchTraining, build_training, training_code
from pipeline.training.client import WORKER_LOG, TfJob, TfTraining, TfTrainingAnswer, train_in_tf
from pipeline.training.config import TrainingConfig, check_supported, read_description
from pipeline.training.judge import FIXED_RTOL, Judgement, Rule, finite, judge, judge_loss
from pipeline.training.report import training_markdown
from pipeline.training.script import write_training_files
from pipeline.training.variables import MappedVariable, map_variables
from pipeline.verify import report

DEFAULT_STEPS = 10
DEFAULT_BATCH = 8
DEFAULT_RTOL = FIXED_RTOL
"""The fixed rule's tolerance (used where no float64 run could be made)."""
NOISE_GRADIENT = 1e-6
"""A gradient whose norm is below this fraction of the step's largest is rounding noise."""


@dataclass(frozen=True)
class StepRecord:
    """One step of the comparison: the losses (float32 and, where run, float64), the
    learning rate Keras used, the loss's and the worst variable's :class:`Judgement`, and
    every variable's floors (``[n_torch, n_tf]``)."""

    step: int
    loss_tf: float
    loss_torch: float
    learning_rate: float
    loss: Judgement
    worst: Judgement
    passed: bool
    loss_tf64: float | None = None
    loss_torch64: float | None = None
    floors: dict[str, list[float | None]] = field(default_factory=dict)

    @property
    def loss_rel(self) -> float:
        """``|torch - tf| / |tf|`` of the loss."""
        return self.loss.rel

    @property
    def margin(self) -> float:
        """The step's largest distance over what is allowed (loss or variable)."""
        return max(self.loss.margin, self.worst.margin)

    def to_json(self) -> dict[str, Any]:
        """The report's record of this step."""
        return {
            "step": self.step,
            "passed": self.passed,
            "loss": {
                "tf": self.loss_tf,
                "torch": self.loss_torch,
                "tf64": self.loss_tf64,
                "torch64": self.loss_torch64,
            },
            "loss_rel_error": finite(self.loss_rel),
            "loss_error": self.loss.to_json(),
            "learning_rate": self.learning_rate,
            "margin": finite(self.margin),
            "worst": self.worst.to_json(),
            "floors": {k: [finite(x) for x in v] for k, v in self.floors.items()},
        }


@dataclass
class TrainCheckResult:
    """The outcome of a K-step check; truth-tests as "every step passed"."""

    steps: list[StepRecord]
    config: TrainingConfig
    rule: Rule
    final: list[Judgement] = field(default_factory=list)
    """Every variable's judgement after the last step."""
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
        return "pass" if self.steps and all(s.passed for s in self.steps) else "fail"

    def __bool__(self) -> bool:
        return self.verdict == "pass"

    @property
    def worst_margin(self) -> float:
        """The largest step margin (distance over what is allowed; above 1 fails)."""
        return max((s.margin for s in self.steps), default=0.0)

    @property
    def notes(self) -> list[str]:
        """Why a framework has no float64 run, and explanations for failing variables
        whose gradient was rounding noise."""
        notes = [
            f"no float64 run for {name}: {why}; "
            + (
                "the other framework's floor stands for both sides"
                if len(self.rule.unmeasured) == 1
                else f"the fixed rule judges (rel <= {FIXED_RTOL:g})"
            )
            for name, why in sorted(self.rule.unmeasured.items())
            if self.rule.kind == "noise" or len(self.rule.unmeasured) == 2
        ]
        unstable: dict[str, str] = {}
        for s in self.steps:
            for j in (s.loss, s.worst):
                if j.unstable and j.variable not in unstable:
                    unstable[j.variable] = f"{j.variable} (from step {s.step}): {j.unstable}"
        notes += list(unstable.values())
        failing = {s.worst.variable for s in self.steps if not s.passed}
        failing |= {j.variable for j in self.final if not j.passed}
        notes += [
            f"{name}: its gradient is rounding noise (below {NOISE_GRADIENT:g} of the largest; "
            "e.g. a bias right before BatchNorm, whose exact gradient is 0) and "
            f"{self.config.optimizer.class_name} scales such noise up to full steps, which no two "
            "frameworks reproduce; drop the variable (use_bias=False) to compare the rest"
            for name in self.noise_gradients
            if name in failing
        ]
        return notes

    def to_json(self) -> dict[str, Any]:
        """``report.json``'s ``training`` section."""
        return {
            "verdict": self.verdict,
            "rule": self.rule.to_json(),
            "rtol": self.rule.rtol,
            "atol": self.rule.atol,
            "worst_margin": finite(self.worst_margin),
            "error_formula": "max_abs = max|torch - tf|; rel = ||torch - tf||_2 / ||tf||_2 per "
            "variable (max_rel = max|torch - tf| / max|tf|); |torch - tf| / |tf| for the loss",
            "batch": self.batch,
            "data": self.data,
            "config": self.config.to_json(),
            "dropout": self.dropout,
            "notes": self.notes,
            "steps": [s.to_json() for s in self.steps],
            "final": [j.to_json() for j in self.final],
            "seconds": round(self.seconds, 3),
        }


def _tensor(array: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def _current(variable: MappedVariable) -> list[np.ndarray]:
    return [p.tensor.detach().cpu().numpy().astype(np.float64) for p in variable.parts]


def _layout(variable: MappedVariable, value: np.ndarray) -> list[np.ndarray]:
    return [a.astype(np.float64) for a in variable.torch_layout(value)]


Customize = Callable[[TorchTraining], None]


class _TorchRun:
    """One torch training run (float32, or the float64 copy) of the emitted code."""

    def __init__(
        self,
        module: torch.nn.Module,
        table: Sequence[Mapping[str, Any]],
        names: Sequence[str],
        tf_run: TfTraining,
        source: str,
        customize: Customize | None,
        dtype: torch.dtype | None,
    ) -> None:
        self.training = build_training(module, tf_run.config, table, names, source=source)
        if customize is not None:
            customize(self.training)
        self.variables = map_variables(module, table, names)
        self.dtype = dtype
        for variable, value in zip(self.variables, tf_run.values[0], strict=True):
            variable.assign(value)

    def step(self, batch: Any, inputs: Sequence[str], outputs: Sequence[str]) -> float:
        return self.training.step(
            [_tensor(batch.inputs[n], self.dtype) for n in inputs],
            [
                _tensor(batch.targets[name], self.dtype)
                if name in batch.targets
                else torch.empty(0)
                for name in outputs
            ],
        )


def _float64_copy(module: torch.nn.Module) -> torch.nn.Module:
    from pipeline.verify.noise import float64_module

    return float64_module(copy.deepcopy(module), in_place=True)


def replay_in_torch(
    module: torch.nn.Module,
    table: Sequence[Mapping[str, Any]],
    answer: TfTrainingAnswer,
    tf_run: TfTraining,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    customize: Customize | None = None,
    source: str | None = None,
    float64: bool = True,
) -> TrainCheckResult:
    """Train ``module`` (a converted run's module, changed in place) through ``tf_run``'s
    batches from ``tf_run``'s initial values with the emitted training code (``source``,
    default :func:`training_code` of ``tf_run``'s config), and judge it against Keras after
    every step (:mod:`pipeline.training.judge`; ``rtol``/``atol``: the fixed rule).

    Unless ``float64`` is false, a float64 copy of ``module`` trains with the same code:
    torch's own floor.  ``customize`` changes both trainings alike after they are built (a
    planted fault, or a torch built-in that does not reproduce Keras's)."""
    names = [str(v["path"]) for v in answer.variables]
    source = source if source is not None else training_code(tf_run.config, table, names)
    unmeasured: dict[str, str] = {}
    if tf_run.float64_error or not tf_run.values64:
        unmeasured["tf"] = tf_run.float64_error or "the TF worker did not train a float64 twin"
    if not float64:
        unmeasured["torch"] = "not asked for"
    while True:
        try:
            return _replay(
                module, table, names, answer, tf_run, source, customize, unmeasured, rtol, atol
            )
        except _Float64Failed as err:  # again without it: TF's floor stands for both, saying why
            unmeasured["torch"] = str(err)


class _Float64Failed(Exception):
    """The float64 copy of the module could not train (the message says why)."""


def _float64_failure(err: Exception) -> _Float64Failed:
    text = " ".join(str(err).split())[:200]
    return _Float64Failed(f"the float64 copy could not train: {type(err).__name__}: {text}")


def _replay(
    module: torch.nn.Module,
    table: Sequence[Mapping[str, Any]],
    names: list[str],
    answer: TfTrainingAnswer,
    tf_run: TfTraining,
    source: str,
    customize: Customize | None,
    unmeasured: dict[str, str],
    rtol: float | None,
    atol: float | None,
) -> TrainCheckResult:
    """:func:`replay_in_torch` with the float64 runs ``unmeasured`` leaves; the float64
    copy trains step for step beside the module (one step's values held at a time).
    Raises :class:`_Float64Failed` when the float64 copy cannot train."""
    if rtol is not None or atol is not None:
        rule = Rule("fixed", rtol, atol, dict(unmeasured))
    elif len(unmeasured) == 2:
        rule = Rule("fixed", FIXED_RTOL, None, dict(unmeasured))
    else:
        rule = Rule("noise", None, None, dict(unmeasured))
    input_names = [s.name for s in answer.inputs]
    run64 = None
    if "torch" not in unmeasured:
        try:
            run64 = _TorchRun(
                _float64_copy(module), table, names, tf_run, source, customize, torch.float64
            )
        except Exception as err:
            raise _float64_failure(err) from None
    run = _TorchRun(module, table, names, tf_run, source, customize, None)
    tf64 = "tf" not in unmeasured
    records = []
    final: list[Judgement] = []
    noise: set[str] = set()
    for step, batch in enumerate(tf_run.batches, start=1):
        wide: list[list[np.ndarray]] | None = None
        loss64 = None
        if run64 is not None:
            try:
                loss64 = run64.step(batch, input_names, answer.outputs)
                wide = [_current(v) for v in run64.variables]
            except Exception as err:
                raise _float64_failure(err) from None
        loss = run.step(batch, input_names, answer.outputs)
        norms = {
            v.name: math.sqrt(
                sum(float(torch.sum(t.grad.double() ** 2)) for t in v.tensors if t.grad is not None)
            )
            for v in run.training.variables
            if v.trainable
        }
        largest = max(norms.values(), default=0.0)
        noise.update(name for name, norm in norms.items() if norm <= NOISE_GRADIENT * largest)
        judged = []
        for i, variable in enumerate(run.variables):
            judged.append(
                judge(
                    variable.tf_name,
                    [p.torch_name for p in variable.parts],
                    _current(variable),
                    _layout(variable, tf_run.values[step][i]),
                    wide[i] if wide is not None else None,
                    _layout(variable, tf_run.values64[step][i]) if tf64 else None,
                    rule,
                )
            )
        loss_judged = judge_loss(
            loss,
            tf_run.losses[step - 1],
            loss64,
            tf_run.losses64[step - 1] if tf64 else None,
            rule,
        )
        worst = max(judged, key=lambda j: (not j.passed, j.margin, j.max_abs))
        records.append(
            StepRecord(
                step=step,
                loss_tf=tf_run.losses[step - 1],
                loss_torch=loss,
                learning_rate=tf_run.learning_rates[step - 1],
                loss=loss_judged,
                worst=worst,
                passed=loss_judged.passed and all(j.passed for j in judged),
                loss_tf64=tf_run.losses64[step - 1] if tf64 else None,
                loss_torch64=loss64,
                floors={j.variable: [j.noise_torch, j.noise_tf] for j in judged},
            )
        )
        final = judged
    return TrainCheckResult(records, tf_run.config, rule, final, answer.dropout, sorted(noise))


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
    rtol: float | None = None,
    atol: float | None = None,
    source: str | None = None,
    custom_objects: str | None = None,
    safe_mode: bool = True,
    input_specs: Sequence[TensorSpec] = (),
    input_ranges: Mapping[str, tuple[int, int]] | None = None,
    worker_timeout: float | None = None,
    update_report: bool = True,
) -> TrainCheckResult:
    """Run the K-step check for a run directory and write ``report.json``'s ``training``
    (unless ``update_report`` is false; a passing check also writes
    ``torch_model/training.py``, ``train.py`` and ``training_config.json``, see
    :mod:`pipeline.training.script`).  Steps are judged against both frameworks' float32
    noise (:mod:`pipeline.training.judge`) unless ``rtol``/``atol`` ask for the fixed rule.

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
    names = [str(v["path"]) for v in answer.variables]
    code = training_code(tf_run.config, rep["parameters"], names, model_name=type(module).__name__)
    result = replay_in_torch(
        module, rep["parameters"], answer, tf_run, rtol=rtol, atol=atol, source=code
    )
    result.batch = batch
    result.data = str(data) if data else f"seed={seed}"
    result.seconds = time.perf_counter() - start
    if update_report:
        if result:
            write_training_files(
                run_dir,
                tf_run.config,
                code,
                [s.name for s in answer.inputs],
                answer.outputs,
                steps=steps,
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
