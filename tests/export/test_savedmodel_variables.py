"""A SavedModel that Keras does not load (a ``tf.Module``, a Keras 3 ``model.export()``
artifact) converts with every variable its serving signature reads as a named torch tensor of
its own, by construction: trainable ones parameters whose gradients are checked, the others
buffers.  (It used to arrive frozen: ``parameters: 0 rows`` and no gradient checked.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pipeline
from pipeline.export.worker.frozen_export import FROZEN_SAVED_MODEL_ROUTE
from pipeline.export.worker.signature_export import SIGNATURE_ROUTE

CASES = Path(__file__).with_name("saved_model_cases.py")


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both SavedModels of saved_model_cases.py (written with TF in a subprocess)."""
    root = tmp_path_factory.mktemp("saved_models")
    subprocess.run(
        [sys.executable, str(CASES), str(root)], check=True, capture_output=True, timeout=300
    )
    return root


def _assert_variables_are_parameters(
    result: Any, trainable: set[str], frozen: set[str]
) -> dict[str, dict[str, Any]]:
    """The run passes in full, each named variable has its own torch tensor (a parameter
    where TF trains it, else a buffer or a frozen parameter), and every trainable one's
    gradient agrees."""
    report = result.report
    assert result.verdict == "pass", report["parameter_count"]
    count = report["parameter_count"]
    assert count["status"] == "full" and count["export_route"] == SIGNATURE_ROUTE, count
    assert report["inference_only"] is False
    rows = {r["tf_name"]: r for r in report["parameters"] if r["tf_name"]}
    assert set(rows) == trainable | frozen
    parameters = dict(result.module.named_parameters())
    buffers = dict(result.module.named_buffers())
    for name in trainable:
        assert rows[name]["trainable"] and rows[name]["torch_name"] in parameters, rows[name]
    for name in frozen:
        torch_name = rows[name]["torch_name"]
        assert not rows[name]["trainable"], rows[name]
        held = buffers.get(torch_name, parameters.get(torch_name))
        assert held is not None and not held.requires_grad, rows[name]
    checked = {g["tf_name"] for g in report["gradients"] if g["checked"]}
    assert checked == trainable
    assert all(g["pass"] for g in report["gradients"])
    return rows


def test_tf_module_variables_are_named_parameters(saved_models: Path, tmp_path: Path) -> None:
    """Two sub-modules both name their variables ``kernel`` and ``bias``: each is named by its
    path in the SavedModel's object graph."""
    result = pipeline.convert(saved_models / "module", tmp_path / "run")
    rows = _assert_variables_are_parameters(
        result,
        {"encoder/kernel", "encoder/bias", "decoder/kernel", "decoder/bias"},
        {"scale"},
    )
    assert rows["encoder/kernel"]["shape"] == [5, 4]  # a Linear's (out, in)
    assert rows["encoder/kernel"]["transform"] == "transpose(1,0)"


def test_keras_export_keeps_batchnorm_and_lstm_as_modules(
    saved_models: Path, tmp_path: Path
) -> None:
    """``model.export()``: the variables keep their Keras paths, BatchNorm is not folded into
    the convolution (its moving statistics are buffers), and the LSTM's while loop, whose
    weights are fingerprinted constants, is fused into an ``nn.LSTM``."""
    result = pipeline.convert(saved_models / "export", tmp_path / "run")
    lstm = {f"lstm/lstm_cell/{name}" for name in ("kernel", "recurrent_kernel", "bias")}
    rows = _assert_variables_are_parameters(
        result,
        {"conv/kernel", "conv/bias", "bn/gamma", "bn/beta", "head/kernel", "head/bias"} | lstm,
        {"bn/moving_mean", "bn/moving_variance"},
    )
    assert rows["lstm/lstm_cell/kernel"]["torch_name"].endswith("weight_ih_l0")
    assert rows["lstm/lstm_cell/recurrent_kernel"]["torch_name"].endswith("weight_hh_l0")
    assert rows["bn/moving_variance"]["torch_name"].endswith("running_var")
    assert rows["bn/moving_variance"]["torch_name"] in dict(result.module.named_buffers())


def test_frozen_fallback_says_frozen_never_absent(saved_models: Path) -> None:
    """The fallback where variables cannot be graph inputs (run here directly on the Keras
    export, in a TF subprocess): the frozen graph's route is ``frozen``, every variable TF
    folded away (BatchNorm's) is recorded as *folded* with the reason (so the run is
    inference-only, see pipeline.api), and none as lost or missing."""
    script = f"""
import json
import tensorflow as tf
from pipeline.core import provenance
from pipeline.core.signature import TensorSpec
from pipeline.export.worker.frozen_export import export_saved_model_frozen
from pipeline.export.worker.saved_model import saved_model_variables
sm = tf.saved_model.load({str(saved_models / "export")!r})
signature = sm.signatures["serving_default"]
pairs = [(v.path, v.variable) for v in saved_model_variables(sm, signature)]
specs = [TensorSpec("image", "float32", (None, 8, 8, 3))]
proto = export_saved_model_frozen(sm, specs, ["output_0"], 17, pairs, "test: planted")
print("RECORD", json.dumps(provenance.read(proto).to_json()))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RECORD ")]
    assert lines, done.stderr[-3000:]
    record = json.loads(lines[0].removeprefix("RECORD "))
    assert record["route"] == FROZEN_SAVED_MODEL_ROUTE
    assert not record["lost"]
    assert {"bn/gamma", "bn/moving_variance"} <= set(record["folded"]), record["folded"]
    assert all("test: planted" in why for why in record["folded"].values())
    held = {p["variable"] for parts in record["initializers"].values() for p in parts}
    assert held | set(record["folded"]) >= {"conv/kernel", "head/kernel", "head/bias"}
