"""PRelu's code form and the Gelu (opset 20) converter, against onnxruntime."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from pipeline.to_torch.importer import import_onnx

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("slope_shape", [(1,), (3, 1, 1), (5,)])
def test_prelu(roundtrip: Callable[..., str], slope_shape: tuple[int, ...]) -> None:
    x = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    slope = RNG.uniform(0.1, 0.5, size=slope_shape).astype(np.float32)
    source = roundtrip(helper.make_node("PRelu", ["x", "slope"], ["y"]), [x], {"slope": slope})
    assert "torch.where(" in source


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset_20(approximate: str) -> None:
    node = helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
    onnx.checker.check_model(model)
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    module = import_onnx(model)
    assert any(isinstance(m, torch.nn.GELU) for m in module.modules())
    np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), expected, rtol=1e-5, atol=1e-6)
