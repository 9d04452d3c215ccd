"""Weight scaling (``--scale``): factors by hand, TF/ORT/torch still agree, the activation
strategy's zero guard, ``scale_weights`` on a converted module, and bad specs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline
from pipeline.core.errors import BadInputError
from pipeline.scaling import (
    ACTIVATION_FLOOR,
    activation_factor,
    parse_scale,
    scale_weights,
)

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "models" / "zoo.py"
PAIRS = {"tf-ort", "tf-torch", "ort-torch"}
ZOO_SEED = 1234  # models.zoo.SEED (zoo.py imports Keras, so it is not imported here)


def zoo_weights(shapes: list[tuple[str, tuple[int, ...], bool]]) -> dict[str, np.ndarray]:
    """``models.zoo.randomize_weights`` by hand: (TF name, shape, depthwise) in layer order."""
    rng = np.random.default_rng(ZOO_SEED)
    out = {}
    for name, shape, depthwise in shapes:
        if len(shape) >= 2:
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in = receptive if depthwise else receptive * shape[-2]
            value = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        out[name] = value.astype(np.float32)
    return out


DENSE_MLP = [
    ("dense_1/kernel", (784, 128), False),
    ("dense_1/bias", (128,), False),
    ("dense_2/kernel", (128, 64), False),
    ("dense_2/bias", (64,), False),
    ("probabilities/kernel", (64, 10), False),
    ("probabilities/bias", (10,), False),
]
CNN = [
    ("conv/kernel", (3, 3, 1, 32), False),
    ("conv/bias", (32,), False),
    ("logits/kernel", (5408, 10), False),
    ("logits/bias", (10,), False),
]


def scaled(value: np.ndarray, factor: float) -> np.ndarray:
    """What the worker assigns: the product in float64, cast back."""
    return (value.astype(np.float64) * factor).astype(value.dtype)


def torch_values(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """Each TF variable's torch tensor, read through the table attached to the module and
    carried back to the Keras layout (the transforms here are transposes/permutations)."""
    tensors = dict(module.named_parameters()) | dict(module.named_buffers())
    out = {}
    for row in module.tf2torch_parameters:
        if not row["tf_name"]:
            continue
        value = tensors[row["torch_name"]].detach().numpy()
        transform = row["transform"]
        if transform == "transpose(1,0)":
            value = value.T
        elif transform.startswith("permute"):
            perm = [int(a) for a in transform[len("permute(") : -1].split(",")]
            value = np.transpose(value, np.argsort(perm))
        else:
            assert transform == "identity", row
        out[row["tf_name"]] = value
    return out


def assert_three_way_pass(result: pipeline.ConversionResult) -> None:
    assert result.verdict == "pass", result.report["comparisons"]
    assert {c["pair"] for c in result.report["comparisons"]} == PAIRS
    assert all(c["pass"] for c in result.report["comparisons"])
    assert all(g["pass"] for g in result.report["gradients"])


# ---------------------------------------------------------------------- the spec


def test_parse_scale_specs() -> None:
    assert parse_scale("global=0.5").factors == {"conv": 0.5, "dense": 0.5}
    assert parse_scale("global=0.5").strategy == "global"
    per_kind = parse_scale(" conv=0.7 , dense=0.3 ")
    assert per_kind.strategy == "per_kind" and dict(per_kind.factors) == {"conv": 0.7, "dense": 0.3}
    assert parse_scale("dense=2").factor_for("conv") is None
    assert parse_scale("activation").strategy == "activation"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "expected global=F"),
        ("0.5", "expected global=F"),
        ("global=half", "is not a number"),
        ("global=0", "positive finite"),
        ("dense=-1", "positive finite"),
        ("conv=inf", "positive finite"),
        ("lstm=0.5", "unknown key 'lstm'"),
        ("conv=0.5,conv=0.6", "conv given twice"),
        ("global=0.5,dense=0.3", "cannot be mixed"),
        ("activation=2", "takes no factor"),
    ],
)
def test_bad_scale_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message) as info:
        parse_scale(spec)
    assert "\n" not in str(info.value)


def test_activation_factor_guards_against_zero() -> None:
    assert activation_factor(0.25) == (4.0, "")
    for dead in (0.0, ACTIVATION_FLOOR / 2, float("nan"), float("inf")):
        factor, note = activation_factor(dead)
        assert factor == 1.0 and "left unscaled" in note


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def test_bad_scale_on_the_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _cli(
        "convert", f"{ZOO}:dense_mlp", "-o", str(out), "-q", "--scale", "dense=abc", cwd=REPO
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("tf2torch: error: "), proc.stderr
    assert "bad --scale 'dense=abc'" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("scale", "calibration", "message"),
    [
        ("activation", None, "--scale activation needs --calibration"),
        ("global=0.5", "x.npz", "only used with --scale activation"),
        (None, "x.npz", "only used with --scale activation"),
        ("activation", "missing.npz", "calibration file not found"),
    ],
)
def test_scale_and_calibration_must_agree(
    tmp_path: Path, scale: str | None, calibration: str | None, message: str
) -> None:
    options = pipeline.ConvertOptions(
        scale=scale, calibration=tmp_path / calibration if calibration else None
    )
    with pytest.raises(BadInputError, match=message):
        pipeline.convert(f"{ZOO}:dense_mlp", tmp_path / "run", options)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------- scaling a zoo model


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> pipeline.ConversionResult:
    out = tmp_path_factory.mktemp("scale_mlp") / "run"
    return pipeline.convert(
        f"{ZOO}:dense_mlp", out, pipeline.ConvertOptions(scale="conv=0.7,dense=0.3")
    )


def test_per_kind_scaling_on_dense_mlp_matches_hand_computed_values(
    mlp_run: pipeline.ConversionResult,
) -> None:
    assert_three_way_pass(mlp_run)
    scaling = mlp_run.report["scaling"]
    assert scaling["strategy"] == "per_kind" and scaling["spec"] == "conv=0.7,dense=0.3"
    assert [(s["layer"], s["kind"], s["factor"]) for s in scaling["layers"]] == [
        ("dense_1", "dense", 0.3),
        ("dense_2", "dense", 0.3),
        ("probabilities", "dense", 0.3),
    ]
    expected = zoo_weights(DENSE_MLP)
    for module in (mlp_run.module, pipeline.load_torch(mlp_run.run_dir)):
        got = torch_values(module)
        assert set(got) == set(expected)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], scaled(value, 0.3), rtol=1e-7, err_msg=name)
    # the table rows carry the layer kind scale_weights needs
    rows = {r["tf_name"]: r for r in mlp_run.report["parameters"]}
    assert rows["dense_1/kernel"]["layer_kind"] == "dense"
    assert rows["dense_1/kernel"]["layer_class"] == "Dense"


def test_scale_weights_on_the_converted_module(mlp_run: pipeline.ConversionResult) -> None:
    module = pipeline.load_torch(mlp_run.run_dir)
    expected = zoo_weights(DENSE_MLP)
    records = scale_weights(module, "conv=5,dense=2")  # no conv layer: conv factor unused
    assert [(r["layer"], r["factor"]) for r in records] == [
        ("dense_1", 2.0),
        ("dense_2", 2.0),
        ("probabilities", 2.0),
    ]
    assert records[0]["torch_names"] == ["dense_1.weight", "dense_1.bias"]
    got = torch_values(module)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], scaled(value, 0.3) * 2, rtol=1e-6, err_msg=name)
    # a report's scaling record replays its per-layer factors
    scale_weights(module, mlp_run.report["scaling"])
    np.testing.assert_allclose(
        torch_values(module)["dense_2/kernel"],
        scaled(expected["dense_2/kernel"], 0.3) * 0.6,
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="factors="):
        scale_weights(module, "activation")
    with pytest.raises(ValueError, match="no parameter table"):
        scale_weights(torch.nn.Linear(2, 2), "global=2")


def test_global_scaling_on_cnn_scales_conv_and_dense(tmp_path: Path) -> None:
    result = pipeline.convert(
        f"{ZOO}:cnn", tmp_path / "run", pipeline.ConvertOptions(scale="global=0.5")
    )
    assert_three_way_pass(result)
    assert result.report["scaling"]["strategy"] == "global"
    assert {s["layer"]: (s["kind"], s["factor"]) for s in result.report["scaling"]["layers"]} == {
        "conv": ("conv", 0.5),
        "logits": ("dense", 0.5),
    }
    got = torch_values(result.module)  # conv.weight: OIHW back to HWIO
    for name, value in zoo_weights(CNN).items():
        np.testing.assert_allclose(got[name], scaled(value, 0.5), rtol=1e-7, err_msg=name)


ACTIVATION_FACTORY = """
import keras
import numpy as np


def live_and_dead():
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(16, activation="relu", name="live")(x)
    h = keras.layers.Dense(8, activation="relu", name="dead")(h)
    y = keras.layers.Dense(3, name="head")(h)
    model = keras.Model(x, y)
    rng = np.random.default_rng(5)
    for v in model.weights:
        v.assign(rng.normal(0.0, 0.5, tuple(v.shape)).astype("float32"))
    # relu(h @ W - 100) is zero for every calibration input: a dead layer
    model.get_layer("dead").bias.assign(np.full((8,), -100.0, "float32"))
    return model
"""


def test_activation_strategy_divides_by_mean_abs_output_and_skips_dead_layers(
    tmp_path: Path,
) -> None:
    factory = tmp_path / "acts.py"
    factory.write_text(ACTIVATION_FACTORY)
    calibration = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    np.savez(tmp_path / "calibration.npz", x=calibration)
    result = pipeline.convert(
        f"{factory}:live_and_dead",
        tmp_path / "run",
        pipeline.ConvertOptions(scale="activation", calibration=tmp_path / "calibration.npz"),
    )
    assert_three_way_pass(result)
    scaling = result.report["scaling"]
    assert scaling["strategy"] == "activation" and scaling["calibration_samples"] == 40
    layers = {s["layer"]: s for s in scaling["layers"]}
    assert set(layers) == {"live", "dead", "head"}

    # Undo the factors on the torch weights, then recompute every mean |output| in numpy.
    got = torch_values(result.module)
    w = {name: got[name].astype(np.float64) / layers[name.split("/")[0]]["factor"] for name in got}
    live = np.maximum(calibration @ w["live/kernel"] + w["live/bias"], 0)
    dead = np.maximum(live @ w["dead/kernel"] + w["dead/bias"], 0)
    head = dead @ w["head/kernel"] + w["head/bias"]
    assert layers["live"]["factor"] == pytest.approx(1 / np.abs(live).mean(), rel=1e-5)
    assert layers["live"]["mean_abs_activation"] == pytest.approx(np.abs(live).mean(), rel=1e-5)
    assert layers["head"]["factor"] == pytest.approx(1 / np.abs(head).mean(), rel=1e-5)
    # the guard: a layer whose outputs are all zero is left unscaled, and says so
    assert np.abs(dead).mean() == 0.0
    assert layers["dead"]["factor"] == 1.0 and "left unscaled" in layers["dead"]["note"]
    # ReLU is positively homogeneous: the scaled first layer's mean |output| is exactly 1
    scaled_live = np.maximum(calibration @ got["live/kernel"] + got["live/bias"], 0)
    assert np.abs(scaled_live).mean() == pytest.approx(1.0, rel=1e-5)
