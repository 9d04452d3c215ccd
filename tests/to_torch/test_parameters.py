"""The parameter table and the gradient check: unit level, and a wrong mapping must fail."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import pipeline
from pipeline.core import compare
from pipeline.to_torch.parameters import apply_transform
from pipeline.verify.gradients import compare_gradients, torch_gradients

ZOO_FILE = Path(__file__).resolve().parents[2] / "models" / "zoo.py"


@pytest.mark.parametrize(
    ("transform", "shape"),
    [
        ("identity", (3, 4)),
        ("transpose(1,0)", (4, 3)),
        ("reshape", (2, 6)),
    ],
)
def test_apply_transform(transform: str, shape: tuple[int, ...]) -> None:
    value = np.arange(12.0).reshape(3, 4)
    out = apply_transform(value, transform, shape)
    assert out.shape == shape
    expected = {"identity": value, "transpose(1,0)": value.T, "reshape": value.reshape(2, 6)}
    np.testing.assert_array_equal(out, expected[transform])


def test_apply_transform_conv_and_gates() -> None:
    hwio = np.random.default_rng(0).normal(size=(3, 3, 2, 5))
    oihw = apply_transform(hwio, "permute(3,2,0,1)", (5, 2, 3, 3))
    assert oihw[4, 1, 2, 0] == hwio[2, 0, 1, 4]
    kernel = np.arange(2 * 6).reshape(2, 6)  # 3 gates of 2 units: z r h
    reordered = apply_transform(kernel, "transpose(1,0),gates(1,0,2)", (6, 2))
    np.testing.assert_array_equal(reordered[:2], kernel.T[2:4])  # r first
    np.testing.assert_array_equal(reordered[2:4], kernel.T[:2])


@pytest.fixture(scope="module")
def attention_run(tmp_path_factory: pytest.TempPathFactory) -> pipeline.ConversionResult:
    out = tmp_path_factory.mktemp("params") / "run"
    return pipeline.convert(f"{ZOO_FILE}:self_attention", out)


def test_dense_layers_become_linear_with_tf_names(attention_run: pipeline.ConversionResult) -> None:
    rows = {r["tf_name"]: r for r in attention_run.report["parameters"]}
    assert rows["attention/query/kernel"]["torch_name"] == "attention.query.weight"
    assert rows["attention/query/kernel"]["transform"] == "transpose(1,0)"
    assert rows["attention/query/bias"]["torch_name"] == "attention.query.bias"
    module = pipeline.load_torch(attention_run.run_dir)
    weight = dict(module.named_parameters())["attention.query.weight"]
    assert tuple(weight.shape) == (16, 16)


def test_gradient_check_passes_and_a_swapped_mapping_fails(
    attention_run: pipeline.ConversionResult,
) -> None:
    result = attention_run
    with np.load(result.run_dir / "golden.npz") as golden:
        inputs = {
            k.removeprefix("input/"): golden[k] for k in golden.files if k.startswith("input/")
        }
    outputs = [c["output"] for c in result.report["comparisons"] if c["pair"] == "tf-ort"]
    grads = torch_gradients(result.module, inputs, list(inputs), outputs, result.loss_weights)
    tol = compare.DTYPE_DEFAULTS["float32"]
    honest = compare_gradients(result.parameters, result.tf_gradients, grads, tol)
    assert honest and all(g.passed for g in honest)

    # Query and key kernels have the same shape: swapping their names is a plausible bug.
    by_tf = {e.tf_name: e for e in result.parameters}
    query, key = by_tf["attention/query/kernel"], by_tf["attention/key/kernel"]
    swapped = [
        dataclasses.replace(e, torch_name=key.torch_name)
        if e is query
        else dataclasses.replace(e, torch_name=query.torch_name)
        if e is key
        else e
        for e in result.parameters
    ]
    checks = {g.tf_name: g for g in compare_gradients(swapped, result.tf_gradients, grads, tol)}
    assert not checks["attention/query/kernel"].passed
    assert not checks["attention/key/kernel"].passed
    assert checks["attention/value/kernel"].passed


def test_zero_bias_is_its_own_parameter(tmp_path: Path) -> None:
    """Keras Dense biases start at zero; exported as a graph input, the bias is never
    dropped, so it is the nn.Linear's own trainable parameter, found by provenance."""
    factory = tmp_path / "fresh.py"
    factory.write_text(
        "import keras\n"
        "def fresh():\n"
        "    keras.utils.set_random_seed(0)\n"
        "    x = keras.Input((6,), name='x')\n"
        "    h = keras.layers.Dense(5, activation='relu', name='hidden')(x)\n"
        "    return keras.Model(x, keras.layers.Dense(2, name='out')(h))\n"
    )
    result = pipeline.convert(f"{factory}:fresh", tmp_path / "run")
    assert result.verdict == "pass", result.report
    rows = {r["tf_name"]: r for r in result.report["parameters"]}
    assert rows["hidden/bias"]["torch_name"] == "hidden.bias"
    assert rows["hidden/bias"]["transform"] == "identity"
    params = dict(pipeline.load_torch(result.run_dir).named_parameters())
    assert params["hidden.bias"].requires_grad
    assert float(params["hidden.bias"].detach().abs().sum()) == 0.0
    assert result.report["parameter_count"]["pass"]
    assert all(g["pass"] for g in result.report["gradients"])


def test_a_failing_gradient_or_count_fails_the_verdict() -> None:
    from pipeline.verify.gradients import GradientComparison
    from pipeline.verify.report import verdict_of

    ok = compare.compare_pair("tf-torch", "y", np.ones(3), np.ones(3), compare.Tolerance(0, 0))
    good = GradientComparison("d/kernel", "d.weight", 0.0, 0.0, True)
    bad = GradientComparison("d/bias", "d.bias", 1.0, 1.0, False)
    full = {"status": "full", "pass": True}
    assert verdict_of([ok], [good], full) == "pass"
    assert verdict_of([ok], [good, bad], full) == "fail"
    assert verdict_of([ok], [good], {"status": "fail", "pass": False}) == "fail"
    # parameter_count.pass false never goes with a pass, whatever the status says
    assert verdict_of([ok], [good], {"status": "partial", "pass": False}) == "fail"
    assert verdict_of([ok], [good], {"status": "inference-only", "pass": True}) == "pass"
