"""Keras 2 models written by ``tf-keras`` for tests/export/test_keras2_files.py.

Run as a script, never imported by pytest (it imports TensorFlow):
``python keras2_cases.py OUT_DIR NAME...`` builds each named model with ``tf_keras``, gives
every variable seeded random values (BatchNorm statistics included, so each one moves the
outputs), and writes ``OUT_DIR/NAME.h5`` and the Keras 2 SavedModel ``OUT_DIR/NAME/`` (the
subclassed model only the SavedModel, ``time_major`` only the ``.h5``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tf_keras as k


def conv_bn_lstm() -> Any:
    """The issue's model: Conv2D → BatchNorm → ReLU → Reshape → LSTM → Dense (Sequential)."""
    return k.Sequential(
        [
            k.layers.InputLayer(input_shape=(6, 5, 2), name="image"),
            k.layers.Conv2D(4, 3, padding="same", name="conv"),
            k.layers.BatchNormalization(name="bn"),
            k.layers.ReLU(name="relu"),
            k.layers.Reshape((6, 20), name="reshape"),
            k.layers.LSTM(8, time_major=False, name="lstm"),
            k.layers.Dense(3, name="head"),
        ],
        name="conv_bn_lstm",
    )


def text_gru() -> Any:
    """Functional: Embedding → Bidirectional GRU (Keras 2's reset_after=True) → LayerNorm →
    Dropout → Dense."""
    tokens = k.Input((7,), dtype="int32", name="tokens")
    x = k.layers.Embedding(20, 6, name="embed")(tokens)
    x = k.layers.Bidirectional(k.layers.GRU(5, return_sequences=True), name="bigru")(x)
    x = k.layers.LayerNormalization(name="norm")(x)
    x = k.layers.Dropout(0.3, name="drop")(x)
    x = k.layers.GlobalAveragePooling1D(name="pool")(x)
    return k.Model(tokens, k.layers.Dense(4, name="head")(x), name="text_gru")


def gru_v1() -> Any:
    """Functional: GRU(reset_after=False) → LSTM(time_major) → Dense on a float sequence."""
    seq = k.Input((5, 3), name="seq")
    x = k.layers.GRU(4, reset_after=False, return_sequences=True, name="gru")(seq)
    x = k.layers.LSTM(3, name="lstm")(x)
    return k.Model(seq, k.layers.Dense(2, name="head")(x), name="gru_v1")


def attention() -> Any:
    """Functional: self-attention ``MultiHeadAttention(x, value=x)`` (Keras 2 writes the
    tensor keyword as a reference) and ``Attention`` (``score_mode="dot"``) → Dense."""
    x = k.Input((5, 8), name="x")
    h = k.layers.MultiHeadAttention(2, 4, name="mha")(x, value=x)
    h = k.layers.Attention(name="attend")([h, x])
    return k.Model(x, k.layers.Dense(3, name="head")(h), name="attention")


def convs() -> Any:
    """Functional: SeparableConv2D → DepthwiseConv2D → Conv2DTranspose (Keras 2 wrote
    ``groups`` and unused ``kernel_*`` keys for them) → LayerNormalization over H, W, C."""
    x = k.Input((8, 8, 3), name="image")
    h = k.layers.SeparableConv2D(4, 3, padding="same", name="sep")(x)
    h = k.layers.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = k.layers.Conv2DTranspose(3, 3, strides=2, name="up")(h)
    h = k.layers.LayerNormalization(axis=[1, 2, 3], name="norm")(h)
    return k.Model(x, k.layers.Dense(2, name="head")(k.layers.Flatten()(h)), name="convs")


class Subclassed(k.Model):
    """A subclassed Keras 2 model: Dense → BatchNorm → Dense in ``call``."""

    def __init__(self) -> None:
        super().__init__(name="subclassed")
        self.hidden = k.layers.Dense(6, activation="tanh", name="hidden")
        self.norm = k.layers.BatchNormalization(name="norm")
        self.head = k.layers.Dense(2, name="head")

    def call(self, x: Any) -> Any:
        return self.head(self.norm(self.hidden(x)))


def subclassed() -> Any:
    """:class:`Subclassed`, built on inputs of 4 features (it has no ``.h5`` form)."""
    model = Subclassed()
    model(np.zeros((1, 4), np.float32))
    return model


def time_major() -> Any:
    """An LSTM with ``time_major=True``, which Keras 3 has no form of."""
    seq = k.Input((5, 3), name="seq")
    return k.Model(seq, k.layers.LSTM(3, time_major=True, name="lstm")(seq), name="time_major")


CASES: dict[str, Callable[[], Any]] = {
    "conv_bn_lstm": conv_bn_lstm,
    "text_gru": text_gru,
    "gru_v1": gru_v1,
    "attention": attention,
    "convs": convs,
    "subclassed": subclassed,
    "time_major": time_major,
}


def randomised(model: Any, seed: int = 0) -> Any:
    """``model`` with every variable redrawn: N(0, 0.5²), variances U(0.5, 1.5)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        if "moving_variance" in v.name:
            v.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        else:
            v.assign((0.5 * rng.standard_normal(shape)).astype(np.float32))
    return model


def main(argv: list[str]) -> None:
    """Write each named case as ``.h5`` and as a Keras 2 SavedModel under ``argv[0]``."""
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for name in argv[1:]:
        model = randomised(CASES[name]())
        if name != "subclassed":
            model.save(out / f"{name}.h5")
        if name != "time_major":
            model.save(out / name, save_format="tf")


if __name__ == "__main__":
    main(sys.argv[1:])
