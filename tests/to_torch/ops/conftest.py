"""One ONNX node through the importer and the code generator, against onnxruntime.

:func:`roundtrip` (a fixture) builds a one-node opset-17 model, runs it with onnxruntime,
imports it (:func:`~pipeline.to_torch.importer.import_onnx`), writes and loads the
``torch_model`` package (:func:`~pipeline.to_torch.codegen.emit_package`,
:func:`~pipeline.to_torch.codegen.load_generated`) and checks both against onnxruntime's
outputs.  It returns the generated ``model.py`` source so a test can check its code form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pipeline.to_torch.codegen import emit_package, load_generated
from pipeline.to_torch.importer import import_onnx


def one_node_model(
    node: onnx.NodeProto,
    inputs: Sequence[np.ndarray],
    output_ranks: Sequence[int | None],
    initializers: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """``node`` as a graph whose inputs are ``inputs`` (dynamic shapes, dtypes as given) and
    whose initializers are ``initializers``; outputs of unknown shape."""
    initializers = initializers or {}
    data_names = [n for n in node.input if n and n not in initializers]
    graph_inputs = [
        helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)
        )
        for name, array in zip(data_names, inputs, strict=True)
    ]
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.UNDEFINED, None)
        for name, _ in zip(node.output, output_ranks, strict=True)
    ]
    graph = helper.make_graph(
        [node],
        "one_node",
        graph_inputs,
        outputs,
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)
    # Output value infos from inference (the importer wants their types).
    inferred = {v.name: v for v in model.graph.value_info}
    for out in model.graph.output:
        if out.name in inferred:
            out.CopyFrom(inferred[out.name])
    onnx.checker.check_model(model)
    return model


def _check(actual: Any, expected: Sequence[np.ndarray], what: str) -> None:
    outputs = list(actual) if isinstance(actual, tuple | list) else [actual]
    assert len(outputs) == len(expected), what
    for i, (got, want) in enumerate(zip(outputs, expected, strict=True)):
        got_array = got.detach().numpy()
        assert got_array.shape == want.shape, f"{what} output {i}: shape"
        assert got_array.dtype == want.dtype, f"{what} output {i}: dtype"
        np.testing.assert_allclose(got_array, want, rtol=1e-5, atol=1e-5, err_msg=f"{what} {i}")


def run_roundtrip(
    tmp_path: Path,
    node: onnx.NodeProto,
    inputs: Sequence[np.ndarray],
    initializers: dict[str, np.ndarray] | None = None,
) -> str:
    """Check ``node`` imported and generated against onnxruntime; the ``model.py`` source."""
    model = one_node_model(node, inputs, [None] * len(node.output), initializers)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {v.name: x for v, x in zip(model.graph.input, inputs, strict=True)}
    expected = session.run(None, feeds)
    module = import_onnx(model).eval()
    tensors = [torch.from_numpy(x) for x in inputs]
    with torch.no_grad():
        _check(module(*tensors), expected, "imported")
    package = emit_package(
        module,
        [],
        tmp_path,
        input_names=[v.name for v in model.graph.input],
        output_names=[v.name for v in model.graph.output],
        example_inputs=tensors,
    )
    generated = load_generated(package.path)
    with torch.no_grad():
        _check(generated(*tensors), expected, "generated")
    return (Path(package.path) / "model.py").read_text()


@pytest.fixture
def roundtrip(tmp_path: Path) -> Callable[..., str]:
    """``roundtrip(node, inputs, initializers=None) -> model.py source`` (see the module)."""

    def run(
        node: onnx.NodeProto,
        inputs: Sequence[np.ndarray],
        initializers: dict[str, np.ndarray] | None = None,
    ) -> str:
        return run_roundtrip(tmp_path, node, inputs, initializers)

    return run


@pytest.fixture
def imported() -> Callable[..., torch.fx.GraphModule]:
    """``imported(node, inputs, initializers=None)``: the one-node model, imported."""

    def run(
        node: onnx.NodeProto,
        inputs: Sequence[np.ndarray],
        initializers: dict[str, np.ndarray] | None = None,
    ) -> torch.fx.GraphModule:
        return import_onnx(one_node_model(node, inputs, [None] * len(node.output), initializers))

    return run
