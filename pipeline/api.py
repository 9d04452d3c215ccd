"""The Python API: :func:`convert` runs the whole pipeline, :func:`load_torch` reads a run.

``convert`` does exactly what ``tf2torch convert`` does.  It never calls ``sys.exit`` and
never imports TensorFlow (TF work runs in :mod:`pipeline.tf_worker`); failures raise a
:class:`~pipeline.errors.Tf2TorchError` subclass whose message is the CLI's one line.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from pipeline import compare, report
from pipeline.batchnorm import keep_batchnorm
from pipeline.codegen import (
    MODEL_PY,
    PACKAGE,
    WEIGHTS,
    emit_package,
    keras_layout,
    load_generated,
    renamed_entries,
)
from pipeline.errors import BadInputError, UnsupportedOpsError
from pipeline.gradients import compare_gradients, torch_gradients
from pipeline.ort_runner import OrtRunner
from pipeline.parameters import ParameterEntry, adopt_tf_variables, count_trainable
from pipeline.passes import builtin_passes, builtin_patches, load_patch_dir, run_passes
from pipeline.run_dir import staged_run_dir, write_npz
from pipeline.scaling import TABLE_ATTRIBUTE, check_scale_options
from pipeline.signature import TensorSpec
from pipeline.sources import parse_source
from pipeline.tf_client import export_with_tf
from pipeline.torch_import import export_program, find_unsupported_ops, import_onnx, load_program
from pipeline.torch_runner import run_torch, torch_device

RAW_ONNX, ONNX, PT2, GOLDEN = "model.raw.onnx", "model.onnx", "model.pt2", "golden.npz"

StageCallback = Callable[[str], None]


@dataclass
class ConvertOptions:
    """Options of :func:`convert` (the CLI's flags); every default is stated here.

    - ``opset``: ONNX opset for tf2onnx (17).
    - ``batch``, ``seed``: inputs drawn from the signature, batch 2 with seed 0, unless
      ``inputs`` names an ``.npz`` keyed by input name.
    - ``input_ranges``: half-open ``(lo, hi)`` per integer input (required for them).
    - ``input_specs``: the input signature when the model does not carry one.
    - ``atol``, ``rtol``: override the per-dtype default tolerances of
      :class:`pipeline.compare.Tolerances`; ``output_tolerances`` per output name.
    - ``patches``: extra directories of user patches, applied after the built-in ones.
    - ``custom_objects``: a module (``file.py`` or dotted) to import before loading Keras
      files; its ``CUSTOM_OBJECTS`` dict, if any, is passed to ``load_model``.
    - ``safe_mode``: Keras ``safe_mode`` when loading files (on; turn off only for trusted
      files that hold Python code, e.g. ``Lambda`` layers).
    - ``worker_timeout``: seconds the TF worker may take (None: no limit).
    - ``keep_batchnorm``: give folded BatchNorms back their own ``nn.BatchNorm*d`` with
      Keras's epsilon and momentum, so they train like Keras's (off: inference-folded).
    - ``scale``: a ``--scale`` spec (``"global=0.5"``, ``"conv=0.7,dense=0.3"``,
      ``"activation"``; see :mod:`pipeline.scaling`) applied to the Keras model's weights in
      the TF worker before export, so all three frameworks are compared on the scaled model
      (None: no scaling).  ``calibration``: the ``.npz`` (inputs keyed by input name) whose
      layer outputs the ``activation`` strategy measures; required by it, refused otherwise.
    - ``channels_first``: the generated ``torch_model/`` takes and returns images (rank 4
      and 5) channels first, NCHW (off: Keras's layout).  The checks and ``model.pt2`` keep
      Keras's layout: they run the generated module behind permutes of its image inputs
      and outputs.
    """

    opset: int = 17
    batch: int = 2
    seed: int = 0
    inputs: Path | None = None
    input_ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    input_specs: Sequence[TensorSpec] = ()
    atol: float | None = None
    rtol: float | None = None
    output_tolerances: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    patches: Sequence[Path] = ()
    keep_batchnorm: bool = False
    custom_objects: str | None = None
    safe_mode: bool = True
    worker_timeout: float | None = None
    scale: str | None = None
    calibration: Path | None = None
    channels_first: bool = False


@dataclass
class ConversionResult:
    """What :func:`convert` returns.  Truth-tests as ``verdict == "pass"``."""

    verdict: str
    report: dict[str, Any]
    module: torch.nn.Module
    run_dir: Path
    comparisons: list[compare.OutputComparison]
    parameters: list[ParameterEntry]
    """Where each TF variable went (the report's ``parameters`` table)."""
    tf_gradients: dict[str, np.ndarray]
    """TF's gradient of the fixed loss per trainable variable (keyed by TF name)."""
    loss_weights: dict[str, np.ndarray]
    """The fixed loss's weights per output: ``loss = sum(output * weight)``."""

    def __bool__(self) -> bool:
        return self.verdict == "pass"


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _check_options(options: ConvertOptions) -> None:
    if options.opset < 9:
        raise BadInputError(f"--opset {options.opset} is too old; use 13 or newer")
    if options.batch < 1:
        raise BadInputError("--batch must be at least 1")
    for path in options.patches:
        if not Path(path).is_dir():
            raise BadInputError(f"--patches {path} is not a directory")
    if options.inputs is not None and not Path(options.inputs).is_file():
        raise BadInputError(f"inputs file not found: {options.inputs}")
    check_scale_options(options.scale, options.calibration)
    if options.calibration is not None and not Path(options.calibration).is_file():
        raise BadInputError(f"calibration file not found: {options.calibration}")


_TABLE_EXTRAS = ("layer", "layer_class", "layer_kind", "initializer")


def parameter_table(
    parameters: Sequence[ParameterEntry], variables: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The report's ``parameters`` rows: each :class:`ParameterEntry` plus, from the TF
    worker's metadata, ``tf_shape`` (the Keras layout the transform starts from) and, for
    Keras models, ``layer``, ``layer_class``, ``layer_kind`` and ``initializer``."""
    meta = {str(v["path"]): v for v in variables}
    rows = []
    for entry in parameters:
        row = entry.to_json()
        found = meta.get(entry.tf_name or "")
        if found is not None:
            row["tf_shape"] = list(found["shape"])
            row.update({key: found[key] for key in _TABLE_EXTRAS if key in found})
        rows.append(row)
    return rows


def attach_table(module: torch.nn.Module, rows: Sequence[Mapping[str, Any]]) -> None:
    """Attach the parameter table to ``module`` as ``tf2torch_parameters`` (a plain list of
    report rows), where :func:`pipeline.init.reset_parameters` and
    :func:`pipeline.scaling.scale_weights` look for it."""
    setattr(module, TABLE_ATTRIBUTE, [dict(row) for row in rows])


def convert(
    source: str | Path,
    out_dir: str | Path,
    options: ConvertOptions | None = None,
    *,
    on_stage: StageCallback | None = None,
) -> ConversionResult:
    """Convert a TF model to PyTorch, compare TF, ONNX Runtime and torch, write the run.

    ``source`` is a SavedModel directory, a ``.keras``/``.h5`` file or a factory
    ``file.py:fn`` / ``package.module:fn``.  The run directory ``out_dir`` receives
    ``model.raw.onnx``, ``model.onnx``, ``model.pt2``, ``golden.npz``, ``report.json`` and
    ``report.md``; it appears only when the conversion succeeded (pass *or* fail verdict) and
    an earlier run there is replaced whole.  ``on_stage`` is called with each stage's name
    as it starts (for progress displays).

    Raises :class:`~pipeline.errors.BadInputError` (bad source, options or inputs),
    :class:`~pipeline.errors.UnsupportedOpsError` (ops no converter handles, all listed),
    :class:`~pipeline.errors.WorkerError` (the TF worker died), and the other
    :class:`~pipeline.errors.Tf2TorchError` subclasses for failing stages.
    """
    options = options or ConvertOptions()
    notify = on_stage or (lambda _stage: None)
    parsed = parse_source(str(source))
    _check_options(options)
    extra_passes = [p for directory in options.patches for p in load_patch_dir(Path(directory))]
    tolerances = compare.Tolerances(
        atol=options.atol,
        rtol=options.rtol,
        per_output={k: compare.Tolerance(*v) for k, v in options.output_tolerances.items()},
    )
    rep = report.Report(source=str(source))

    with staged_run_dir(Path(out_dir)) as staging:
        notify("export")
        with rep.stage("export"):
            exported = export_with_tf(
                parsed,
                staging,
                opset=options.opset,
                batch=options.batch,
                seed=options.seed,
                input_ranges=options.input_ranges,
                inputs_npz=options.inputs,
                input_specs=options.input_specs,
                custom_objects=options.custom_objects,
                safe_mode=options.safe_mode,
                timeout=options.worker_timeout,
                scale={
                    "spec": options.scale,
                    "calibration": str(Path(options.calibration).resolve())
                    if options.calibration is not None
                    else None,
                }
                if options.scale
                else None,
            )
        if exported.scaling is not None and options.calibration is not None:
            exported.scaling["calibration"] = str(options.calibration)
        rep.scaling = exported.scaling
        inputs = _read_npz(exported.inputs_npz)
        tf_outputs = _read_npz(exported.tf_outputs_npz)
        tf_variables = _read_npz(exported.variables_npz)
        for scratch in (exported.inputs_npz, exported.tf_outputs_npz, exported.variables_npz):
            scratch.unlink()
        write_npz(
            staging / GOLDEN,
            {f"input/{k}": v for k, v in inputs.items()}
            | {f"output/{k}": v for k, v in tf_outputs.items()},
        )

        notify("fixup")
        with rep.stage("fixup"):
            raw = onnx.load(str(exported.raw_onnx))
            fixed, records = run_passes(
                raw, builtin_passes(), inputs, patches=[*builtin_patches(), *extra_passes]
            )
            rep.passes = [r.to_json() for r in records]
            onnx.save(fixed, str(staging / ONNX))

        notify("import")
        with rep.stage("import"):
            unsupported = find_unsupported_ops(fixed)
            if unsupported:
                raise UnsupportedOpsError("import", unsupported)
            eager = import_onnx(fixed)
            parameters = adopt_tf_variables(
                eager,
                exported.variables,
                [tf_variables[f"value/{i}"] for i in range(len(exported.variables))],
            )
            if options.keep_batchnorm:
                parameters = keep_batchnorm(
                    eager,
                    parameters,
                    exported.variables,
                    [tf_variables[f"value/{i}"] for i in range(len(exported.variables))],
                )
            eager.eval()
            example = [inputs[s.name] for s in exported.inputs]
            # -- issue 14: the generated torch_model/ package is the module that is
            # compared, gradient-checked and exported (one model, one proof).
            emitted = emit_package(
                eager,
                parameter_table(parameters, exported.variables),
                staging,
                model_name=exported.model_name,
                input_names=[s.name for s in exported.inputs],
                output_names=exported.outputs,
                example_inputs=example,
                layers=exported.layers,
                channels_first=options.channels_first,
            )
            parameters = renamed_entries(parameters, emitted.renames)
            rep.parameters = parameter_table(parameters, exported.variables)
            rep.torch_model = emitted.to_json()
            module = load_generated(emitted.path)
            if any(emitted.channels_first):
                keras_layout(module, emitted.channels_first)
            export_program(module, example, staging / PT2)
            # -- end issue 14
            attach_table(module, rep.parameters)

        notify("compare")
        with rep.stage("compare"):
            input_names = [s.name for s in exported.inputs]
            ort = OrtRunner(fixed)
            device = torch_device()
            outputs = {
                "tf": tf_outputs,
                "ort": ort.run(inputs),
                "torch": run_torch(module, inputs, input_names, exported.outputs, device),
            }
            comparisons = compare.compare_all(outputs, tolerances)

        notify("gradients")
        with rep.stage("gradients"):
            tf_grads = {
                meta["path"]: tf_variables[f"grad/{i}"]
                for i, meta in enumerate(exported.variables)
                if f"grad/{i}" in tf_variables
            }
            weights = {
                k.removeprefix("loss_weight/"): v
                for k, v in tf_variables.items()
                if k.startswith("loss_weight/")
            }
            torch_grads = torch_gradients(module, inputs, input_names, exported.outputs, weights)
            gradient_checks = compare_gradients(
                parameters, tf_grads, torch_grads, compare.DTYPE_DEFAULTS["float32"]
            )
            rep.gradients = [g.to_json() for g in gradient_checks]

        rep.providers = {"onnxruntime": ort.provider, "torch_device": str(device)}
        rep.comparisons = [c.to_json() for c in comparisons]
        rep.inputs = [
            {
                **s.to_json(),
                "shape": list(inputs[s.name].shape),
                "source": str(options.inputs) if options.inputs else f"seed={options.seed}",
            }
            for s in exported.inputs
        ]
        rep.tolerances = tolerances.to_json()
        rep.artifacts = {
            "raw_onnx": RAW_ONNX,
            "onnx": ONNX,
            "torch_program": PT2,
            "golden": GOLDEN,
            "torch_model": f"{PACKAGE}/{MODEL_PY}",
            "torch_model_weights": f"{PACKAGE}/{WEIGHTS}",
            "report_json": report.REPORT_JSON,
            "report_md": report.REPORT_MD,
        }
        rep.versions = {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "onnx": onnx.__version__,
            "torch": torch.__version__,
            **exported.versions,
        }
        rep.parameter_count = count_trainable(module, exported.variables, parameters)
        rep.verdict = report.verdict_of(comparisons, gradient_checks, rep.parameter_count)
        rep.write(staging)
        result_dir = Path(out_dir).absolute()
    return ConversionResult(
        verdict=rep.verdict,
        report=rep.to_json(),
        module=module,
        run_dir=result_dir,
        comparisons=comparisons,
        parameters=parameters,
        tf_gradients=tf_grads,
        loss_weights=weights,
    )


def load_torch(run_dir: str | Path) -> torch.nn.Module:
    """Load a run's PyTorch module with torch alone, never TensorFlow: the generated
    ``torch_model/`` package's ``load_model()`` (imported afresh from the run's files), or
    ``model.pt2`` for a run made before code generation.

    The module carries the run's parameter table (``report.json``'s ``parameters``) as
    ``module.tf2torch_parameters``, for :func:`pipeline.init.reset_parameters` and
    :func:`pipeline.scaling.scale_weights`.

    Raises :class:`~pipeline.errors.BadInputError` when the run has no ``model.pt2``.
    """
    path = Path(run_dir) / PT2
    if not path.is_file():
        raise BadInputError(f"{run_dir} is not a tf2torch run directory (no {PT2})")
    package = Path(run_dir) / PACKAGE
    module = load_generated(package) if package.is_dir() else load_program(path)
    _restore_requires_grad(module, Path(run_dir) / report.REPORT_JSON)
    return module


def _restore_requires_grad(module: torch.nn.Module, report_path: Path) -> None:
    # torch.export does not keep requires_grad: torch slots that Keras lacks (nn.LSTM's second
    # bias) are frozen, as the report's parameter table says.
    if not report_path.is_file():
        return
    table = json.loads(report_path.read_text()).get("parameters") or []
    attach_table(module, table)
    frozen = {row["torch_name"] for row in table if row.get("torch_name") and not row["trainable"]}
    for name, parameter in module.named_parameters():
        parameter.requires_grad_(name not in frozen)
