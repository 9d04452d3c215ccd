"""The TF reference: outputs on the comparison inputs, and every variable's value and
gradient of the fixed loss that the gradient check compares."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.run_dir import write_npz
from pipeline.export.worker.loading import LoadedModel, one_line

VARIABLES_NPZ = "tf_variables.npz"
LOSS_SEED_OFFSET = 7919


def loss_weights(outputs: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Fixed random weights per floating output: the gradient check's loss is
    ``sum over outputs of sum(output * weight)``, so d(loss)/d(output) = weight exactly."""
    rng = np.random.default_rng(seed + LOSS_SEED_OFFSET)
    return {
        name: rng.standard_normal(value.shape).astype(value.dtype)
        for name, value in outputs.items()
        if np.issubdtype(value.dtype, np.floating)
    }


def write_variables_and_gradients(
    loaded: LoadedModel,
    arrays: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    seed: int,
    path: Path,
) -> tuple[list[dict[str, Any]], str | None]:
    """Write every variable's value and every trainable one's gradient of the fixed loss to
    ``path`` (keys ``value/<i>``, ``grad/<i>``, ``loss_weight/<output>``); return the
    variables' metadata in the same order, and why TF could not differentiate the model
    (None when it could; then no variable has a gradient)."""
    import tensorflow as tf

    weights = loss_weights(outputs, seed)
    trainable = [v for v in loaded.variables if v.trainable]
    grads: dict[int, Any] = {}
    error = None
    try:
        with tf.GradientTape() as tape:
            results = loaded.call({k: tf.constant(v) for k, v in arrays.items()})
            loss = tf.add_n(
                [
                    tf.reduce_sum(tf.cast(r, tf.float64) * tf.constant(weights[name], tf.float64))
                    for name, r in zip(outputs, results, strict=True)
                    if name in weights
                ]
                or [tf.constant(0.0, tf.float64)]
            )
        if trainable:
            grads = dict(
                zip(
                    (id(v) for v in trainable),
                    tape.gradient(loss, [v.variable for v in trainable]),
                    strict=True,
                )
            )
    except (LookupError, ValueError, TypeError, tf.errors.OpError) as err:
        # An op without a registered gradient (LookupError) or one TF cannot trace under a
        # tape: the outputs were already compared; the gradient check is skipped, saying why.
        error = one_line(err)
    npz: dict[str, np.ndarray] = {f"loss_weight/{k}": w for k, w in weights.items()}
    meta = []
    for i, v in enumerate(loaded.variables):
        value = np.asarray(v.variable)
        npz[f"value/{i}"] = value
        grad = grads.get(id(v))
        if grad is not None:
            npz[f"grad/{i}"] = np.asarray(tf.convert_to_tensor(grad))
        meta.append(
            {
                "path": v.path,
                "shape": list(value.shape),
                "dtype": value.dtype.name,
                "trainable": v.trainable,
                "has_grad": grad is not None,
                **({"batchnorm": v.batchnorm} if v.batchnorm is not None else {}),
                **(v.info or {}),
            }
        )
    write_npz(path, npz)
    return meta, error


