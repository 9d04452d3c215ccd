"""Everything ``compile()`` set up, rebuilt in torch for a converted module.

:func:`build_training` takes the module (:func:`pipeline.api.load_torch`), its parameter
table and a :class:`~pipeline.training.config.TrainingConfig`, and returns a
:class:`TorchTraining` whose :meth:`~TorchTraining.step` is one Keras ``train_step``: forward
in training mode, the compiled loss plus the regularizers' penalties, backward, clipping,
the optimizer update, then the learning-rate schedule.  Every TF trainable variable is
optimized through the torch tensor(s) the table names, in model order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.core.errors import BadInputError
from pipeline.training.clipping import GradientClipping
from pipeline.training.config import TrainingConfig, check_supported
from pipeline.training.losses import KerasLoss
from pipeline.training.optimizers import build_optimizer
from pipeline.training.regularizers import RegularizationPenalty, penalty_of
from pipeline.training.schedules import KerasSchedule, learning_rate_function
from pipeline.training.train_mode import set_training
from pipeline.training.variables import MappedVariable, map_variables


@dataclass
class TorchTraining:
    """A converted module with Keras's optimizer, schedule, loss, penalty and clipping."""

    module: torch.nn.Module
    variables: list[MappedVariable]
    optimizer: torch.optim.Optimizer
    scheduler: KerasSchedule | None
    loss: KerasLoss
    penalty: RegularizationPenalty
    clipping: GradientClipping
    loss_scale: float | None = None

    def _trainable_groups(self) -> list[list[torch.Tensor]]:
        return [v.tensors for v in self.variables if v.trainable]

    def train_mode(self, training: bool = True) -> None:
        """BatchNorm in Keras's training arithmetic (``True``) or inference (``False``);
        a frozen (``trainable=False``) BatchNorm stays in inference, as in Keras."""
        frozen = {p.torch_name for v in self.variables if not v.trainable for p in v.parts}
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


def build_training(
    module: torch.nn.Module,
    config: TrainingConfig,
    table: Sequence[Mapping[str, Any]],
    variable_names: Sequence[str] | None = None,
) -> TorchTraining:
    """The :class:`TorchTraining` of ``module`` under ``config``.

    ``table`` is the run's parameter table (``report.json`` ``parameters``, also
    ``module.tf2torch_parameters``); ``variable_names`` the TF variables in model order
    (default: the table's order).  Raises :class:`~pipeline.training.config.TrainingConfigError`
    for anything in ``config`` torch cannot reproduce.
    """
    check_supported(config)
    if variable_names is None:
        variable_names = list(dict.fromkeys(str(r["tf_name"]) for r in table if r.get("tf_name")))
    variables = map_variables(module, table, variable_names)
    trainable = [v for v in variables if v.trainable]
    lr_at = learning_rate_function(config.optimizer.learning_rate)
    params = [(v.tf_name, t) for v in trainable for t in v.tensors]
    optimizer = build_optimizer(params, config.optimizer, lr_at(0))
    scheduler = (
        KerasSchedule(optimizer, lr_at)
        if not isinstance(config.optimizer.learning_rate, float)
        else None
    )
    by_name = {v.tf_name: v for v in variables}
    penalties = []
    for reg in config.regularizers:
        if reg.variable not in by_name:
            raise BadInputError(f"regularized TF variable {reg.variable} is not in the module")
        penalties.append(penalty_of(reg, by_name[reg.variable].tensors))
    scale = config.optimizer.option("loss_scale_factor")
    return TorchTraining(
        module=module,
        variables=variables,
        optimizer=optimizer,
        scheduler=scheduler,
        loss=KerasLoss(config.losses, config.epsilon),
        penalty=RegularizationPenalty(penalties),
        clipping=GradientClipping.from_config(config.optimizer),
        loss_scale=float(scale) if scale else None,
    )
