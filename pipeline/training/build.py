"""Everything ``compile()`` set up, rebuilt in torch for a converted module.

:func:`training_code` writes Keras's recipe as torch code (:mod:`pipeline.training.emit`:
the run's ``torch_model/training.py``); :func:`build_training` runs that code on a module
(:func:`pipeline.api.load_torch`) and returns its ``Training`` (:class:`TorchTraining`),
whose :meth:`~TorchTraining.step` is one Keras ``train_step``: forward in training mode,
the compiled loss plus the regularizers' penalties, backward, clipping, the optimizer
update, then the learning-rate schedule.  Every TF trainable variable is optimized through
the torch tensor(s) the run's parameter table names, in model order.  The emitted code is
what is run, here and in ``train-check``: what is proven is what the user gets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch

from pipeline.training.config import TrainingConfig, check_supported
from pipeline.training.emit import (
    equivalents_for,
    load_training_module,
    registered_in,
    training_source,
    variable_rows,
)
from pipeline.training.recipe import Training as TorchTraining
from pipeline.training.variables import map_variables

__all__ = ["TorchTraining", "build_training", "training_code"]


def _names(table: Sequence[Mapping[str, Any]], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        return list(names)
    return list(dict.fromkeys(str(r["tf_name"]) for r in table if r.get("tf_name")))


def training_code(
    config: TrainingConfig,
    table: Sequence[Mapping[str, Any]],
    variable_names: Sequence[str] | None = None,
    *,
    model_name: str = "the model",
) -> str:
    """The text of ``torch_model/training.py`` for ``config`` on a run's parameter
    ``table`` (``variable_names``: the TF variables in model order, default the table's)."""
    check_supported(config)
    rows = variable_rows(table, _names(table, variable_names))
    return training_source(config, rows, model_name=model_name, registered=registered_in(config))


def build_training(
    module: torch.nn.Module,
    config: TrainingConfig,
    table: Sequence[Mapping[str, Any]],
    variable_names: Sequence[str] | None = None,
    *,
    source: str | None = None,
) -> TorchTraining:
    """The ``Training`` of ``module`` under ``config``: :func:`training_code` (or
    ``source``, emitted text) executed, and its ``build_training(module)`` called.

    ``table`` is the run's parameter table (``report.json`` ``parameters``, also
    ``module.tf2torch_parameters``); ``variable_names`` the TF variables in model order
    (default: the table's order).  Raises :class:`~pipeline.training.config.TrainingConfigError`
    for anything in ``config`` torch cannot reproduce, :class:`BadInputError` for a TF
    variable without a torch tensor.
    """
    check_supported(config)
    names = _names(table, variable_names)
    map_variables(module, table, names)  # a clear error for a variable without a tensor
    text = source if source is not None else training_code(config, table, names)
    emitted = load_training_module(text)
    return cast(TorchTraining, emitted.build_training(module, equivalents_for(config)))
