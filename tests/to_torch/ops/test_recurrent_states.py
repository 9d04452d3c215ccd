"""LSTM/GRU read for their final states (``Y_h``, ``Y_c``): the code form in model.py,
against onnxruntime (layout 0) or the imported module (layout 1, which ORT rejects)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from pipeline.to_torch.codegen import emit_package, load_generated
from pipeline.to_torch.importer import import_onnx
from tests.to_torch.ops.conftest import one_node_model

INPUT, HIDDEN, SEQ, BATCH = 4, 5, 6, 3
GATES = {"LSTM": 4, "GRU": 3}


def _node_and_inputs(
    op: str,
    outputs: Sequence[str],
    *,
    direction: str = "forward",
    states: Sequence[str] = (),
    layout: int = 0,
) -> tuple[object, list[np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(len(outputs) + len(states) + layout)
    dirs = 2 if direction == "bidirectional" else 1
    gates = GATES[op]
    weights = {
        "W": rng.normal(0, 0.5, (dirs, gates * HIDDEN, INPUT)).astype(np.float32),
        "R": rng.normal(0, 0.5, (dirs, gates * HIDDEN, HIDDEN)).astype(np.float32),
        "B": rng.normal(0, 0.5, (dirs, 2 * gates * HIDDEN)).astype(np.float32),
    }
    x_shape = (SEQ, BATCH, INPUT) if layout == 0 else (BATCH, SEQ, INPUT)
    state_shape = (dirs, BATCH, HIDDEN) if layout == 0 else (BATCH, dirs, HIDDEN)
    inputs = [rng.standard_normal(x_shape).astype(np.float32)]
    inputs += [rng.standard_normal(state_shape).astype(np.float32) for _ in states]
    names = ["x", "W", "R", "B", "", *(["h0", "c0"] if op == "LSTM" else ["h0"])]
    names = [n if n[:1] not in ("h", "c") or n in states else "" for n in names]
    while not names[-1]:
        names.pop()
    extra = {"linear_before_reset": 1} if op == "GRU" else {}
    if layout:
        extra["layout"] = layout
    named = [o or f"unused_{i}" for i, o in enumerate(outputs)]
    node = helper.make_node(op, names, named, hidden_size=HIDDEN, direction=direction, **extra)
    return node, inputs, weights


def _model(
    node: onnx.NodeProto,
    outputs: Sequence[str],
    inputs: Sequence[np.ndarray],
    weights: dict[str, np.ndarray],
) -> onnx.ModelProto:
    """The one-node model with the outputs named "" in ``outputs`` left out of the node."""
    model = one_node_model(node, inputs, [None] * len(outputs), weights)
    kept = [o for o in model.graph.output if o.name in outputs]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    model.graph.node[0].output[:] = list(outputs)
    onnx.checker.check_model(model)
    return model


def _generate(
    tmp_path: Path, model: onnx.ModelProto, inputs: Sequence[np.ndarray]
) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """The imported module, the generated one and its model.py source."""
    module = import_onnx(model).eval()
    package = emit_package(
        module,
        [],
        tmp_path,
        input_names=[v.name for v in model.graph.input],
        output_names=[v.name for v in model.graph.output],
        example_inputs=[torch.from_numpy(a) for a in inputs],
    )
    source = (Path(package.path) / "model.py").read_text()
    return module, load_generated(package.path), source


def _assert_close(got: object, expected: Sequence[np.ndarray]) -> None:
    results = got if isinstance(got, tuple) else (got,)
    assert len(results) == len(expected)
    for g, e in zip(results, expected, strict=True):
        assert isinstance(g, torch.Tensor)
        assert tuple(g.shape) == e.shape
        np.testing.assert_allclose(g.detach().numpy(), e, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("op", "outputs", "direction", "states", "form"),
    [
        ("LSTM", ("Y", "Y_h", "Y_c"), "forward", (), "recurrent_outputs("),
        ("LSTM", ("", "Y_h", "Y_c"), "forward", (), "(None, *self."),
        ("LSTM", ("", "Y_h"), "bidirectional", ("h0", "c0"), "(None, *self."),
        ("LSTM", ("Y", "", "Y_c"), "reverse", ("h0", "c0"), "reverse=True"),
        ("LSTM", ("Y", "Y_h", "Y_c"), "bidirectional", ("h0",), "torch.zeros_like(h0)"),
        ("LSTM", ("Y", "Y_h", "Y_c"), "forward", ("c0",), "torch.zeros_like(c0)"),
        ("LSTM", ("", "Y_h", "Y_c"), "reverse", ("c0",), "torch.zeros_like(c0)"),
        ("GRU", ("Y", "Y_h"), "bidirectional", ("h0",), "recurrent_outputs("),
        ("GRU", ("", "Y_h"), "reverse", (), "(None, self."),
    ],
)
def test_final_states_match_onnxruntime(
    tmp_path: Path,
    op: str,
    outputs: tuple[str, ...],
    direction: str,
    states: tuple[str, ...],
    form: str,
) -> None:
    node, inputs, weights = _node_and_inputs(op, outputs, direction=direction, states=states)
    model = _model(node, outputs, inputs, weights)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(
        None, {v.name: a for v, a in zip(model.graph.input, inputs, strict=True)}
    )
    module, generated, source = _generate(tmp_path, model, inputs)
    tensors = [torch.from_numpy(a) for a in inputs]
    with torch.no_grad():
        _assert_close(module(*tensors), expected)
        _assert_close(generated(*tensors), expected)
    assert form in source
    # Y unused in layout 0: the states as torch returns them, no helper.
    assert ("def recurrent_outputs(" in source) == bool(outputs[0])


@pytest.mark.parametrize(
    ("op", "outputs", "states"),
    [
        ("LSTM", ("Y", "Y_h", "Y_c"), ("h0", "c0")),
        ("LSTM", ("", "Y_h", "Y_c"), ()),
        ("GRU", ("Y", "Y_h"), ("h0",)),
    ],
)
def test_layout_1_states_match_the_imported_module(
    tmp_path: Path, op: str, outputs: tuple[str, ...], states: tuple[str, ...]
) -> None:
    node, inputs, weights = _node_and_inputs(
        op, outputs, direction="bidirectional", states=states, layout=1
    )
    module, generated, source = _generate(tmp_path, _model(node, outputs, inputs, weights), inputs)
    tensors = [torch.from_numpy(a) for a in inputs]
    assert "recurrent_outputs(" in source and "layout=1" in source
    assert ".transpose(0, 1).contiguous()" in source or not states
    with torch.no_grad():
        expected, got = module(*tensors), generated(*tensors)
    assert len(expected) == len(got) == len([o for o in outputs if o])
    for e, g in zip(expected, got, strict=True):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, atol=1e-6, rtol=0)


# --- a Keras encoder-decoder: final states as the next LSTM's initial state ----------------

_FACTORIES = '''
import keras
import numpy as np
from keras import layers


def encoder_decoder():
    """LSTM(return_state=True) encoder; its (h, c) start the decoder LSTM."""
    source = keras.Input((7, 5), name="source")
    target = keras.Input((6, 3), name="target")
    _, h, c = layers.LSTM(8, return_state=True, name="encoder")(source)
    decoded = layers.LSTM(8, return_sequences=True, name="decoder")(target, initial_state=[h, c])
    model = keras.Model([source, target], layers.Dense(2, name="head")(decoded))
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.normal(0, 0.4, w.shape).astype("float32"))
    return model
'''


def test_keras_encoder_states_feed_the_decoder(tmp_path: Path) -> None:
    """TensorFlow runs in the pipeline's worker process, not here."""
    import pipeline

    (tmp_path / "factories.py").write_text(_FACTORIES)
    result = pipeline.convert(f"{tmp_path / 'factories.py'}:encoder_decoder", tmp_path / "run")
    report = result.report
    comparisons = report["comparisons"]
    assert {c["pair"] for c in comparisons} == {"tf-ort", "tf-torch", "ort-torch"}
    assert all(c["pass"] for c in comparisons), comparisons
    assert result.verdict == "pass", report["parameter_count"]
    assert report["parameter_count"]["status"] == "full", report["parameter_count"]
    gradients = report["gradients"]
    assert gradients and all(g["pass"] for g in gradients), gradients
    trainable = [r for r in report["parameters"] if r["trainable"]]
    assert trainable and all(r["torch_name"] for r in trainable), trainable
    source = (tmp_path / "run" / "torch_model" / "model.py").read_text()
    assert "nn.LSTM(" in source
    assert "OnnxRecurrent" not in source
