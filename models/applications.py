"""The real-network corpus: every ``keras.applications`` constructor Keras 3 ships, as a
factory (``models/applications.py:<name>``), for networks nobody on the project wrote.

Each network is built with ``weights=None`` (nothing is downloaded), ``classifier_activation=
None`` (logits, not softmax outputs that sit near 1/N whatever the weights), at a small input
size the constructor accepts, and with **calibrated BatchNorm**: every BatchNormalization gets
random ``gamma``/``beta`` and one training-mode call on a random batch with ``momentum`` 0,
so its moving statistics are real batch statistics and activations stay O(1) to the logits.
With fresh statistics (mean 0, variance 1) the logits of some networks barely depend on the
input (MobileNetV3Small's move by ~1e-7 between two inputs), which would make a weak test.

Before that, every trainable variable the constructor set to a constant is redrawn around it
(:func:`randomize_constants`): biases and norm offsets are zeros in a fresh network, so a bias
that went to the wrong place, or nowhere, would not change a single output (a zeroed-bias
mutation would be no mutation at all), and VGG's logits would be ~1e-8.

The list itself, :data:`models.catalog.CORPUS`, imports no TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

# The worker imports a factory file with its folder on sys.path, so the sibling is `catalog`.
from catalog import CORPUS

SEED = int(os.environ.get("TF2TORCH_CORPUS_SEED", "1234"))
"""Weights and calibration; ``TF2TORCH_CORPUS_SEED`` draws another network of the same
architecture (the corpus reruns for false alarms)."""
CALIBRATION_BATCH = 64
"""Images in the calibration batch.  At 64x64 the last stages are 2x2, and 8 images gave some
channels a near-zero batch variance: EfficientNetB7's logits reached 5e4 in inference (8.2 in
training mode on the same inputs) and float32 disagreed with float64 by 4e4.  With 64: 4.3."""


def randomize_constants(variables: Iterable[Any], rng: np.random.Generator) -> None:
    """Redraw each of ``variables`` whose elements are all one constant ``c`` (biases,
    BatchNorm/LayerNorm ``gamma`` and ``beta``, layer scales): ``c = 0`` becomes N(0, 0.1²),
    any other ``c`` becomes ``c`` times U(0.5, 1.5)."""
    for variable in variables:
        values = keras.ops.convert_to_numpy(variable)
        if values.size == 0 or not np.all(values == values.flat[0]):
            continue
        constant = float(values.flat[0])
        if constant == 0.0:
            drawn = rng.normal(0.0, 0.1, values.shape)
        else:
            drawn = constant * rng.uniform(0.5, 1.5, values.shape)
        variable.assign(drawn.astype(values.dtype))


def calibrate_batchnorm(model: keras.Model, size: int, seed: int = SEED) -> keras.Model:
    """Redraw the constant variables (:func:`randomize_constants`: BatchNorm ``gamma`` ~
    U(0.5, 1.5), ``beta`` ~ N(0, 0.1²), biases ~ N(0, 0.1²)), then set every
    BatchNormalization's moving statistics to the statistics of one random batch (a
    training-mode call with ``momentum`` 0); momentum is restored afterwards."""
    rng = np.random.default_rng(seed)
    randomize_constants(model.trainable_variables, rng)
    norms = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    # Standard normal, as the inputs tf2torch draws from the signature.
    batch = rng.standard_normal((CALIBRATION_BATCH, size, size, 3)).astype("float32")
    model(batch, training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum
    return model


def build(name: str) -> keras.Model:
    """The corpus network ``name`` at its input size, ``weights=None``, logits out, with
    calibrated BatchNorm."""
    keras.utils.set_random_seed(SEED)
    size = CORPUS[name]
    constructor = getattr(keras.applications, name)
    model = constructor(
        input_shape=(size, size, 3), weights=None, classifier_activation=None, classes=10
    )
    return calibrate_batchnorm(model, size)


def _factory(name: str) -> object:
    def factory() -> keras.Model:
        return build(name)

    factory.__name__ = name
    factory.__doc__ = (
        f"``keras.applications.{name}`` at {CORPUS[name]}x{CORPUS[name]} (see module)."
    )
    return factory


for _name in CORPUS:
    globals()[_name] = _factory(_name)
