"""Shape with start > end (an empty int64 tensor, not float32) and Cast to BFLOAT16,
against onnxruntime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper

from pipeline.to_torch.codegen import emit_package, load_generated
from pipeline.to_torch.importer import import_onnx


def test_shape_start_greater_than_end(roundtrip: Callable[..., str]) -> None:
    x = np.zeros((2, 3, 4), np.float32)
    source = roundtrip(helper.make_node("Shape", ["x"], ["y"], start=2, end=1), [x])
    assert "torch.tensor(x.shape[2:1], dtype=torch.int64, device=x.device)" in source


def test_shape_slice_keeps_its_plain_form(roundtrip: Callable[..., str]) -> None:
    x = np.zeros((2, 3, 4), np.float32)
    source = roundtrip(helper.make_node("Shape", ["x"], ["y"], start=1), [x])
    assert "torch.tensor(x.shape[1:], device=x.device)" in source


def test_cast_to_bfloat16(tmp_path: Path) -> None:
    # Through bfloat16 and back (numpy has no bfloat16 for onnxruntime's output).
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["b"], to=TensorProto.BFLOAT16),
            helper.make_node("Cast", ["b"], ["y"], to=TensorProto.FLOAT),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32) * 100
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    module = import_onnx(model)
    tensor = torch.from_numpy(x)
    package = emit_package(
        module, [], tmp_path, input_names=["x"], output_names=["y"], example_inputs=[tensor]
    )
    assert ".to(torch.bfloat16)" in (Path(package.path) / "model.py").read_text()
    generated = load_generated(package.path)
    for candidate in (module, generated):
        np.testing.assert_array_equal(candidate(tensor).numpy(), expected)
    program = torch.export.export(
        generated, (tensor,), dynamic_shapes=({0: torch.export.Dim.AUTO},)
    )
    torch.testing.assert_close(program.module()(tensor), generated(tensor))
