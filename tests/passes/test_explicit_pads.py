"""``explicit_pads``: auto_pad SAME_* becomes explicit pads ONNX Runtime and onnx2torch agree on."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pipeline.core.ort_runner import OrtRunner
from pipeline.passes import run_passes
from pipeline.passes.explicit_pads import ExplicitPadsPass, same_pads
from pipeline.to_torch.importer import import_onnx


def _model(op: str, mode: str, strides: list[int], spatial: list[int | str]) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    attrs: dict[str, object] = {"auto_pad": mode, "strides": strides}
    inits = []
    inputs = ["x"]
    if op == "Conv":
        inits.append(numpy_helper.from_array(rng.normal(size=(3, 2, 3, 2)).astype(np.float32), "w"))
        inputs.append("w")
    else:
        attrs["kernel_shape"] = [3, 2]
    node = helper.make_node(op, inputs, ["y"], name="n", **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, *spatial])],
        [
            helper.make_tensor_value_info(
                "y", TensorProto.FLOAT, ["batch", 3 if op == "Conv" else 2, None, None]
            )
        ],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_same_pads_follow_onnx_definition() -> None:
    # stride 1: (k-1)*d split, the odd one at the end for SAME_UPPER
    assert same_pads("SAME_UPPER", [3, 2], [1, 1], [1, 1], [None, None]) == [1, 0, 1, 1]
    assert same_pads("SAME_LOWER", [3, 2], [1, 1], [1, 1], [None, None]) == [1, 1, 1, 0]
    # stride 2 over 7: out 4, total = 3*2 + 3 - 7 = 2
    assert same_pads("SAME_UPPER", [3], [2], [1], [7]) == [1, 1]
    assert same_pads("SAME_UPPER", [3], [2], [1], [None]) is None


@pytest.mark.parametrize(
    ("op", "mode", "strides"),
    [
        ("Conv", "SAME_UPPER", [1, 1]),
        ("Conv", "SAME_UPPER", [2, 2]),
        ("Conv", "SAME_LOWER", [2, 1]),
        ("MaxPool", "SAME_UPPER", [1, 1]),
        ("MaxPool", "SAME_LOWER", [2, 1]),
        # onnx2torch's AvgPool takes symmetric pads only: here they are (7x6, k 3x2, s 2).
        ("AveragePool", "SAME_UPPER", [2, 2]),
    ],
)
def test_rewritten_node_matches_ort_and_imports(op: str, mode: str, strides: list[int]) -> None:
    model = _model(op, mode, strides, [7, 6])
    x = np.random.default_rng(1).normal(size=(2, 2, 7, 6)).astype(np.float32)
    fixed, [record] = run_passes(model, [ExplicitPadsPass()], {"x": x})
    assert record.changes == 1 and record.check == "numeric"  # ORT before == after
    [node] = fixed.graph.node
    assert {a.name for a in node.attribute} >= {"pads"} and "auto_pad" not in {
        a.name for a in node.attribute
    }
    expected = OrtRunner(model).run({"x": x})["y"]
    with torch.no_grad():
        got = import_onnx(fixed)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_unknown_size_with_a_stride_is_left_alone() -> None:
    model = _model("Conv", "SAME_UPPER", [2, 2], ["h", "w"])
    result = ExplicitPadsPass().apply(model)
    assert result.changes == 0 and result.model is model


def test_size_known_only_through_a_computed_reshape_is_resolved() -> None:
    """A Dense before a strided ``padding="same"`` pooling (Keras ``AveragePooling3D``) reaches
    tf2onnx as a Reshape to a shape computed from ``Shape(x)``: plain shape inference loses the
    spatial sizes, data propagation keeps them, and the pads are made explicit."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Reshape", ["x", "shape"], ["same_x"]),
        helper.make_node(
            "AveragePool",
            ["same_x"],
            ["y"],
            name="pool",
            auto_pad="SAME_UPPER",
            kernel_shape=[3, 3, 3],
            strides=[2, 2, 2],
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, None, None, None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    x = np.random.default_rng(2).normal(size=(2, 2, 4, 6, 6)).astype(np.float32)
    fixed, [record] = run_passes(model, [ExplicitPadsPass()], {"x": x})
    assert record.changes == 1 and record.check == "numeric"
    pool = next(n for n in fixed.graph.node if n.name == "pool")
    pads = next(a for a in pool.attribute if a.name == "pads")
    # 4 -> out 2: total 1 (0 before, 1 after); 6 -> out 3: total 1.
    assert list(pads.ints) == [0, 0, 0, 1, 1, 1]
