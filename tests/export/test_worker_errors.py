"""A failed export says why in one line and keeps the TF worker's log, and says where.

Real TF worker: a Keras model that needs a static batch size cannot be traced for export
(tf2onnx traces with a dynamic batch), which TF reports as a multi-line ``in user code``
error whose cause is on its last lines.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import pipeline
from pipeline.core.errors import OnnxExportError
from pipeline.core.signature import TensorSpec

REPO = Path(__file__).resolve().parents[2]

STATIC_BATCH = """
import keras
import numpy as np


class StaticBatch(keras.Model):
    def call(self, x):
        if x.shape[0] is None:
            raise ValueError(f"StaticBatch needs a static batch size, got shape {x.shape}")
        return keras.ops.reshape(x, (x.shape[0] * 4,))


def static_batch():
    model = StaticBatch()
    model(np.zeros((2, 4), "float32"))
    return model
"""
CAUSE = "StaticBatch needs a static batch size, got shape (None, 4)"


def test_failed_export_names_the_cause_and_keeps_the_worker_log(tmp_path: Path) -> None:
    factory = tmp_path / "static_batch.py"
    factory.write_text(STATIC_BATCH)
    out = tmp_path / "run"
    options = pipeline.ConvertOptions(input_specs=[TensorSpec("x", "float32", (None, 4))])
    with pytest.raises(OnnxExportError) as caught:
        pipeline.convert(f"{factory}:static_batch", out, options)
    message = str(caught.value)
    assert "\n" not in message
    # The cause, not TF's heading ("ValueError: in user code:").
    assert f"tf2onnx could not export the model: ValueError: {CAUSE}" in message
    log = tmp_path / "run.failed" / "tf_worker.log"
    assert message.endswith(f"(worker log: {log})")
    assert not out.exists()  # a failed run leaves no run directory ...
    text = log.read_text()  # ... but its worker log, with TF's whole message
    assert "in user code" in text and CAUSE in text  # the whole TF error, not one line
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


def test_a_new_run_removes_the_log_an_earlier_failure_kept(tmp_path: Path) -> None:
    out = tmp_path / "run"
    stale = tmp_path / "run.failed" / "tf_worker.log"
    stale.parent.mkdir()
    stale.write_text("from an earlier failure\n")
    result = pipeline.convert(f"{REPO}/models/zoo.py:scale_layer_net", out)
    assert result.verdict == "pass"
    assert not stale.parent.exists()
    assert (out / "tf_worker.log").is_file()  # a successful run's log is in the run


PYTHON_LOOP = """
import keras
from keras import layers, ops


class StepByStep(layers.Layer):
    # RWKV-7's recurrence under TensorFlow: a Python loop over the run-time length.
    def call(self, x):
        total = x[:, 0] * 0.0
        for t in range(ops.shape(x)[1]):
            total = total + x[:, t]
        return total

    def compute_output_spec(self, x):
        return keras.KerasTensor((x.shape[0], x.shape[2]), dtype=x.dtype)


def looped():
    x = keras.Input((None, 4), name="x")
    return keras.Model(x, StepByStep(name="steps")(x))
"""


def test_when_both_export_routes_fail_the_first_cause_is_named(tmp_path: Path) -> None:
    factory = tmp_path / "looped.py"
    factory.write_text(PYTHON_LOOP)
    with pytest.raises(OnnxExportError) as caught:
        pipeline.convert(f"{factory}:looped", tmp_path / "run")
    message = str(caught.value)
    cause = message.split("tf2onnx could not export the model: ", 1)[1]
    assert cause.startswith("TypeError:") and "SymbolicTensor" in cause, message
    # Not only the fallback's own failure (which for a dict-input model is an unrelated
    # "Received: inputs=[...]" about input order).
    assert "\n" not in message
