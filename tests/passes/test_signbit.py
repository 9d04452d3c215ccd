"""Keras's bit-level signbit (``keras.ops.argmax``'s -0.0 handling), as tf2onnx leaves it,
becomes valid ONNX with the sign bit's exact values.  The end-to-end case (an ``ops.argmax``
head through TF) is ``tests/test_gallery.py::argmax_head``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.core.ort_runner import OrtRunner
from pipeline.passes import run_passes
from pipeline.passes.signbit import SignbitPass

VALUES = np.array([[-0.0, 0.0, -np.inf, np.inf, -1.5, 2.0, -1e-40, 1e-40]], np.float32)


def _signbit_model(mask: int = np.iinfo(np.int32).min) -> onnx.ModelProto:
    """``y = float(BitwiseAnd(Bitcast(x, int32), mask)) < 0`` as tf2onnx writes it (``Bitcast``
    in the default domain, not valid ONNX), plus ``x`` itself as a second output."""
    nodes = [
        helper.make_node("Bitcast", ["x"], ["bits"], name="bitcast", type=TensorProto.INT32),
        helper.make_node("BitwiseAnd", ["bits", "mask"], ["anded"], name="and"),
        helper.make_node("Cast", ["anded"], ["as_float"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Less", ["as_float", "zero"], ["y"], name="less"),
        helper.make_node("Identity", ["x"], ["x_out"], name="identity"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.BOOL, ["batch", 8]),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, ["batch", 8]),
        ],
        initializer=[
            numpy_helper.from_array(np.array(mask, np.int32), "mask"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_signbit_becomes_valid_onnx_with_the_sign_bit_values() -> None:
    fixed, [record] = run_passes(_signbit_model(), [SignbitPass()], {"x": VALUES})
    assert record.name == "signbit" and record.changes == 1
    assert not {"Bitcast", "BitwiseAnd"} & {n.op_type for n in fixed.graph.node}
    onnx.checker.check_model(fixed, full_check=True)
    got = OrtRunner(fixed).run({"x": VALUES})["y"]
    np.testing.assert_array_equal(got, np.signbit(VALUES))  # -0.0 and -inf included


def test_other_masks_are_left_alone() -> None:
    """Only the sign bit's mask is a sign test; another bit stays as it was."""
    model = _signbit_model(mask=1 << 30)
    result = SignbitPass().apply(model)
    assert result.changes == 0
    assert "Bitcast" in {n.op_type for n in result.model.graph.node}
