"""ONNX ``Slice`` with starts/ends from tensor data (pipeline/to_torch/ops/slice.py,
:class:`RunTimeSlice`) against ONNX Runtime, through the importer and the generated code:
ONNX's clamping and negative indices, steps, negative axes, and a ``Loop`` body slicing at
its iteration number (ONNX's backend case ``test_loop11``).  A negative step with run-time
bounds stays onnx2torch's module (Python's clamping differs from ONNX's there)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx2torch.node_converters.slice import OnnxSlice

from pipeline.to_torch.codegen import emit_package, load_generated
from pipeline.to_torch.importer import import_onnx
from pipeline.to_torch.ops.slice import RunTimeSlice

_X = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)


@pytest.mark.parametrize(
    ("starts", "ends", "axes", "steps"),
    [
        ([1], [3], [1], None),
        ([-4, 0], [100, -1], [1, 2], [1, 2]),  # negative indices, an end past the dim
        ([0, 2], [2**62, 4], [-3, -1], [3, 1]),  # negative axes, a huge end, a step
        ([5, -100], [1, 2], [1, 0], None),  # an empty slice, a start clamped to 0
    ],
)
def test_slice_bounds_from_tensor_data(
    roundtrip: Callable[..., str],
    starts: list[int],
    ends: list[int],
    axes: list[int],
    steps: list[int] | None,
) -> None:
    constants = {"axes": np.array(axes, np.int64)}
    names = ["x", "starts", "ends", "axes"]
    if steps is not None:
        constants["steps"] = np.array(steps, np.int64)
        names.append("steps")
    node = helper.make_node("Slice", names, ["y"])
    source = roundtrip(node, [_X, np.array(starts, np.int64), np.array(ends, np.int64)], constants)
    assert "int(starts[0])" in source


def test_slice_negative_step_from_data_is_not_run_time_slice(
    imported: Callable[..., object],
) -> None:
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])
    module = imported(
        node,
        [_X, np.array([4], np.int64), np.array([0], np.int64)],
        {"axes": np.array([1], np.int64), "steps": np.array([-1], np.int64)},
    )
    classes = {type(m) for m in module.modules()}  # type: ignore[attr-defined]
    assert OnnxSlice in classes and RunTimeSlice not in classes


def test_loop_body_slices_at_its_iteration(tmp_path: Path) -> None:
    """``y += x[i:i+1]`` for each iteration ``i``, the scan output every ``y``."""
    i64 = TensorProto.INT64
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["iteration", "one"], ["end"]),
            helper.make_node("Unsqueeze", ["iteration", "zero"], ["start_1d"]),
            helper.make_node("Unsqueeze", ["end", "zero"], ["end_1d"]),
            helper.make_node("Slice", ["table", "start_1d", "end_1d"], ["row"]),
            helper.make_node("Add", ["y_in", "row"], ["y_out"]),
            helper.make_node("Identity", ["y_out"], ["scan"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("iteration", i64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("y_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("y_out", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("scan", TensorProto.FLOAT, [1]),
        ],
        initializer=[
            numpy_helper.from_array(np.array(1, np.int64), "one"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
        ],
    )
    node = helper.make_node("Loop", ["trips", "cond", "y"], ["y_final", "ys"], body=body)
    table = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
    graph = helper.make_graph(
        [node],
        "loop",
        [
            helper.make_tensor_value_info("trips", i64, []),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("y_final", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("ys", TensorProto.FLOAT, [None, 1]),
        ],
        initializer=[
            numpy_helper.from_array(np.array(True), "cond"),
            numpy_helper.from_array(table, "table"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    inputs = [np.array(5, np.int64), np.array([0.5], np.float32)]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"trips": inputs[0], "y": inputs[1]})
    module = import_onnx(model)
    tensors = [torch.from_numpy(x) for x in inputs]
    package = emit_package(
        module,
        [],
        tmp_path,
        input_names=["trips", "y"],
        output_names=["y_final", "ys"],
        example_inputs=tensors,
    )
    generated = load_generated(package.path)
    for run in (module, generated):
        with torch.no_grad():
            got = [t.numpy() for t in run(*tensors)]
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-6)
    source = (Path(package.path) / "model.py").read_text()
    assert "for step in range(" in source and "[0]):int(" in source
