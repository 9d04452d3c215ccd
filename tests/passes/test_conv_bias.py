"""``conv_bias``: a per-channel Add after a bias-free Conv becomes the Conv's bias input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.core.ort_runner import OrtRunner
from pipeline.passes.conv_bias import ConvBiasPass


def _model(channels: int, transposed: bool, head: bool = True) -> onnx.ModelProto:
    """``Add(Conv(x, W), b)``, or in NHWC ``Add(Transpose(Conv(x, W)), b)``, then a Relu
    reading the sum (so the Add's output has a reader that must follow it); without
    ``head`` the sum is the graph's output ``y``."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(channels, 2, 1, 1)).astype(np.float32)
    bias_shape = (channels,) if transposed else (1, channels, 1, 1)
    bias = rng.normal(size=bias_shape).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv")]
    summand = "c"
    if transposed:
        nodes.append(helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1], name="nhwc"))
        summand = "t"
    nodes.append(helper.make_node("Add", [summand, "b"], ["s" if head else "y"], name="bias"))
    if head:
        nodes.append(helper.make_node("Relu", ["s"], ["y"], name="relu"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None, None, None])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


@pytest.mark.parametrize("head", [True, False], ids=["sum_read", "sum_is_output"])
@pytest.mark.parametrize("transposed", [False, True], ids=["add_after_conv", "add_after_nhwc"])
@pytest.mark.parametrize("channels", [1, 3])
def test_bias_moves_into_the_conv_and_outputs_stay(
    channels: int, transposed: bool, head: bool
) -> None:
    # One channel with the Add straight after the Conv is what tf2onnx made of a fuzzed
    # DepthwiseConv2D on a one-channel image (fuzz seeds 1001, 1020): the bias was lost.
    # A sum that is the model's output (a Conv1D ending the model, seed 1104) keeps its name.
    model = _model(channels, transposed, head)
    x = {"x": np.random.default_rng(1).normal(size=(2, 2, 3, 3)).astype(np.float32)}
    result = ConvBiasPass().apply(model)
    assert result.changes == 1
    ops = [n.op_type for n in result.model.graph.node]
    assert "Add" not in ops
    [conv] = [n for n in result.model.graph.node if n.op_type == "Conv"]
    assert len(conv.input) == 3  # the bias is the Conv's own
    before = OrtRunner(model).run(x)["y"]
    after = OrtRunner(result.model).run(x)["y"]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)
    assert [o.name for o in result.model.graph.output] == ["y"]
    onnx.checker.check_model(result.model, full_check=True)  # what the pass harness checks
