"""The training configuration: what Keras's ``compile()`` set up, in a form both processes read.

A :class:`TrainingConfig` is plain JSON-ready data: the optimizer (Keras class name, its
hyperparameters, the learning rate or schedule, the clipping and weight-decay settings), one
:class:`LossTerm` per model output (Keras loss function name, its arguments, its
``loss_weights`` entry), the compiled metrics and every weight regularizer.  The TF worker
(:mod:`pipeline.training.tf_worker`) reads it from a compiled Keras model (or builds the
Keras objects from a description file and reads them back, so the defaults are Keras's own);
:mod:`pipeline.training.build` turns it into torch objects.

A **description file** (JSON or TOML) holds ``compile()``'s arguments, for SavedModels and
uncompiled models.  Every key is optional except ``optimizer`` and ``loss``::

    optimizer = "adam"                        # a name, or a Keras-serialised table:
    [optimizer]                               #   class_name + config, as get_config() gives
    class_name = "SGD"
    config = { momentum = 0.9, clipnorm = 1.0 }
    [optimizer.config.learning_rate]          # a float, or a schedule
    class_name = "ExponentialDecay"
    config = { initial_learning_rate = 0.1, decay_steps = 10, decay_rate = 0.9 }

    loss = "mse"                              # or a table, a list per output, a table by output
    loss_weights = [1.0]
    metrics = ["mae"]
    regularizers = { "dense/kernel" = { class_name = "L2", config = { l2 = 0.01 } } }

``regularizers`` maps TF variable paths (as in the run's parameter table) to a regularizer;
it adds to (and replaces, for the same variable) what the model's layers already carry.

Nothing here imports torch or TensorFlow: the TF worker validates a configuration with
:func:`check_supported` before it trains, so an unsupported optimizer, schedule, loss or
regularizer is a one-line :class:`TrainingConfigError` naming it and its config key, before
any training runs.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import BadInputError

OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam")
SCHEDULES = (
    "ExponentialDecay",
    "PiecewiseConstantDecay",
    "CosineDecay",
    "CosineDecayRestarts",
    "InverseTimeDecay",
    "PolynomialDecay",
)
LOSSES = (
    "mean_squared_error",
    "mean_absolute_error",
    "huber",
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "kl_divergence",
)
REGULARIZERS = ("L1", "L2", "L1L2")
REDUCTIONS = ("sum_over_batch_size", "mean", "sum")

# Optimizer options Keras accepts but tf2torch does not reproduce, with their inert values.
_INERT_OPTIONS: dict[str, Any] = {
    "use_ema": False,
    "gradient_accumulation_steps": None,
}
DESCRIPTION_KEYS = ("optimizer", "loss", "loss_weights", "metrics", "regularizers")

_registered: dict[str, set[str]] = {"optimizer": set(), "loss": set()}


class TrainingConfigError(BadInputError):
    """A training configuration tf2torch cannot reproduce in torch, or a malformed one; the
    message names the object and its config key."""


def register_name(kind: str, name: str) -> None:
    """Accept ``name`` as an optimizer or loss (``kind`` ``"optimizer"``/``"loss"``) that a
    user registered a torch equivalent for (see :mod:`pipeline.training.registry`)."""
    _registered[kind].add(name)


def registered_names() -> dict[str, list[str]]:
    """User-registered optimizer and loss names, JSON-ready (sent to the TF worker)."""
    return {kind: sorted(names) for kind, names in _registered.items()}


@dataclass(frozen=True)
class Schedule:
    """A Keras ``LearningRateSchedule``: its class name and ``get_config()``."""

    class_name: str
    config: dict[str, Any]


@dataclass(frozen=True)
class OptimizerConfig:
    """A Keras optimizer: class name, learning rate (a float or a :class:`Schedule`) and
    every other ``get_config()`` entry in ``config`` (``momentum``, ``epsilon``,
    ``clipnorm``, ``weight_decay``, ...).  ``no_weight_decay`` lists the TF variables
    ``exclude_from_weight_decay`` took out of weight decay."""

    class_name: str
    learning_rate: float | Schedule
    config: dict[str, Any]
    no_weight_decay: tuple[str, ...] = ()

    def option(self, key: str, default: Any = None) -> Any:
        """``config[key]``, or ``default`` when it is missing or None."""
        value = self.config.get(key)
        return default if value is None else value


@dataclass(frozen=True)
class LossTerm:
    """The loss of one model output: Keras loss function ``name`` (e.g.
    ``sparse_categorical_crossentropy``), its arguments and ``reduction`` in ``config``,
    and its ``loss_weights`` entry (None: not weighted).  ``index`` is the output's position
    (the torch module returns outputs in the same order)."""

    output: str
    index: int
    name: str
    config: dict[str, Any]
    weight: float | None = None


@dataclass(frozen=True)
class Regularizer:
    """A weight regularizer on one TF variable (``variable`` is its path)."""

    variable: str
    class_name: str
    config: dict[str, Any]


@dataclass(frozen=True)
class TrainingConfig:
    """Everything ``compile()`` decides about training (see the module docstring)."""

    optimizer: OptimizerConfig
    losses: tuple[LossTerm, ...]
    metrics: Any = ()
    """The compiled metrics as given to ``compile()`` (a list, or a dict by output), each a
    name or a Keras-serialised metric."""
    regularizers: tuple[Regularizer, ...] = ()
    epsilon: float = 1e-7
    """Keras's fuzz factor (``keras.config.epsilon()``), which its losses clip with."""
    origin: str = "compiled model"
    activity_regularizers: tuple[dict[str, Any], ...] = field(default=())
    """Layers with an ``activity_regularizer`` (``layer``, ``class_name``, ``config``)."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (the report's ``training.config``); inverse of :meth:`from_json`."""
        lr = self.optimizer.learning_rate
        return {
            "origin": self.origin,
            "optimizer": {
                "class_name": self.optimizer.class_name,
                "learning_rate": lr
                if isinstance(lr, float)
                else {"class_name": lr.class_name, "config": lr.config},
                "config": self.optimizer.config,
                "no_weight_decay": list(self.optimizer.no_weight_decay),
            },
            "losses": [
                {
                    "output": t.output,
                    "index": t.index,
                    "name": t.name,
                    "config": t.config,
                    "weight": t.weight,
                }
                for t in self.losses
            ],
            "metrics": self.metrics if isinstance(self.metrics, dict) else list(self.metrics),
            "regularizers": [
                {"variable": r.variable, "class_name": r.class_name, "config": r.config}
                for r in self.regularizers
            ],
            "activity_regularizers": list(self.activity_regularizers),
            "epsilon": self.epsilon,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainingConfig:
        """Rebuild a config from :meth:`to_json`'s output."""
        opt = data["optimizer"]
        lr = opt["learning_rate"]
        return cls(
            optimizer=OptimizerConfig(
                class_name=str(opt["class_name"]),
                learning_rate=float(lr)
                if isinstance(lr, int | float)
                else Schedule(str(lr["class_name"]), dict(lr["config"])),
                config=dict(opt["config"]),
                no_weight_decay=tuple(opt.get("no_weight_decay", ())),
            ),
            losses=tuple(
                LossTerm(
                    output=str(t["output"]),
                    index=int(t["index"]),
                    name=str(t["name"]),
                    config=dict(t["config"]),
                    weight=None if t.get("weight") is None else float(t["weight"]),
                )
                for t in data["losses"]
            ),
            metrics=data.get("metrics") or (),
            regularizers=tuple(
                Regularizer(str(r["variable"]), str(r["class_name"]), dict(r["config"]))
                for r in data.get("regularizers", ())
            ),
            epsilon=float(data.get("epsilon", 1e-7)),
            origin=str(data.get("origin", "compiled model")),
            activity_regularizers=tuple(data.get("activity_regularizers", ())),
        )


def read_description(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML description of ``compile()``'s arguments (module docstring).

    Only its shape is checked here (known keys, ``optimizer`` and ``loss`` present); the
    TF worker turns it into Keras objects and :func:`check_supported` judges those.
    Raises :class:`TrainingConfigError`.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise TrainingConfigError(f"cannot read training config {path}: {err.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as err:
        raise TrainingConfigError(f"training config {path} is not valid: {err}") from None
    if not isinstance(data, dict):
        raise TrainingConfigError(f"training config {path} must be a table of compile() arguments")
    unknown = sorted(set(data) - set(DESCRIPTION_KEYS))
    if unknown:
        raise TrainingConfigError(
            f"training config {path}: unknown key(s) {', '.join(unknown)} "
            f"(known: {', '.join(DESCRIPTION_KEYS)})"
        )
    for key in ("optimizer", "loss"):
        if key not in data:
            raise TrainingConfigError(f"training config {path} has no {key!r}")
    regs = data.get("regularizers", {})
    if not isinstance(regs, dict):
        raise TrainingConfigError(
            f"training config {path}: 'regularizers' must map TF variable paths to regularizers"
        )
    _check_names(data)
    return data


# Keras names (lower case) of optimizers and schedules that have no torch equivalent here:
# refused while reading the file, before any process starts.
_KERAS_ONLY = {
    "optimizer": {
        "ftrl",
        "lion",
        "lamb",
        "adafactor",
        "muon",
        "lossscaleoptimizer",
        "scheduledfreeadamw",
        "schedulefreeadamw",
    },
    "optimizer.learning_rate": set(),
    "regularizers": {"orthogonalregularizer", "orthogonal_regularizer"},
}


def _name_of(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping) and isinstance(entry.get("class_name"), str):
        return str(entry["class_name"])
    return None


def _check_names(data: Mapping[str, Any]) -> None:
    """Refuse a description's optimizer, schedule or regularizer that is known to have no
    torch equivalent (everything else is judged after Keras resolved it)."""
    optimizer = data["optimizer"]
    name = _name_of(optimizer)
    if name and name.lower().replace("_", "") in _KERAS_ONLY["optimizer"]:
        raise _unsupported("optimizer", name, "optimizer", OPTIMIZERS)
    if isinstance(optimizer, Mapping):
        lr = (optimizer.get("config") or {}).get("learning_rate")
        lr_name = _name_of(lr)
        if isinstance(lr, Mapping) and lr_name not in SCHEDULES:
            raise _unsupported(
                "learning-rate schedule", str(lr_name), "optimizer.learning_rate", SCHEDULES
            )
    for path, entry in (data.get("regularizers") or {}).items():
        name = _name_of(entry)
        if name and name.lower() in _KERAS_ONLY["regularizers"]:
            raise _unsupported("regularizer", name, f"regularizers[{path}]", REGULARIZERS)


def _unsupported(what: str, name: str, key: str, supported: Iterable[str]) -> TrainingConfigError:
    return TrainingConfigError(
        f"{what} {name} (config key {key!r}) has no torch equivalent in tf2torch; supported: "
        f"{', '.join(supported)}; a custom one needs a registered torch equivalent "
        "(README: 'Carrying the training over')"
    )


def check_supported(
    config: TrainingConfig, registered: Mapping[str, Iterable[str]] | None = None
) -> None:
    """Raise :class:`TrainingConfigError` for the first thing in ``config`` that
    :mod:`pipeline.training.build` cannot reproduce, naming it and its config key.

    ``registered`` adds user-registered optimizer and loss names (``{"optimizer": [...],
    "loss": [...]}``; default: this process's :func:`register_name` calls).
    """
    extra = {k: set(v) for k, v in (registered or registered_names()).items()}
    opt = config.optimizer
    if opt.class_name not in OPTIMIZERS and opt.class_name not in extra.get("optimizer", ()):
        raise _unsupported("optimizer", opt.class_name, "optimizer", OPTIMIZERS)
    for key, inert in _INERT_OPTIONS.items():
        if opt.config.get(key, inert) not in (inert, 0):
            raise TrainingConfigError(
                f"optimizer option {key}={opt.config[key]!r} (config key 'optimizer.{key}') "
                "is not reproduced by tf2torch; train without it"
            )
    if isinstance(opt.learning_rate, Schedule) and opt.learning_rate.class_name not in SCHEDULES:
        raise _unsupported(
            "learning-rate schedule",
            opt.learning_rate.class_name,
            "optimizer.learning_rate",
            SCHEDULES,
        )
    if not config.losses:
        raise TrainingConfigError("the model is compiled without a loss (config key 'loss')")
    for term in config.losses:
        key = f"loss[{term.output}]"
        builtin = term.name in LOSSES and not term.config.get("custom")
        if not builtin and term.name not in extra.get("loss", ()):
            name = f"{term.name} (custom)" if term.config.get("custom") else term.name
            raise _unsupported("loss", name, key, LOSSES)
        reduction = term.config.get("reduction", "sum_over_batch_size")
        if reduction not in REDUCTIONS:
            raise TrainingConfigError(
                f"loss {term.name} reduction {reduction!r} (config key '{key}.reduction') is "
                f"not supported; use one of {', '.join(REDUCTIONS)}"
            )
        if term.config.get("axis", -1) not in (-1, None):
            raise TrainingConfigError(
                f"loss {term.name} axis={term.config['axis']} (config key '{key}.axis') is not "
                "supported; only the last axis"
            )
        if term.config.get("ignore_class") is not None:
            raise TrainingConfigError(
                f"loss {term.name} ignore_class (config key '{key}.ignore_class') is not supported"
            )
    for reg in config.regularizers:
        if reg.class_name not in REGULARIZERS:
            raise _unsupported(
                "regularizer", reg.class_name, f"regularizers[{reg.variable}]", REGULARIZERS
            )
    for act in config.activity_regularizers:
        raise TrainingConfigError(
            f"activity regularizer {act['class_name']} of layer {act['layer']} (config key "
            f"'activity_regularizers[{act['layer']}]') is not reproduced by tf2torch yet: the "
            "converted module does not expose layer outputs"
        )
