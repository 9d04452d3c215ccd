"""The broad sweep (slow suite): every optimizer variant under several schedules, every
schedule under two optimizers, every clipping under three optimizers, each loss and
regularizer on its own, all with Keras's traced ``train_step`` (as ``fit`` runs it).

Same model and replay as ``test_training_equivalence.py``; one TF worker call for all jobs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_training_equivalence import FACTORY, LOSS

import pipeline
from pipeline.export.sources import parse_source
from pipeline.training.check import replay_in_torch
from pipeline.training.client import TfJob, TfTrainingAnswer, train_in_tf

pytestmark = pytest.mark.slow

STEPS, BATCH = 6, 8

OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"class_name": "SGD", "config": {}},
    "sgd_momentum": {"class_name": "SGD", "config": {"momentum": 0.9}},
    "sgd_nesterov": {"class_name": "SGD", "config": {"momentum": 0.8, "nesterov": True}},
    "sgd_weight_decay": {"class_name": "SGD", "config": {"momentum": 0.9, "weight_decay": 0.1}},
    "adam": {"class_name": "Adam", "config": {}},
    "adam_amsgrad": {"class_name": "Adam", "config": {"amsgrad": True}},
    "adamw": {"class_name": "AdamW", "config": {"weight_decay": 0.1}},
    "rmsprop": {"class_name": "RMSprop", "config": {}},
    "rmsprop_momentum": {"class_name": "RMSprop", "config": {"momentum": 0.9}},
    "rmsprop_centered": {"class_name": "RMSprop", "config": {"centered": True, "rho": 0.8}},
    "adagrad": {"class_name": "Adagrad", "config": {"initial_accumulator_value": 0.5}},
    "adadelta": {"class_name": "Adadelta", "config": {"rho": 0.9}},
    "adadelta_weight_decay": {"class_name": "Adadelta", "config": {"weight_decay": 0.05}},
    "adamax": {"class_name": "Adamax", "config": {}},
    "nadam": {"class_name": "Nadam", "config": {}},
}
SCHEDULES: dict[str, Any] = {
    "constant": 0.02,
    "exponential": {
        "class_name": "ExponentialDecay",
        "config": {"initial_learning_rate": 0.05, "decay_steps": 2, "decay_rate": 0.7},
    },
    "exponential_staircase": {
        "class_name": "ExponentialDecay",
        "config": {
            "initial_learning_rate": 0.05,
            "decay_steps": 2,
            "decay_rate": 0.5,
            "staircase": True,
        },
    },
    "piecewise": {
        "class_name": "PiecewiseConstantDecay",
        "config": {"boundaries": [1, 3], "values": [0.05, 0.02, 0.005]},
    },
    "cosine": {
        "class_name": "CosineDecay",
        "config": {"initial_learning_rate": 0.05, "decay_steps": 4, "alpha": 0.1},
    },
    "cosine_warmup": {
        "class_name": "CosineDecay",
        "config": {
            "initial_learning_rate": 0.0,
            "decay_steps": 3,
            "warmup_target": 0.05,
            "warmup_steps": 2,
        },
    },
    "cosine_restarts": {
        "class_name": "CosineDecayRestarts",
        "config": {"initial_learning_rate": 0.05, "first_decay_steps": 2, "m_mul": 0.5},
    },
    "inverse_time": {
        "class_name": "InverseTimeDecay",
        "config": {"initial_learning_rate": 0.05, "decay_steps": 1, "decay_rate": 0.5},
    },
    "polynomial_cycle": {
        "class_name": "PolynomialDecay",
        "config": {
            "initial_learning_rate": 0.05,
            "decay_steps": 2,
            "end_learning_rate": 0.01,
            "power": 0.5,
            "cycle": True,
        },
    },
}
CLIPPING = {"clipnorm": 0.05, "global_clipnorm": 0.1, "clipvalue": 0.01}
SINGLE_LOSSES: dict[str, dict[str, Any]] = {
    "huber": {"reg": {"class_name": "Huber", "config": {"delta": 0.2}}},
    "mae": {"reg": "mae"},
    "kld": {"prob": "kl_divergence"},
    "cce_smoothing": {
        "prob": {"class_name": "CategoricalCrossentropy", "config": {"label_smoothing": 0.2}}
    },
    "cce_logits_smoothing": {
        "logit": {
            "class_name": "CategoricalCrossentropy",
            "config": {"from_logits": True, "label_smoothing": 0.1},
        }
    },
    "sparse_cce_probabilities": {"prob": "sparse_categorical_crossentropy"},
    "bce_smoothing": {
        "sig": {"class_name": "BinaryCrossentropy", "config": {"label_smoothing": 0.3}}
    },
    "bce_logits_smoothing": {
        "blogit": {
            "class_name": "BinaryCrossentropy",
            "config": {"from_logits": True, "label_smoothing": 0.1},
        }
    },
    "sum_reduction": {"reg": {"class_name": "MeanSquaredError", "config": {"reduction": "sum"}}},
}
REGULARIZERS = {
    "l1": {"class_name": "L1", "config": {"l1": 0.05}},
    "l2": {"class_name": "L2", "config": {"l2": 0.05}},
    "l1l2": {"class_name": "L1L2", "config": {"l1": 0.02, "l2": 0.04}},
}


def _optimizer(base: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"class_name": base["class_name"], "config": {**base["config"], **extra}}


def _descriptions() -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = {}
    for opt, base in OPTIMIZERS.items():
        for schedule in ("constant", "exponential", "cosine_warmup"):
            lr = SCHEDULES[schedule]
            jobs[f"{opt}-{schedule}"] = {"optimizer": _optimizer(base, learning_rate=lr)}
    for schedule, lr in SCHEDULES.items():
        for opt in ("sgd_momentum", "adam"):
            jobs.setdefault(
                f"{opt}-{schedule}", {"optimizer": _optimizer(OPTIMIZERS[opt], learning_rate=lr)}
            )
    for clip, value in CLIPPING.items():
        for opt in ("sgd_momentum", "adam", "rmsprop"):
            jobs[f"{opt}-{clip}"] = {
                "optimizer": _optimizer(OPTIMIZERS[opt], learning_rate=0.05, **{clip: value})
            }
    for name, losses in SINGLE_LOSSES.items():
        loss = {**{k: "mse" for k in LOSS}, **losses}
        if "prob" not in losses:
            loss["prob"] = "categorical_crossentropy"
        if "logit" not in losses:
            loss["logit"] = LOSS["logit"]
        jobs[f"loss-{name}"] = {
            "optimizer": _optimizer(OPTIMIZERS["sgd"], learning_rate=0.1),
            "loss": loss,
        }
    for name, reg in REGULARIZERS.items():
        jobs[f"regularizer-{name}"] = {
            "optimizer": _optimizer(OPTIMIZERS["sgd"], learning_rate=0.1),
            "regularizers": {"hidden/kernel": reg, "reg/bias": reg, "prob/kernel": reg},
        }
    return {name: {"loss": LOSS, **d} for name, d in jobs.items()}


DESCRIPTIONS = _descriptions()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, TfTrainingAnswer]]:
    work = tmp_path_factory.mktemp("training_sweep")
    (work / "headsfactory.py").write_text(FACTORY)
    source = f"{work / 'headsfactory.py'}:heads"
    assert pipeline.convert(source, work / "run", pipeline.ConvertOptions(keep_batchnorm=True))
    jobs = [TfJob(name, STEPS, BATCH, description=d) for name, d in DESCRIPTIONS.items()]
    yield work / "run", train_in_tf(parse_source(source), jobs, work)


@pytest.mark.parametrize("job", list(DESCRIPTIONS))
def test_sweep(sweep: tuple[Path, TfTrainingAnswer], job: str) -> None:
    run, answer = sweep
    module = pipeline.load_torch(run)
    result = replay_in_torch(module, module.tf2torch_parameters, answer, answer.job(job))
    table = [
        (s.step, s.worst.variable, f"{s.worst.rel:.1e}", f"{s.loss_rel:.1e}") for s in result.steps
    ]
    assert result, table
