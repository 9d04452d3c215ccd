"""ONNX Runtime's own float32 floor: the graph widened to float64 and run by ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.core.ort_runner import OrtRunner
from pipeline.verify.noise import measure_noise
from pipeline.verify.ort_noise import float64_onnx, ort_own_floors

RNG = np.random.default_rng(0)


def _deep_tanh(layers: int = 24, width: int = 32) -> onnx.ModelProto:
    """x → layers x Tanh(x·W) with gain-3 weights (chaotic: rounding grows per layer), then a
    Cast to float32 and a Constant offset, so every widened construct is on the path."""
    nodes, inits, value = [], [], "x"
    for index in range(layers):
        weight = RNG.normal(0.0, 3.0 / np.sqrt(width), (width, width)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{index}"))
        nodes += [
            helper.make_node("MatMul", [value, f"w{index}"], [f"m{index}"]),
            helper.make_node("Tanh", [f"m{index}"], [f"t{index}"]),
        ]
        value = f"t{index}"
    offset = numpy_helper.from_array(np.full((width,), 0.5, np.float32))
    nodes += [
        helper.make_node("Cast", [value], ["cast"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["offset"], value=offset),
        helper.make_node("Add", ["cast", "offset"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "deep_tanh",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_float64_copy_widens_weights_constants_casts_and_types() -> None:
    model = _deep_tanh(layers=2)
    wide = float64_onnx(model)
    assert {t.data_type for t in wide.graph.initializer} == {TensorProto.DOUBLE}
    [cast] = [n for n in wide.graph.node if n.op_type == "Cast"]
    assert cast.attribute[0].i == TensorProto.DOUBLE
    [constant] = [n for n in wide.graph.node if n.op_type == "Constant"]
    assert constant.attribute[0].t.data_type == TensorProto.DOUBLE
    assert wide.graph.output[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    # The original is untouched, and the weightless copy holds no weight data.
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT}
    light = float64_onnx(model, weights=False)
    assert not light.graph.initializer
    assert {i.name for i in light.graph.input} == {"x", "w0", "w1"}
    x = RNG.normal(size=(3, 32))
    [y] = OrtRunner(wide).run({"x": x}).values()
    assert y.dtype == np.float64


def test_onnx_runtime_s_own_floor_is_measured_where_it_rounds_more() -> None:
    model = _deep_tanh()
    x = RNG.normal(size=(8, 32)).astype(np.float32)
    floors = measure_noise(model, {"x": x}, ["x"], ["y"])
    float32 = OrtRunner(model).run({"x": x})
    own = ort_own_floors(model, {"x": x}, ["y"], float32, floors)
    assert own.unmeasured is None
    exact = floors.float64_outputs["y"].astype(np.float64)
    ort_error = float(np.max(np.abs(float32["y"] - exact)))
    if ort_error > floors.floors["y"].noise:  # ONNX Runtime rounds more than torch here
        assert abs(own.floors["y"] - ort_error) <= 1e-9 + 1e-6 * ort_error
    else:
        assert own.floors == {}  # never a narrowing
    # ONNX Runtime's float64 run must be torch's float64 function: against a reference it
    # does not match, its floor is not used.
    floors.float64_outputs["y"] = floors.float64_outputs["y"] + 1.0
    assert ort_own_floors(model, {"x": x}, ["y"], float32, floors).floors == {}


def test_a_graph_without_float64_kernels_says_why_and_keeps_torch_s_floor() -> None:
    weight = numpy_helper.from_array(RNG.normal(size=(2, 2, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    x = RNG.normal(size=(1, 2, 5, 5)).astype(np.float32)
    floors = measure_noise(model, {"x": x}, ["x"], ["y"])
    own = ort_own_floors(model, {"x": x}, ["y"], OrtRunner(model).run({"x": x}), floors)
    assert own.floors == {}
    assert own.unmeasured is not None and "Conv" in own.unmeasured
