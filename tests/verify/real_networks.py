"""Real ``keras.applications`` networks for the tolerance tests, built as a new user would.

``weights=None``, logits out (``classifier_activation=None``) and BatchNorm *calibrated*:
random ``gamma``/``beta`` and one training-mode call on a random batch with ``momentum`` 0, so
the moving statistics are the batch's and activations stay O(1) through every layer.  Used as
``tests/verify/real_networks.py:resnet50`` factories in the TF worker (never imported by
pytest: it imports Keras).
"""

from __future__ import annotations

import keras
import numpy as np

SEED = 1234


def calibrate_batchnorm(model: keras.Model, shape: tuple[int, ...], seed: int = SEED) -> None:
    """Random gamma in U(0.5, 1.5) and beta in N(0, 0.1²), then moving mean/variance set by
    one training-mode call on a random batch of ``shape`` with momentum 0."""
    rng = np.random.default_rng(seed)
    norms = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in norms:
        if layer.gamma is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32"))
        if layer.beta is not None:
            layer.beta.assign(rng.normal(0.0, 0.1, layer.beta.shape).astype("float32"))
        layer.momentum = 0.0
    model(rng.normal(0.0, 1.0, shape).astype("float32"), training=True)
    for layer in norms:
        layer.momentum = 0.99


def _application(name: str, size: int, **kwargs: object) -> keras.Model:
    keras.utils.set_random_seed(SEED)
    constructor = getattr(keras.applications, name)
    model = constructor(
        input_shape=(size, size, 3), weights=None, classifier_activation=None, **kwargs
    )
    calibrate_batchnorm(model, (4, size, size, 3))
    return model


def resnet50() -> keras.Model:
    """``keras.applications.ResNet50`` on 96x96, calibrated BatchNorm, logits out."""
    return _application("ResNet50", 96)


def mobilenet_v2() -> keras.Model:
    """``keras.applications.MobileNetV2`` (alpha 0.35) on 96x96, calibrated BatchNorm."""
    return _application("MobileNetV2", 96, alpha=0.35)
