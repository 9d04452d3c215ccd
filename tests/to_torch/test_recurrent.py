"""ONNX LSTM/GRU → nn.LSTM/nn.GRU (pipeline/converters/recurrent.py), ReverseSequence, and the
Keras 3 GRU ``Loop`` → ONNX ``GRU`` pass (pipeline/passes/keras_gru_loop.py).

ONNX Runtime is the reference.  It rejects ``layout=1`` ("Batchwise recurrent operations
are not supported"), so a layout-1 node is checked against ORT running the same weights in
layout 0 on transposed inputs.  TensorFlow only runs in subprocesses (the pipeline's worker,
or ``python -c``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import pipeline
from pipeline.api import ConvertOptions
from pipeline.core.errors import Tf2TorchError
from pipeline.passes import default_passes
from pipeline.passes.keras_gru_loop import KerasGruLoopPass
from pipeline.to_torch.importer import import_onnx
from pipeline.to_torch.ops.recurrent import GruResetBefore, OnnxRecurrent, ReverseSequence

ATOL = 1e-5
INPUT, HIDDEN, SEQ = 4, 5, 6
GATES = {"LSTM": 4, "GRU": 3}


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, feeds)]


def _rnn_model(
    op: str,
    *,
    direction: str = "forward",
    layout: int = 0,
    with_bias: bool = True,
    initial_states: bool = False,
    outputs: Sequence[str] = ("Y", "Y_h", "Y_c"),
    seed: int = 0,
    extra_inputs: dict[int, onnx.TensorProto] | None = None,
    opset: int = 14,
    **attrs: Any,
) -> onnx.ModelProto:
    """One LSTM/GRU node with seeded random weights; ``x`` (and ``h0``/``c0``) as inputs.

    ``outputs`` names the node's outputs in order ("" for one left out); each non-empty
    one is a graph output.  ``extra_inputs`` puts initializers at input positions (e.g. 4:
    sequence_lens, 7: P).
    """
    rng = np.random.default_rng(seed)
    dirs = 2 if direction == "bidirectional" else 1
    gates = GATES[op]
    tensors = [
        numpy_helper.from_array(
            rng.normal(0, 0.5, (dirs, gates * HIDDEN, INPUT)).astype(np.float32), "W"
        ),
        numpy_helper.from_array(
            rng.normal(0, 0.5, (dirs, gates * HIDDEN, HIDDEN)).astype(np.float32), "R"
        ),
    ]
    inputs = ["x", "W", "R", ""]
    if with_bias:
        b = rng.normal(0, 0.5, (dirs, 2 * gates * HIDDEN)).astype(np.float32)
        tensors.append(numpy_helper.from_array(b, "B"))
        inputs[3] = "B"
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    inputs += ["", *(states if initial_states else [""] * len(states))]
    for position, tensor in (extra_inputs or {}).items():
        while len(inputs) <= position:
            inputs.append("")
        inputs[position] = tensor.name
        tensors.append(tensor)
    while inputs[-1] == "":
        inputs.pop()
    x_shape = ["seq", "batch", INPUT] if layout == 0 else ["batch", "seq", INPUT]
    state_shape = [dirs, "batch", HIDDEN] if layout == 0 else ["batch", dirs, HIDDEN]
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    if initial_states:
        graph_inputs += [
            helper.make_tensor_value_info(s, TensorProto.FLOAT, state_shape) for s in states
        ]
    y_shape = ["seq", dirs, "batch", HIDDEN] if layout == 0 else ["batch", "seq", dirs, HIDDEN]
    if layout:
        attrs["layout"] = layout
    node = helper.make_node(
        op, inputs, list(outputs), name=op.lower(), hidden_size=HIDDEN, direction=direction, **attrs
    )
    graph = helper.make_graph(
        [node],
        "rnn",
        graph_inputs,
        [
            helper.make_tensor_value_info(
                o, TensorProto.FLOAT, y_shape if o == "Y" else state_shape
            )
            for o in outputs
            if o
        ],
        tensors,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _feeds(model: onnx.ModelProto, batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        params = [d.dim_param for d in value.type.tensor_type.shape.dim]
        shape = [
            dim if dim else (batch if param == "batch" else SEQ)
            for dim, param in zip(dims, params, strict=True)
        ]
        feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """ORT's outputs; a layout-1 node runs as layout 0 on transposed inputs."""
    node = model.graph.node[0]
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    if layout == 0:
        return _ort(model, feeds)
    as_layout0 = onnx.ModelProto()
    as_layout0.CopyFrom(model)
    layout_attr = next(a for a in as_layout0.graph.node[0].attribute if a.name == "layout")
    layout_attr.i = 0
    for value in [*as_layout0.graph.input, *as_layout0.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            dim.Clear()  # unknown: the layout-1 shapes no longer apply
    transposed = {name: np.ascontiguousarray(a.swapaxes(0, 1)) for name, a in feeds.items()}
    results = _ort(as_layout0, transposed)
    names = [o.name for o in model.graph.output]
    # Y: (seq, dirs, batch, hidden) -> (batch, seq, dirs, hidden); states: swap first two.
    return [
        r.transpose(2, 0, 1, 3) if name == "Y" else r.swapaxes(0, 1)
        for name, r in zip(names, results, strict=True)
    ]


def _torch_outputs(module: nn.Module, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        result = module(*(torch.from_numpy(a) for a in feeds.values()))
    results = result if isinstance(result, tuple) else (result,)
    return [r.numpy() for r in results]


def _check(model: onnx.ModelProto, batch: int = 3) -> nn.Module:
    onnx.checker.check_model(model, full_check=True)
    feeds = _feeds(model, batch)
    expected = _reference(model, feeds)
    module = import_onnx(model)
    got = _torch_outputs(module, feeds)
    assert len(got) == len(expected)
    for e, g in zip(expected, got, strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, atol=ATOL, rtol=0)
    return module


def _recurrent_modules(module: nn.Module) -> list[OnnxRecurrent]:
    return [m for m in module.modules() if isinstance(m, OnnxRecurrent)]


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("initial_states", [False, True])
def test_rnn_matches_onnxruntime(
    op: str, direction: str, layout: int, initial_states: bool
) -> None:
    extra = {"linear_before_reset": 1} if op == "GRU" else {}
    outputs = ("Y", "Y_h", "Y_c") if op == "LSTM" else ("Y", "Y_h")
    model = _rnn_model(
        op,
        direction=direction,
        layout=layout,
        initial_states=initial_states,
        outputs=outputs,
        seed=sum(map(ord, f"{op}{direction}{layout}")),
        **extra,
    )
    module = _check(model)
    (recurrent,) = _recurrent_modules(module)
    rnn_class = nn.LSTM if op == "LSTM" else nn.GRU
    assert type(recurrent.rnn) is rnn_class
    assert recurrent.rnn.bidirectional == (direction == "bidirectional")
    assert recurrent.rnn.batch_first == (layout == 1)
    params = dict(module.named_parameters())
    dirs = 2 if direction == "bidirectional" else 1
    assert len(params) == 4 * dirs
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in params.values())
    assert all(".rnn." in name for name in params)
    # The weights live in the nn.LSTM/nn.GRU only: no copy of W/R/B as buffers.
    assert not [name for name, _ in module.named_buffers()]


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("opset", [7, 17])
def test_other_opsets(op: str, opset: int) -> None:
    extra = {"linear_before_reset": 1} if op == "GRU" else {}
    _check(_rnn_model(op, direction="bidirectional", outputs=("Y", "Y_h"), opset=opset, **extra))


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_rnn_without_bias_has_no_bias_parameters(op: str) -> None:
    extra = {"linear_before_reset": 1} if op == "GRU" else {}
    module = _check(_rnn_model(op, with_bias=False, outputs=("Y", "Y_h"), **extra))
    (recurrent,) = _recurrent_modules(module)
    assert recurrent.rnn.bias is False
    assert sorted(n.rsplit(".", 1)[1] for n, _ in module.named_parameters()) == [
        "weight_hh_l0",
        "weight_ih_l0",
    ]


@pytest.mark.parametrize(
    "outputs", [("Y",), ("", "Y_h"), ("", "", "Y_c"), ("Y", "", "Y_c"), ("", "Y_h", "Y_c")]
)
def test_lstm_with_some_outputs_only(outputs: tuple[str, ...]) -> None:
    _check(_rnn_model("LSTM", direction="bidirectional", initial_states=True, outputs=outputs))


def test_lstm_gate_order_is_i_f_g_o_in_torch() -> None:
    model = _rnn_model("LSTM", outputs=("Y",))
    w = numpy_helper.to_array(model.graph.initializer[0])[0]  # ONNX (i, o, f, c) blocks
    (recurrent,) = _recurrent_modules(import_onnx(model))
    i, o, f, c = np.split(w, 4)
    expected = np.concatenate([i, f, c, o])
    np.testing.assert_array_equal(recurrent.rnn.weight_ih_l0.detach().numpy(), expected)


def test_gru_gate_order_is_r_z_n_in_torch() -> None:
    model = _rnn_model("GRU", outputs=("Y",), linear_before_reset=1)
    r_onnx = numpy_helper.to_array(model.graph.initializer[1])[0]  # ONNX (z, r, h) blocks
    (recurrent,) = _recurrent_modules(import_onnx(model))
    z, r, h = np.split(r_onnx, 3)
    expected = np.concatenate([r, z, h])
    np.testing.assert_array_equal(recurrent.rnn.weight_hh_l0.detach().numpy(), expected)


def test_constant_full_sequence_lens_and_zero_peepholes_are_accepted() -> None:
    lengths = numpy_helper.from_array(np.full(3, SEQ, np.int32), "lens")
    peepholes = numpy_helper.from_array(np.zeros((1, 3 * HIDDEN), np.float32), "P")
    model = _rnn_model("LSTM", outputs=("Y", "Y_h"), extra_inputs={4: lengths, 7: peepholes})
    # Give x a static shape so the sequence length is known at import.
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value, dims[1].dim_value = SEQ, 3
    _check(model)


def test_zero_initial_states_are_dropped() -> None:
    zeros = numpy_helper.from_array(np.zeros((1, 1, HIDDEN), np.float32), "zeros")
    shape = numpy_helper.from_array(np.array([1, 3, HIDDEN], np.int64), "state_shape")
    model = _rnn_model("LSTM", outputs=("Y", "Y_h"))
    graph = model.graph
    graph.initializer.extend([zeros, shape])
    graph.node.insert(0, helper.make_node("Expand", ["zeros", "state_shape"], ["h0"]))
    lstm = graph.node[1]
    lstm.input.extend(["", "h0", "h0"])
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_value = 3
    module = _check(model)
    assert [n.op for n in module.graph.nodes if n.op == "call_module"] == ["call_module"] * 3
    assert not [name for name, _ in module.named_buffers()]


@pytest.mark.parametrize(
    ("op", "attrs", "reason"),
    [
        ("LSTM", {"clip": 3.0}, "clip"),
        ("LSTM", {"input_forget": 1}, "input_forget=1"),
        ("LSTM", {"activations": ["Sigmoid", "Relu", "Tanh"]}, "activations"),
        ("GRU", {"linear_before_reset": 1, "activations": ["HardSigmoid", "Tanh"]}, "activations"),
    ],
)
def test_unsupported_attributes_are_refused_with_the_reason(
    op: str, attrs: dict[str, object], reason: str
) -> None:
    model = _rnn_model(op, outputs=("Y",), **attrs)
    with pytest.raises(Tf2TorchError, match=reason):
        import_onnx(model)


def test_partial_sequence_lens_and_peepholes_are_refused() -> None:
    lengths = numpy_helper.from_array(np.array([SEQ, 2, SEQ], np.int32), "lens")
    with pytest.raises(Tf2TorchError, match="sequence_lens"):
        import_onnx(_rnn_model("LSTM", outputs=("Y",), extra_inputs={4: lengths}))
    peepholes = numpy_helper.from_array(np.ones((1, 3 * HIDDEN), np.float32), "P")
    with pytest.raises(Tf2TorchError, match="peephole"):
        import_onnx(_rnn_model("LSTM", outputs=("Y",), extra_inputs={7: peepholes}))


@pytest.mark.parametrize(("op", "layout"), [("LSTM", 0), ("GRU", 1)])
def test_export_with_dynamic_batch(op: str, layout: int, tmp_path: Path) -> None:
    extra = {"linear_before_reset": 1} if op == "GRU" else {}
    model = _rnn_model(
        op,
        direction="bidirectional",
        layout=layout,
        initial_states=True,
        outputs=("Y", "Y_h"),
        **extra,
    )
    module = import_onnx(model)
    feeds = _feeds(model, batch=3)
    args = tuple(torch.from_numpy(a) for a in feeds.values())
    batch = torch.export.Dim("batch")
    batch_axis = 1 if layout == 0 else 0
    dynamic = tuple({batch_axis: batch} for _ in args)
    program = torch.export.export(module, args, dynamic_shapes=dynamic)
    path = tmp_path / "rnn.pt2"
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    other = _feeds(model, batch=5, seed=7)
    expected = _reference(model, other)
    got = _torch_outputs(loaded, other)
    for e, g in zip(expected, got, strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, atol=ATOL, rtol=0)
    assert set(program.graph_signature.parameters) == {n for n, _ in module.named_parameters()}


@pytest.mark.parametrize(("batch_axis", "time_axis"), [(1, 0), (0, 1)])
def test_reverse_sequence_matches_onnxruntime(batch_axis: int, time_axis: int) -> None:
    shape = [0, 0, 3]
    shape[batch_axis], shape[time_axis] = 4, SEQ
    node = helper.make_node(
        "ReverseSequence", ["x", "lens"], ["y"], batch_axis=batch_axis, time_axis=time_axis
    )
    graph = helper.make_graph(
        [node],
        "rev",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("lens", TensorProto.INT64, [4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    lens = np.array([SEQ, 1, 3, 0 + 2], np.int64)
    (expected,) = _ort(model, {"x": x, "lens": lens})
    module = import_onnx(model)
    assert isinstance(next(iter(module.children())), ReverseSequence)
    got = module(torch.from_numpy(x), torch.from_numpy(lens)).numpy()
    np.testing.assert_array_equal(got, expected)


# --- Keras models through TensorFlow (subprocesses) -------------------------------------

_FACTORIES = textwrap.dedent(
    '''
    import keras
    import numpy as np
    from keras import layers


    def _seeded(model):
        rng = np.random.default_rng(0)
        for w in model.weights:
            w.assign(rng.normal(0, 0.4, w.shape).astype("float32"))
        return model


    def lstm_stack():
        """LSTM(return_sequences) -> Bidirectional(LSTM) -> Dense."""
        x = keras.Input((7, 5), name="sequence")
        h = layers.LSTM(12, return_sequences=True)(x)
        h = layers.Bidirectional(layers.LSTM(6))(h)
        return _seeded(keras.Model(x, layers.Dense(3)(h)))


    def gru_stack():
        """GRU(return_sequences) -> Bidirectional(GRU) -> Dense (reset_after=True)."""
        x = keras.Input((7, 5), name="sequence")
        h = layers.GRU(12, return_sequences=True)(x)
        h = layers.Bidirectional(layers.GRU(6))(h)
        return _seeded(keras.Model(x, layers.Dense(3)(h)))


    def gru_no_reset_after():
        x = keras.Input((7, 5), name="sequence")
        return _seeded(keras.Model(x, layers.GRU(8, reset_after=False)(x)))


    def gru_two_units():
        """GRU(2): its (2, 3H) bias has the shape of its (H, 3H) recurrent kernel."""
        x = keras.Input((7, 5), name="sequence")
        return _seeded(keras.Model(x, layers.GRU(2)(x)))
    '''
)

_EXPORT = textwrap.dedent(
    """
    import sys
    import numpy as np, onnx, tensorflow as tf, tf2onnx
    sys.path.insert(0, sys.argv[1])
    import factories
    for name in sys.argv[2:]:
        model = getattr(factories, name)()
        spec = [tf.TensorSpec((None, 7, 5), tf.float32, name="sequence")]
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
        proto.ir_version = 10
        onnx.save(proto, f"{sys.argv[1]}/{name}.onnx")
        x = np.random.default_rng(0).standard_normal((3, 7, 5)).astype("float32")
        np.savez(f"{sys.argv[1]}/{name}.npz", x=x, y=np.asarray(model(x)))
    """
)


@pytest.fixture(scope="module")
def keras_rnn_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keras_rnn")
    (directory / "factories.py").write_text(_FACTORIES)
    return directory


@pytest.fixture(scope="module")
def keras_gru_onnx(keras_rnn_dir: Path) -> Path:
    """tf2onnx exports of the GRU factories (one TensorFlow subprocess)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _EXPORT,
            str(keras_rnn_dir),
            "gru_stack",
            "gru_no_reset_after",
            "gru_two_units",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return keras_rnn_dir


def test_keras_gru_loops_become_gru_nodes(keras_gru_onnx: Path) -> None:
    model = onnx.load(keras_gru_onnx / "gru_stack.onnx")
    data = np.load(keras_gru_onnx / "gru_stack.npz")
    assert [n.op_type for n in model.graph.node].count("Loop") == 3  # tf2onnx leaves loops
    result = KerasGruLoopPass().apply(model)
    assert result.changes == 3
    ops = [n.op_type for n in result.model.graph.node]
    assert "Loop" not in ops and ops.count("GRU") == 3
    onnx.checker.check_model(result.model, full_check=True)
    (after,) = _ort(result.model, {"sequence": data["x"]})
    np.testing.assert_allclose(after, data["y"], atol=1e-5, rtol=0)
    module = import_onnx(result.model)
    assert len([m for m in module.modules() if isinstance(m, nn.GRU)]) == 3
    got = module(torch.from_numpy(data["x"])).detach().numpy()
    np.testing.assert_allclose(got, data["y"], atol=1e-5, rtol=0)


def test_keras_gru_with_two_units_is_not_confused_by_its_bias(keras_gru_onnx: Path) -> None:
    """Found by the fuzzer: with H = 2 the bias and the recurrent kernel share a shape."""
    model = onnx.load(keras_gru_onnx / "gru_two_units.onnx")
    data = np.load(keras_gru_onnx / "gru_two_units.npz")
    result = KerasGruLoopPass().apply(model)
    assert result.changes == 1
    module = import_onnx(result.model)
    got = module(torch.from_numpy(data["x"])).detach().numpy()
    np.testing.assert_allclose(got, data["y"], atol=1e-5, rtol=0)


def test_keras_gru_without_reset_after_becomes_a_reset_before_gru(keras_gru_onnx: Path) -> None:
    # Keras GRU(reset_after=False) is ONNX linear_before_reset=0, which nn.GRU cannot express:
    # it imports as GruResetBefore (the GRU in plain torch ops) and matches Keras.
    model = onnx.load(keras_gru_onnx / "gru_no_reset_after.onnx")
    data = np.load(keras_gru_onnx / "gru_no_reset_after.npz")
    result = KerasGruLoopPass().apply(model)
    assert result.changes == 1
    (gru,) = [n for n in result.model.graph.node if n.op_type == "GRU"]
    assert helper.get_attribute_value(gru.attribute[-1]) == 0  # linear_before_reset
    (after,) = _ort(result.model, {"sequence": data["x"]})
    np.testing.assert_allclose(after, data["y"], atol=1e-5, rtol=0)
    module = import_onnx(result.model)
    assert any(isinstance(m, GruResetBefore) for m in module.modules())
    got = module(torch.from_numpy(data["x"])).detach().numpy()
    np.testing.assert_allclose(got, data["y"], atol=1e-5, rtol=0)


def test_pass_leaves_other_loops_alone() -> None:
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2]),
        ],
        [numpy_helper.from_array(np.ones(2, np.float32), "one")],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "", "x"], ["y"], body=body)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array(3, np.int64), "n")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    assert KerasGruLoopPass().apply(model).changes == 0


def _convert_options(tmp_path: Path) -> ConvertOptions:
    """Options that run the GRU pass (as a patch dir, unless it is a default pass already)."""
    if any(p.name == KerasGruLoopPass.name for p in default_passes()):
        return ConvertOptions()
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "keras_gru_loop.py").write_text(
        "from pipeline.passes.keras_gru_loop import KerasGruLoopPass\nPATCH = KerasGruLoopPass()\n"
    )
    return ConvertOptions(patches=[patches])


def test_keras_lstm_end_to_end(keras_rnn_dir: Path, tmp_path: Path) -> None:
    result = pipeline.convert(f"{keras_rnn_dir / 'factories.py'}:lstm_stack", tmp_path / "run")
    failed = [c for c in result.report["comparisons"] if not c["pass"]]
    assert not failed, failed
    assert result.verdict == "pass", result.report["parameter_count"]
    model = onnx.load(tmp_path / "run" / "model.onnx")
    assert [n.op_type for n in model.graph.node].count("LSTM") == 2


def test_keras_gru_end_to_end(keras_rnn_dir: Path, tmp_path: Path) -> None:
    result = pipeline.convert(
        f"{keras_rnn_dir / 'factories.py'}:gru_stack", tmp_path / "run", _convert_options(tmp_path)
    )
    failed = [c for c in result.report["comparisons"] if not c["pass"]]
    assert not failed, failed
    assert result.verdict == "pass", result.report["parameter_count"]
