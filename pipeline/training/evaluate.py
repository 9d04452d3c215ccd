"""``tf2torch evaluate``: the compiled metrics computed by Keras and by torch on the same data.

The seed's "evaluate metrics on both models with identical datasets": Keras's own
``model.evaluate`` runs in the TF worker on every sample of the data file; torch runs the
converted module (inference mode) on the same batches and computes the same loss (compiled
loss plus regularization, averaged over batches weighted by their size, as Keras's loss
tracker does) and the same metrics (:mod:`pipeline.training.metrics`).  Each value's
relative difference ``|torch - tf| / |tf|`` must be within ``rtol``; a metric torch does not
reproduce is listed as such and not judged.
"""

from __future__ import annotations

import json
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
from pipeline.training.build import build_training
from pipeline.training.client import TfJob, TfTraining, TfTrainingAnswer, train_in_tf
from pipeline.training.config import read_description
from pipeline.training.metrics import MetricState
from pipeline.training.variables import map_variables
from pipeline.verify import report

_TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class MetricComparison:
    """One logged value (``loss`` or a metric) from Keras and from torch."""

    key: str
    output: str | None
    name: str
    tf: float
    torch: float | None
    rtol: float

    @property
    def rel(self) -> float | None:
        """``|torch - tf| / |tf|``, None when torch does not compute it."""
        if self.torch is None:
            return None
        return abs(self.torch - self.tf) / max(abs(self.tf), _TINY)

    @property
    def passed(self) -> bool | None:
        """Within ``rtol`` (None: not reproduced, not judged)."""
        rel = self.rel
        return None if rel is None else bool(rel <= self.rtol)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "key": self.key,
            "output": self.output,
            "name": self.name,
            "tf": self.tf,
            "torch": self.torch,
            "rel": self.rel,
            "pass": self.passed,
        }


@dataclass
class EvaluationResult:
    """Keras's and torch's loss and metrics on the same data; truth-tests as "all agree"."""

    values: list[MetricComparison]
    samples: int
    batch: int
    rtol: float
    data: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """``pass`` when every judged value agrees within ``rtol``."""
        return "pass" if all(v.passed is not False for v in self.values) else "fail"

    def __bool__(self) -> bool:
        return self.verdict == "pass"

    def to_json(self) -> dict[str, Any]:
        """``report.json``'s ``evaluation`` section."""
        return {
            "verdict": self.verdict,
            "rtol": self.rtol,
            "data": self.data,
            "samples": self.samples,
            "batch": self.batch,
            "values": [v.to_json() for v in self.values],
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


def evaluate_in_torch(
    module: torch.nn.Module,
    table: Sequence[Mapping[str, Any]],
    answer: TfTrainingAnswer,
    tf_run: TfTraining,
    *,
    batch: int,
    rtol: float = 1e-5,
) -> EvaluationResult:
    """Compute ``tf_run``'s evaluation (an ``evaluate`` job) with the converted module."""
    assert tf_run.evaluation is not None, "not an evaluate job"
    names = [str(v["path"]) for v in answer.variables]
    training = build_training(module, tf_run.config, table, names)
    for variable, value in zip(map_variables(module, table, names), tf_run.values[0], strict=True):
        variable.assign(value)
    training.train_mode(False)
    data = tf_run.batches[0]
    inputs = [data.inputs[s.name] for s in answer.inputs]
    targets = [data.targets.get(o) for o in answer.outputs]
    samples = len(inputs[0])
    specs = tf_run.evaluation["metrics"]
    states = [MetricState(spec, tf_run.config.epsilon) for spec in specs]
    loss_total, loss_count = 0.0, 0
    with torch.no_grad():
        for start in range(0, samples, batch):
            x = [torch.from_numpy(np.ascontiguousarray(a[start : start + batch])) for a in inputs]
            y = [
                torch.from_numpy(np.ascontiguousarray(t[start : start + batch]))
                if t is not None
                else torch.empty(0)
                for t in targets
            ]
            result = module(*x)
            outputs = list(result) if isinstance(result, list | tuple) else [result]
            n = len(x[0])
            loss_total += float(training.compute_loss(outputs, y)) * n
            loss_count += n
            for state in states:
                if state.supported:
                    index = int(state.spec["index"])
                    state.update(y[index], outputs[index])
    logs = tf_run.evaluation["logs"]
    values = [
        MetricComparison("loss", None, "loss", float(logs["loss"]), loss_total / loss_count, rtol)
    ]
    notes = []
    for state in states:
        spec = state.spec
        key = str(spec["key"])
        name = str(spec.get("fn") or spec["class_name"])
        if key not in logs:
            continue
        values.append(
            MetricComparison(
                key,
                str(spec["output"]),
                name,
                float(logs[key]),
                state.result() if state.supported else None,
                rtol,
            )
        )
        if not state.supported:
            notes.append(f"metric {key} ({name}) is not reproduced in torch: not compared")
    return EvaluationResult(values, samples, batch, rtol, notes=notes)


def evaluate_run(
    run_dir: str | Path,
    data: Path,
    *,
    batch: int = 32,
    training_config: Path | None = None,
    rtol: float = 1e-5,
    source: str | None = None,
    custom_objects: str | None = None,
    safe_mode: bool = True,
    input_specs: Sequence[TensorSpec] = (),
    worker_timeout: float | None = None,
    update_report: bool = True,
) -> EvaluationResult:
    """Evaluate the run's TF model (Keras ``evaluate``) and its converted module on ``data``
    and compare; writes ``report.json``'s ``evaluation`` unless ``update_report`` is false.
    Options as :func:`pipeline.training.check.train_check`'s."""
    from pipeline.export.sources import parse_source
    from pipeline.to_torch.stage import load_run_module
    from pipeline.training.check import _read_report

    start = time.perf_counter()
    run_dir = Path(run_dir)
    if batch < 1:
        raise BadInputError("--batch must be at least 1")
    if not Path(data).is_file():
        raise BadInputError(f"data file not found: {data}")
    rep = _read_report(run_dir)
    description = read_description(training_config) if training_config else None
    module = load_run_module(Path(run_dir))
    parsed = parse_source(source or str(rep["source"]))
    job = TfJob(
        name="evaluate",
        steps=0,
        batch=batch,
        description=description,
        origin=str(training_config) if training_config else "compiled model",
        data=Path(data),
        evaluate=True,
    )
    with tempfile.TemporaryDirectory(prefix="tf2torch-evaluate-") as tmp:
        answer = train_in_tf(
            parsed,
            [job],
            Path(tmp),
            custom_objects=custom_objects,
            safe_mode=safe_mode,
            input_specs=input_specs,
            scale=rep.get("scaling"),
            timeout=worker_timeout,
        )
    result = evaluate_in_torch(
        module, rep["parameters"], answer, answer.job(job.name), batch=batch, rtol=rtol
    )
    result.data = str(data)
    result.seconds = time.perf_counter() - start
    if update_report:
        rep["evaluation"] = result.to_json()
        text = json.dumps(rep, indent=2, allow_nan=False) + "\n"
        atomic_write_bytes(run_dir / report.REPORT_JSON, text.encode())
    return result
