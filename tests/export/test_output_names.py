"""ONNX output names after export: the Keras names, and a valid graph when an output is an
input returned unchanged (fuzz seed 1036: ``keras.Model([x0, x1], [x0, t5])``)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper

from pipeline.core.ort_runner import OrtRunner
from pipeline.export.worker.onnx_export import rename_outputs


def _tf2onnx_like_graph() -> onnx.ModelProto:
    """What tf2onnx writes for ``Model([x0, x1], [x0, Relu(x1)])``: each output an Identity."""
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 3])  # noqa: E731
    nodes = [
        helper.make_node("Identity", ["x0"], ["Identity:0"]),
        helper.make_node("Relu", ["x1"], ["relu"]),
        helper.make_node("Identity", ["relu"], ["Identity_1:0"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [value("x0"), value("x1")], [value("Identity:0"), value("Identity_1:0")]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_outputs_take_the_keras_names() -> None:
    model = _tf2onnx_like_graph()
    rename_outputs(model, ["x0", "dense_5"])
    assert [o.name for o in model.graph.output] == ["x0", "dense_5"]


def test_an_input_returned_as_an_output_is_the_graph_input_itself() -> None:
    model = _tf2onnx_like_graph()
    rename_outputs(model, ["x0", "dense_5"])
    onnx.checker.check_model(model, full_check=True)
    ir.serde.deserialize_model(model)  # raised SerdeError: 'x0' declared twice
    assert [n.op_type for n in model.graph.node] == ["Relu", "Identity"]
    x0 = np.arange(6, dtype=np.float32).reshape(2, 3)
    x1 = -x0
    out = OrtRunner(model).run({"x0": x0, "x1": x1})
    np.testing.assert_array_equal(out["x0"], x0)
    np.testing.assert_array_equal(out["dense_5"], np.maximum(x1, 0))


def test_repeated_keras_output_names_are_numbered() -> None:
    # LSTM(return_state=True): Keras names all three outputs after the layer.
    from pipeline.export.worker.onnx_export import distinct_names

    assert distinct_names(["lstm", "lstm", "lstm"]) == ["lstm", "lstm_1", "lstm_2"]
    assert distinct_names(["a", "a", "a_1"]) == ["a", "a_2", "a_1"]
    model = _tf2onnx_like_graph()
    rename_outputs(model, ["lstm", "lstm"])
    assert [o.name for o in model.graph.output] == ["lstm", "lstm_1"]
    onnx.checker.check_model(model, full_check=True)
