"""The training step as the run's ``torch_model/training.py`` spells it: torch only.

:mod:`pipeline.training.emit` copies the classes below (and the optimizer, schedule, loss,
penalty, clipping and BatchNorm pieces of the sibling modules) verbatim into the emitted
file, so nothing here may import more than torch, numpy and the standard library, nor call
anything that is not emitted with it (``_same_rank``, ``reduce_loss`` and ``set_training``
are).  train-check runs that emitted file: the step proven is the step the user gets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.training.clipping import GradientClipping
from pipeline.training.losses import _same_rank, reduce_loss
from pipeline.training.regularizers import RegularizationPenalty
from pipeline.training.train_mode import set_training


@dataclass
class Variable:
    """A Keras variable (its path, e.g. ``dense/kernel``) and the torch tensor(s) holding
    it: one, or two for a GRU bias split into ``bias_ih``/``bias_hh``."""

    name: str
    trainable: bool
    tensors: list[torch.Tensor]


LossTermSpec = tuple[int, Callable[..., torch.Tensor], dict[str, Any], str, float | None, bool]
"""``(output index, per-sample loss function, its keyword arguments, reduction, loss
weight or None, whether targets take the prediction's dtype)``."""


class CompiledLoss:
    """Keras's compiled loss (``CompileLoss``): one loss per output, each reduced
    (``sum_over_batch_size``: the sum over every per-sample value divided by their number;
    ``sum``), weighted by its ``loss_weights`` entry and summed in output order."""

    def __init__(self, terms: Sequence[LossTermSpec]) -> None:
        self.terms = list(terms)

    def __call__(
        self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """The total loss (a scalar tensor) of ``outputs`` against ``targets`` (output order)."""
        total: torch.Tensor | int = 0
        for index, function, kwargs, reduction, weight, cast in self.terms:
            y_true, y_pred = targets[index], outputs[index]
            if cast:  # Keras casts targets to the prediction's dtype (not integer labels)
                y_true = y_true.to(y_pred.dtype)
            y_true, y_pred = _same_rank(y_true, y_pred)
            value = reduce_loss(function(y_true, y_pred, **kwargs), reduction)
            if weight is not None:
                value = value * weight
            total = total + value
        assert isinstance(total, torch.Tensor)
        return total


@dataclass
class Training:
    """A model with Keras's optimizer, schedule, loss, penalty and clipping; :meth:`step`
    is one Keras ``train_step``.  Every attribute is a plain torch object (or callable), for
    a loop of your own."""

    module: torch.nn.Module
    variables: list[Variable]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    loss: Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], torch.Tensor]
    penalty: RegularizationPenalty
    clipping: GradientClipping
    loss_scale: float | None = None

    def _trainable_groups(self) -> list[list[torch.Tensor]]:
        return [v.tensors for v in self.variables if v.trainable]

    def train_mode(self, training: bool = True) -> None:
        """BatchNorm in Keras's training arithmetic (``True``) or inference (``False``);
        a frozen (``trainable=False``) BatchNorm stays in inference, as in Keras."""
        fixed = {id(t) for v in self.variables if not v.trainable for t in v.tensors}
        frozen = {
            name
            for name, tensor in [*self.module.named_parameters(), *self.module.named_buffers()]
            if id(tensor) in fixed
        }
        set_training(self.module, training, frozen)

    def compute_loss(
        self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Keras's ``compute_loss``: the compiled loss plus every regularizer's penalty."""
        loss = self.loss(outputs, targets)
        penalties = self.penalty()
        return torch.sum(torch.stack([loss, *penalties])) if penalties else loss

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, through Keras's ``loss_scale_factor`` when it has one."""
        if not self.loss_scale:
            loss.backward()
            return
        (loss * self.loss_scale).backward()
        with torch.no_grad():
            for group in self._trainable_groups():
                for t in group:
                    if t.grad is not None:
                        t.grad.div_(self.loss_scale)

    def apply_gradients(self) -> None:
        """Keras's ``optimizer.apply``: clip, update, then advance the schedule."""
        self.clipping(self._trainable_groups())
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def step(self, inputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> float:
        """One training step on a batch (inputs and targets in the model's order); returns
        the loss Keras reports: the compiled loss plus every regularizer's penalty."""
        self.train_mode(True)
        self.optimizer.zero_grad(set_to_none=True)
        result = self.module(*inputs)
        outputs = list(result) if isinstance(result, list | tuple) else [result]
        total = self.compute_loss(outputs, targets)
        self.backward(total)
        self.apply_gradients()
        return float(total.detach())
