"""``tf2torch train-check``: the seed's Keras models trained 10 steps in Keras and in torch.

The default run takes the seed article's first example as users write it, a linear
regression compiled with ``optimizer='sgd', loss='mse'`` and saved to ``.keras``, converts
it and checks it through the CLI (Keras's traced ``train_step``, as ``fit`` runs it).  The
zoo's CNN (Adam + sparse categorical cross-entropy), LSTM (RMSprop + MSE) and a
Conv+BatchNorm+Dropout net are in the slow suite.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import pipeline
from pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / "models" / "zoo.py"

SAVE_COMPILED = """
import sys
sys.path.insert(0, {repo!r})
from models.zoo import linear_regression
model = linear_regression()
model.compile(optimizer="sgd", loss="mse")
model.save({path!r})
"""


NO_TF2TORCH = """
import runpy, sys
for name in ("pipeline", "patches"):
    sys.modules[name] = None  # any import of tf2torch's packages raises ImportError
if sys.argv[1] == "-c":
    exec(sys.argv[2])
else:
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
"""
"""Runs ``SCRIPT ARGS`` (or ``-c CODE``) with tf2torch's packages unimportable."""


@pytest.fixture(scope="module")
def compiled_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("training_cli")
    keras_file = work / "linear.keras"
    subprocess.run(
        [sys.executable, "-c", SAVE_COMPILED.format(repo=str(REPO), path=str(keras_file))],
        check=True,
        capture_output=True,
    )
    result = pipeline.convert(keras_file, work / "run")
    assert result
    return work / "run"


def _top_level_imports(source: str) -> set[str]:
    """The top-level packages a module's import statements name (relative ones left out)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _steps_table(section: dict[str, Any]) -> str:
    rows = section["steps"]
    return "\n".join(
        f"{s['step']:>2} {s['loss']['tf']:.6g} {s['loss']['torch']:.6g} "
        f"{s['worst']['variable']} {s['worst']['rel']:.1e}"
        for s in rows
    )


def test_compiled_keras_file_trains_alike(
    compiled_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "train.npz"
    rng = np.random.default_rng(5)
    x = rng.standard_normal((36, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.1
    np.savez(data, x=x, y=y.astype(np.float32))
    assert main(["train-check", str(compiled_run), "--data", str(data)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "SGD (lr 0.01), loss linear: mean_squared_error [compiled model]" in out
    assert "PASS" in out
    section = json.loads((compiled_run / "report.json").read_text())["training"]
    assert section["verdict"] == "pass"
    assert len(section["steps"]) == 10, _steps_table(section)
    assert section["rule"]["kind"] == "noise"
    assert section["rule"]["float64"] == {"tf": "measured", "torch": "measured"}
    for step in section["steps"]:
        assert step["loss"]["tf"] == pytest.approx(step["loss"]["torch"], rel=1e-5)
        assert step["worst"]["variable"] in ("linear/kernel", "linear/bias")
        assert step["worst"]["max_abs"] <= step["worst"]["atol"]
        assert set(step["floors"]) == {"linear/kernel", "linear/bias"}
    assert section["config"]["optimizer"]["class_name"] == "SGD"
    assert section["config"]["optimizer"]["learning_rate"] == pytest.approx(0.01)
    # the parameters really moved: 10 SGD steps are not a no-op the check could pass vacuously
    losses = [s["loss"]["tf"] for s in section["steps"]]
    assert losses[-1] < losses[0] and len(set(losses)) == 10
    assert (compiled_run / "tf_training_worker.log").is_file()

    # the generated train.py, a plain loop, trains exactly like Keras did in the check, with
    # torch, numpy and safetensors alone: run isolated (`python -I`, from elsewhere) with
    # tf2torch made unimportable (the venv's editable install would otherwise provide it)
    isolated = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    runner = [sys.executable, "-I", "-c", NO_TF2TORCH]
    probe = subprocess.run(
        [*runner, "-c", "import pipeline"],
        cwd=tmp_path,
        env=isolated,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "ModuleNotFoundError: import of pipeline halted" in probe.stderr, probe.stderr
    emitted = (compiled_run / "torch_model" / "training.py").read_text()
    imported = _top_level_imports(emitted) | _top_level_imports(
        (compiled_run / "train.py").read_text()
    )
    assert imported <= {"torch", "numpy", "torch_model", *sys.stdlib_module_names}, imported
    proc = subprocess.run(
        [
            *runner,
            str(compiled_run / "train.py"),
            "--data",
            str(data),
            "--batch",
            "8",
            "--epochs",
            "2",
            "--checkpoints",
            str(tmp_path / "ckpt"),
        ],
        capture_output=True,
        text=True,
        env=isolated,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    printed = [float(line.split(" loss ")[1].split()[0]) for line in proc.stdout.splitlines()]
    # 36 samples in batches of 8: 5 steps per epoch (the last has 4), no wrap-around
    first_epoch = printed[:4]
    assert first_epoch == pytest.approx(losses[:4], rel=1e-5)
    assert len(printed) == 10
    checkpoint = torch.load(tmp_path / "ckpt" / "epoch002.pt", weights_only=False)
    assert set(checkpoint) == {"epoch", "model", "optimizer", "scheduler"}
    assert "linear.weight" in checkpoint["model"]


@pytest.mark.slow
def test_training_config_file_overrides_compile(
    compiled_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "adam.toml"
    config.write_text(
        'loss = { class_name = "Huber", config = { delta = 0.3 } }\n'
        '[optimizer]\nclass_name = "Adam"\n'
        "config = { learning_rate = 0.05, amsgrad = true, clipnorm = 0.5 }\n"
    )
    data = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(
        data,
        x=rng.standard_normal((20, 3)).astype(np.float32),
        y=rng.standard_normal((20, 1)).astype(np.float32),
    )
    code = main(
        [
            "train-check",
            str(compiled_run),
            "--training-config",
            str(config),
            "--data",
            str(data),
            "--steps",
            "4",
            "--batch",
            "5",
            "--json",
            "--read-only",
        ]
    )
    section = json.loads(capsys.readouterr().out)
    assert code == 0, _steps_table(section)
    assert section["config"]["optimizer"]["config"]["amsgrad"] is True
    assert section["config"]["losses"][0]["config"]["delta"] == 0.3
    assert section["data"] == str(data) and len(section["steps"]) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--training-config", "{cfg}"],
            "optimizer ftrl (config key 'optimizer') has no torch equivalent",
        ),
        pytest.param(["--data", "{data}"], "array 'y' in", marks=pytest.mark.slow),
        (
            ["--source", f"{ZOO}:linear_regression"],
            "is not compiled: give the training configuration",
        ),
        (["--steps", "0"], "--steps must be at least 1"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    compiled_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    cfg = tmp_path / "ftrl.json"
    cfg.write_text('{"optimizer": "ftrl", "loss": "mse"}')
    data = tmp_path / "bad.npz"
    np.savez(data, x=np.zeros((8, 3), np.float32), y=np.zeros((8, 2), np.float32))
    filled = [a.format(cfg=cfg, data=data) for a in args]
    before = (compiled_run / "report.json").read_text()
    assert main(["train-check", str(compiled_run), *filled]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert (compiled_run / "report.json").read_text() == before
    if "--data" in args:
        assert "expected [?, 1] float for mean_squared_error" in err


# ------------------------------------------------------------------ slow: the zoo


def _zoo_check(tmp_path: Path, name: str, config: str, *convert_flags: str) -> dict[str, Any]:
    options = pipeline.ConvertOptions(keep_batchnorm="--keep-batchnorm" in convert_flags)
    assert pipeline.convert(f"{ZOO}:{name}", tmp_path / name, options)
    (tmp_path / "config.json").write_text(config)
    code = main(
        ["train-check", str(tmp_path / name), "--training-config", str(tmp_path / "config.json")]
    )
    section: dict[str, Any] = json.loads((tmp_path / name / "report.json").read_text())["training"]
    assert code == 0, _steps_table(section)
    return section


@pytest.mark.slow
def test_zoo_cnn_adam_sparse_categorical(tmp_path: Path) -> None:
    config = (
        '{"optimizer": "adam", "loss": {"class_name": "SparseCategoricalCrossentropy", '
        '"config": {"from_logits": true}}}'
    )
    section = _zoo_check(tmp_path, "cnn", config)
    assert section["verdict"] == "pass"


@pytest.mark.slow
def test_zoo_lstm_rmsprop_mse(tmp_path: Path) -> None:
    section = _zoo_check(tmp_path, "lstm", '{"optimizer": "rmsprop", "loss": "mse"}')
    assert section["verdict"] == "pass"


@pytest.mark.slow
def test_zoo_conv_batchnorm_dropout(tmp_path: Path) -> None:
    config = (
        '{"optimizer": {"class_name": "SGD", "config": {"learning_rate": 0.05, "momentum": 0.9}},'
        ' "loss": {"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": true}}}'
    )
    section = _zoo_check(tmp_path, "conv_bn_dropout", config, "--keep-batchnorm")
    assert section["dropout"] == [{"layer": "dropout", "class_name": "Dropout", "rate": 0.3}]
    final = {e["variable"]: e for e in section["final"]}
    assert final["bn/moving_variance"]["passed"]


@pytest.mark.slow  # evaluate is also checked against Keras in test_training_equivalence.py
def test_evaluate_compares_keras_and_torch_metrics(
    compiled_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "eval.npz"
    rng = np.random.default_rng(9)
    np.savez(
        data,
        x=rng.standard_normal((30, 3)).astype(np.float32),
        y=rng.standard_normal((30, 1)).astype(np.float32),
    )
    config = tmp_path / "metrics.json"
    config.write_text('{"optimizer": "sgd", "loss": "mse", "metrics": ["mae", "mse"]}')
    code = main(
        [
            "evaluate",
            str(compiled_run),
            "--data",
            str(data),
            "--batch",
            "7",
            "--training-config",
            str(config),
        ]
    )
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0, out
    section = json.loads((compiled_run / "report.json").read_text())["evaluation"]
    assert section["samples"] == 30 and section["verdict"] == "pass"
    values = {v["key"]: v for v in section["values"]}
    assert set(values) == {"loss", "mae", "mse"}
    assert values["mse"]["tf"] == pytest.approx(values["loss"]["tf"], rel=1e-5)  # same formula
    assert all(v["rel"] <= 1e-5 for v in values.values())
    assert main(["evaluate", str(compiled_run), "--data", str(tmp_path / "none.npz")]) == 2
