"""The ``shape_only`` pass (pipeline/passes/shape_only.py) on hand-built graphs, checked by
the fixup runner against ONNX Runtime: a step computed only for ``zeros_like`` (Keras's
peeled first RNN step) is removed with the constants only it read, their provenance records
go, and nothing changes where no live value has the step's shape on every size, or where
something else reads the step."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.core import provenance
from pipeline.passes import run_passes
from pipeline.passes.shape_only import ShapeOnlyPass

_F = TensorProto.FLOAT


def _model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[tuple[str, list[int | str]]],
    outputs: Sequence[tuple[str, list[int | str]]],
    initializers: dict[str, np.ndarray],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        "shape_only",
        [helper.make_tensor_value_info(n, _F, shape) for n, shape in inputs],
        [helper.make_tensor_value_info(o, _F, shape) for o, shape in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _zeros_like_step(read_step_too: bool = False) -> onnx.ModelProto:
    """``y = zeros_like(sigmoid(x @ w + b) * h) + h`` (h: the state, batch ``N``); with
    ``read_step_too`` the step is also an output."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"], name="matmul"),
        helper.make_node("Add", ["xw", "b"], ["xwb"], name="bias_add"),
        helper.make_node("Sigmoid", ["xwb"], ["gate"], name="sigmoid"),
        helper.make_node("Mul", ["gate", "h"], ["step"], name="mul"),
        helper.make_node("Shape", ["step"], ["step_shape"], name="shape"),
        helper.make_node(
            "ConstantOfShape",
            ["step_shape"],
            ["zeros"],
            name="zeros_like",
            value=numpy_helper.from_array(np.zeros(1, np.float32)),
        ),
        helper.make_node("Add", ["zeros", "h"], ["y"], name="out"),
    ]
    return _model(
        nodes,
        [("x", ["N", 3]), ("h", ["N", 4])],
        [("y", ["N", 4]), ("step", ["N", 4])] if read_step_too else [("y", ["N", 4])],
        {
            "w": rng.normal(size=(3, 4)).astype(np.float32),
            "b": rng.normal(size=(4,)).astype(np.float32),
        },
    )


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "x": rng.normal(size=(5, 3)).astype(np.float32),
        "h": rng.normal(size=(5, 4)).astype(np.float32),
    }


def test_step_computed_for_its_shape_is_removed() -> None:
    model = _zeros_like_step()
    record = provenance.Provenance(
        initializers={
            "w": [provenance.Part("cell/kernel")],
            "b": [provenance.Part("cell/bias")],
        }
    )
    provenance.write(model, record)
    fixed, [result] = run_passes(model, [ShapeOnlyPass()], _inputs())
    assert result.status == "applied" and result.check == "numeric", result
    assert result.max_abs_change == 0.0
    shape = next(n for n in fixed.graph.node if n.op_type == "Shape")
    assert list(shape.input) == ["h"]  # the state: the shape the step broadcasts to
    assert [n.op_type for n in fixed.graph.node] == ["Shape", "ConstantOfShape", "Add"]
    assert not fixed.graph.initializer  # w and b were read only by the step
    kept = provenance.read(fixed)
    assert kept is not None and kept.initializers == {}


def test_no_candidate_of_the_same_shape_changes_nothing() -> None:
    """``zeros_like(x @ w + b)``: the only live operand is ``b`` (shape ``(4,)``, not
    ``(N, 4)``), so the step stays."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"], name="matmul"),
        helper.make_node("Add", ["xw", "b"], ["step"], name="bias_add"),
        helper.make_node("Shape", ["step"], ["step_shape"], name="shape"),
        helper.make_node(
            "ConstantOfShape",
            ["step_shape"],
            ["y"],
            name="zeros_like",
            value=numpy_helper.from_array(np.ones(1, np.float32)),
        ),
    ]
    model = _model(
        nodes,
        [("x", ["N", 3])],
        [("y", ["N", 4])],
        {
            "w": rng.normal(size=(3, 4)).astype(np.float32),
            "b": rng.normal(size=(4,)).astype(np.float32),
        },
    )
    assert ShapeOnlyPass().apply(model).changes == 0


def test_step_read_by_something_else_is_kept() -> None:
    assert ShapeOnlyPass().apply(_zeros_like_step(read_step_too=True)).changes == 0
