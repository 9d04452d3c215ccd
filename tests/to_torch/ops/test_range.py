"""Range keeps its element type (int32 too) and takes constant float bounds, against
onnxruntime; bounds given at run time make the eager :class:`DynamicRange`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pipeline.to_torch.codegen import emit_package, load_generated
from pipeline.to_torch.importer import import_onnx
from pipeline.to_torch.ops.range import DynamicRange


@pytest.mark.parametrize(
    ("dtype", "bounds"),
    [(np.int32, (10, 2, -3)), (np.int64, (0, 7, 2)), (np.float32, (1.0, 5.0, 0.5))],
)
def test_range_constant_bounds(
    tmp_path: Path, dtype: type, bounds: tuple[float, float, float]
) -> None:
    # x + Range(constants): the graph has a run-time input (the generated code's device).
    count = len(np.arange(*bounds))
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        [
            helper.make_node("Range", ["s", "l", "d"], ["r"]),
            helper.make_node("Add", ["x", "r"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", elem, [count])],
        [helper.make_tensor_value_info("y", elem, [count])],
        initializer=[
            numpy_helper.from_array(np.array(v, dtype=dtype), n)
            for n, v in zip(("s", "l", "d"), bounds, strict=True)
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.arange(count).astype(dtype)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    module = import_onnx(model)
    tensor = torch.from_numpy(x)
    package = emit_package(
        module, [], tmp_path, input_names=["x"], output_names=["y"], example_inputs=[tensor]
    )
    source = (Path(package.path) / "model.py").read_text()
    assert f"dtype=torch.{np.dtype(dtype).name}" in source and "torch.arange(" in source
    for candidate in (module, load_generated(package.path)):
        got = candidate(tensor).numpy()
        assert got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected)


def test_range_run_time_bounds_keep_int32() -> None:
    node = helper.make_node("Range", ["s", "l", "d"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.INT32, []) for n in ("s", "l", "d")],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = {"s": np.array(10, np.int32), "l": np.array(4, np.int32), "d": np.array(-3, np.int32)}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, feeds)
    module = import_onnx(model)
    assert any(isinstance(m, DynamicRange) for m in module.modules())
    got = module(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("dtype", "bounds"), [(np.int32, (10, 4, -3)), (np.float32, (1.0, 5.0, 0.5))]
)
def test_range_run_time_bounds_code_form(
    roundtrip: Callable[..., str], dtype: type, bounds: tuple[float, float, float]
) -> None:
    # Data-dependent: the generated code runs eagerly (torch.export cannot trace it).
    node = helper.make_node("Range", ["s", "l", "d"], ["y"])
    source = roundtrip(node, [np.array(b, dtype) for b in bounds])
    assert f"torch.arange(s, l, d, dtype=torch.{np.dtype(dtype).name}" in source
