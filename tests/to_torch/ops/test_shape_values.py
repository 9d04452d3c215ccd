"""Shape arithmetic known at import: tf2onnx's forms for slice ends that depend on the
run-time sequence length (float clamps at +-1e9, sentinel tests, And/Where) resolve to
expressions over ``x.shape``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx2torch.onnx_graph import OnnxGraph

from pipeline.to_torch.ops.shape_values import DimOf, known_int_value


def _graph(nodes: list[onnx.NodeProto], constants: dict[str, np.ndarray]) -> OnnxGraph:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, "length"])
    y = helper.make_tensor_value_info("end", TensorProto.INT64, None)
    initializers = [numpy_helper.from_array(v, k) for k, v in constants.items()]
    graph = helper.make_graph(nodes, "g", [x], [y], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return OnnxGraph(onnx.shape_inference.infer_shapes(model).graph)


def test_a_float_clamped_end_tested_against_the_sentinel_is_the_length() -> None:
    # end = Where(Cast(Max(Cast(shape, FLOAT), -1e9), INT64) == 1e9 and lo < 0, 1e9, end):
    # what tf2onnx writes for keras ops.slice / strided_slice with a run-time end (ESM).
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT),
        helper.make_node("Max", ["shape_f", "low"], ["clamped"]),
        helper.make_node("Cast", ["clamped"], ["clamped_i"], to=TensorProto.INT64),
        helper.make_node("Equal", ["clamped_i", "sentinel"], ["is_open"]),
        helper.make_node("Less", ["begin", "zero"], ["negative_begin"]),
        helper.make_node("And", ["is_open", "negative_begin"], ["both"]),
        helper.make_node("Where", ["both", "sentinel", "clamped_i"], ["end"]),
    ]
    constants = {
        "low": np.array([-1e9, -1e9], np.float32),
        "sentinel": np.array([10**9], np.int64),
        "begin": np.array([0, 0], np.int64),
        "zero": np.array([0], np.int64),
    }
    value = known_int_value(_graph(nodes, constants), "end")
    assert value is not None
    assert value.elems == (2, DimOf("x", 1))


def test_a_dimension_compared_with_an_ordinary_number_stays_unknown() -> None:
    # Whether the length equals 5 depends on the input: no rule may decide it.
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Equal", ["shape", "five"], ["is_five"]),
        helper.make_node("Where", ["is_five", "five", "shape"], ["end"]),
    ]
    value = known_int_value(_graph(nodes, {"five": np.array([5], np.int64)}), "end")
    assert value is None


def test_float_division_is_never_folded() -> None:
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["shape_f", "two"], ["half"]),
        helper.make_node("Cast", ["half"], ["end"], to=TensorProto.INT64),
    ]
    value = known_int_value(_graph(nodes, {"two": np.array([2.0], np.float32)}), "end")
    assert value is None


def test_tf_pad_paddings_built_from_the_length_are_known() -> None:
    # tf.pad(mask, [[0, 0], [length - 4, 0]]) as tf2onnx writes it (PaliGemma's response
    # mask): rows unsqueezed from vectors, concatenated, transposed, flattened to pads.
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["length"], axis=0),
        helper.make_node("Sub", ["length", "four"], ["before"]),
        helper.make_node("Concat", ["before", "zero"], ["row"], axis=0),
        helper.make_node("Unsqueeze", ["row", "axis0"], ["row2"]),
        helper.make_node("Concat", ["zeros_row", "row2"], ["paddings"], axis=0),
        helper.make_node("Transpose", ["paddings"], ["flipped"], perm=[1, 0]),
        helper.make_node("Reshape", ["flipped", "flat"], ["end"]),
    ]
    constants = {
        "one": np.array([1], np.int64),
        "four": np.array([4], np.int64),
        "zero": np.array([0], np.int64),
        "axis0": np.array([0], np.int64),
        "zeros_row": np.zeros((1, 2), np.int64),
        "flat": np.array([-1], np.int64),
    }
    value = known_int_value(_graph(nodes, constants), "end")
    assert value is not None and value.rows is None
    before = value.elems[1]
    assert value.elems[0] == 0 and value.elems[2:] == (0, 0)
    assert not isinstance(before, int)  # length - 4: read from x.shape at run time


def test_a_matrix_never_reaches_vector_arithmetic() -> None:
    # A rank-2 constant added to a shape: vector rules must not read its elements flat.
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Add", ["shape", "grid"], ["end"]),
    ]
    value = known_int_value(_graph(nodes, {"grid": np.ones((2, 2), np.int64)}), "end")
    assert value is None
