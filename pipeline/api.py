"""The Python API: :func:`convert` runs the whole pipeline, :func:`load_torch` reads a run.

``convert`` does exactly what ``tf2torch convert`` does.  It never calls ``sys.exit`` and
never imports TensorFlow (TF work runs in the worker :mod:`pipeline.export.worker`); failures
raise a :class:`~pipeline.core.errors.Tf2TorchError` subclass whose message is the CLI's one
line.  :func:`convert` is the pipeline's table of contents: one call per stage, each stage a
function in its own folder (``export/``, ``passes/``, ``to_torch/``, ``verify/``).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from pipeline.core import compare
from pipeline.core.errors import BadInputError
from pipeline.core.extras import require_tensorflow
from pipeline.core.internal_error import enter_stage
from pipeline.core.memory import release as release_memory
from pipeline.core.run_dir import (
    clear_failure_log,
    failure_log_path,
    staged_run_dir,
    write_npz,
)
from pipeline.core.signature import TensorSpec
from pipeline.core.weight_store import weight_store
from pipeline.export.scale_spec import check_scale_options
from pipeline.export.sources import parse_source
from pipeline.export.stage import ExportSettings, export_model
from pipeline.export.worker.frozen_export import FROZEN_SAVED_MODEL_ROUTE
from pipeline.passes.stage import fix_graph, user_patches
from pipeline.to_torch.codegen import MODEL_PY, PACKAGE, WEIGHTS
from pipeline.to_torch.parameters import ParameterEntry, count_trainable
from pipeline.to_torch.stage import PT2, import_torch, load_run_module
from pipeline.verify import report
from pipeline.verify.gradients import GradientComparison, gradient_scope
from pipeline.verify.stage import check_gradients, compare_outputs

RAW_ONNX, ONNX, GOLDEN = "model.raw.onnx", "model.onnx", "golden.npz"

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
      :class:`pipeline.core.compare.Tolerances`; ``output_tolerances`` per output name.
    - ``patches``: extra directories of user patches, applied after the built-in ones.
    - ``custom_objects``: a module (``file.py`` or dotted) to import before loading Keras
      files; its ``CUSTOM_OBJECTS`` dict, if any, is passed to ``load_model``.
    - ``safe_mode``: Keras ``safe_mode`` when loading files (on; turn off only for trusted
      files that hold Python code, e.g. ``Lambda`` layers).
    - ``worker_timeout``: seconds the TF worker may take (None: no limit).
    - ``fold_for_inference``: fold BatchNorm into the preceding convolution, for an
      inference-only module (off: every Keras variable stays its own parameter, BatchNorm an
      ``nn.BatchNorm*d`` with Keras's epsilon and momentum).  The report lists each folded
      variable and what it went into, and marks the run ``inference_only``.
    - ``keep_batchnorm``: accepted for old scripts; BatchNorm is kept by default now.
    - ``scale``: a ``--scale`` spec (``"global=0.5"``, ``"conv=0.7,dense=0.3"``,
      ``"activation"``; see :mod:`pipeline.scaling`) applied to the Keras model's weights in
      the TF worker before export, so all three frameworks are compared on the scaled model
      (None: no scaling).  ``calibration``: the ``.npz`` (inputs keyed by input name) whose
      layer outputs the ``activation`` strategy measures; required by it, refused otherwise.
    - ``channels_first``: the generated ``torch_model/`` takes and returns images (rank 4
      and 5) channels first, NCHW (off: Keras's layout).  The checks and ``model.pt2`` keep
      Keras's layout: they run the generated module behind permutes of its image inputs
      and outputs.
    - ``flat``: the generated ``model.py`` writes every op in the model's ``forward``; off
      (the default), repeated blocks become ``nn.Module`` classes in ``nn.ModuleList`` s
      (``blocks.2.expand.weight``) and common compositions their ``F.`` calls (see
      docs/generated-code.md).
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
    fold_for_inference: bool = False
    keep_batchnorm: bool = True
    custom_objects: str | None = None
    safe_mode: bool = True
    worker_timeout: float | None = None
    scale: str | None = None
    calibration: Path | None = None
    channels_first: bool = False
    flat: bool = False


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
    tf_gradients: Mapping[str, np.ndarray]
    """TF's gradient of the fixed loss per trainable variable (keyed by TF name)."""
    loss_weights: dict[str, np.ndarray]
    """The fixed loss's weights per output: ``loss = sum(output * weight)``."""

    def __bool__(self) -> bool:
        return self.verdict == "pass"


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
    an earlier run there is replaced whole.  When the TF worker fails, its log is kept at
    ``<out_dir>.failed/tf_worker.log`` and the error's message names it (a later run into
    ``out_dir`` removes it).  ``on_stage`` is called with each stage's name as it starts (for
    progress displays).

    Raises :class:`~pipeline.core.errors.BadInputError` (bad source, options or inputs),
    :class:`~pipeline.core.errors.UnsupportedOpsError` (ops no converter handles, all listed),
    :class:`~pipeline.core.errors.WorkerError` (the TF worker died), and the other
    :class:`~pipeline.core.errors.Tf2TorchError` subclasses for failing stages.
    """
    options = options or ConvertOptions()
    callback = on_stage or (lambda _stage: None)

    weight_bytes = 0  # known once the model is exported

    def notify(stage: str) -> None:
        release_memory(weight_bytes)  # what the previous stage freed, back to the system
        enter_stage(stage)
        callback(stage)

    parsed = parse_source(str(source))
    _check_options(options)
    require_tensorflow("convert")
    extra_patches = user_patches(options.patches)
    tolerances = compare.Tolerances(
        atol=options.atol,
        rtol=options.rtol,
        per_output={k: compare.Tolerance(*v) for k, v in options.output_tolerances.items()},
    )
    rep = report.Report(source=str(source))
    clear_failure_log(Path(out_dir))

    with staged_run_dir(Path(out_dir)) as staging, ExitStack() as run_scope:
        notify("export")
        with rep.stage("export"):
            settings = _export_settings(options, failure_log_path(Path(out_dir)))
            exported = export_model(parsed, staging, settings)
        write_golden(staging / GOLDEN, exported.inputs, exported.tf_outputs)
        weight_bytes = variable_bytes(exported.variables)
        input_names = [s.name for s in exported.input_specs]
        # A large model's graphs keep their weights on disk until the run ends (deleted
        # before the run directory is committed): see pipeline.core.weight_store.
        store = run_scope.enter_context(weight_store(staging.parent, weight_bytes))

        notify("fixup")
        with rep.stage("fixup"):
            fixed = fix_graph(
                exported.raw_onnx,
                exported.inputs,
                extra_patches,
                staging / ONNX,
                fold_for_inference=options.fold_for_inference,
                reference=exported.tf_outputs,
                store=store,
            )

        notify("import")
        with rep.stage("import"):
            imported = import_torch(
                fixed.model,
                exported.variables,
                exported.values,
                [exported.inputs[name] for name in input_names],
                exported.input_specs,
                exported.output_names,
                staging / PT2,
                model_name=exported.model_name,
                layers=exported.layers,
                channels_first=options.channels_first,
                flat=options.flat,
            )
        # A large model's weights are held once per copy: let go of the ones no later stage
        # reads (TF's variable values after the import, the graph after the comparison).
        exported.values = []

        notify("compare")
        with rep.stage("compare"):
            compared = compare_outputs(
                fixed.model,
                imported.module,
                exported.inputs,
                input_names,
                exported.output_names,
                exported.tf_outputs,
                tolerances,
                exported.tf_outputs64,
            )
        passes = fixed.passes
        del fixed

        notify("gradients")
        scope = gradient_scope(
            exported.variables,
            exported.tf_outputs,
            exported.tf_gradients,
            exported.gradient_error,
        )
        with rep.stage("gradients") as gradient_stage:
            tf_noise_unmeasured: str | None = None
            if scope.skipped:
                gradient_stage["skipped"] = scope.skipped
                gradient_checks: list[GradientComparison] = []
            else:
                gradient_checks, tf_noise_unmeasured = check_gradients(
                    imported.module,
                    imported.parameters,
                    exported.inputs,
                    input_names,
                    exported.output_names,
                    exported.tf_gradients,
                    exported.loss_weights,
                    exported.tf_gradient_noise,
                    exported.tf_outputs64,
                    exported.tf_gradient_noise_unmeasured,
                    compared.tolerances.noise,
                    store,
                )
                if tf_noise_unmeasured:
                    gradient_stage["tf_noise_unmeasured"] = tf_noise_unmeasured

        notify("report")
        rep.scaling = exported.scaling
        rep.static_dims = [d.to_json() for d in imported.static_dims]
        rep.torch_model = imported.torch_model
        rep.passes = passes
        rep.parameters = imported.table
        rep.gradients = [g.to_json() for g in gradient_checks]
        rep.gradient_check = {
            **scope.to_json(),
            "tf_noise_unmeasured": tf_noise_unmeasured,
        }
        rep.providers = compared.providers
        rep.comparisons = [c.to_json() for c in compared.comparisons]
        rep.inputs = [
            {
                **s.to_json(),
                "shape": list(exported.inputs[s.name].shape),
                "source": str(options.inputs) if options.inputs else f"seed={options.seed}",
            }
            for s in exported.input_specs
        ]
        rep.tolerances = compared.tolerances.to_json()
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
        # A SavedModel whose variables could not be graph inputs was exported frozen: what
        # froze is listed as folded and the run is inference-only, like --fold-for-inference.
        inference_only = options.fold_for_inference or imported.route == FROZEN_SAVED_MODEL_ROUTE
        rep.parameter_count = count_trainable(
            imported.module,
            exported.variables,
            imported.parameters,
            imported.problems,
            inference_only=inference_only,
        )
        rep.parameter_count["export_route"] = imported.route
        rep.inference_only = inference_only
        rep.verdict = report.verdict_of(compared.comparisons, gradient_checks, rep.parameter_count)
        rep.write(staging)
        result_dir = Path(out_dir).absolute()
    return ConversionResult(
        verdict=rep.verdict,
        report=rep.to_json(),
        module=imported.module,
        run_dir=result_dir,
        comparisons=compared.comparisons,
        parameters=imported.parameters,
        tf_gradients=exported.tf_gradients,
        loss_weights=exported.loss_weights,
    )


def _export_settings(options: ConvertOptions, failure_log: Path) -> ExportSettings:
    return ExportSettings(
        failure_log=failure_log,
        opset=options.opset,
        batch=options.batch,
        seed=options.seed,
        inputs=options.inputs,
        input_ranges=options.input_ranges,
        input_specs=options.input_specs,
        custom_objects=options.custom_objects,
        safe_mode=options.safe_mode,
        worker_timeout=options.worker_timeout,
        scale=options.scale,
        calibration=options.calibration,
    )


def variable_bytes(variables: Sequence[Mapping[str, Any]]) -> int:
    """Bytes of the TF variables the worker listed (their ``shape`` and ``dtype``)."""
    return sum(
        int(np.prod(v.get("shape", ()), dtype=np.int64)) * np.dtype(v.get("dtype", "float32")).itemsize
        for v in variables
    )


def write_golden(
    path: Path, inputs: Mapping[str, np.ndarray], tf_outputs: Mapping[str, np.ndarray]
) -> None:
    """Write ``golden.npz``: the inputs (``input/<name>``) and TF's outputs (``output/<name>``),
    what ``tf2torch check --golden-only`` gates on without TensorFlow."""
    write_npz(
        path,
        {f"input/{k}": v for k, v in inputs.items()}
        | {f"output/{k}": v for k, v in tf_outputs.items()},
    )


def load_torch(run_dir: str | Path) -> torch.nn.Module:
    """Load a run's PyTorch module with torch alone, never TensorFlow: the generated
    ``torch_model/`` package's ``load_model()`` (imported afresh from the run's files), or
    ``model.pt2`` for a run made before code generation.

    The module carries the run's parameter table (``report.json``'s ``parameters``) as
    ``module.tf2torch_parameters``, for :func:`pipeline.init.reset_parameters` and
    :func:`pipeline.scaling.scale_weights`.

    Raises :class:`~pipeline.core.errors.BadInputError` when the run has no ``model.pt2``.
    """
    return load_run_module(Path(run_dir))
