"""CumSum: ONNX's default direction (not reversed), int32 kept, exclusive/reverse, against
onnxruntime; with the axis a constant (code form) and a run-time input (eager module)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from pipeline.to_torch.importer import import_onnx
from pipeline.to_torch.ops.cumsum import DynamicCumSum


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize(("exclusive", "reverse"), [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum(roundtrip: Callable[..., str], dtype: type, exclusive: int, reverse: int) -> None:
    x = np.arange(1, 13).reshape(3, 4).astype(dtype)
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)
    source = roundtrip(node, [x], {"axis": np.array(1, dtype=np.int64)})
    assert "cumsum(" in source
    if not exclusive and not reverse:
        assert ("dtype=torch.int32" in source) == (dtype == np.int32)


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumsum_with_a_run_time_axis(dtype: type, reverse: int) -> None:
    # onnx2torch's module here defaulted reverse to 1 and widened int32 to int64.
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], reverse=reverse)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", elem, [5]),
            helper.make_tensor_value_info("axis", TensorProto.INT32, []),
        ],
        [helper.make_tensor_value_info("y", elem, [5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x, axis = np.arange(1, 6).astype(dtype), np.array(0, dtype=np.int32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x, "axis": axis})
    module = import_onnx(model)
    assert any(isinstance(m, DynamicCumSum) for m in module.modules())
    got = module(torch.from_numpy(x), torch.from_numpy(axis)).numpy()
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
