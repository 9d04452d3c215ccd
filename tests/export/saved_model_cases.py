"""SavedModels that Keras does not load, for tests/export/test_savedmodel_variables.py.

Run as a script, never imported by pytest (it imports TensorFlow):
``python saved_model_cases.py OUT_DIR`` writes ``OUT_DIR/module`` (a ``tf.Module``: two
sub-modules whose variables share TF names, and a non-trainable scale) and ``OUT_DIR/export``
(a Keras 3 ``model.export()`` artifact: Conv2D → BatchNorm → ReLU → LSTM → Dense), every
variable seeded and random, BatchNorm statistics included.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

RNG = np.random.default_rng(0)


def _random(shape: tuple[int, ...]) -> np.ndarray:
    return (0.5 * RNG.standard_normal(shape)).astype(np.float32)


class Dense(tf.Module):
    """``x @ kernel + bias`` with TF variable names ``kernel`` and ``bias`` (which repeat)."""

    def __init__(self, units_in: int, units_out: int, name: str) -> None:
        super().__init__(name=name)
        self.kernel = tf.Variable(_random((units_in, units_out)), name="kernel")
        self.bias = tf.Variable(_random((units_out,)), name="bias")

    def __call__(self, x: Any) -> Any:
        return x @ self.kernel + self.bias


class Net(tf.Module):
    """``(tanh(x @ W1 + b1) @ W2 + b2) * scale``, ``scale`` not trainable."""

    def __init__(self) -> None:
        super().__init__(name="net")
        self.encoder = Dense(4, 5, "encoder")
        self.decoder = Dense(5, 3, "decoder")
        self.scale = tf.Variable(
            RNG.uniform(0.5, 1.5, (3,)).astype(np.float32), trainable=False, name="scale"
        )

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(self, x: Any) -> dict[str, Any]:
        return {"y": self.decoder(tf.tanh(self.encoder(x))) * self.scale}


def keras_export(path: Path) -> None:
    """A small Keras 3 CNN with an LSTM over its rows, written with ``model.export`` (a plain
    SavedModel)."""
    import keras

    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Reshape((6, 24))(x)
    x = keras.layers.LSTM(5, name="lstm")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x), name="small_cnn")
    for v in model.weights:
        shape = tuple(v.shape)
        v.assign(RNG.uniform(0.5, 1.5, shape) if "variance" in v.path else _random(shape))
    model.export(str(path))


def main(out: Path) -> None:
    """Write both SavedModels under ``out``."""
    net = Net()
    tf.saved_model.save(net, str(out / "module"), signatures={"serving_default": net.serve})
    keras_export(out / "export")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
