"""Keras layers TensorFlow runs as a ``while`` loop (an ONNX ``Loop``), end to end.

Masked LSTM/GRU/SimpleRNN, ``ConvLSTM1D/2D/3D``, a custom ``keras.layers.RNN`` cell and a GRU
over a run-time sequence length: each must pass three ways (TF, ONNX Runtime, the generated
torch code) with every Keras variable one trainable parameter and every gradient checked through
the loop.  Masks have zeros in the middle and at the end, so Keras's semantics (a masked step
carries the state and the last output forward) are what is compared, not only trailing
padding.  TensorFlow runs in the pipeline's worker; the factories live in a file the test
writes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import pipeline
from pipeline.api import ConvertOptions
from pipeline.to_torch.codegen import load_generated

_FACTORIES = textwrap.dedent(
    '''
    import numpy as np
    import keras
    from keras import layers


    def _seeded(model, seed=0):
        rng = np.random.default_rng(seed)
        for variable in model.weights:  # biases too: a zero bias hides a misplaced one
            variable.assign(rng.normal(0, 0.4, variable.shape).astype("float32"))
        return model


    def _tokens_model(rnn):
        tokens = keras.Input((7,), dtype="int32", name="tokens")
        x = layers.Embedding(20, 6, mask_zero=True, name="emb")(tokens)
        x = rnn(x)
        return _seeded(keras.Model(tokens, layers.Dense(3, name="head")(x)))


    def lstm_masked():
        return _tokens_model(layers.LSTM(5, name="lstm"))


    def lstm_masked_sequences():
        return _tokens_model(layers.LSTM(5, return_sequences=True, name="lstm"))


    def gru_masked():
        return _tokens_model(layers.GRU(5, name="gru"))


    def simple_rnn_masking():
        x_in = keras.Input((7, 4), name="x")
        x = layers.Masking(0.0, name="masking")(x_in)
        x = layers.SimpleRNN(5, return_sequences=True, name="rnn")(x)
        return _seeded(keras.Model(x_in, layers.Dense(3, name="head")(x)))


    def conv_lstm_2d():
        x_in = keras.Input((3, 5, 5, 2), name="frames")
        x = layers.ConvLSTM2D(3, 3, padding="same", name="conv_lstm")(x_in)
        x = layers.Flatten(name="flatten")(x)
        return _seeded(keras.Model(x_in, layers.Dense(2, name="head")(x)))


    def conv_lstm_1d():
        x_in = keras.Input((3, 7, 2), name="frames")
        x = layers.ConvLSTM1D(
            3, 3, strides=2, padding="valid", return_sequences=True, name="conv_lstm"
        )(x_in)
        x = layers.Flatten(name="flatten")(x)
        return _seeded(keras.Model(x_in, layers.Dense(2, name="head")(x)))


    def conv_lstm_3d():
        x_in = keras.Input((2, 4, 4, 3, 2), name="frames")
        x = layers.ConvLSTM3D(2, (2, 3, 3), padding="same", name="conv_lstm")(x_in)
        x = layers.Flatten(name="flatten")(x)
        return _seeded(keras.Model(x_in, layers.Dense(2, name="head")(x)))


    class MinimalCell(layers.Layer):
        """h' = tanh(x W + (h * gate) U + b): a cell of its own, weights from add_weight."""

        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.state_size = units

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
            self.recurrent = self.add_weight(shape=(self.units, self.units), name="recurrent")
            self.gate = self.add_weight(shape=(self.units,), name="gate")
            self.bias = self.add_weight(shape=(self.units,), name="bias")

        def call(self, inputs, states):
            h = states[0]
            out = keras.ops.tanh(
                keras.ops.matmul(inputs, self.kernel)
                + keras.ops.matmul(h * self.gate, self.recurrent)
                + self.bias
            )
            return out, [out]


    def custom_cell():
        x_in = keras.Input((6, 4), name="x")
        x = layers.RNN(MinimalCell(5, name="cell"), name="rnn")(x_in)
        return _seeded(keras.Model(x_in, layers.Dense(3, name="head")(x)))


    def gru_dynamic_length():
        x_in = keras.Input((None, 4), name="x")
        return _seeded(keras.Model(x_in, layers.GRU(5, name="gru")(x_in)))
    '''
)


@pytest.fixture(scope="module")
def keras_loops_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the factories and the comparison inputs."""
    directory = tmp_path_factory.mktemp("keras_loops")
    (directory / "factories.py").write_text(_FACTORIES)
    # Padding in the middle and at the end of each sequence (0 is the mask token).
    tokens = np.array([[3, 0, 5, 7, 0, 2, 0], [0, 4, 9, 0, 0, 1, 6]], np.int32)
    np.savez(directory / "tokens.npz", tokens=tokens)
    x = np.random.default_rng(3).normal(size=(2, 7, 4)).astype(np.float32)
    x[0, [2, 5, 6]] = 0.0  # masked steps (every feature 0) in the middle and at the end
    x[1, [0, 3]] = 0.0
    np.savez(directory / "masked_x.npz", x=x)
    return directory


def _convert(directory: Path, factory: str, tmp_path: Path, inputs: str = "") -> Any:
    options = ConvertOptions(inputs=directory / inputs) if inputs else ConvertOptions()
    return pipeline.convert(f"{directory / 'factories.py'}:{factory}", tmp_path / "run", options)


def _assert_full_pass(result: Any, run_dir: Path) -> None:
    """Three-way pass, every variable one trainable parameter, every gradient checked, and
    the model really went through a Loop (written as a ``for`` loop)."""
    report = result.report
    failed = [c for c in report["comparisons"] if not c["pass"]]
    assert not failed, failed
    assert report["parameter_count"]["status"] == "full", report["parameter_count"]
    trainable = [p for p in report["parameters"] if p["tf_name"] and p["trainable"]]
    gradients = report["gradients"]
    assert report["gradient_check"]["status"] == "checked", report["gradient_check"]
    assert len(gradients) == len(trainable) and all(g["pass"] for g in gradients), gradients
    assert result.verdict == "pass"
    ops = [n.op_type for n in onnx.load(run_dir / "model.onnx").graph.node]
    assert "Loop" in ops
    assert "for step in range(" in (run_dir / "torch_model" / "model.py").read_text()


def test_lstm_after_masked_embedding(keras_loops_dir: Path, tmp_path: Path) -> None:
    result = _convert(keras_loops_dir, "lstm_masked", tmp_path, "tokens.npz")
    _assert_full_pass(result, tmp_path / "run")
    # The Keras kernels read inside the loop are parameters at their Keras paths.
    names = {p["tf_name"]: p["torch_name"] for p in result.report["parameters"]}
    assert names["lstm/lstm_cell/kernel"] == "lstm.lstm_cell.kernel"


def test_gru_over_run_time_length(keras_loops_dir: Path, tmp_path: Path) -> None:
    """The loop runs ``x.shape[1]`` steps, with that length passed in as a loop value: the
    ``keras_gru_loop`` pass still makes it an ONNX GRU, so the code is an ``nn.GRU``, which
    runs any length (checked against ONNX Runtime on the raw Loop at two other lengths).
    model.pt2 has the length static (reported): torch.export specializes the sequence length
    of every ``nn.GRU``/``nn.LSTM`` (torch 2.14)."""
    result = _convert(keras_loops_dir, "gru_dynamic_length", tmp_path)
    run_dir = tmp_path / "run"
    report = result.report
    assert result.verdict == "pass", [c for c in report["comparisons"] if not c["pass"]]
    assert report["parameter_count"]["status"] == "full", report["parameter_count"]
    trainable = [p for p in report["parameters"] if p["tf_name"] and p["trainable"]]
    assert len(report["gradients"]) == len(trainable)
    assert all(g["pass"] for g in report["gradients"]), report["gradients"]
    ops = [n.op_type for n in onnx.load(run_dir / "model.onnx").graph.node]
    assert "GRU" in ops and "Loop" not in ops
    assert "nn.GRU(" in (run_dir / "torch_model" / "model.py").read_text()
    assert [(d["input"], d["axis"]) for d in report["static_dims"]] == [("x", 1)]

    raw = ort.InferenceSession(str(run_dir / "model.raw.onnx"), providers=["CPUExecutionProvider"])
    module = load_generated(run_dir / "torch_model")
    for length in (3, 11):
        x = np.random.default_rng(length).normal(size=(2, length, 4)).astype(np.float32)
        [expected] = raw.run(None, {"x": x})
        with torch.no_grad():
            got = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("factory", "inputs"),
    [
        ("lstm_masked_sequences", "tokens.npz"),
        # Keras's first step peeled before the loop (read only for its shape) goes
        # (pipeline/passes/shape_only.py), and with it the bias rows tf2onnx folded apart.
        ("gru_masked", "tokens.npz"),
        ("simple_rnn_masking", "masked_x.npz"),
        # The body's Conv takes its kernel as a loop input (ops/weighted.py RunTimeWeightConv).
        ("conv_lstm_2d", ""),
        ("conv_lstm_1d", ""),
        ("conv_lstm_3d", ""),
        ("custom_cell", ""),
    ],
)
def test_keras_loop_end_to_end(
    keras_loops_dir: Path, tmp_path: Path, factory: str, inputs: str
) -> None:
    _assert_full_pass(_convert(keras_loops_dir, factory, tmp_path, inputs), tmp_path / "run")
