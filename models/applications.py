"""The real-network corpus: every ``keras.applications`` constructor Keras 3 ships, as a
factory (``models/applications.py:<name>``), for networks nobody on the project wrote.

Each network is built with ``weights=None`` (nothing is downloaded), ``classifier_activation=
None`` (logits, not softmax outputs that sit near 1/N whatever the weights), at a small input
size the constructor accepts, and with **calibrated BatchNorm**: every BatchNormalization gets
random ``gamma``/``beta`` and one training-mode call on a random batch with ``momentum`` 0,
so its moving statistics are real batch statistics and activations stay O(1) to the logits.
With fresh statistics (mean 0, variance 1) the logits of some networks barely depend on the
input (MobileNetV3Small's move by ~1e-7 between two inputs), which would make a weak test.

The list itself, :data:`models.catalog.CORPUS`, imports no TensorFlow.
"""

from __future__ import annotations

import keras
import numpy as np

# The worker imports a factory file with its folder on sys.path, so the sibling is `catalog`.
from catalog import CORPUS

SEED = 1234


def calibrate_batchnorm(model: keras.Model, size: int, seed: int = SEED) -> keras.Model:
    """Give every BatchNormalization random ``gamma`` ~ U(0.5, 1.5) and ``beta`` ~ N(0, 0.1²),
    then set its moving statistics to the statistics of one random batch (a training-mode
    call with ``momentum`` 0); momentum is restored afterwards."""
    rng = np.random.default_rng(seed)
    norms = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        if layer.gamma is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32"))
        if layer.beta is not None:
            layer.beta.assign(rng.normal(0.0, 0.1, layer.beta.shape).astype("float32"))
        layer.momentum = 0.0
    # Standard normal, as the inputs tf2torch draws from the signature.
    batch = rng.standard_normal((8, size, size, 3)).astype("float32")
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
    factory.__doc__ = f"``keras.applications.{name}`` at {CORPUS[name]}x{CORPUS[name]} (see module)."
    return factory


for _name in CORPUS:
    globals()[_name] = _factory(_name)
