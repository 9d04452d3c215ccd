"""GlobalMaxPool (onnx2torch has no converter for it) against ONNX Runtime, and exported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from pipeline.core.ort_runner import OrtRunner
from pipeline.to_torch.importer import find_unsupported_ops, import_onnx


@pytest.mark.parametrize("spatial", [[5], [4, 3], [2, 3, 2]])
def test_global_max_pool_matches_onnxruntime(spatial: list[int]) -> None:
    node = helper.make_node("GlobalMaxPool", ["x"], ["y"], name="pool")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, *spatial])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, *[1] * len(spatial)])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    assert find_unsupported_ops(model) == {}
    x = np.random.default_rng(0).normal(size=(2, 3, *spatial)).astype(np.float32)
    expected = OrtRunner(model).run({"x": x})["y"]
    module = import_onnx(model)
    got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, expected)
    batch = torch.export.Dim("batch")
    program = torch.export.export(module, (torch.from_numpy(x),), dynamic_shapes=({0: batch},))
    assert program.module()(torch.from_numpy(x)).shape == expected.shape
