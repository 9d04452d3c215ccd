"""Models whose float32 noise is far above 1e-4, for the tolerance tests.

- :func:`deep_tanh_mlp`: a small, fast model in the chaotic regime (tanh with weight gain 3),
  where float32 rounding grows by a constant factor per layer.
- real ``keras.applications`` networks built as a new user would: ``weights=None``, logits
  out (``classifier_activation=None``), random biases and BatchNorm *calibrated*: random
  ``gamma``/``beta`` and one training-mode call on a random batch with ``momentum`` 0, so the
  moving statistics are the batch's and activations stay O(1) through every layer.

Factories for the TF worker (``tests/verify/noisy_models.py:resnet50``); pytest never
imports this file (it imports Keras).
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


def deep_tanh_mlp() -> keras.Model:
    """x[16] → 24 x Dense(64, tanh) with kernels ~ N(0, 9/fan_in) → Dense(4) logits.

    A gain of 3 puts tanh in its chaotic regime: a perturbation grows ~1.3x per layer, so
    float32 rounding reaches a few 1e-4 on O(1) outputs after 24 layers, as in ResNet50.
    """
    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    inputs = keras.Input((16,), name="x")
    hidden = inputs
    for index in range(24):
        hidden = keras.layers.Dense(64, activation="tanh", name=f"dense_{index}")(hidden)
    outputs = keras.layers.Dense(4, name="logits")(hidden)
    model = keras.Model(inputs, outputs, name="deep_tanh_mlp")
    for layer in model.layers[1:]:
        kernel, bias = layer.kernel, layer.bias
        gain = 3.0 if layer.name != "logits" else 1.0
        fan_in = kernel.shape[0]
        kernel.assign(rng.normal(0.0, gain / np.sqrt(fan_in), kernel.shape).astype("float32"))
        bias.assign(rng.normal(0.0, 0.1, bias.shape).astype("float32"))
    return model


def hard_swish_mlp() -> keras.Model:
    """x[8] → Dense(32) → hard-swish written as MobileNetV3 writes it, with bare operations
    in the functional graph (``x + 3.0``, ``* (1 / 6)``: not layers) → Dense(4) logits."""
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((8,), name="x")
    hidden = keras.layers.Dense(32, name="dense")(inputs)
    hidden = hidden * keras.layers.ReLU(6.0, name="relu6")(hidden + 3.0) * (1.0 / 6.0)
    outputs = keras.layers.Dense(4, name="logits")(hidden)
    return keras.Model(inputs, outputs, name="hard_swish_mlp")


def _randomize_biases(model: keras.Model, seed: int = SEED) -> None:
    """Biases ~ N(0, 0.1²): Keras starts them at zero, and a zero bias cannot be dropped."""
    rng = np.random.default_rng(seed + 1)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        bias = getattr(layer, "bias", None)
        if bias is not None and not isinstance(layer, keras.layers.BatchNormalization):
            bias.assign(rng.normal(0.0, 0.1, bias.shape).astype("float32"))


def _application(name: str, size: int, **kwargs: object) -> keras.Model:
    keras.utils.set_random_seed(SEED)
    constructor = getattr(keras.applications, name)
    options: dict[str, object] = {"classifier_activation": None, **kwargs}
    model = constructor(input_shape=(size, size, 3), weights=None, **options)
    _randomize_biases(model)
    calibrate_batchnorm(model, (4, size, size, 3))
    return model


def resnet50() -> keras.Model:
    """``keras.applications.ResNet50`` on 96x96, calibrated BatchNorm, logits out."""
    return _application("ResNet50", 96)


def resnet50_softmax() -> keras.Model:
    """:func:`resnet50` ending in its softmax (for the wrong-softmax-axis mutation)."""
    return _application("ResNet50", 96, classifier_activation="softmax")


def mobilenet_v2() -> keras.Model:
    """``keras.applications.MobileNetV2`` (alpha 0.35) on 96x96, calibrated BatchNorm."""
    return _application("MobileNetV2", 96, alpha=0.35)
