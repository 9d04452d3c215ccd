"""The CI equivalence gate: re-run the comparison for a run directory ``tf2torch convert`` wrote.

Two modes:

- **golden-only** (``golden_only=True``): ONNX Runtime runs ``model.onnx`` and PyTorch runs
  ``model.pt2`` (loaded with torch alone) on the inputs saved in ``golden.npz``, and both are
  compared with the TensorFlow outputs saved there: pairs ``tf-ort``, ``tf-torch`` and
  ``ort-torch``, where ``tf`` is ``golden.npz``.  TensorFlow is never imported, nor needed:
  this is the mode for a PyTorch deployment's CI.
- **full**: as above, but TensorFlow runs again.  The report's ``source`` goes to the TF worker
  (:mod:`pipeline.export.worker`, its own process) with the golden inputs; the worker has one
  job, load + export + reference run, so this re-exports into a temporary directory whose
  ONNX export is thrown away and keeps only the TF outputs.  Pairs: ``golden-tf`` (the
  recorded TF outputs against today's TF: has the source or TF changed?) and then
  ``tf-ort``, ``tf-torch``, ``ort-torch`` with today's TF outputs.

Tolerances default to the ones the run was converted with (``report.json`` ``tolerances``)
and can be overridden per call.  The result is a :class:`CheckResult`; with
``update_report`` (the default) ``report.json`` gets the new ``comparisons``, ``providers``
and ``verdict`` (which still counts the stored gradient and parameter-count checks) and a
``checks`` entry, and ``report.md`` is re-rendered, both written atomically.  Every other
key is kept.

A run directory that is missing, incomplete or corrupt, or whose models cannot run on the
golden inputs, raises :class:`~pipeline.core.errors.BadInputError` (one line): the run could not
be checked, which is not the same as "not equivalent".
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx

from pipeline.core import compare
from pipeline.core.errors import BadInputError, Tf2TorchError
from pipeline.core.internal_error import enter_stage
from pipeline.core.messages import one_line
from pipeline.core.run_dir import atomic_write_bytes, failure_log_path, write_npz
from pipeline.core.signature import TensorSpec
from pipeline.verify import report

ONNX, PT2, GOLDEN = "model.onnx", "model.pt2", "golden.npz"
GOLDEN_ONLY, FULL = "golden-only", "full"
FULL_PAIRS: tuple[tuple[str, str], ...] = (("golden", "tf"), *compare.DEFAULT_PAIRS)
MAX_CHECKS_KEPT = 20
"""``report.json`` keeps the latest this many ``checks`` entries."""


def _one_line(err: BaseException) -> str:
    return one_line(err)


@dataclass(frozen=True)
class Golden:
    """``golden.npz``: the comparison inputs and TF's outputs, in the order they were saved."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


def read_golden(path: str | Path) -> Golden:
    """Read a ``golden.npz`` (keys ``input/<name>`` and ``output/<name>``).

    Raises :class:`BadInputError` if it is missing, unreadable or holds no outputs.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path} not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise BadInputError(f"cannot read {path}: {_one_line(err)}") from None
    inputs = {k.removeprefix("input/"): v for k, v in arrays.items() if k.startswith("input/")}
    outputs = {k.removeprefix("output/"): v for k, v in arrays.items() if k.startswith("output/")}
    if not outputs:
        raise BadInputError(f"{path} holds no TF outputs (no 'output/<name>' arrays)")
    return Golden(inputs, outputs)


@dataclass
class CheckResult:
    """What :func:`check_run` found.  Truth-tests as ``verdict == "pass"``."""

    run_dir: Path
    mode: str
    """``golden-only`` or ``full``."""
    verdict: str
    """``pass`` when every comparison passes, else ``fail`` (outputs only: the gradient and
    parameter checks need TF's gradients, which only ``convert`` computes)."""
    comparisons: list[compare.OutputComparison]
    providers: dict[str, str]
    tolerances: compare.Tolerances
    seconds: float
    report: dict[str, Any] = field(default_factory=dict)
    """``report.json`` as refreshed (or as it would have been, with ``update_report=False``)."""

    def __bool__(self) -> bool:
        return self.verdict == "pass"

    @property
    def failures(self) -> list[compare.OutputComparison]:
        """The comparisons that failed."""
        return [c for c in self.comparisons if not c.passed]

    def to_json(self) -> dict[str, Any]:
        """The ``checks`` entry written to ``report.json`` (comparisons are in the report)."""
        return {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": self.mode,
            "verdict": self.verdict,
            "seconds": round(self.seconds, 3),
            "providers": self.providers,
            "tolerances": {
                "atol": self.tolerances.atol,
                "rtol": self.tolerances.rtol,
                "per_output": {
                    k: {"atol": v.atol, "rtol": v.rtol}
                    for k, v in self.tolerances.per_output.items()
                },
                "noise_floor": {k: v.noise for k, v in self.tolerances.noise.items()},
            },
            "comparisons": len(self.comparisons),
            "failed": [f"{c.pair} {c.output}" for c in self.failures],
        }


def _read_report(run_dir: Path) -> dict[str, Any]:
    path = run_dir / report.REPORT_JSON
    if not path.is_file():
        raise BadInputError(f"{run_dir} is not a tf2torch run directory (no {report.REPORT_JSON})")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise BadInputError(f"cannot read {path}: {_one_line(err)}") from None
    if not isinstance(data, dict) or "source" not in data:
        raise BadInputError(f"{path} is not a tf2torch report (no 'source')")
    if data.get("verdict") == "error":
        raise BadInputError(f"{run_dir} holds a failed conversion; convert it again")
    return data


def resolve_tolerances(
    rep: Mapping[str, Any],
    atol: float | None = None,
    rtol: float | None = None,
    output_tolerances: Mapping[str, tuple[float, float]] | None = None,
) -> compare.Tolerances:
    """The run's stored tolerances (noise floors included) with ``atol``/``rtol``/per-output
    overrides on top."""
    stored = compare.Tolerances.from_json(rep.get("tolerances") or {})
    per_output = dict(stored.per_output)
    per_output.update({k: compare.Tolerance(*v) for k, v in (output_tolerances or {}).items()})
    return replace(
        stored,
        atol=atol if atol is not None else stored.atol,
        rtol=rtol if rtol is not None else stored.rtol,
        per_output=per_output,
    )


_MEASURED_KEYS = (
    "noise_model",
    "noise_floor",
    "noise_unmeasured",
    "noise_own",
    "noise_own_unmeasured",
)


def _measured_before(rep: Mapping[str, Any]) -> bool:
    """Whether convert measured the noise floors, each framework's own included (reports
    from before they existed did not)."""
    tolerances = rep.get("tolerances") or {}
    return "noise_floor" in tolerances and "noise_own" in tolerances


def check_golden_outputs(golden: Golden, output_names: Sequence[str], path: Path) -> None:
    """Raise :class:`BadInputError` naming them when ``golden.npz``'s outputs are not exactly
    the graph's: a graph output without a TF value would drop out of every ``tf-*`` pair
    unnoticed, and a TF value without a graph output compares nothing."""
    absent = [n for n in output_names if n not in golden.outputs]
    extra = [n for n in golden.outputs if n not in output_names]
    if absent or extra:
        parts = [f"lacks the model output(s) {', '.join(absent)}"] if absent else []
        if extra:
            parts.append(f"holds output(s) {', '.join(extra)} the model does not have")
        raise BadInputError(
            f"{path} does not match model.onnx: it {' and '.join(parts)}; convert the model "
            "again to rewrite it"
        )


def _graph_io(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    return inputs, [o.name for o in model.graph.output]


def _run_ort(model: onnx.ModelProto, golden: Golden, path: Path) -> tuple[dict[str, Any], str]:
    from pipeline.core.ort_runner import OrtRunner

    try:
        runner = OrtRunner(model)
    except Exception as err:  # ORT raises its own exception types for every kind of bad model
        raise BadInputError(f"ONNX Runtime cannot load {path}: {_one_line(err)}") from None
    try:
        return runner.run(golden.inputs), runner.provider
    except Exception as err:
        raise BadInputError(
            f"ONNX Runtime cannot run {path} on the golden inputs: {_one_line(err)}"
        ) from None


def _release_torch_memory(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _run_torch(
    run_dir: Path, golden: Golden, input_names: Sequence[str], output_names: Sequence[str]
) -> tuple[Any, dict[str, Any], str]:
    from pipeline.core.torch_runner import place_module, run_torch
    from pipeline.to_torch.stage import load_run_module

    path = run_dir / PT2
    if not path.is_file():
        raise BadInputError(f"{run_dir} is incomplete: no {PT2}")
    # On a damaged file torch.export.load logs a traceback as a warning before raising: the
    # one-line error below says it all.
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.ERROR)
    try:
        module = load_run_module(Path(run_dir), generated=False)  # the program itself
    except Tf2TorchError:
        raise
    except Exception as err:  # torch.export.load: zip, pickle and schema errors alike
        raise BadInputError(f"cannot load {path}: {_one_line(err)}") from None
    finally:
        export_log.setLevel(level)
    device = place_module(module)
    try:
        outputs = run_torch(module, golden.inputs, input_names, output_names)
    except Exception as err:
        raise BadInputError(
            f"PyTorch cannot run {path} on the golden inputs: {_one_line(err)}"
        ) from None
    return module, outputs, str(device)


def _run_tf(
    source: str,
    golden: Golden,
    *,
    custom_objects: str | None,
    safe_mode: bool,
    input_specs: Sequence[TensorSpec],
    timeout: float | None,
    scale: Mapping[str, Any] | None,
    keep_log: Path,
) -> dict[str, np.ndarray]:
    """Today's TF outputs on the golden inputs, from the TF worker (its own process); the
    run's ``scaling`` record is replayed so TF is the same scaled model convert compared."""
    from pipeline.export.client import export_with_tf
    from pipeline.export.sources import parse_source

    try:
        parsed = parse_source(source)
    except BadInputError as err:
        raise BadInputError(
            f"{err} (the run's source, as given to convert; run the check from the directory "
            "convert ran in, pass --source, or use --golden-only)"
        ) from None
    with tempfile.TemporaryDirectory(prefix="tf2torch-check-") as tmp:
        work = Path(tmp)
        write_npz(work / "golden_inputs.npz", golden.inputs)
        exported = export_with_tf(
            parsed,
            work,
            opset=17,  # the export is thrown away; only the TF reference outputs are used
            batch=1,
            seed=0,
            input_ranges={},
            inputs_npz=work / "golden_inputs.npz",
            input_specs=input_specs,
            custom_objects=custom_objects,
            safe_mode=safe_mode,
            timeout=timeout,
            scale=scale,
            keep_log=keep_log,
        )
        with np.load(exported.tf_outputs_npz, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}


def _refreshed_report(rep: dict[str, Any], result: CheckResult) -> dict[str, Any]:
    new = dict(rep)
    new["comparisons"] = [c.to_json() for c in result.comparisons]
    new["providers"] = result.providers
    gradients = [SimpleNamespace(passed=bool(g.get("pass"))) for g in rep.get("gradients") or []]
    new["verdict"] = report.verdict_of(
        result.comparisons, gradients, rep.get("parameter_count") or None
    )
    new["checks"] = [*(rep.get("checks") or []), result.to_json()][-MAX_CHECKS_KEPT:]
    return new


def _write_report(run_dir: Path, data: Mapping[str, Any]) -> None:
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(run_dir / report.REPORT_JSON, text.encode())
    atomic_write_bytes(run_dir / report.REPORT_MD, report.render_markdown(data).encode())


def check_run(
    run_dir: str | Path,
    *,
    golden_only: bool = False,
    atol: float | None = None,
    rtol: float | None = None,
    output_tolerances: Mapping[str, tuple[float, float]] | None = None,
    source: str | None = None,
    custom_objects: str | None = None,
    safe_mode: bool = True,
    input_specs: Sequence[TensorSpec] = (),
    worker_timeout: float | None = None,
    update_report: bool = True,
) -> CheckResult:
    """Re-run the comparison for ``run_dir`` (see the module docstring for the two modes).

    ``atol``/``rtol``/``output_tolerances`` (output → ``(atol, rtol)``) override the run's
    stored tolerances.  Full mode only: ``source`` replaces the report's ``source`` (e.g. when
    the run was converted from another directory), and ``custom_objects``, ``safe_mode``,
    ``input_specs`` and ``worker_timeout`` are ``convert``'s options of the same names.

    Returns a :class:`CheckResult` (``bool(result)``: equivalent).  Raises
    :class:`BadInputError` when the run cannot be checked, and the TF worker's errors in full
    mode (its log kept at ``<run_dir>.failed/tf_worker.log``, named in the message).  Never calls ``sys.exit``; never imports TensorFlow in this process.
    """
    start = time.perf_counter()
    enter_stage("read run")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BadInputError(f"run directory {run_dir} not found")
    rep = _read_report(run_dir)
    golden = read_golden(run_dir / GOLDEN)
    onnx_path = run_dir / ONNX
    if not onnx_path.is_file():
        raise BadInputError(f"{run_dir} is incomplete: no {ONNX}")
    try:
        model = onnx.load(str(onnx_path))
    except Exception as err:  # protobuf DecodeError and friends
        raise BadInputError(f"cannot read {onnx_path}: {_one_line(err)}") from None
    input_names, output_names = _graph_io(model)
    missing = [n for n in input_names if n not in golden.inputs]
    if missing:
        raise BadInputError(f"{run_dir / GOLDEN} lacks the model input(s) {', '.join(missing)}")
    check_golden_outputs(golden, output_names, run_dir / GOLDEN)
    tolerances = resolve_tolerances(rep, atol, rtol, output_tolerances)
    enter_stage("onnxruntime")
    ort_outputs, provider = _run_ort(model, golden, onnx_path)
    enter_stage("torch")
    module, torch_outputs, device = _run_torch(run_dir, golden, input_names, output_names)
    if not _measured_before(rep):
        # A run converted before the noise floors were recorded: measure them now, on the
        # same graph and inputs convert would have used (and keep them in the report).
        from pipeline.verify.stage import with_noise_floors

        tolerances = with_noise_floors(
            tolerances,
            model,
            golden.inputs,
            input_names,
            output_names,
            {"ort": ort_outputs, "torch": torch_outputs},
            module,
        )
        measured = replace(tolerances, atol=None, rtol=None, per_output={}).to_json()
        rep = {
            **rep,
            "tolerances": {
                **(rep.get("tolerances") or {}),
                **{k: measured[k] for k in _MEASURED_KEYS},
            },
        }

    del module  # the TF worker may want the GPU memory
    _release_torch_memory(device)
    outputs: dict[str, Mapping[str, Any]] = {"ort": ort_outputs, "torch": torch_outputs}
    if golden_only:
        outputs["tf"] = golden.outputs
        comparisons = compare.compare_all(outputs, tolerances)
    else:
        outputs["golden"] = golden.outputs
        enter_stage("tensorflow")
        outputs["tf"] = _run_tf(
            source or str(rep["source"]),
            golden,
            custom_objects=custom_objects,
            safe_mode=safe_mode,
            input_specs=input_specs,
            timeout=worker_timeout,
            scale=rep.get("scaling"),
            keep_log=failure_log_path(run_dir),
        )
        comparisons = compare.compare_all(outputs, tolerances, FULL_PAIRS)

    enter_stage("report")
    result = CheckResult(
        run_dir=run_dir.absolute(),
        mode=GOLDEN_ONLY if golden_only else FULL,
        verdict=report.verdict_of(comparisons),
        comparisons=comparisons,
        providers={"onnxruntime": provider, "torch_device": device},
        tolerances=tolerances,
        seconds=time.perf_counter() - start,
    )
    result.report = _refreshed_report(rep, result)
    if update_report:
        try:
            _write_report(run_dir, result.report)
        except OSError as err:
            raise BadInputError(
                f"cannot update {run_dir / report.REPORT_JSON}: {_one_line(err)} "
                "(use --read-only for a run directory you may not write)"
            ) from None
    return result
