"""ONNX ``Loop`` (pipeline/to_torch/ops/loop.py): hand-built loops through the importer and the
generated code, against ONNX Runtime.

Covered: a scan output beside loop-carried values, a loop a data-dependent condition ends, the
body reading a value of the enclosing graph by name, a trip count only / a condition only, a
nested loop reading the outermost graph, a trip count from ``x.shape`` whose Keras-style
condition is proved redundant (so the loop exports), and the generated ``for`` loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pipeline.to_torch.codegen import emit_package, load_generated
from pipeline.to_torch.importer import export_program, import_onnx
from pipeline.to_torch.ops.loop import OnnxLoop, outer_names
from pipeline.to_torch.ops.shape_values import DimOf

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _value(name: str, dtype: int, shape: Sequence[int | str] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def _model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[str],
    initializers: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes),
        "loop_test",
        list(inputs),
        [_value(o, TensorProto.UNDEFINED, None) for o in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)
    inferred = {v.name: v for v in model.graph.value_info}
    for out in model.graph.output:
        if out.name in inferred:
            out.CopyFrom(inferred[out.name])
    # No onnx.checker: it wants every output typed; ONNX Runtime checks the graph.
    return model


def _outputs(result: object) -> list[np.ndarray]:
    values = list(result) if isinstance(result, tuple | list) else [result]
    return [v.detach().numpy() for v in values]  # type: ignore[union-attr]


def _check(
    tmp_path: Path, model: onnx.ModelProto, inputs: Sequence[np.ndarray]
) -> tuple[torch.fx.GraphModule, str]:
    """Import ``model``, write its package, and compare both with ONNX Runtime; returns the
    imported module and ``model.py``'s source."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {v.name: x for v, x in zip(model.graph.input, inputs, strict=True)}
    expected = session.run(None, feeds)
    module = import_onnx(model).eval()
    tensors = [torch.from_numpy(x) for x in inputs]
    package = emit_package(
        module,
        [],
        tmp_path,
        input_names=[v.name for v in model.graph.input],
        output_names=[v.name for v in model.graph.output],
        example_inputs=tensors,
    )
    generated = load_generated(package.path)
    for what, run in (("imported", module), ("generated", generated)):
        with torch.no_grad():
            got = _outputs(run(*tensors))
        assert len(got) == len(expected), what
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert a.shape == b.shape, f"{what} output {i}: {a.shape} != {b.shape}"
            assert a.dtype == b.dtype, f"{what} output {i}: dtype"
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{what} {i}")
    return module, (package.path / "model.py").read_text()


def _loops(module: torch.nn.Module) -> list[OnnxLoop]:
    return [m for m in module.modules() if isinstance(m, OnnxLoop)]


def _accumulate_body(
    extra_outer: str = "x", shape: Sequence[int | str] = ("n", 3)
) -> onnx.GraphProto:
    """``acc = acc + x * i`` (``x`` read from the enclosing graph), scanning ``acc``."""
    nodes = [
        helper.make_node("Cast", ["i"], ["i_f"], to=F),
        helper.make_node("Mul", [extra_outer, "i_f"], ["scaled"]),
        helper.make_node("Add", ["acc_in", "scaled"], ["acc_out"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        helper.make_node("Identity", ["acc_out"], ["scan"]),
    ]
    return helper.make_graph(
        nodes,
        "body",
        [_value("i", I64, []), _value("cond_in", B, []), _value("acc_in", F, shape)],
        [_value("cond_out", B, []), _value("acc_out", F, shape), _value("scan", F, shape)],
    )


def test_scan_output_and_outer_read(tmp_path: Path) -> None:
    """Trip count 4 and a constant condition: the final carried value, and the scan output
    stacked along a new axis 0; the body reads ``x`` by name."""
    loop = helper.make_node(
        "Loop", ["M", "cond", "acc0"], ["acc", "scanned"], body=_accumulate_body()
    )
    model = _model(
        [loop],
        [_value("x", F, ["n", 3]), _value("acc0", F, ["n", 3])],
        ["acc", "scanned"],
        {"M": np.array(4, np.int64), "cond": np.array(True)},
    )
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(2, 3)).astype(np.float32) for _ in range(2)]
    module, source = _check(tmp_path, model, inputs)
    (found,) = _loops(module)
    assert found.trip == 4 and found.outer == 1 and found.scans == 1
    assert "for step in range(4):" in source
    assert "def loop_body(self" in source
    assert "torch.stack(" in source


def test_outer_names_include_nested_reads() -> None:
    """A name read only by a graph nested in the body is an outer name of the body."""
    inner = _accumulate_body("y", [2])
    middle = helper.make_graph(
        [helper.make_node("Loop", ["K", "c", "a"], ["a2", "s"], body=inner)],
        "middle",
        [_value("j", I64, []), _value("c", B, []), _value("a", F, [2])],
        [_value("c", B, []), _value("a2", F, [2])],
    )
    assert outer_names(middle) == ["K", "y"]


def test_condition_from_data_ends_the_loop(tmp_path: Path) -> None:
    """``acc`` doubles until its sum passes a bound read from the input: the loop ends on
    ``cond``, long before its trip count, after a number of steps that depends on the data."""
    body = helper.make_graph(
        [
            helper.make_node("Mul", ["acc_in", "two"], ["acc_out"]),
            helper.make_node("ReduceSum", ["acc_out"], ["total"], keepdims=0),
            helper.make_node("Less", ["total", "bound"], ["cond_out"]),
            helper.make_node("Identity", ["acc_out"], ["scan"]),
        ],
        "body",
        [_value("i", I64, []), _value("cond_in", B, []), _value("acc_in", F, [3])],
        [_value("cond_out", B, []), _value("acc_out", F, [3]), _value("scan", F, [3])],
        initializer=[numpy_helper.from_array(np.array(2.0, np.float32), "two")],
    )
    loop = helper.make_node("Loop", ["M", "cond0", "acc0"], ["acc", "steps"], body=body)
    model = _model(
        [loop],
        [_value("acc0", F, [3]), _value("bound", F, [])],
        ["acc", "steps"],
        {"M": np.array(100, np.int64), "cond0": np.array(True)},
    )
    inputs = [np.array([0.5, 1.0, 0.25], np.float32), np.array(40.0, np.float32)]
    module, source = _check(tmp_path, model, inputs)
    (found,) = _loops(module)
    assert found.cond_input
    assert "if not bool(cond" in source
    # Another bound, another number of steps: the condition is read at run time.
    with torch.no_grad():
        _acc, steps = module(torch.from_numpy(inputs[0]), torch.tensor(400.0))
    assert steps.shape[0] == 8  # 1.75 * 2**8 = 448 >= 400


def test_trip_count_only_and_condition_only(tmp_path: Path) -> None:
    """``M`` alone (a graph input read at run time), then ``cond`` alone (a while loop).

    With ``M`` alone the body's condition stays true: ONNX says it is ignored then, but ONNX
    Runtime 1.31 still stops on it, so a test of that case would only compare the two."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
            helper.make_node("Less", ["acc_out", "limit"], ["cond_out"]),
        ],
        "body",
        [_value("i", I64, []), _value("cond_in", B, []), _value("acc_in", F, [])],
        [_value("cond_out", B, []), _value("acc_out", F, [])],
        initializer=[numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    for name, loop_inputs, feeds in (
        ("trip", ["M", "", "acc0"], [np.array(5, np.int64), np.array(0.5, np.float32)]),
        ("cond", ["", "c0", "acc0"], [np.array(True), np.array(0.5, np.float32)]),
    ):
        loop = helper.make_node("Loop", loop_inputs, ["acc"], body=body)
        graph_inputs = [
            _value(loop_inputs[0] or loop_inputs[1], I64 if loop_inputs[0] else B, []),
            _value("acc0", F, []),
        ]
        limit = np.array(3.0 if name == "cond" else 100.0, np.float32)
        model = _model([loop], graph_inputs, ["acc"], {"limit": limit})
        out = tmp_path / name
        out.mkdir()
        _check(out, model, feeds)


def test_nested_loop_reads_the_outermost_graph(tmp_path: Path) -> None:
    """A Loop in a Loop's body, the inner body reading ``x`` from the model's graph."""
    inner = _accumulate_body("x", [2])
    outer_body = helper.make_graph(
        [
            helper.make_node("Loop", ["K", "t", "o_acc"], ["o_acc_out", "inner_scan"], body=inner),
            helper.make_node("Identity", ["o_cond"], ["o_cond_out"]),
            helper.make_node("ReduceSum", ["inner_scan"], ["total"], keepdims=0),
        ],
        "outer_body",
        [_value("j", I64, []), _value("o_cond", B, []), _value("o_acc", F, [2])],
        [_value("o_cond_out", B, []), _value("o_acc_out", F, [2]), _value("total", F, [])],
    )
    loop = helper.make_node("Loop", ["M", "t", "acc0"], ["acc", "totals"], body=outer_body)
    model = _model(
        [loop],
        [_value("x", F, [2]), _value("acc0", F, [2])],
        ["acc", "totals"],
        {"M": np.array(3, np.int64), "K": np.array(2, np.int64), "t": np.array(True)},
    )
    inputs = [np.array([1.0, -2.0], np.float32), np.array([0.5, 0.25], np.float32)]
    module, source = _check(tmp_path, model, inputs)
    assert len(_loops(module)) == 2
    assert "def loop_body_1(self" in source or source.count("def loop_body") == 2


def _keras_style_model() -> onnx.ModelProto:
    """Keras's RNN loop over a run-time sequence length: ``M = x.shape[0]``, the condition
    ``step < n and t + 1 < n`` with ``n`` the same length and ``t`` a carried counter."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["t_in", "one"], ["t_out"]),
            helper.make_node("Gather", ["x", "t_in"], ["x_t"], axis=0),
            helper.make_node("Add", ["h_in", "x_t"], ["sum"]),
            helper.make_node("Tanh", ["sum"], ["h_out"]),
            helper.make_node("Less", ["i", "n"], ["c1"]),
            helper.make_node("Less", ["t_out", "n"], ["c2"]),
            helper.make_node("And", ["c1", "c2"], ["cond_out"]),
            helper.make_node("Identity", ["h_out"], ["scan"]),
        ],
        "body",
        [
            _value("i", I64, []),
            _value("cond_in", B, []),
            _value("t_in", I64, []),
            _value("h_in", F, [2, 3]),
        ],
        [
            _value("cond_out", B, []),
            _value("t_out", I64, []),
            _value("h_out", F, [2, 3]),
            _value("scan", F, [2, 3]),
        ],
        initializer=[numpy_helper.from_array(np.array(1, np.int64), "one")],
    )
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Less", ["zero", "n"], ["cond0"]),
        helper.make_node("Loop", ["n", "cond0", "zero", "h0"], ["t", "h", "ys"], body=body),
    ]
    return _model(
        nodes,
        [_value("x", F, ["seq", 2, 3]), _value("h0", F, [2, 3])],
        ["h", "ys"],
        {"zero": np.array(0, np.int64)},
    )


def test_keras_style_condition_is_proved_and_exports(tmp_path: Path) -> None:
    """The condition only repeats the trip count: the loop runs ``x.shape[0]`` steps without
    reading it, and torch.export unrolls the loop (the length becomes static)."""
    model = _keras_style_model()
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(5, 2, 3)).astype(np.float32) for _ in range(1)]
    inputs.append(rng.normal(size=(2, 3)).astype(np.float32))
    module, source = _check(tmp_path, model, inputs)
    (found,) = _loops(module)
    assert not found.cond_input
    assert found.trip == DimOf("x", 0)
    assert "for step in range(x.shape[0]):" in source
    static = export_program(
        module, inputs, tmp_path / "model.pt2", dynamic_axes=[[0], []], input_names=["x", "h0"]
    )
    assert [(s.input, s.axis, s.size) for s in static] == [("x", 0, 5)]


@pytest.mark.parametrize("bound_offset", [0, 1])
def test_condition_not_proved_when_it_can_end_early(bound_offset: int) -> None:
    """``t + 2 < n`` ends the loop one step before ``M`` does: it must be read, not dropped
    (``bound_offset`` 1); ``t + 1 < n`` cannot end it early (0)."""
    model = _keras_style_model()
    if bound_offset:
        body = next(a.g for a in model.graph.node[3].attribute if a.name == "body")
        body.initializer[0].CopyFrom(numpy_helper.from_array(np.array(2, np.int64), "one"))
    (found,) = _loops(import_onnx(model))
    assert found.cond_input == bool(bound_offset)
