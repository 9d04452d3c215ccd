"""End to end through the real stack: every zoo model TF -> ONNX -> PyTorch, three-way checked."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import pipeline
from pipeline.commands.demo import load_catalog
from pipeline.core import compare
from pipeline.core.errors import UnsupportedOpsError
from pipeline.core.ort_runner import OrtRunner
from pipeline.core.torch_runner import run_torch

REPO = Path(__file__).resolve().parents[1]
ZOO_FILE = REPO / "models" / "zoo.py"
ZOO = load_catalog().ZOO
PAIRS = {"tf-ort", "tf-torch", "ort-torch"}


def _params(expected: str) -> list[object]:
    return [
        pytest.param(name, marks=[pytest.mark.slow] if entry.slow else [], id=name)
        for name, entry in ZOO.items()
        if entry.expected == expected
    ]


def _options(name: str) -> pipeline.ConvertOptions:
    entry = ZOO[name]
    return pipeline.ConvertOptions(
        input_ranges=dict(entry.input_ranges), keep_batchnorm=entry.keep_batchnorm
    )


def assert_three_way_pass(result: pipeline.ConversionResult) -> None:
    """Every output has all three pairs, each passing, and the report says so."""
    report = result.report
    assert result.verdict == "pass" and report["verdict"] == "pass", report["comparisons"]
    outputs = {c["output"] for c in report["comparisons"]}
    assert outputs
    for output in outputs:
        pairs = {c["pair"] for c in report["comparisons"] if c["output"] == output}
        assert pairs == PAIRS
    for c in report["comparisons"]:
        assert c["pass"] is True and c["mismatch_fraction"] == 0.0, c
        assert c["cosine"] > 0.999999, c
    assert_trainable_with_tf_names(result)


def assert_trainable_with_tf_names(result: pipeline.ConversionResult) -> None:
    """Every TF variable is one torch tensor, the counts agree, and the gradients match."""
    report = result.report
    table = report["parameters"]
    # Every variable has its tensor; only a non-float state (Normalization's sample count)
    # stays a constant of the graph, and it never trains.
    constants = [r for r in table if not r["torch_name"]]
    assert table and all(r["transform"] == "constant" and not r["trainable"] for r in constants), (
        constants
    )
    count = report["parameter_count"]
    assert count["pass"] and count["tf_trainable"] == count["torch_trainable"] > 0, count
    loaded = pipeline.load_torch(result.run_dir)
    params = dict(loaded.named_parameters())
    named = {row["torch_name"] for row in table}
    # What trains is exactly the table's trainable rows; a parameter outside the table is a
    # constant the torch class keeps as a parameter (BatchNorm's ones without Keras's
    # ``scale``), frozen.
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable == {row["torch_name"] for row in table if row["trainable"]}
    assert all(not params[n].requires_grad for n in set(params) - named)
    for row in table:
        if row["tf_name"] is None:  # a torch-only slot (nn.LSTM's second bias)
            assert not row["trainable"] and row["transform"] == "zeros", row
            assert not params[row["torch_name"]].requires_grad
            assert not params[row["torch_name"]].detach().any(), row
            continue
        if row["torch_name"] is None:  # a non-float constant of the graph (checked above)
            continue
        # the name leads back to the TF layer: its top path part is in the torch name, or,
        # for a member of a block class (``blocks.2.expand.weight``), the attribute after
        # the block's index is in the TF name (``block_3_expand/kernel``), its layer number
        # moved behind as torchvision names them (``bn0`` for ``conv2_block1_0_bn/gamma``)
        layer = row["tf_name"].split("/")[0]
        parts = row["torch_name"].split(".")
        index = next((i for i, part in enumerate(parts[:-2]) if part.isdigit()), None)
        member = parts[index + 1] if index is not None else ""
        numbered = re.fullmatch(r"([A-Za-z_]\w*?)(\d+)", member)
        assert (
            layer in row["torch_name"]
            or (member and member in row["tf_name"])
            or (numbered and f"_{numbered[2]}_{numbered[1]}" in f"_{layer}")
        ), row
        if row["trainable"]:
            assert params[row["torch_name"]].requires_grad, row
            assert list(params[row["torch_name"]].shape) == row["shape"], row
    trainable = [row["tf_name"] for row in table if row["trainable"] and row["tf_name"]]
    gradients = {g["tf_name"]: g for g in report["gradients"]}
    assert set(gradients) == set(trainable)
    assert all(g["pass"] and g["max_abs"] is not None for g in gradients.values()), gradients


@pytest.mark.parametrize("name", _params("pass"))
def test_zoo_model_passes_three_ways(name: str, tmp_path: Path) -> None:
    run_dir = tmp_path / name
    result = pipeline.convert(f"{ZOO_FILE}:{name}", run_dir, _options(name))
    assert_three_way_pass(result)
    on_disk = json.loads((run_dir / "report.json").read_text())
    assert on_disk["verdict"] == "pass" and on_disk["schema"]
    for stage in ("export", "fixup", "import", "compare"):
        assert on_disk["stages"][stage]["status"] == "ok"
    assert on_disk["providers"]["onnxruntime"] == "CPUExecutionProvider"
    assert on_disk["providers"]["torch_device"] == "cpu"
    for artifact in on_disk["artifacts"].values():
        assert (run_dir / artifact).is_file(), artifact
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no staging left behind

    # The batch dimension is dynamic: the saved program and ONNX Runtime run at batch 1 and
    # at batch 7 (neither is the traced batch) and agree with each other and with the module
    # the comparison used on the rows they share.
    with np.load(run_dir / "golden.npz") as golden:
        inputs = {
            k.removeprefix("input/"): golden[k] for k in golden.files if k.startswith("input/")
        }
    specs = on_disk["inputs"]
    names = [s["name"] for s in specs]
    outputs = sorted({c["output"] for c in on_disk["comparisons"]})
    assert_dynamic_batch(run_dir, result.module, inputs, names, outputs)


def assert_dynamic_batch(
    run_dir: Path,
    module: torch.nn.Module,
    inputs: dict[str, np.ndarray],
    names: list[str],
    outputs: list[str],
) -> None:
    """The run's torch model and model.onnx run at batch 1 and 7 and agree with each other
    and with the converted module at the converted batch, within the run's own ort-torch
    tolerance (its float32 noise model: another batch size sums in another order)."""
    report = json.loads((run_dir / "report.json").read_text())
    tolerance = {
        c["output"]: (c["atol"], c["rtol"])
        for c in report["comparisons"]
        if c["pair"] == "ort-torch"
    }
    loaded = pipeline.load_torch(run_dir)
    ort = OrtRunner(onnx.load(str(run_dir / "model.onnx")))
    reference = run_torch(module, inputs, names, outputs)
    for batch in (1, 7):
        resized = {k: np.resize(v, (batch, *v.shape[1:])) for k, v in inputs.items()}
        got = run_torch(loaded, resized, names, outputs)
        ort_out = ort.run(resized)
        for o in outputs:
            assert got[o].shape[0] == batch, (o, got[o].shape)
            atol, rtol = tolerance[o]
            np.testing.assert_allclose(got[o], ort_out[o], rtol=rtol, atol=atol)
            rows = min(batch, len(reference[o]))
            np.testing.assert_allclose(got[o][:rows], reference[o][:rows], rtol=rtol, atol=atol)


def test_model_without_converter_fails_clearly(tmp_path: Path) -> None:
    """A determinant (ONNX ``Det``, which no converter handles) in an otherwise plain model:
    the error lists the op with its node, exit-2 style, and writes nothing."""
    factory = tmp_path / "det.py"
    factory.write_text(
        "import keras\n"
        "def det():\n"
        "    x = keras.Input((3, 3), name='m')\n"
        "    d = keras.layers.Lambda(lambda t: keras.ops.expand_dims(keras.ops.det(t), -1))(x)\n"
        "    return keras.Model(x, keras.layers.Dense(2, name='out')(d))\n"
    )
    out = tmp_path / "runs"
    with pytest.raises(UnsupportedOpsError) as caught:
        pipeline.convert(f"{factory}:det", out / "det")
    assert list(caught.value.ops) == ["Det"]
    assert all(nodes for nodes in caught.value.ops.values())
    assert "unsupported op type" in str(caught.value)
    assert not out.exists() or list(out.iterdir()) == []


def test_planted_weight_fault_fails_the_comparison(tmp_path: Path) -> None:
    result = pipeline.convert(f"{ZOO_FILE}:dense_relu", tmp_path / "run")
    assert result.verdict == "pass"
    module = result.module
    tensors = dict(module.named_parameters()) | dict(module.named_buffers())
    name, weight = max(tensors.items(), key=lambda kv: kv[1].numel())
    with torch.no_grad():
        weight.mul_(1 + 1e-3)
    with np.load(tmp_path / "run" / "golden.npz") as golden:
        inputs = {
            k.removeprefix("input/"): golden[k] for k in golden.files if k.startswith("input/")
        }
        tf_out = {
            k.removeprefix("output/"): golden[k] for k in golden.files if k.startswith("output/")
        }
    torch_out = run_torch(module, inputs, list(inputs), list(tf_out))
    comparisons = compare.compare_all({"tf": tf_out, "torch": torch_out}, compare.Tolerances())
    assert comparisons and not any(comparisons), f"perturbing {name} went unnoticed"


@pytest.fixture(scope="module")
def saved_formats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ScaleLayer net saved as SavedModel, .keras and .h5 (TF runs in a subprocess)."""
    root = tmp_path_factory.mktemp("formats")
    script = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("zoo", {str(ZOO_FILE)!r})
zoo = importlib.util.module_from_spec(spec); spec.loader.exec_module(zoo)
model = zoo.scale_layer_net()
model.save({str(root / "net.keras")!r})
model.save({str(root / "net.h5")!r})
model.export({str(root / "saved")!r})
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    return root


@pytest.mark.parametrize("fmt", ["net.keras", "net.h5", "saved"])
def test_saved_formats_convert(fmt: str, saved_formats: Path, tmp_path: Path) -> None:
    options = pipeline.ConvertOptions(custom_objects=str(ZOO_FILE))
    result = pipeline.convert(saved_formats / fmt, tmp_path / "run", options)
    assert_three_way_pass(result)


def test_fold_for_inference_is_reported_not_hidden(tmp_path: Path) -> None:
    """BatchNorm folded into the convolution on request: the outputs still match, the report
    names every folded variable and what it went into, and the run is inference-only."""
    options = pipeline.ConvertOptions(fold_for_inference=True)
    result = pipeline.convert(f"{ZOO_FILE}:conv_bn_dropout", tmp_path / "run", options)
    assert result.verdict == "pass"
    assert result.report["inference_only"] is True
    count = result.report["parameter_count"]
    assert count["status"] == "inference-only" and count["folded"] == 6, count
    folded = {r["tf_name"]: r["note"] for r in result.report["parameters"] if not r["torch_name"]}
    assert set(folded) == {
        "conv/kernel",
        "conv/bias",
        "bn/gamma",
        "bn/beta",
        "bn/moving_mean",
        "bn/moving_variance",
    }
    assert all(note.startswith("folded into Conv") for note in folded.values()), folded


def test_kept_batchnorm_is_an_nn_batchnorm_with_keras_epsilon(tmp_path: Path) -> None:
    result = pipeline.convert(
        f"{ZOO_FILE}:conv_bn_dropout", tmp_path / "run", _options("conv_bn_dropout")
    )
    assert result.verdict == "pass"
    rows = {r["tf_name"]: r for r in result.report["parameters"]}
    assert rows["bn/gamma"]["torch_name"] == "bn.weight"
    assert rows["bn/moving_variance"]["torch_name"] == "bn.running_var"
    module = pipeline.load_torch(result.run_dir)
    buffers = dict(module.named_buffers())
    assert "bn.running_mean" in buffers and "bn.running_var" in buffers
    # Keras's default epsilon (1e-3, solved from the folded scale) and momentum 0.99 → 0.01
    assert rows["bn/gamma"]["note"] == "BatchNorm2d(eps=0.001, momentum=0.01)"
    assert result.report["parameter_count"]["status"] == "full"


def test_batchnorm_after_bias_free_convolutions_stays_a_module(tmp_path: Path) -> None:
    """tf2onnx used to fold a BatchNorm after a bias-free (depthwise) convolution into the
    convolution's weights; by construction the kernel and the BatchNorm stay apart
    (``keep_batchnorm`` is still accepted)."""
    factory = tmp_path / "convbn.py"
    factory.write_text(
        "import importlib.util, keras\n"
        f"spec = importlib.util.spec_from_file_location('zoo', {str(ZOO_FILE)!r})\n"
        "zoo = importlib.util.module_from_spec(spec); spec.loader.exec_module(zoo)\n"
        "def convbn():\n"
        "    L = keras.layers\n"
        "    x = keras.Input((12, 12, 3), name='image')\n"
        "    h = L.ReLU()(L.BatchNormalization(name='bn1', epsilon=1e-5)(L.Conv2D(8, 3, use_bias=False, name='c1')(x)))\n"
        "    h = L.BatchNormalization(name='bn2')(L.DepthwiseConv2D(3, use_bias=False, name='dw')(h))\n"
        "    out = L.Dense(3, name='logits')(L.GlobalAveragePooling2D()(h))\n"
        "    return zoo.randomize_weights(keras.Model(x, out))\n"
    )
    options = pipeline.ConvertOptions(keep_batchnorm=True)
    result = pipeline.convert(f"{factory}:convbn", tmp_path / "run", options)
    assert_three_way_pass(result)
    rows = {r["tf_name"]: r for r in result.report["parameters"]}
    assert rows["c1/kernel"]["torch_name"].startswith("c1.")
    assert rows["dw/kernel"]["transform"] == "permute(2,3,0,1)"
    assert rows["bn1/gamma"]["note"] == "BatchNorm2d(eps=1e-05, momentum=0.01)"
    assert rows["bn2/moving_mean"]["torch_name"] == "bn2.running_mean"
