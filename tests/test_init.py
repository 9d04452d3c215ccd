"""Keras-faithful initialisation: our draws against Keras's own initializers (two-sample
Kolmogorov-Smirnov), Keras's fans on Conv2D/DepthwiseConv2D kernels, and
``reset_parameters`` on converted modules (values placed through the layout transform).

Keras runs in a subprocess (TensorFlow may not share the pytest process with torch); it
dumps its samples, its ``compute_fans`` and the worker's record of each initializer to an
``.npz``.  The KS statistic and its asymptotic p-value are computed here in numpy (no scipy).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import pipeline
from pipeline.init import (
    keras_fans,
    reset_parameters,
    sample_initializer,
    variance_scaling_params,
)
from pipeline.to_torch.parameters import apply_transform

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "models" / "zoo.py"
SHAPE = (250, 160)  # 40,000 draws per initializer
BIG = (1000, 200)  # he_normal: enough draws to tell a truncated normal from a plain one
REPEATS = 40  # independent Keras draws of each converted kernel
P_MIN = 1e-3  # our draws vs Keras's must not be rejected at this level (seeds are fixed)

KERAS_SCRIPT = r"""
import json, sys
import numpy as np
import keras
from keras import initializers as I
from keras.src.initializers.random_initializers import compute_fans
from pipeline.export.worker.initializers import _initializer_json

SHAPE, BIG, REPEATS = tuple(json.loads(sys.argv[2])), tuple(json.loads(sys.argv[3])), int(sys.argv[4])
inits = {
    "zeros": I.Zeros(),
    "ones": I.Ones(),
    "constant": I.Constant(0.37),
    "glorot_uniform": I.GlorotUniform(seed=1),
    "glorot_normal": I.GlorotNormal(seed=2),
    "he_normal": I.HeNormal(seed=3),
    "he_uniform": I.HeUniform(seed=4),
    "lecun_normal": I.LecunNormal(seed=5),
    "random_normal": I.RandomNormal(mean=0.1, stddev=0.2, seed=6),
    "truncated_normal": I.TruncatedNormal(mean=-0.05, stddev=0.3, seed=7),
    "orthogonal": I.Orthogonal(gain=1.5, seed=8),
}
out, records = {}, {}
for name, init in inits.items():
    out[f"sample/{name}"] = np.asarray(init(BIG if name == "he_normal" else SHAPE))
    records[name] = _initializer_json(init)

conv = keras.layers.Conv2D(8, 3)
conv.build((None, 10, 10, 4))
depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
depthwise.build((None, 10, 10, 4))
depthwise1 = keras.layers.DepthwiseConv2D(3)
depthwise1.build((None, 8, 8, 8))
for name, layer in (("conv2d", conv), ("depthwise", depthwise), ("depthwise1", depthwise1)):
    kernel = layer.kernel
    out[f"shape/{name}"] = np.asarray(kernel.shape)
    out[f"fans/{name}"] = np.asarray(compute_fans(kernel.shape))

# Keras's draws for the kernels of the converted test models, many seeds each.
for name, init, shape in (
    ("conv", "he_normal", (3, 3, 4, 8)),
    ("dw", "he_normal", (3, 3, 8, 1)),
    ("head", "lecun_normal", (8, 3)),
    ("lstm_kernel", "glorot_uniform", (8, 256)),
):
    cls = type(I.get(init))
    out[f"kernel/{name}"] = np.stack([np.asarray(cls(seed=s)(shape)) for s in range(REPEATS)])
np.savez(sys.argv[1], **out)
print(json.dumps(records))
"""

INIT_FACTORY = """
import keras


def conv_depthwise():
    x = keras.Input((10, 10, 4), name="image")
    h = keras.layers.Conv2D(
        8, 3, kernel_initializer="he_normal", bias_initializer="ones", name="conv"
    )(x)
    h = keras.layers.DepthwiseConv2D(
        3,
        depthwise_initializer="he_normal",
        bias_initializer=keras.initializers.Constant(0.25),
        name="dw",
    )(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    y = keras.layers.Dense(3, kernel_initializer="lecun_normal", name="head")(h)
    return keras.Model(x, y)
"""


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov: statistic D = sup |F_a - F_b| and its asymptotic
    p-value Q_KS((√n_e + 0.12 + 0.11/√n_e)·D), n_e = nm/(n+m) (Numerical Recipes)."""
    a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    en = math.sqrt(a.size * b.size / (a.size + b.size))
    lam = (en + 0.12 + 0.11 / en) * d
    if lam < 0.2:  # the series is 1 to many digits
        return d, 1.0
    j = np.arange(1, 101)
    p = 2.0 * np.sum((-1.0) ** (j - 1) * np.exp(-2.0 * j**2 * lam**2))
    return d, float(min(max(p, 0.0), 1.0))


def test_ks_helper_accepts_equal_and_rejects_different_distributions() -> None:
    rng = np.random.default_rng(0)
    assert ks_2samp(rng.normal(size=5000), rng.normal(size=4000))[1] > 0.01
    assert ks_2samp(rng.normal(size=5000), rng.normal(0.1, 1.0, size=5000))[1] < 1e-4
    assert ks_2samp(np.zeros(10), np.zeros(7)) == (0.0, 1.0)


@pytest.fixture(scope="module")
def keras_draws(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], Any]:
    path = tmp_path_factory.mktemp("keras_init") / "draws.npz"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            KERAS_SCRIPT,
            str(path),
            json.dumps(SHAPE),
            json.dumps(BIG),
            str(REPEATS),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}, records


INITIALIZERS = [
    "zeros",
    "ones",
    "constant",
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "random_normal",
    "truncated_normal",
    "orthogonal",
]


@pytest.mark.parametrize("name", INITIALIZERS)
def test_our_draws_match_keras_initializer(
    keras_draws: tuple[dict[str, np.ndarray], Any], name: str
) -> None:
    samples, records = keras_draws
    keras_values = samples[f"sample/{name}"]
    record = records[name]  # as the TF worker records it in the parameter table
    assert record is not None and record["class_name"]
    ours = sample_initializer(record, keras_values.shape, np.random.default_rng(100)).astype(
        np.float32
    )
    assert ours.shape == keras_values.shape
    d, p = ks_2samp(ours, keras_values)
    assert p > P_MIN, f"{name}: KS D={d:.4f} p={p:.2e}"
    if name in ("zeros", "ones", "constant"):
        np.testing.assert_array_equal(ours, keras_values)
    if name == "orthogonal":  # rows > cols: orthonormal columns, times the gain
        gram = ours.astype(np.float64).T @ ours.astype(np.float64)
        np.testing.assert_allclose(gram, 1.5**2 * np.eye(SHAPE[1]), atol=1e-5)


def test_truncation_matters_torch_kaiming_normal_is_rejected(
    keras_draws: tuple[dict[str, np.ndarray], Any],
) -> None:
    """torch's kaiming_normal_ (same fan, same std, not truncated) is *not* Keras's
    he_normal: the KS test tells them apart, so the test above has power."""
    samples, _ = keras_draws
    keras_values = samples["sample/he_normal"]  # (1000, 200): fan_in 1000
    weight = torch.empty(BIG[1], BIG[0])  # torch layout (out, in): fan_in 1000 too
    torch.manual_seed(0)
    torch.nn.init.kaiming_normal_(weight, nonlinearity="relu")
    assert float(weight.std()) == pytest.approx(float(keras_values.std()), rel=0.02)
    d, p = ks_2samp(weight.numpy(), keras_values)
    assert p < 1e-6, f"D={d:.4f} p={p:.2e}"
    assert np.abs(keras_values).max() <= 2 * math.sqrt(2 / BIG[0]) / 0.87962566 + 1e-6


def test_fans_on_the_keras_layout(keras_draws: tuple[dict[str, np.ndarray], Any]) -> None:
    samples, _ = keras_draws
    for name in ("conv2d", "depthwise", "depthwise1"):
        shape = tuple(int(d) for d in samples[f"shape/{name}"])
        assert keras_fans(shape) == tuple(int(f) for f in samples[f"fans/{name}"]), name
    assert keras_fans((3, 3, 4, 8)) == (36, 72)  # Conv2D(8, 3) on 4 channels
    assert keras_fans((3, 3, 4, 2)) == (36, 18)  # DepthwiseConv2D(3, depth_multiplier=2)
    # torch, on the grouped OIHW weight (C·M, 1, kh, kw), counts fans differently
    torch_fans = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(8, 1, 3, 3))
    assert torch_fans == (9, 72) and keras_fans((3, 3, 4, 2)) != torch_fans
    he = variance_scaling_params("he_normal", (3, 3, 4, 2))
    assert he is not None and he["stddev"] == pytest.approx(math.sqrt(2 / 36) / 0.87962566103)


# ------------------------------------------------------------- converted modules


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory: pytest.TempPathFactory) -> pipeline.ConversionResult:
    work = tmp_path_factory.mktemp("init_conv")
    (work / "initfactory.py").write_text(INIT_FACTORY)
    return pipeline.convert(f"{work / 'initfactory.py'}:conv_depthwise", work / "run")


def _fill(module: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                tensor.fill_(value)


def test_reset_conv_and_depthwise_like_keras(
    conv_run: pipeline.ConversionResult, keras_draws: tuple[dict[str, np.ndarray], Any]
) -> None:
    samples, _ = keras_draws
    assert conv_run.verdict == "pass", conv_run.report["comparisons"]
    rows = {r["tf_name"]: r for r in conv_run.report["parameters"]}
    assert rows["conv/kernel"]["initializer"]["class_name"] == "HeNormal"
    assert rows["dw/kernel"]["tf_shape"] == [3, 3, 8, 1]
    assert rows["dw/kernel"]["shape"] == [8, 1, 3, 3]
    assert rows["head/bias"]["initializer"]["class_name"] == "Zeros"

    module = pipeline.load_torch(conv_run.run_dir)  # carries the table
    tensors = dict(module.named_parameters())
    draws: dict[str, list[np.ndarray]] = {"conv": [], "dw": [], "head": []}
    for repeat in range(REPEATS):
        _fill(module, 7.0)
        records = {r["tf_name"]: r for r in reset_parameters(module, seed=repeat)}
        for layer in draws:
            draws[layer].append(
                tensors[rows[f"{layer}/kernel"]["torch_name"]].detach().numpy().copy()
            )
    # fans were computed on the Keras layout, not on torch's weight
    assert (records["conv/kernel"]["fan_in"], records["conv/kernel"]["fan_out"]) == (36, 72)
    assert (records["dw/kernel"]["fan_in"], records["dw/kernel"]["fan_out"]) == (72, 9)
    assert torch.nn.init._calculate_fan_in_and_fan_out(tensors["dw.weight"]) == (9, 72)
    for layer in draws:
        d, p = ks_2samp(np.stack(draws[layer]), samples[f"kernel/{layer}"])
        assert p > P_MIN, f"{layer}: KS D={d:.4f} p={p:.2e}"
    # the same check has power: torch's own kaiming_normal_ on the grouped weight fails it
    dw = torch.empty(8, 1, 3, 3)
    torch.manual_seed(0)
    kaiming = [torch.nn.init.kaiming_normal_(dw).numpy().copy() for _ in range(REPEATS)]
    assert ks_2samp(np.stack(kaiming), samples["kernel/dw"])[1] < 1e-6
    # biases: Keras's initializers, not nn.Conv2d/nn.Linear's uniform
    np.testing.assert_array_equal(tensors["conv.bias"].detach().numpy(), np.ones(8))
    np.testing.assert_array_equal(tensors["dw.bias"].detach().numpy(), np.full(8, 0.25, "f"))
    np.testing.assert_array_equal(tensors["head.bias"].detach().numpy(), np.zeros(3))


def test_reset_needs_a_table_and_refuses_unknown_initializers() -> None:
    with pytest.raises(ValueError, match="no parameter table"):
        reset_parameters(torch.nn.Linear(2, 2))
    linear = torch.nn.Linear(3, 2)
    row = {
        "tf_name": "d/kernel",
        "torch_name": "weight",
        "shape": [2, 3],
        "tf_shape": [3, 2],
        "trainable": True,
        "transform": "transpose(1,0)",
        "note": "",
    }
    custom = {**row, "initializer": {"class_name": "MyInit", "config": {}}}
    before = linear.weight.detach().clone()
    with pytest.raises(ValueError, match=r"d/kernel \(MyInit\)"):
        reset_parameters(linear, [custom])
    assert torch.equal(linear.weight, before)
    assert reset_parameters(linear, [custom], strict=False)[0]["status"] == "skipped"
    ones = {**row, "initializer": {"class_name": "Identity", "config": {"gain": 2.0}}}
    reset_parameters(linear, [ones])
    np.testing.assert_array_equal(linear.weight.detach().numpy(), 2 * np.eye(3, 2).T)


def test_reset_lstm_orthogonal_and_unit_forget_bias(
    tmp_path: Path, keras_draws: tuple[dict[str, np.ndarray], Any]
) -> None:
    samples, _ = keras_draws
    result = pipeline.convert(f"{ZOO}:lstm", tmp_path / "run")
    rows = {r["tf_name"]: r for r in result.report["parameters"]}
    bias_row = rows["lstm/lstm_cell/bias"]
    assert bias_row["initializer"]["unit_forget_bias"] is True
    assert rows["lstm/lstm_cell/recurrent_kernel"]["initializer"]["class_name"] == "Orthogonal"
    module = result.module
    tensors = dict(module.named_parameters())
    kernels = []
    for repeat in range(REPEATS):
        _fill(module, 3.0)
        reset_parameters(module, seed=repeat)
        kernels.append(tensors[rows["lstm/lstm_cell/kernel"]["torch_name"]].detach().numpy().copy())
    units = 64
    keras_bias = np.concatenate([np.zeros(units), np.ones(units), np.zeros(2 * units)])
    np.testing.assert_array_equal(
        tensors[bias_row["torch_name"]].detach().numpy(),
        apply_transform(keras_bias, bias_row["transform"], bias_row["shape"]),
    )
    hh = [r for r in result.report["parameters"] if r["tf_name"] is None]
    assert hh and not tensors[hh[0]["torch_name"]].detach().any()  # torch-only bias: zero
    # Keras's orthogonal is over the whole (units, 4·units) kernel: orthonormal rows, which
    # stay orthonormal through the transpose (and any gate reorder) into torch's (4·units, units)
    w = tensors[rows["lstm/lstm_cell/recurrent_kernel"]["torch_name"]].detach().double()
    torch.testing.assert_close(w.T @ w, torch.eye(units, dtype=torch.float64), atol=1e-5, rtol=0)
    d, p = ks_2samp(np.stack(kernels), samples["kernel/lstm_kernel"])
    assert p > P_MIN, f"lstm kernel: KS D={d:.4f} p={p:.2e}"
