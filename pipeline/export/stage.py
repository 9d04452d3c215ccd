"""The export stage as one call: run the TF worker, collect what it produced.

:func:`export_model` hands the model to the worker (:mod:`pipeline.export.worker`), which
loads it, applies ``--scale``, draws or loads the inputs, exports ``model.raw.onnx`` with
tf2onnx, and runs the TF reference (outputs, every variable's value and gradient of the fixed
loss).  The scratch ``.npz`` files it wrote are read back and removed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import compare
from pipeline.core.run_dir import LazyNpz, read_npz
from pipeline.core.signature import TensorSpec
from pipeline.export.client import export_with_tf
from pipeline.export.sources import Source


@dataclass(frozen=True)
class ExportSettings:
    """What the export stage needs from :class:`pipeline.api.ConvertOptions`."""

    opset: int = 17
    batch: int = 2
    seed: int = 0
    inputs: Path | None = None
    input_ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    input_specs: Sequence[TensorSpec] = ()
    custom_objects: str | None = None
    safe_mode: bool = True
    worker_timeout: float | None = None
    scale: str | None = None
    calibration: Path | None = None
    failure_log: Path | None = None
    """Where the worker's log is kept when it fails (the work directory may be thrown away)."""


@dataclass
class Exported:
    """The export stage's output: the raw ONNX file and TensorFlow's reference."""

    raw_onnx: Path
    input_specs: list[TensorSpec]
    output_names: list[str]
    inputs: dict[str, np.ndarray]
    """The comparison inputs, keyed by input name."""
    tf_outputs: dict[str, np.ndarray]
    variables: list[dict[str, Any]]
    """Every TF variable's metadata in model order (see :class:`pipeline.export.client.TfExport`)."""
    values: Sequence[np.ndarray]
    """Every TF variable's value, in the order of :attr:`variables`."""
    tf_gradients: Mapping[str, np.ndarray]
    """TF's gradient of the fixed loss per trainable variable, keyed by variable path."""
    loss_weights: dict[str, np.ndarray]
    """The fixed loss's weight per output: ``loss = sum(output * weight)``."""
    gradient_error: str | None
    """Why TensorFlow could not differentiate the fixed loss, or None."""
    scaling: dict[str, Any] | None
    versions: dict[str, str]
    model_name: str | None = None
    """The Keras model's name (None for a SavedModel): the generated class is named after it."""
    layers: list[dict[str, str]] = field(default_factory=list)
    """Every Keras layer as ``{"name", "class"}``: the generated attributes follow them."""
    tf_gradient_noise: dict[str, compare.Noise] = field(default_factory=dict)
    """TF's own float32 noise floor per gradient (its float64 twin), keyed by variable path."""
    tf_outputs64: dict[str, np.ndarray] = field(default_factory=dict)
    """TF's float64 twin's outputs (the floor is trusted only where they match torch's)."""
    tf_gradient_noise_unmeasured: str | None = None
    """Why :attr:`tf_gradient_noise` is empty, or None."""


def export_model(source: Source, work_dir: Path, settings: ExportSettings) -> Exported:
    """Export ``source`` to ``work_dir/model.raw.onnx`` and run the TF reference.

    Raises the worker's own :class:`~pipeline.core.errors.Tf2TorchError` subclass (bad input,
    export failure) or :class:`~pipeline.core.errors.WorkerError` if the worker dies.
    """
    scale = None
    if settings.scale:
        calibration = settings.calibration
        scale = {
            "spec": settings.scale,
            "calibration": str(Path(calibration).resolve()) if calibration is not None else None,
        }
    done = export_with_tf(
        source,
        work_dir,
        opset=settings.opset,
        batch=settings.batch,
        seed=settings.seed,
        input_ranges=settings.input_ranges,
        inputs_npz=settings.inputs,
        input_specs=settings.input_specs,
        custom_objects=settings.custom_objects,
        safe_mode=settings.safe_mode,
        timeout=settings.worker_timeout,
        scale=scale,
        keep_log=settings.failure_log,
    )
    if done.scaling is not None and settings.calibration is not None:
        done.scaling["calibration"] = str(settings.calibration)
    inputs = read_npz(done.inputs_npz)
    tf_outputs = read_npz(done.tf_outputs_npz)
    # Values and gradients stay in the file until a stage reads one (a model's weights,
    # twice, would otherwise sit in memory through every stage); the file is opened now and
    # unlinked, its data readable through the open handle.
    tf_variables = LazyNpz(done.variables_npz)
    floors = read_npz(done.floors_npz)
    for scratch in (done.inputs_npz, done.tf_outputs_npz, done.variables_npz, done.floors_npz):
        scratch.unlink()
    return Exported(
        raw_onnx=done.raw_onnx,
        input_specs=done.inputs,
        output_names=done.outputs,
        inputs=inputs,
        tf_outputs=tf_outputs,
        variables=done.variables,
        values=tf_variables.sequence([f"value/{i}" for i in range(len(done.variables))]),
        tf_gradients=tf_variables.view(
            {
                meta["path"]: f"grad/{i}"
                for i, meta in enumerate(done.variables)
                if f"grad/{i}" in tf_variables
            }
        ),
        loss_weights=_prefixed(tf_variables, "loss_weight/"),
        gradient_error=done.gradient_error,
        tf_gradient_noise={
            meta["path"]: compare.Noise(
                float(floors[f"grad_noise/{i}"][0]),
                float(floors[f"grad_noise/{i}"][1]),
                meta["dtype"],
            )
            for i, meta in enumerate(done.variables)
            if f"grad_noise/{i}" in floors
        },
        tf_outputs64=_prefixed(floors, "output64/"),
        tf_gradient_noise_unmeasured=done.gradient_noise_unmeasured,
        scaling=done.scaling,
        versions=done.versions,
        model_name=done.model_name,
        layers=done.layers,
    )


def _prefixed(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays whose key starts with ``prefix``, keyed by the rest of it (only those are
    read from a lazy mapping)."""
    return {k.removeprefix(prefix): arrays[k] for k in arrays if k.startswith(prefix)}
