"""The comparison stages as calls: outputs three ways, then the gradient check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx
import torch

from pipeline.core import compare
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.torch_runner import place_module, run_torch
from pipeline.to_torch.parameters import ParameterEntry
from pipeline.verify.gradients import GradientComparison, compare_gradients, torch_gradients
from pipeline.verify.noise import NoiseFloors, measure_gradient_noise, measure_noise


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

    Unless the user set tolerances, each floating output is judged against the model's
    float32 noise floor (:func:`pipeline.verify.noise.measure_noise` on ``model``).  With
    TensorFlow's float64 twin's outputs (``tf_outputs64``), the tf-* pairs use TF's own
    floor for TF's side (:func:`tf_output_floors`); ort-torch keeps torch's for both.
    ``module`` is moved to the torch device here and stays there: the gradient check that
    follows runs on the module's device too.
    """
    floors = measure_noise(model, inputs, input_names, output_names)
    tolerances = _with_floors(tolerances, floors)
    ort = OrtRunner(model)
    device = place_module(module)
    outputs = {
        "tf": dict(tf_outputs),
        "ort": ort.run(dict(inputs)),
        "torch": run_torch(module, dict(inputs), list(input_names), list(output_names)),
    }
    tf_floors = tf_output_floors(tf_outputs, tf_outputs64 or {}, floors)
    if tf_floors:
        with_tf = replace(tolerances, noise={**tolerances.noise, **tf_floors})
        comparisons = compare.compare_all(outputs, with_tf, [("tf", "ort"), ("tf", "torch")])
        comparisons += compare.compare_all(outputs, tolerances, [("ort", "torch")])
    else:
        comparisons = compare.compare_all(outputs, tolerances)
    return Compared(
        comparisons,
        {"onnxruntime": ort.provider, "torch_device": str(device)},
        tolerances,
    )


def tf_output_floors(
    tf_outputs: Mapping[str, np.ndarray],
    tf_outputs64: Mapping[str, np.ndarray],
    floors: NoiseFloors,
) -> dict[str, compare.Noise]:
    """Per floating output where TF rounds more than torch, torch's floor with TF's own beside
    it (``noise_other`` = ``max |tf_float32 - tf_float64|``; never a narrowing, as ONNX
    Runtime's side of tf-ort is taken from torch's floor), where TF's float64 twin is
    trusted: its outputs agree
    with torch's float64 run within the output's torch-floor tolerance (a twin that computes
    something else would report a huge "noise")."""
    found: dict[str, compare.Noise] = {}
    for name, floor in floors.floors.items():
        low, high = tf_outputs.get(name), tf_outputs64.get(name)
        exact = floors.float64_outputs.get(name)
        if low is None or high is None or exact is None:
            continue
        low, high, exact = (np.asarray(a, np.float64) for a in (low, high, exact))
        if low.shape != high.shape or high.shape != exact.shape:
            continue
        finite = np.isfinite(low) & np.isfinite(high) & np.isfinite(exact)
        if not finite.any():
            continue
        if float(np.max(np.abs(high - exact)[finite])) > floor.tolerance().atol:
            continue  # the twin is not the same function: TF's floor is not trusted
        tf_noise = float(np.max(np.abs(low - high)[finite]))
        if tf_noise > floor.noise:  # only ever a widening: ONNX Runtime's floor is torch's
            found[name] = replace(floor, noise_other=tf_noise)
    return found


def with_noise_floors(
    tolerances: compare.Tolerances,
    model: onnx.ModelProto,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> compare.Tolerances:
    """``tolerances`` with the float32 noise floor of each of ``model``'s floating outputs
    on ``inputs``.  Measured (and reported) even where a user tolerance overrides it."""
    return _with_floors(tolerances, measure_noise(model, inputs, input_names, output_names))


def _with_floors(tolerances: compare.Tolerances, floors: NoiseFloors) -> compare.Tolerances:
    return replace(tolerances, noise=floors.floors, noise_unmeasured=floors.unmeasured)


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
) -> tuple[list[GradientComparison], str | None]:
    """Differentiate the fixed loss ``sum(output * weight)`` in torch and compare each TF
    variable's gradient (carried through its transform) with its parameter's, within the
    fixed relative tolerance or, where larger, the gradient pair's float32 noise floor: the
    torch floor (a float64 copy of ``module`` differentiated alike) combined with TF's own
    (``tf_noise`` by variable path, from TF's float64 twin; :meth:`compare.Noise.tolerance`).

    TF's floor is used only where its twin is the same function: each of the twin's outputs
    (``tf_outputs64``) must match the float64 copy's within that output's own tolerance
    (``output_noise``, else the float32 default).  Returns the comparisons and why TF's floor
    was not used (None when it was), in which case torch's floor stands for both sides."""
    args = (dict(inputs), list(input_names), list(output_names), dict(loss_weights))
    torch_grads = torch_gradients(module, *args)
    outputs64: dict[str, np.ndarray] = {}
    noise = measure_gradient_noise(module, *args, torch_grads, outputs64)
    unmeasured = tf_noise_unmeasured
    if unmeasured is None and not tf_noise:
        unmeasured = "TF measured no gradient floor"
    if unmeasured is None:
        unmeasured = _twin_mismatch(tf_outputs64 or {}, outputs64, output_noise or {})
    tf_floors = dict(tf_noise or {}) if unmeasured is None else {}
    checks = compare_gradients(
        list(parameters),
        dict(tf_gradients),
        torch_grads,
        compare.DTYPE_DEFAULTS["float32"],
        noise,
        tf_floors,
    )
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
