"""The comparison stages as calls: outputs three ways, then the gradient check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import torch

from pipeline.core import compare
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.torch_runner import place_module, run_torch
from pipeline.to_torch.parameters import ParameterEntry
from pipeline.verify.gradients import GradientComparison, compare_gradients, torch_gradients


@dataclass
class Compared:
    """Every output of every pair, and what actually ran them."""

    comparisons: list[compare.OutputComparison]
    providers: dict[str, str]
    """``onnxruntime``: the execution provider that ran; ``torch_device``."""


def compare_outputs(
    model: onnx.ModelProto,
    module: torch.nn.Module,
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    tf_outputs: Mapping[str, np.ndarray],
    tolerances: compare.Tolerances,
) -> Compared:
    """Run ``inputs`` through ONNX Runtime (``model``) and torch (``module``) and compare
    them with TensorFlow's outputs and each other: tf-ort, tf-torch, ort-torch.

    ``module`` is moved to the torch device here and stays there: the gradient check that
    follows runs on the module's device too."""
    ort = OrtRunner(model)
    device = place_module(module)
    outputs = {
        "tf": dict(tf_outputs),
        "ort": ort.run(dict(inputs)),
        "torch": run_torch(module, dict(inputs), list(input_names), list(output_names)),
    }
    return Compared(
        compare.compare_all(outputs, tolerances),
        {"onnxruntime": ort.provider, "torch_device": str(device)},
    )


def check_gradients(
    module: torch.nn.Module,
    parameters: Sequence[ParameterEntry],
    inputs: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    tf_gradients: Mapping[str, np.ndarray],
    loss_weights: Mapping[str, np.ndarray],
) -> list[GradientComparison]:
    """Differentiate the fixed loss ``sum(output * weight)`` in torch and compare each TF
    variable's gradient (carried through its transform) with its parameter's."""
    torch_grads = torch_gradients(
        module, dict(inputs), list(input_names), list(output_names), dict(loss_weights)
    )
    return compare_gradients(
        list(parameters), dict(tf_gradients), torch_grads, compare.DTYPE_DEFAULTS["float32"]
    )
