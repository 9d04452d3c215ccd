"""The fixup stage: an ordered list of graph passes, each checked as it runs.

A pass is any object with ``name``, ``description`` and ``apply(model) -> PassResult``
(:class:`~pipeline.passes.base.FixupPass`).  Built-in passes live in this package; custom-op
patches are modules of the :mod:`patches` package (and of any ``--patches DIR``) that define
``PATCH``, an object of that shape.

After every pass that changed something, the graph must pass the ONNX checker (full check,
strict shape inference), and ONNX Runtime's outputs on the run's inputs must still match
the outputs of the graph before the pass (per-dtype tolerances of
:data:`pipeline.core.compare.DTYPE_DEFAULTS`).  A pass that breaks either stops the run with a
:class:`~pipeline.core.errors.PassError` naming it.

Where the run has TensorFlow's outputs, a floating output's tolerance also knows float32: a
pass that only reorders arithmetic (BatchNorm's primitive ops fused into one) moves a deep
network's outputs about as far as float32 already separates TensorFlow from the raw graph,
so the check allows ``NOISE_FACTOR`` times that distance (:func:`pass_tolerances`), never
less than the default.  The final three-way comparison still judges TensorFlow against the
fixed graph with the model's measured noise floor, so nothing a pass does escapes a check.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from pipeline.core import compare, onnx_io
from pipeline.core.errors import BadInputError, PassError
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.weight_store import WeightStore
from pipeline.passes.base import FixupPass, PassRecord, PassResult
from pipeline.passes.batch_norm import BatchNormPass
from pipeline.passes.bucketize import BucketizePass
from pipeline.passes.conv_bias import ConvBiasPass
from pipeline.passes.erfc import ErfcPass
from pipeline.passes.explicit_pads import ExplicitPadsPass
from pipeline.passes.fold_batch_norm import FoldBatchNormPass
from pipeline.passes.keras_gru_loop import KerasGruLoopPass
from pipeline.passes.layer_norm import LayerNormPass
from pipeline.passes.shape_only import ShapeOnlyPass
from pipeline.passes.signbit import SignbitPass
from pipeline.passes.transposes import TransposePass
from pipeline.passes.variable_layout import VariableLayoutPass

__all__ = [
    "FixupPass",
    "PassRecord",
    "PassResult",
    "builtin_passes",
    "builtin_patches",
    "check_exclusive_claims",
    "check_unique",
    "default_passes",
    "inference_passes",
    "load_patch_dir",
    "run_passes",
]


def _check_pass_object(obj: object, origin: str) -> FixupPass:
    if not isinstance(obj, FixupPass) or not isinstance(getattr(obj, "name", None), str):
        raise BadInputError(
            f"{origin}: PATCH must have a str 'name', a 'description' and an "
            "'apply(model) -> PassResult' method"
        )
    return obj


def builtin_patches() -> list[FixupPass]:
    """The ``PATCH`` of every module in the :mod:`patches` package, in module-name order."""
    import patches

    found = []
    for info in sorted(pkgutil.iter_modules(patches.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"patches.{info.name}")
        if hasattr(module, "PATCH"):
            found.append(_check_pass_object(module.PATCH, f"patches/{info.name}.py"))
    return found


def builtin_passes() -> list[FixupPass]:
    """The generic built-in passes (not about one custom op), in the order they run."""
    return [
        ErfcPass(),
        SignbitPass(),
        BucketizePass(),
        VariableLayoutPass(),
        BatchNormPass(),
        LayerNormPass(),
        TransposePass(),
        ConvBiasPass(),
        ExplicitPadsPass(),
        ShapeOnlyPass(),
        KerasGruLoopPass(),
    ]


def inference_passes() -> list[FixupPass]:
    """The passes ``--fold-for-inference`` adds after the built-in ones."""
    return [FoldBatchNormPass()]


def default_passes() -> list[FixupPass]:
    """Built-in passes followed by the built-in custom-op patches."""
    return [*builtin_passes(), *builtin_patches()]


def load_patch_dir(directory: Path) -> list[FixupPass]:
    """Import every ``*.py`` in ``directory`` (names starting with ``_`` excepted) and
    return their ``PATCH`` objects in file-name order.

    Raises :class:`BadInputError` naming the file when one fails to import, lacks ``PATCH``
    or defines one of the wrong shape.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise BadInputError(f"patch directory not found: {directory}")
    found = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module_name = f"tf2torch_user_patch_{abs(hash(path.resolve()))}_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise BadInputError(f"patch file {path} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # any error in user code: name the file, keep one line
            del sys.modules[module_name]
            raise BadInputError(
                f"patch file {path} failed to import: {type(err).__name__}: {err}"
            ) from err
        if not hasattr(module, "PATCH"):
            raise BadInputError(f"patch file {path} defines no PATCH object")
        found.append(_check_pass_object(module.PATCH, f"patch file {path}"))
    return found


def check_unique(passes: Sequence[FixupPass]) -> None:
    """Raise :class:`BadInputError` naming both when two passes share a name."""
    seen: dict[str, FixupPass] = {}
    for p in passes:
        if p.name in seen:
            raise BadInputError(
                f"two passes are named {p.name!r} ({type(seen[p.name]).__module__} and "
                f"{type(p).__module__}); rename one"
            )
        seen[p.name] = p


def _validity_error(model: onnx.ModelProto) -> str | None:
    """The checker's complaint about ``model`` (full check, strict shape inference), or None.
    A large model is checked from a file with external data: serialized, it would be one
    more copy of its weights (and past 2 GB protobuf cannot serialize it)."""
    try:
        if not onnx_io.reads_from_file(model):
            onnx.checker.check_model(model, full_check=True)
        else:
            with onnx_io.readable_file(model) as path:
                onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        return str(err).strip().splitlines()[0]
    return None


def _unknown_ops(model: onnx.ModelProto) -> list[str]:
    """Default-domain op types of ``model`` that ONNX itself does not define."""
    local = {(f.domain, f.name) for f in model.functions}
    unknown = set()
    for node in model.graph.node:
        if (node.domain, node.op_type) in local or node.domain not in ("", "ai.onnx"):
            continue
        if not onnx.defs.has(node.op_type):
            unknown.add(node.op_type)
    return sorted(unknown)


def _ort_outputs(
    model: onnx.ModelProto, inputs: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray] | None, str]:
    """ONNX Runtime's outputs, or None and the reason where the graph is not runnable yet."""
    problem = _validity_error(model)
    if problem is not None:
        return None, f"not valid ONNX ({problem})"
    try:
        return OrtRunner(model).run(inputs), ""
    except Exception as err:  # valid ONNX that ONNX Runtime lacks a kernel for: no numbers yet
        lines = str(err).strip().splitlines()
        return None, f"not runnable by ONNX Runtime ({lines[0] if lines else type(err).__name__})"


def _max_change(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray]) -> float:
    worst = 0.0
    for name, ref in before.items():
        other = after.get(name)
        if other is None or other.shape != ref.shape:
            return float("inf")
        if ref.size and np.issubdtype(ref.dtype, np.number):
            diff = np.abs(ref.astype(np.float64) - other.astype(np.float64))
            worst = max(worst, float(np.nanmax(diff)) if not np.isnan(diff).all() else 0.0)
    return worst


def _run_one(
    p: FixupPass,
    model: onnx.ModelProto,
    before: dict[str, np.ndarray] | None,
    inputs: Mapping[str, np.ndarray],
    unrunnable: str = "",
    tolerances: compare.Tolerances | None = None,
    store: WeightStore | None = None,
) -> tuple[onnx.ModelProto, dict[str, np.ndarray] | None, PassRecord]:
    """Apply ``p`` and check it; ``before`` is ONNX Runtime's outputs on ``model``, or None
    and ``unrunnable`` says why there are none (recorded as the pass's ``note``).  With a
    ``store``, the weights the pass made (a transposed kernel, a folded bias) go into it."""
    start = time.perf_counter()
    try:
        result = p.apply(model)
    except Exception as err:  # a pass is code we (or the user) wrote: name it
        raise PassError(f"pass {p.name!r} raised {type(err).__name__}: {err}") from err
    if not isinstance(result, PassResult):
        raise PassError(f"pass {p.name!r} returned {type(result).__name__}, not a PassResult")
    record = PassRecord(
        name=p.name,
        status="unchanged" if result.changes == 0 else "applied",
        seconds=0.0,
        nodes_before=len(model.graph.node),
        nodes_after=len(result.model.graph.node),
        changes=result.changes,
        check="none",
    )
    if result.changes == 0:
        record.seconds = time.perf_counter() - start
        return model, before, record

    after_model = result.model
    if store is not None:
        store.offload(after_model.graph.initializer)
    problem = _validity_error(after_model)
    if problem is not None:
        if before is not None:
            raise PassError(f"pass {p.name!r} made the graph invalid: {problem}")
        record.seconds = time.perf_counter() - start
        record.note = f"the graph is not valid ONNX before or after it: {problem}"
        return after_model, None, record  # still not valid ONNX: a later pass may fix it

    try:
        after = OrtRunner(after_model).run(inputs)
    except Exception as err:  # ORT's own exceptions share no base class worth naming
        raise PassError(
            f"pass {p.name!r} left a graph ONNX Runtime cannot run: {str(err).splitlines()[0]}"
        ) from err
    if before is None:
        record.check = "validity"
        record.note = f"no ONNX Runtime outputs to compare before it: the raw graph is {unrunnable}"
    else:
        record.check = "numeric"
        for c in compare.compare_all(
            {"before": before, "after": after},
            tolerances or compare.Tolerances(),
            [("before", "after")],
        ):
            if not c:
                raise PassError(f"pass {p.name!r} changed ONNX Runtime's outputs: {c}")
        record.max_abs_change = _max_change(before, after)
    record.seconds = time.perf_counter() - start
    return after_model, after, record


def _removed_nodes(p: FixupPass, model: onnx.ModelProto) -> set[str]:
    try:
        result = p.apply(model)
    except Exception as err:  # reported with the pass's name, as when it runs for real
        raise PassError(f"pass {p.name!r} raised {type(err).__name__}: {err}") from err
    if result.changes == 0:
        return set()
    kept = {n.name for n in result.model.graph.node}
    return {n.name for n in model.graph.node if n.name and n.name not in kept}


def check_exclusive_claims(model: onnx.ModelProto, patches: Sequence[FixupPass]) -> None:
    """Each patch applied alone to ``model``: two that would rewrite the same nodes raise
    :class:`BadInputError` naming both (which one wins would depend on their order)."""
    claims = [(p, _removed_nodes(p, model)) for p in patches]
    for i, (first, first_nodes) in enumerate(claims):
        for second, second_nodes in claims[i + 1 :]:
            shared = sorted(first_nodes & second_nodes)
            if shared:
                shown = ", ".join(shared[:3]) + (", ..." if len(shared) > 3 else "")
                raise BadInputError(
                    f"patches {first.name!r} and {second.name!r} both claim {len(shared)} "
                    f"node(s) ({shown}); remove or narrow one of them"
                )


def pass_tolerances(
    reference: Mapping[str, np.ndarray] | None, raw: Mapping[str, np.ndarray] | None
) -> compare.Tolerances:
    """The tolerances a pass is checked with: the dtype defaults, widened for each floating
    output to ``NOISE_FACTOR · max |reference - raw|`` (TensorFlow's outputs against ONNX
    Runtime's on the raw graph: float32's own disagreement on this model) where that is
    larger."""
    if not reference or not raw:
        return compare.Tolerances()
    per_output: dict[str, compare.Tolerance] = {}
    for name, got in raw.items():
        want = reference.get(name)
        default = compare.DTYPE_DEFAULTS.get(np.asarray(got).dtype.name)
        if want is None or default is None or np.shape(want) != np.shape(got):
            continue
        if not np.issubdtype(np.asarray(got).dtype, np.floating):
            continue
        with np.errstate(invalid="ignore"):
            distance = float(np.nanmax(np.abs(np.asarray(want, np.float64) - got), initial=0.0))
        widened = compare.NOISE_FACTOR * distance
        if widened > default.atol:
            per_output[name] = compare.Tolerance(widened, default.rtol)
    return compare.Tolerances(per_output=per_output)


def run_passes(
    model: onnx.ModelProto,
    passes: Iterable[FixupPass],
    inputs: Mapping[str, np.ndarray],
    patches: Sequence[FixupPass] = (),
    reference: Mapping[str, np.ndarray] | None = None,
    store: WeightStore | None = None,
) -> tuple[onnx.ModelProto, list[PassRecord]]:
    """Apply ``passes`` then ``patches`` in order to ``model``, checking each one; return the
    graph and one record per pass.

    Before the patches run, each is applied alone to the graph they start from: two patches
    claiming the same nodes is a :class:`BadInputError` naming both.  The final graph may
    still contain ops ONNX does not define (the import stage lists them all as
    unsupported); any other checker error left at the end raises :class:`PassError`.
    ``reference`` (TensorFlow's outputs on ``inputs``) widens the numeric check to float32's
    own disagreement on this model (:func:`pass_tolerances`).  With a ``store`` (``model``'s
    weights already in it), every graph a pass returns has its new weights moved there too,
    so no pass's output holds the weights in memory.
    """
    passes = list(passes)
    check_unique([*passes, *patches])
    before, unrunnable = _ort_outputs(model, inputs)
    tolerances = pass_tolerances(reference, before)
    records = []
    for p in passes:
        model, before, record = _run_one(p, model, before, inputs, unrunnable, tolerances, store)
        records.append(record)
    if len(patches) > 1:
        check_exclusive_claims(model, patches)
    for p in patches:
        model, before, record = _run_one(p, model, before, inputs, unrunnable, tolerances, store)
        records.append(record)
    problem = _validity_error(model)
    if problem is not None and not _unknown_ops(model):
        raise PassError(f"the graph after all fixup passes is not valid ONNX: {problem}")
    return model, records
