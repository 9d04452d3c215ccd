"""Keras weight regularizers as one torch penalty added to the loss.

Keras adds ``l1·Σ|w| + l2·Σw²`` of each regularized variable to the loss (``L1``, ``L2``,
``L1L2``; ``keras/src/regularizers/regularizers.py``).  torch has no regularizer objects:
``weight_decay`` in a torch optimizer is not the same thing.  For SGD, ``weight_decay=2·l2``
reproduces an L2 penalty's gradient, but for Adam-family optimizers it goes through the
adaptive scaling differently, and it never shows in the loss value.  So the penalty is
computed on the parameters and added to the loss, as Keras does, which works for every
optimizer and keeps the reported loss comparable.

A TF variable may live in several torch tensors (a GRU bias split into ``bias_ih`` and
``bias_hh``); sums over all of them are the sum over the variable, whatever the layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pipeline.training.config import Regularizer, TrainingConfigError


@dataclass
class WeightPenalty:
    """One regularized TF variable: its torch tensors and the ``l1``/``l2`` factors."""

    variable: str
    tensors: list[torch.Tensor]
    l1: float
    l2: float

    def __call__(self) -> torch.Tensor:
        """``l1·Σ|w| + l2·Σw²`` over the variable's tensors (terms with a zero factor are
        left out, as Keras's ``L1L2`` does)."""
        dtype = self.tensors[0].dtype
        value = torch.zeros((), dtype=dtype)
        if self.l1:
            value = value + torch.tensor(self.l1, dtype=dtype) * sum(
                torch.sum(torch.abs(t)) for t in self.tensors
            )
        if self.l2:
            value = value + torch.tensor(self.l2, dtype=dtype) * sum(
                torch.sum(torch.square(t)) for t in self.tensors
            )
        return value


def penalty_of(regularizer: Regularizer, tensors: Sequence[torch.Tensor]) -> WeightPenalty:
    """The :class:`WeightPenalty` of a Keras ``L1``, ``L2`` or ``L1L2`` on ``tensors``."""
    config = regularizer.config
    if regularizer.class_name == "L1":
        l1, l2 = float(config.get("l1", 0.01)), 0.0
    elif regularizer.class_name == "L2":
        l1, l2 = 0.0, float(config.get("l2", 0.01))
    elif regularizer.class_name == "L1L2":
        l1, l2 = float(config.get("l1") or 0.0), float(config.get("l2") or 0.0)
    else:
        raise TrainingConfigError(
            f"regularizer {regularizer.class_name} (config key "
            f"'regularizers[{regularizer.variable}]') has no torch equivalent"
        )
    return WeightPenalty(regularizer.variable, list(tensors), l1, l2)


class RegularizationPenalty:
    """The model's weight penalties: ``penalty()`` gives one scalar tensor per regularized
    variable (an empty list when nothing is regularized); the training step adds them to
    the loss as Keras's ``compute_loss`` does."""

    def __init__(self, penalties: Sequence[WeightPenalty]) -> None:
        self.penalties = list(penalties)

    def __call__(self) -> list[torch.Tensor]:
        """Each variable's penalty, in model order (Keras adds them to the loss one by one)."""
        return [p() for p in self.penalties]

    def __bool__(self) -> bool:
        return bool(self.penalties)
