"""Training carried over from Keras to PyTorch: ``compile()`` read, rebuilt and proven.

- :mod:`~pipeline.training.config`: the training configuration (torch- and TF-free);
- :mod:`~pipeline.training.tf_worker` (+ :mod:`~pipeline.training.keras_config`): the TF
  side, reading ``compile()`` and running Keras's own training steps in a worker process;
- :mod:`~pipeline.training.optimizers`, :mod:`~pipeline.training.schedules`,
  :mod:`~pipeline.training.losses`, :mod:`~pipeline.training.regularizers`,
  :mod:`~pipeline.training.clipping`: torch objects that reproduce Keras's rules;
- :mod:`~pipeline.training.emit` (+ :mod:`~pipeline.training.recipe`): all of them written
  out as the run's torch-only ``torch_model/training.py``;
- :mod:`~pipeline.training.build`: that code run on a converted module, through the run's
  parameter table; :mod:`~pipeline.training.check`: the K-step proof (``train-check``),
  judged against both frameworks' float32 noise (:mod:`~pipeline.training.judge`).

Importing this package imports neither torch nor TensorFlow.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # The torch-side objects import torch: load them only when asked for.
    if name == "register_optimizer":
        from pipeline.training.optimizers import register_optimizer

        return register_optimizer
    if name == "register_loss":
        from pipeline.training.losses import register_loss

        return register_loss
    if name in ("build_training", "TorchTraining"):
        from pipeline.training import build

        return getattr(build, name)
    if name in ("train_check", "TrainCheckResult"):
        from pipeline.training import check

        return getattr(check, name)
    raise AttributeError(f"module 'pipeline.training' has no attribute {name!r}")
