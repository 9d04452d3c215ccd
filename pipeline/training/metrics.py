"""Keras's compiled metrics in torch, for ``tf2torch evaluate``.

Keras's function-backed metrics (``MeanMetricWrapper``: the accuracies, and every loss used as
a metric such as ``"mae"``) average the function's values over every element of every batch;
``RootMeanSquaredError`` takes the root of the mean squared error over every element.  The
functions follow ``keras/src/metrics/accuracy_metrics.py`` (Keras 3.15):
``binary_accuracy`` compares ``y_pred > threshold`` elementwise, the categorical ones
compare arg-maxes (per sample).  ``"accuracy"`` in ``compile()`` is already resolved by Keras
to one of the three (by the targets' and outputs' shapes) when the TF worker reads it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.training.losses import LOSS_FUNCTIONS, _same_rank


def binary_accuracy(
    y_true: torch.Tensor, y_pred: torch.Tensor, threshold: float = 0.5
) -> torch.Tensor:
    """1 where ``(y_pred > threshold) == y_true``, elementwise."""
    y_true, y_pred = _same_rank(y_true, y_pred)
    return (y_true == (y_pred > threshold).to(y_true.dtype)).to(torch.float32)


def categorical_accuracy(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """1 where the arg-max of the prediction is the arg-max of the one-hot target."""
    return (torch.argmax(y_true, dim=-1) == torch.argmax(y_pred, dim=-1)).to(torch.float32)


def sparse_categorical_accuracy(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """1 where the arg-max of the prediction is the integer label."""
    if y_true.dim() == y_pred.dim() and y_true.shape[-1] == 1:
        y_true = y_true.squeeze(-1)
    return (torch.argmax(y_pred, dim=-1) == y_true.long()).to(torch.float32)


METRIC_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "binary_accuracy": binary_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
}
_FLOAT_LOSSES = ("mean_squared_error", "mean_absolute_error", "huber")


@dataclass
class MetricState:
    """A running Keras metric on the torch side: sum and count of its values."""

    spec: Mapping[str, Any]
    epsilon: float
    total: float = 0.0
    count: int = 0

    @property
    def supported(self) -> bool:
        """Whether torch reproduces this metric."""
        return self.spec["class_name"] == "RootMeanSquaredError" or self._function() is not None

    def _function(self) -> Callable[..., torch.Tensor] | None:
        fn = self.spec.get("fn")
        if fn in METRIC_FUNCTIONS:
            return METRIC_FUNCTIONS[fn]
        if fn in _FLOAT_LOSSES:
            return LOSS_FUNCTIONS[fn]
        if fn in LOSS_FUNCTIONS:
            loss = LOSS_FUNCTIONS[fn]
            return lambda y_true, y_pred, **kw: loss(y_true, y_pred, epsilon=self.epsilon, **kw)
        return None

    def _arguments(self, function: Callable[..., torch.Tensor]) -> dict[str, Any]:
        """The metric's config entries the torch function takes (Keras's ``axis``, fixed at
        -1 here, is dropped)."""
        config = dict(self.spec.get("config") or {})
        fn = str(self.spec.get("fn"))
        target = LOSS_FUNCTIONS.get(fn) if fn not in METRIC_FUNCTIONS else function
        names = set(inspect.signature(target or function).parameters)
        return {k: v for k, v in config.items() if k in names and k != "epsilon"}

    def update(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> None:
        """Add one batch's values."""
        if self.spec["class_name"] == "RootMeanSquaredError":
            y_true, y_pred = _same_rank(y_true.to(y_pred.dtype), y_pred)
            values = torch.square(y_pred - y_true)
        else:
            function = self._function()
            assert function is not None
            if self.spec.get("fn") != "sparse_categorical_accuracy":
                y_true = y_true.to(y_pred.dtype)
            values = function(y_true, y_pred, **self._arguments(function))
        self.total += float(torch.sum(values.double()))
        self.count += values.numel()

    def result(self) -> float:
        """The metric's value over everything added."""
        mean = self.total / self.count if self.count else 0.0
        if self.spec["class_name"] == "RootMeanSquaredError":
            return mean**0.5
        return mean
