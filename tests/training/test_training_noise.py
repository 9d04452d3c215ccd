"""train-check judges against float32's own noise, and stays sharp.

One small compiled model (Dense → BatchNorm → tanh → Dense, MSE) is converted once; one TF
worker call trains it (and its float64 twin) under two recipes: SGD with momentum, a
decaying learning rate and ``clipnorm``, and AdamW with weight decay.  Torch replays them
with the emitted ``training.py`` (and a float64 copy of the module).  The correct code
passes; each planted fault, written into the emitted code that both torch runs execute,
fails: a learning rate off by 1 %, torch's momentum rule in place of Keras's, ``clipnorm``
ignored, weight decay applied twice, BatchNorm's momentum inverted.  The same at 200 steps
is in the slow suite.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import pipeline
from pipeline.export.sources import parse_source
from pipeline.training.build import TorchTraining, training_code
from pipeline.training.check import TrainCheckResult, replay_in_torch
from pipeline.training.client import TfJob, TfTrainingAnswer, train_in_tf

FACTORY = """
import keras
import numpy as np
from keras import layers


def bn_net(bias=False):
    keras.utils.set_random_seed(5)
    x = keras.Input((6,), name="x")
    h = layers.Dense(16, use_bias=bias, name="hidden")(x)
    h = layers.BatchNormalization(momentum=0.9, name="bn")(h)
    h = layers.Activation("tanh", name="tanh")(h)
    y = layers.Dense(3, name="out")(h)
    model = keras.Model(x, y, name="bn_net")
    rng = np.random.default_rng(2)
    for v in model.weights:
        value = rng.normal(0, 0.5, v.shape)
        if "variance" in v.path or "gamma" in v.path:
            value = rng.uniform(0.5, 1.5, v.shape)
        v.assign(value.astype("float32"))
    return model


def bn_net_bias():
    # a bias right before BatchNorm, zero as Keras initialises it: its exact gradient is 0,
    # float32's is rounding noise
    model = bn_net(bias=True)
    bias = model.get_layer("hidden").bias
    bias.assign(np.zeros(bias.shape, "float32"))
    return model
"""

SGD = {
    "optimizer": {
        "class_name": "SGD",
        "config": {
            "momentum": 0.9,
            "clipnorm": 0.2,
            "learning_rate": {
                "class_name": "ExponentialDecay",
                "config": {"initial_learning_rate": 0.05, "decay_steps": 20, "decay_rate": 0.5},
            },
        },
    },
    "loss": "mse",
}
ADAMW = {
    "optimizer": {"class_name": "AdamW", "config": {"learning_rate": 0.01, "weight_decay": 0.05}},
    "loss": "mse",
}


def _sub(pattern: str, replacement: str) -> Callable[[str], str]:
    """A fault: ``pattern`` (a regex) replaced once in the emitted training.py."""

    def plant(source: str) -> str:
        planted, count = re.subn(pattern, replacement, source, count=1)
        assert count == 1, f"the emitted code no longer contains {pattern!r}"
        return planted

    return plant


def _both(first: Callable[[str], str], then: Callable[[str], str]) -> Callable[[str], str]:
    return lambda source: then(first(source))


FAULTS: dict[str, tuple[str, Callable[[str], str]]] = {
    # the schedule's initial rate written 1 % high
    "learning_rate_off_by_1_percent": (
        "sgd",
        _sub(r"'initial_learning_rate': 0\.05", "'initial_learning_rate': 0.0505"),
    ),
    # torch's momentum (b = μb + g, w -= lr·b) instead of Keras's (m = μm - lr·g, w += m)
    "momentum_swapped": (
        "sgd",
        _both(
            _sub(r"optimizer = KerasSGD\(", "optimizer = torch.optim.SGD("),
            _sub(r'"weight_decay": None\}\]', '"weight_decay": 0.0}]'),
        ),
    ),
    "clipnorm_ignored": ("sgd", _sub(r"GradientClipping\(clipnorm=0\.2\)", "GradientClipping()")),
    "weight_decay_applied_twice": (
        "adamw",
        _sub(
            r"( +)(p\.sub_\(p \* _scalar\(wd, p\) \* _scalar\(group\[\"lr\"\], p\)\))",
            r"\1\2\n\1\2",
        ),
    ),
    "batchnorm_momentum_inverted": (
        "sgd",
        _sub(r"keras_momentum = 1\.0 - momentum", "keras_momentum = momentum"),
    ),
}


def _train(work: Path, steps: int) -> tuple[Path, TfTrainingAnswer]:
    (work / "bnfactory.py").write_text(FACTORY)
    source = f"{work / 'bnfactory.py'}:bn_net"
    run = pipeline.convert(source, work / "run", pipeline.ConvertOptions(keep_batchnorm=True))
    assert run, "the test model must convert cleanly"
    jobs = [
        TfJob("sgd", steps, 8, description=SGD, eager=steps <= 20),
        TfJob("adamw", steps, 8, description=ADAMW, eager=steps <= 20),
    ]
    return work / "run", train_in_tf(parse_source(source), jobs, work)


@pytest.fixture(scope="module")
def ten(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, TfTrainingAnswer]]:
    yield _train(tmp_path_factory.mktemp("noise10"), 10)


@pytest.fixture(scope="module")
def two_hundred(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, TfTrainingAnswer]]:
    yield _train(tmp_path_factory.mktemp("noise200"), 200)


def _replay(
    trained: tuple[Path, TfTrainingAnswer],
    job: str,
    plant: Callable[[str], str] | None = None,
    **options: object,
) -> TrainCheckResult:
    run, answer = trained
    module = pipeline.load_torch(run)
    tf_run = answer.job(job)
    if options.pop("drop_tf_float64", False):
        tf_run = dataclasses.replace(tf_run, values64=[], losses64=[], float64_error="planted")
    names = [str(v["path"]) for v in answer.variables]
    source = training_code(tf_run.config, module.tf2torch_parameters, names)
    if plant is not None:
        source = plant(source)
    return replay_in_torch(
        module,
        module.tf2torch_parameters,
        answer,
        tf_run,
        source=source,
        **options,  # type: ignore[arg-type]
    )


def _table(result: TrainCheckResult) -> str:
    return "\n".join(
        f"{s.step} {s.worst.variable} {s.worst.max_abs:.1e} f64 {s.worst.float64_distance} "
        f"atol {s.worst.atol} "
        f"margin {s.margin:.2f} loss {s.loss.passed}"
        for s in result.steps
    )


@pytest.mark.parametrize("job", ["sgd", "adamw"])
def test_correct_code_passes_within_float32_noise(
    ten: tuple[Path, TfTrainingAnswer], job: str
) -> None:
    result = _replay(ten, job)
    assert result, _table(result)
    assert result.rule.kind == "noise" and not result.rule.unmeasured
    # the floors were measured on both sides, per variable and step, and recorded
    step = result.to_json()["steps"][-1]
    assert set(step["floors"]) >= {"hidden/kernel", "bn/moving_variance", "out/bias"}
    assert all(t is not None and f is not None for t, f in step["floors"].values())
    assert step["loss"]["tf64"] is not None and step["loss"]["torch64"] is not None
    # the float64 runs agree well within the tolerance: both compute the same training (not
    # to float64's last digit: Keras casts a Python hyperparameter through float32 even in
    # the float64 twin, ops.cast(0.999, "float64") = 0.99900001, so Adam's twin is 1.3e-7
    # from torch's float64 copy after 2 steps; the float32 runs agree to 2e-9)
    for s in result.steps:
        assert s.worst.float64_distance is not None and s.worst.atol is not None
        assert s.worst.float64_distance < 0.5 * s.worst.atol, _table(result)
    assert 0 < result.worst_margin < 1


@pytest.mark.parametrize("fault", list(FAULTS))
def test_planted_fault_fails_at_10_steps(ten: tuple[Path, TfTrainingAnswer], fault: str) -> None:
    job, plant = FAULTS[fault]
    result = _replay(ten, job, plant)
    assert not result, f"{fault} passed:\n{_table(result)}"
    # found by the noise rule, not by a missing float64 run
    assert result.rule.kind == "noise" and not result.rule.unmeasured


@pytest.mark.slow
@pytest.mark.parametrize("job", ["sgd", "adamw"])
def test_correct_code_passes_at_200_steps(
    two_hundred: tuple[Path, TfTrainingAnswer], job: str
) -> None:
    result = _replay(two_hundred, job)
    assert result, _table(result)
    assert len(result.steps) == 200


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_planted_fault_fails_at_200_steps(
    two_hundred: tuple[Path, TfTrainingAnswer], fault: str
) -> None:
    job, plant = FAULTS[fault]
    result = _replay(two_hundred, job, plant)
    assert not result, f"{fault} passed:\n{_table(result)}"


def test_without_float64_runs_the_fixed_rule_judges_and_says_why(
    ten: tuple[Path, TfTrainingAnswer],
) -> None:
    # TF's twin missing: torch's floor stands for both sides, and a note says so
    one = _replay(ten, "sgd", drop_tf_float64=True)
    assert one.rule.kind == "noise" and set(one.rule.unmeasured) == {"tf"}
    assert one, _table(one)
    assert any("no float64 run for tf: planted" in n for n in one.notes)
    assert all(s.worst.noise_tf is None and s.worst.atol for s in one.steps)

    # torch's float64 copy failing (as where an op has no float64 kernel): TF's floor
    # stands for both, and the report says why
    def no_float64_kernel(training: TorchTraining) -> None:
        if any(p.dtype == torch.float64 for p in training.module.parameters()):
            raise RuntimeError("no float64 kernel for this op")

    two = _replay(ten, "sgd", customize=no_float64_kernel)
    assert two.rule.kind == "noise" and set(two.rule.unmeasured) == {"torch"}
    assert "no float64 kernel for this op" in two.to_json()["rule"]["float64"]["torch"]
    assert two, _table(two)
    assert all(s.worst.noise_torch is None and s.worst.noise_tf is not None for s in two.steps)
    # neither side: the documented fixed rule, named in the report
    none = _replay(ten, "sgd", drop_tf_float64=True, float64=False)
    assert none.rule.kind == "fixed" and none.rule.rtol == 1e-5
    assert set(none.rule.unmeasured) == {"tf", "torch"}
    assert none.to_json()["rule"]["float64"] == {"tf": "planted", "torch": "not asked for"}
    assert any("the fixed rule judges" in n for n in none.notes)
    assert all(s.worst.rel <= 1e-5 for s in none.steps) == bool(none)
    # and a fault is still a failure under it
    assert not _replay(
        ten, "sgd", FAULTS["clipnorm_ignored"][1], drop_tf_float64=True, float64=False
    )


def test_user_tolerances_override_the_noise_rule(ten: tuple[Path, TfTrainingAnswer]) -> None:
    strict = _replay(ten, "adamw", rtol=1e-12)
    assert strict.rule.kind == "fixed" and not strict
    loose = _replay(ten, "adamw", rtol=1e-3)
    assert loose and loose.rule.rtol == 1e-3
    by_atol = _replay(ten, "adamw", atol=1e-3)
    assert by_atol and by_atol.rule.atol == 1e-3


@pytest.mark.slow  # its own conversion and TF worker
def test_a_variable_float32_cannot_compute_fails_saying_why(tmp_path: Path) -> None:
    # Adam scales the rounding noise standing in for the bias's zero gradient up to full
    # steps in float32, not in float64: its floor dwarfs its scale, and no tolerance that
    # wide may pass it silently
    (tmp_path / "bnfactory.py").write_text(FACTORY)
    source = f"{tmp_path / 'bnfactory.py'}:bn_net_bias"
    options = pipeline.ConvertOptions(keep_batchnorm=True)
    assert pipeline.convert(source, tmp_path / "run", options)
    adam = {"optimizer": {"class_name": "Adam", "config": {"learning_rate": 0.01}}, "loss": "mse"}
    answer = train_in_tf(parse_source(source), [TfJob("adam", 10, 8, description=adam)], tmp_path)
    result = _replay((tmp_path / "run", answer), "adam")
    assert not result
    notes = " ".join(result.notes)
    assert "hidden/bias" in notes and "float32 cannot train it reproducibly" in notes, notes
