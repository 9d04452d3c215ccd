"""Models at opset 19 and later import: the importer's output Identity nodes (and the
graph's own Identity nodes) have a converter at every Identity version."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from pipeline.to_torch.importer import find_unsupported_ops, import_onnx


@pytest.mark.parametrize("opset", [17, 19, 21])
def test_opset_19_and_later_import(opset: int) -> None:
    # Identity in the graph and an output that is also a node's input.
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Identity", ["r"], ["i"]),
        helper.make_node("Neg", ["i"], ["n"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3])],
        [
            helper.make_tensor_value_info("r", TensorProto.FLOAT, ["b", 3]),
            helper.make_tensor_value_info("n", TensorProto.FLOAT, ["b", 3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    assert find_unsupported_ops(model) == {}
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})
    got = import_onnx(model)(torch.from_numpy(x))
    assert len(got) == 2
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g.numpy(), e)
