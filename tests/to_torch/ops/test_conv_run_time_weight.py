"""ONNX ``Conv`` whose weight (and bias) are computed at run time (pipeline/to_torch/ops/
weighted.py, :class:`RunTimeWeightConv`): every Conv attribute against ONNX Runtime, through
the importer and the generated ``F.conv*d`` code; the gradient reaches the weight input; the
generated code exports with a dynamic batch.  Keras ``ConvLSTM*D`` produces this form inside
its loop body (tests/to_torch/test_keras_loops.py runs it end to end)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from pipeline.core.errors import Tf2TorchError
from pipeline.to_torch.codegen import load_generated
from pipeline.to_torch.importer import import_onnx
from pipeline.to_torch.ops.weighted import RunTimeWeightConv

_RNG = np.random.default_rng(0)


def _normal(*shape: int) -> np.ndarray:
    return _RNG.standard_normal(shape).astype(np.float32)


# (attributes, x shape, w shape): w in ONNX layout (out, in / group, *kernel).
_CASES: dict[str, tuple[dict[str, Any], tuple[int, ...], tuple[int, ...]]] = {
    "plain_2d": ({}, (2, 3, 6, 5), (4, 3, 3, 3)),
    "symmetric_pads": ({"pads": [1, 2, 1, 2]}, (2, 3, 6, 5), (4, 3, 3, 3)),
    "asymmetric_pads": ({"pads": [0, 1, 2, 0]}, (2, 3, 6, 5), (4, 3, 3, 2)),
    "strides_dilations": (
        {"strides": [2, 1], "dilations": [1, 2], "pads": [1, 1, 1, 1]},
        (2, 3, 7, 8),
        (4, 3, 3, 3),
    ),
    "group": ({"group": 3, "kernel_shape": [3, 3]}, (2, 6, 5, 5), (9, 2, 3, 3)),
    "depthwise": ({"group": 4, "pads": [1, 1, 1, 1]}, (1, 4, 5, 5), (4, 1, 3, 3)),
    "same_upper_stride2": (
        {"auto_pad": "SAME_UPPER", "strides": [2, 2], "kernel_shape": [3, 4]},
        (2, 2, 7, 6),
        (3, 2, 3, 4),
    ),
    "same_lower": ({"auto_pad": "SAME_LOWER"}, (2, 2, 7, 6), (3, 2, 2, 4)),
    "valid": ({"auto_pad": "VALID", "strides": [1, 2]}, (2, 2, 7, 6), (3, 2, 3, 3)),
    "conv1d_asymmetric": ({"pads": [2, 0], "dilations": [2]}, (2, 3, 9), (5, 3, 3)),
    "conv3d": (
        {"pads": [1, 0, 1, 1, 1, 0], "strides": [1, 2, 1]},
        (1, 2, 4, 5, 4),
        (3, 2, 3, 3, 3),
    ),
}

# SAME_LOWER over an even kernel puts the odd pad row at the start.
_ASYMMETRIC = ("asymmetric_pads", "same_lower", "conv1d_asymmetric", "conv3d")


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("case", list(_CASES))
def test_conv_with_run_time_weight(
    roundtrip: Callable[..., str], case: str, with_bias: bool
) -> None:
    attributes, x_shape, w_shape = _CASES[case]
    x, w = _normal(*x_shape), _normal(*w_shape)
    inputs = [x, w, _normal(w_shape[0])] if with_bias else [x, w]
    names = ["x", "w", "b"][: len(inputs)]
    source = roundtrip(helper.make_node("Conv", names, ["y"], **attributes), inputs)
    rank = len(w_shape) - 2
    assert f"F.conv{rank}d(" in source
    assert ("F.pad(" in source) == (case in _ASYMMETRIC), source


def test_conv_bias_initializer_with_run_time_weight(roundtrip: Callable[..., str]) -> None:
    """The weight from the graph, the bias a constant: still one F.conv2d."""
    x, w, b = _normal(2, 3, 5, 5), _normal(4, 3, 3, 3), _normal(4)
    source = roundtrip(helper.make_node("Conv", ["x", "w", "b"], ["y"]), [x, w], {"b": b})
    assert "F.conv2d(" in source


def test_conv_gradient_reaches_run_time_weight(
    imported: Callable[..., torch.fx.GraphModule],
) -> None:
    """The weight is an input of the module, so autograd reaches it: the same gradient as
    torch's own convolution of the same tensors."""
    x, w = _normal(2, 3, 6, 5), _normal(4, 3, 3, 2)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 1, 2, 0], strides=[2, 1])
    module = imported(node, [x, w])
    assert any(isinstance(m, RunTimeWeightConv) for m in module.modules())
    weight = torch.from_numpy(w).requires_grad_()
    module(torch.from_numpy(x), weight).square().sum().backward()
    reference = torch.from_numpy(w).requires_grad_()
    padded = torch.nn.functional.pad(torch.from_numpy(x), (1, 0, 0, 2))
    torch.nn.functional.conv2d(padded, reference, stride=(2, 1)).square().sum().backward()
    assert weight.grad is not None and reference.grad is not None
    torch.testing.assert_close(weight.grad, reference.grad)


def test_conv_run_time_weight_code_exports(roundtrip: Callable[..., str], tmp_path: Path) -> None:
    x, w = _normal(2, 3, 6, 5), _normal(4, 3, 3, 3)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 0, 1, 1], strides=[2, 2])
    roundtrip(node, [x, w])
    generated = load_generated(tmp_path / "torch_model")
    batch = torch.export.Dim.AUTO
    program = torch.export.export(
        generated,
        (torch.from_numpy(x), torch.from_numpy(w)),
        dynamic_shapes=({0: batch}, None),
    )
    other = torch.from_numpy(_normal(3, 3, 6, 5))
    torch.testing.assert_close(
        program.module()(other, torch.from_numpy(w)), generated(other, torch.from_numpy(w))
    )


def test_conv_same_with_unknown_kernel_is_one_clear_error() -> None:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER")],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 1, "kh", "kw"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(Tf2TorchError, match="run-time weight of unknown kernel size"):
        import_onnx(onnx.shape_inference.infer_shapes(model))
