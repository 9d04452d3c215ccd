"""``bucketize``: TF's Bucketize (Keras ``Discretization``), which tf2onnx leaves unconverted,
becomes ONNX ops that ONNX Runtime and the importer run, with TF's buckets and dtype."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from pipeline.core.ort_runner import OrtRunner
from pipeline.passes import run_passes
from pipeline.passes.bucketize import BucketizePass
from pipeline.to_torch.importer import import_onnx

BOUNDARIES = [-0.5, 0.0, 0.5]


def _model() -> onnx.ModelProto:
    node = helper.make_node("Bucketize", ["x"], ["y"], name="disc/Bucketize", boundaries=BOUNDARIES)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["batch", 5])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_buckets_match_tf_in_onnx_runtime_and_torch() -> None:
    # Values on the boundaries too: TF puts b[i] into bucket i + 1 (b[i-1] <= x < b[i]).
    x = np.array([[-1.0, -0.5, 0.0, 0.25, 0.5], [0.7, -0.6, -0.1, 0.5, 3.0]], np.float32)
    expected = np.searchsorted(np.array(BOUNDARIES, np.float32), x, side="right").astype(np.int32)
    fixed, [record] = run_passes(_model(), [BucketizePass()], {"x": x})
    assert record.changes == 1
    assert not any(n.op_type == "Bucketize" for n in fixed.graph.node)
    got_ort = OrtRunner(fixed).run({"x": x})["y"]
    assert got_ort.dtype == np.int32
    np.testing.assert_array_equal(got_ort, expected)
    with torch.no_grad():
        got_torch = import_onnx(fixed)(torch.from_numpy(x)).numpy()
    assert got_torch.dtype == np.int32
    np.testing.assert_array_equal(got_torch, expected)


def test_a_graph_without_bucketize_is_unchanged() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    result = BucketizePass().apply(model)
    assert result.changes == 0 and result.model is model


def test_integer_input_compares_with_float_boundaries() -> None:
    # A Keras 2 Discretization passes an integer input straight to Bucketize.
    model = _model()
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.INT32
    x = np.array([[-1, 0, 1, 2, -3]], np.int32)
    expected = np.searchsorted(np.array(BOUNDARIES), x, side="right").astype(np.int32)
    fixed, _ = run_passes(model, [BucketizePass()], {"x": x})
    onnx.checker.check_model(fixed, full_check=True)
    np.testing.assert_array_equal(OrtRunner(fixed).run({"x": x})["y"], expected)
    with torch.no_grad():
        got = import_onnx(fixed)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, expected)
