"""Training carried over from Keras to PyTorch: ``compile()`` read, rebuilt and proven.

- :mod:`~pipeline.training.config`: the training configuration (torch- and TF-free);
- :mod:`~pipeline.training.tf_worker` (+ :mod:`~pipeline.training.keras_config`): the TF
  side, reading ``compile()`` and running Keras's own training steps in a worker process;
- :mod:`~pipeline.training.optimizers`, :mod:`~pipeline.training.schedules`,
  :mod:`~pipeline.training.losses`, :mod:`~pipeline.training.regularizers`,
  :mod:`~pipeline.training.clipping`: torch objects that reproduce Keras's rules;
- :mod:`~pipeline.training.build`: all of them for a converted module, through the run's
  parameter table; :mod:`~pipeline.training.check`: the K-step proof (``train-check``).

Importing this package imports neither torch nor TensorFlow.
"""
