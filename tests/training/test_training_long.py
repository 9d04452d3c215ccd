"""Long runs (slow suite): 200 train-check steps at three seeds raise no false alarm.

The zoo's LSTM (RMSprop), GRU (Adam) and Conv+BatchNorm+Dropout CNN (SGD with momentum),
each converted once, are trained 200 steps in Keras (and its float64 twin) and in torch
(and a float64 copy) on drawn batches of seeds 0, 1 and 2, and every step must pass the
float32 noise rule.  About a minute per run on 2 idle cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import pipeline
from pipeline.training.check import train_check

pytestmark = pytest.mark.slow

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo.py"
SPARSE_LOGITS = {"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": True}}
MODELS: dict[str, tuple[dict[str, Any], bool]] = {
    "lstm": ({"optimizer": "rmsprop", "loss": "mse"}, False),
    "gru": ({"optimizer": "adam", "loss": "mse"}, False),
    "conv_bn_dropout": (
        {
            "optimizer": {"class_name": "SGD", "config": {"learning_rate": 0.05, "momentum": 0.9}},
            "loss": SPARSE_LOGITS,
        },
        True,
    ),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    work = tmp_path_factory.mktemp("long")
    converted = {}
    for name, (config, keep_batchnorm) in MODELS.items():
        options = pipeline.ConvertOptions(keep_batchnorm=keep_batchnorm)
        assert pipeline.convert(f"{ZOO}:{name}", work / name, options)
        (work / f"{name}.json").write_text(json.dumps(config))
        converted[name] = (work / name, work / f"{name}.json")
    return converted


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(MODELS))
def test_200_steps_pass_without_false_alarm(
    runs: dict[str, tuple[Path, Path]], name: str, seed: int
) -> None:
    run, config = runs[name]
    result = train_check(run, steps=200, seed=seed, training_config=config, update_report=False)
    failing = [(s.step, s.worst.variable, f"{s.margin:.2f}") for s in result.steps if not s.passed]
    assert result, f"{name} seed {seed}: {failing[:5]} {result.notes}"
    assert result.rule.kind == "noise" and not result.rule.unmeasured
    assert len(result.steps) == 200 and result.worst_margin < 1
