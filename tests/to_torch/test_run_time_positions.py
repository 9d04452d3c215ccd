"""Positions sliced and ranged by the run-time sequence length (keras-hub's position
embedding and rotary embedding) get a code form that reads ``x.shape``, and stay dynamic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import pipeline
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.torch_runner import run_torch

POSITIONS_MODEL = """
import keras
import numpy as np
from keras import layers, ops


class Positions(layers.Layer):
    # keras-hub's PositionEmbedding: ops.slice(table, (0, 0), (length, -1)), where tf2onnx
    # writes the end as begin + size + (size == -1) * INT_MAX.
    def build(self, input_shape):
        self.table = self.add_weight(shape=(32, input_shape[-1]), name="table")

    def call(self, x):
        length = ops.shape(x)[1]
        return x + ops.slice(self.table, (0, 0), (length, -1))[None]


class Rotary(layers.Layer):
    # keras-hub's RotaryEmbedding: float positions from ops.arange over the length.
    def call(self, x):
        positions = ops.arange(ops.shape(x)[1], dtype="float32")
        angles = positions[:, None] * ops.convert_to_tensor(np.linspace(0.1, 1.0, 8, dtype="float32"))
        return x * ops.cos(angles)[None] + ops.flip(x, axis=-1) * ops.sin(angles)[None]


def model():
    keras.utils.set_random_seed(5)
    x = keras.Input((None, 8), name="x")
    h = Positions(name="positions")(x)
    h = Rotary(name="rotary")(h)
    return keras.Model(x, layers.Dense(4, name="head")(h), name="positions")
"""


@pytest.fixture(scope="module")
def positions_run(tmp_path_factory: pytest.TempPathFactory) -> pipeline.ConversionResult:
    root = tmp_path_factory.mktemp("positions")
    (root / "positions.py").write_text(POSITIONS_MODEL)
    return pipeline.convert(f"{root / 'positions.py'}:model", root / "run")


def test_positions_convert_in_full(positions_run: pipeline.ConversionResult) -> None:
    report = positions_run.report
    assert positions_run.verdict == "pass", report["comparisons"]
    assert report["static_dims"] == []
    assert report["parameter_count"]["status"] == "full"
    source = (positions_run.run_dir / "torch_model" / "model.py").read_text()
    assert "torch.arange(0, x.shape[1]" in source
    assert ".item()" not in source


@pytest.mark.parametrize("length", [3, 17])
def test_other_lengths_agree_with_onnx_runtime(
    positions_run: pipeline.ConversionResult, length: int
) -> None:
    run: Path = positions_run.run_dir
    x = np.random.default_rng(length).normal(size=(2, length, 8)).astype(np.float32)
    expected = OrtRunner(onnx.load(str(run / "model.onnx"))).run({"x": x})["head"]
    got = run_torch(pipeline.load_torch(run), {"x": x}, ["x"], ["head"])["head"]
    assert got.shape == (2, length, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
