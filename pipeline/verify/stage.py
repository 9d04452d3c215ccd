"""The comparison stages as calls: outputs three ways, then the gradient check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np
import onnx
import torch

from pipeline.core import compare, onnx_io
from pipeline.core.memory import RELEASE_MIN_BYTES
from pipeline.core.memory import release as release_memory
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.torch_runner import place_module, run_torch
from pipeline.core.weight_store import WeightStore
from pipeline.to_torch.parameters import ParameterEntry
from pipeline.verify.gradients import (
    GradientComparison,
    TieRouted,
    compare_gradients,
    tie_routed_gradients,
    torch_gradients,
)
from pipeline.verify.noise import (
    NoiseFloors,
    measure_gradient_noise,
    measure_noise,
    module_own_floors,
    own_floors,
)
from pipeline.verify.ort_noise import OrtFloors, ort_own_floors


@dataclass
class Compared:
    """Every output of every pair, and what actually ran them."""

    comparisons: list[compare.OutputComparison]
    providers: dict[str, str]
    """``onnxruntime``: the execution provider that ran; ``torch_device``."""
    tolerances: compare.Tolerances
    """The tolerances the comparisons used, with the measured noise floors."""


def compare_outputs(
    model: onnx.ModelProto,
    module: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    tf_outputs: Mapping[str, np.ndarray],
    tolerances: compare.Tolerances,
    tf_outputs64: Mapping[str, np.ndarray] | None = None,
) -> Compared:
    """Run ``inputs`` through ONNX Runtime (``model``) and torch (``module``) and compare
    them with TensorFlow's outputs and each other: tf-ort, tf-torch, ort-torch.

    Unless the user set tolerances, each floating output is judged against the float32
    noise floors of the pair's two sides (:meth:`compare.Tolerances.pair_noise`): the
    graph's (:func:`pipeline.verify.noise.measure_noise`: onnx2torch's import of ``model``
    against its float64 copy) and, where measured above it, each framework's own: ONNX
    Runtime's (:func:`pipeline.verify.ort_noise.ort_own_floors`), ``module``'s
    (:func:`pipeline.verify.noise.module_own_floors`) and, with TensorFlow's float64 twin's
    outputs (``tf_outputs64``), TF's (:func:`pipeline.verify.noise.own_floors`).
    ``module`` is moved to the torch device here and stays there: the gradient check that
    follows runs on the module's device too.
    """
    ort_outputs, provider = _run_ort(model, inputs)
    device = place_module(module)
    outputs = {
        "tf": dict(tf_outputs),
        "ort": ort_outputs,
        "torch": run_torch(module, dict(inputs), list(input_names), list(output_names)),
    }
    tolerances = with_noise_floors(
        tolerances, model, inputs, input_names, output_names, outputs, module, tf_outputs64
    )
    return Compared(
        compare.compare_all(outputs, tolerances),
        {"onnxruntime": provider, "torch_device": str(device)},
        tolerances,
    )


def _run_ort(
    model: onnx.ModelProto, inputs: Mapping[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], str]:
    """ONNX Runtime's outputs on ``inputs`` and the provider that ran them; the session (a
    copy of every weight) is gone before the noise floors' float64 copies are made."""
    ort = OrtRunner(model)
    return ort.run(dict(inputs)), ort.provider


def with_noise_floors(
    tolerances: compare.Tolerances,
    model: onnx.ModelProto,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    outputs: Mapping[str, Mapping[str, np.ndarray]],
    module: torch.nn.Module,
    tf_outputs64: Mapping[str, np.ndarray] | None = None,
) -> compare.Tolerances:
    """``tolerances`` with the float32 noise floor of each of ``model``'s floating outputs
    on ``inputs``, and each framework's own where measured above it: ONNX Runtime's and
    ``module``'s (``outputs["ort"]``, ``outputs["torch"]``: their float32 runs on
    ``inputs``) and, given ``outputs["tf"]`` and its float64 twin's ``tf_outputs64``,
    TensorFlow's.  Measured (and reported) even where a user tolerance overrides it."""
    # A model kept in a store has its module's weights parked there meanwhile: the graph's
    # float64 copies (onnx2torch's, ONNX Runtime's) then never sit beside them.
    store = WeightStore.holding(model)
    with store.parked(module) if store is not None else nullcontext(module):
        floors = measure_noise(model, inputs, input_names, output_names)
        release_memory(onnx_io.weight_bytes(model))  # the two imports measure_noise made
        ort_floors = ort_own_floors(model, inputs, output_names, outputs["ort"], floors)
        release_memory(onnx_io.weight_bytes(model))  # ONNX Runtime's float64 session
    own = {
        "tf": own_floors(outputs.get("tf", {}), tf_outputs64 or {}, floors),
        "torch": module_own_floors(
            module, inputs, input_names, output_names, outputs["torch"], floors
        ),
    }
    return _with_floors(tolerances, floors, ort_floors, own)


def _with_floors(
    tolerances: compare.Tolerances,
    floors: NoiseFloors,
    ort_floors: OrtFloors,
    own: Mapping[str, Mapping[str, float]],
) -> compare.Tolerances:
    own_noise = {k: dict(v) for k, v in {**own, "ort": ort_floors.floors}.items() if v}
    return replace(
        tolerances,
        noise=floors.floors,
        noise_unmeasured=floors.unmeasured,
        own_noise=own_noise,
        own_unmeasured={"ort": ort_floors.unmeasured} if ort_floors.unmeasured else {},
    )


def check_gradients(
    module: torch.nn.Module,
    parameters: Sequence[ParameterEntry],
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    tf_gradients: Mapping[str, np.ndarray],
    loss_weights: Mapping[str, np.ndarray],
    tf_noise: Mapping[str, compare.Noise] | None = None,
    tf_outputs64: Mapping[str, np.ndarray] | None = None,
    tf_noise_unmeasured: str | None = None,
    output_noise: Mapping[str, compare.Noise] | None = None,
    store: WeightStore | None = None,
) -> tuple[list[GradientComparison], str | None]:
    """Differentiate the fixed loss ``sum(output * weight)`` in torch and compare each TF
    variable's gradient (carried through its transform) with its parameter's, within the
    fixed relative tolerance or, where larger, the gradient pair's float32 noise floor: the
    torch floor (a float64 copy of ``module`` differentiated alike) combined with TF's own
    (``tf_noise`` by variable path, from TF's float64 twin; :meth:`compare.Noise.tolerance`).

    TF's floor is used only where its twin is the same function: each of the twin's outputs
    (``tf_outputs64``) must match the float64 copy's within that output's own tolerance
    (``output_noise``, else the float32 default).  Returns the comparisons and why TF's floor
    was not used (None when it was), in which case torch's floor stands for both sides.
    With a ``store``, torch's float32 gradients wait there while the floors are measured."""
    args = (dict(inputs), list(input_names), list(output_names), dict(loss_weights))
    torch_grads: Mapping[str, np.ndarray] = torch_gradients(module, *args)
    if store is not None:
        torch_grads = store.spill(torch_grads, "torch_gradients.npz")
        release_memory(RELEASE_MIN_BYTES)  # the gradients just written, before the floors
    outputs64: dict[str, np.ndarray] = {}
    noise = measure_gradient_noise(module, *args, torch_grads, outputs64)
    unmeasured = tf_noise_unmeasured
    if unmeasured is None and not tf_noise:
        unmeasured = "TF measured no gradient floor"
    if unmeasured is None:
        unmeasured = _twin_mismatch(tf_outputs64 or {}, outputs64, output_noise or {})
    tf_floors = dict(tf_noise or {}) if unmeasured is None else {}

    def judge(routed: TieRouted | None = None) -> list[GradientComparison]:
        return compare_gradients(
            list(parameters),
            tf_gradients,
            torch_grads,
            compare.DTYPE_DEFAULTS["float32"],
            noise,
            tf_floors,
            routed,
        )

    checks = judge()
    if not all(c.passed for c in checks):
        # TF's MaxPool3D gradient routes near-ties its own way: judge again with that routing
        # (pipeline.verify.ties) where the module's pools have such ties on these inputs.
        routed = tie_routed_gradients(module, *args)
        if routed is not None:
            checks = judge(routed)
    return checks, unmeasured


def _twin_mismatch(
    tf64: Mapping[str, np.ndarray],
    torch64: Mapping[str, np.ndarray],
    output_noise: Mapping[str, compare.Noise],
) -> str | None:
    """Why TF's float64 twin is not taken for the same function as torch's float64 copy
    (an output missing or further apart than the output's tolerance), or None."""
    if not tf64 or not torch64:
        return "no float64 outputs to hold TF's twin against torch's float64 copy"
    for name, ours in torch64.items():
        if name not in tf64:
            if name in output_noise:
                return f"TF's float64 twin has no output {name}"
            continue
        floor = output_noise.get(name)
        tol = floor.tolerance() if floor is not None else compare.DTYPE_DEFAULTS["float32"]
        pair = compare.compare_pair(
            "tf64-torch64",
            name,
            np.asarray(tf64[name], np.float64),
            np.asarray(ours, np.float64),
            tol,
        )
        if not pair:
            apart = "?" if pair.max_abs is None else f"{pair.max_abs:.3g}"
            return (
                f"TF's float64 twin differs from torch's float64 copy on {name} by {apart} "
                f"(tolerance {tol.atol:.3g}{', ' + pair.note if pair.note else ''}): "
                "not the same function"
            )
    return None
