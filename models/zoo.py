"""Reference TensorFlow/Keras models: the zoo every stage of tf2torch is tested on.

Each public function builds one model with **seeded random weights everywhere** (biases and
BatchNorm statistics included), so a comparison exercises every weight: with Keras's
default zero biases and fresh BatchNorm statistics, a wrong bias or a dropped statistic would
go unnoticed.  ``models/catalog.py`` lists the models with what the pipeline needs to know
about them without importing TensorFlow.

Also usable as ``--custom-objects models/zoo.py``: ``CUSTOM_OBJECTS`` names the custom
layers for loading a saved ``.keras``/``.h5`` file.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

SEED = 1234
PACKAGE = "tf2torch_zoo"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ScaleLayer(layers.Layer):
    """Multiplies its input by one trainable weight made with ``add_weight``."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.scale = self.add_weight(
            name="scale",
            shape=(1,),
            initializer=keras.initializers.Constant(1.0),
            trainable=True,
        )

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        return inputs * self.scale


@keras.saving.register_keras_serializable(package=PACKAGE)
class SelfAttention(layers.Layer):
    """Single-head scaled dot-product self-attention with Dense query/key/value projections."""

    def __init__(self, units: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.query = layers.Dense(units, name="query")
        self.key = layers.Dense(units, name="key")
        self.value = layers.Dense(units, name="value")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        for dense in (self.query, self.key, self.value):
            dense.build(input_shape)

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        q, k, v = self.query(inputs), self.key(inputs), self.value(inputs)
        scores = ops.matmul(q, ops.transpose(k, (0, 2, 1))) / np.sqrt(self.units)
        return ops.matmul(ops.softmax(scores, axis=-1), v)

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionPooling(layers.Layer):
    """Attention pooling over time: ``softmax(w·tanh(W h_t + b))``-weighted sum of ``h_t``.

    Time steps where the mask is False (padding) get no weight.
    """

    def __init__(self, units: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.projection = layers.Dense(units, activation="tanh", name="projection")
        self.score = layers.Dense(1, name="score")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.projection.build(input_shape)
        self.score.build((*input_shape[:-1], self.units))

    def call(
        self, inputs: keras.KerasTensor, mask: keras.KerasTensor | None = None
    ) -> keras.KerasTensor:
        scores = ops.squeeze(self.score(self.projection(inputs)), axis=-1)  # (batch, time)
        if mask is not None:
            scores = ops.where(mask, scores, ops.full_like(scores, -1e9))
        weights = ops.softmax(scores, axis=-1)
        return ops.sum(inputs * ops.expand_dims(weights, -1), axis=1)

    def compute_mask(
        self, inputs: keras.KerasTensor, mask: keras.KerasTensor | None = None
    ) -> None:
        return None

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "units": self.units}


CUSTOM_OBJECTS = {
    "ScaleLayer": ScaleLayer,
    "SelfAttention": SelfAttention,
    "AttentionPooling": AttentionPooling,
}

# Variables drawn around 1 rather than around 0: multiplicative ones and variances.
_AROUND_ONE = ("gamma", "moving_variance", "scale")


def randomize_weights(model: keras.Model, seed: int = SEED) -> keras.Model:
    """Give every variable of ``model`` seeded random values of a sensible scale.

    Kernels ~ N(0, 1/fan_in) (fan_in over the kernel's receptive field; for a depthwise
    kernel, the field alone); scales and variances ~ U(0.5, 1.5); every other vector
    (biases, shifts, means, layer-scale factors) ~ N(0, 0.1²).
    """
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        depthwise = isinstance(layer, layers.DepthwiseConv2D)
        for variable in layer._trainable_variables + layer._non_trainable_variables:
            shape = tuple(variable.shape)
            name = variable.name
            if len(shape) >= 2:
                receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
                fan_in = receptive if depthwise else receptive * shape[-2]
                value = rng.normal(0.0, 1.0 / np.sqrt(max(fan_in, 1)), shape)
            elif any(key in name for key in _AROUND_ONE):
                value = rng.uniform(0.5, 1.5, shape)
            else:
                value = rng.normal(0.0, 0.1, shape)
            variable.assign(value.astype(variable.dtype))
    return model


def _seeded() -> None:
    keras.utils.set_random_seed(SEED)


def scale_layer_net() -> keras.Model:
    """Dense → ScaleLayer (an ``add_weight`` scalar) → Dense: the first seed article's layer."""
    _seeded()
    inputs = keras.Input((16,), name="x")
    hidden = layers.Dense(32, activation="relu", name="dense_in")(inputs)
    scaled = ScaleLayer(name="scale_layer")(hidden)
    outputs = layers.Dense(4, name="logits")(scaled)
    return randomize_weights(keras.Model(inputs, outputs, name="scale_layer_net"))


def dense_relu() -> keras.Model:
    """One Dense(64, relu) layer on 10 features."""
    _seeded()
    inputs = keras.Input((10,), name="x")
    outputs = layers.Dense(64, activation="relu", name="dense")(inputs)
    return randomize_weights(keras.Model(inputs, outputs, name="dense_relu"))


def dense_sigmoid() -> keras.Model:
    """Dense(32, sigmoid) with he_normal kernel and zero bias initialisers, as Keras users write it."""
    _seeded()
    inputs = keras.Input((5,), name="x")
    outputs = layers.Dense(
        32,
        activation="sigmoid",
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        name="dense",
    )(inputs)
    return randomize_weights(keras.Model(inputs, outputs, name="dense_sigmoid"))


def dense_mlp() -> keras.Model:
    """784 → 128 → 64 → 10 softmax, the classic MNIST MLP."""
    _seeded()
    inputs = keras.Input((784,), name="x")
    h = layers.Dense(128, activation="relu", name="dense_1")(inputs)
    h = layers.Dense(64, activation="relu", name="dense_2")(h)
    outputs = layers.Dense(10, activation="softmax", name="probabilities")(h)
    return randomize_weights(keras.Model(inputs, outputs, name="dense_mlp"))


def linear_regression() -> keras.Model:
    """A single linear unit on 3 features."""
    _seeded()
    inputs = keras.Input((3,), name="x")
    outputs = layers.Dense(1, name="linear")(inputs)
    return randomize_weights(keras.Model(inputs, outputs, name="linear_regression"))


def cnn() -> keras.Model:
    """28x28x1 NHWC → Conv 3x3 (32) → MaxPool → Flatten → Dense(10) logits."""
    _seeded()
    inputs = keras.Input((28, 28, 1), name="image")
    h = layers.Conv2D(32, 3, activation="relu", name="conv")(inputs)
    h = layers.MaxPooling2D(2, name="pool")(h)
    h = layers.Flatten(name="flatten")(h)
    outputs = layers.Dense(10, name="logits")(h)
    return randomize_weights(keras.Model(inputs, outputs, name="cnn"))


def lstm() -> keras.Model:
    """LSTM(64) over 10 steps of 8 features → Dense(1)."""
    _seeded()
    inputs = keras.Input((10, 8), name="sequence")
    h = layers.LSTM(64, name="lstm")(inputs)
    outputs = layers.Dense(1, name="head")(h)
    return randomize_weights(keras.Model(inputs, outputs, name="lstm"))


def gru() -> keras.Model:
    """GRU(32) (Keras 3 default ``reset_after=True``) over 10 steps of 8 features → Dense(1)."""
    _seeded()
    inputs = keras.Input((10, 8), name="sequence")
    h = layers.GRU(32, name="gru")(inputs)
    outputs = layers.Dense(1, name="head")(h)
    return randomize_weights(keras.Model(inputs, outputs, name="gru"))


def bidirectional_lstm() -> keras.Model:
    """Bidirectional LSTM(16) returning sequences over 10x8, average-pooled → Dense(2)."""
    _seeded()
    inputs = keras.Input((10, 8), name="sequence")
    h = layers.Bidirectional(layers.LSTM(16, return_sequences=True), name="bilstm")(inputs)
    h = layers.GlobalAveragePooling1D(name="pool")(h)
    outputs = layers.Dense(2, name="head")(h)
    return randomize_weights(keras.Model(inputs, outputs, name="bidirectional_lstm"))


def conv_bn_dropout() -> keras.Model:
    """16x16x3 → Conv 3x3 (8) → BatchNormalization → ReLU → Dropout → Flatten → Dense(4)."""
    _seeded()
    inputs = keras.Input((16, 16, 3), name="image")
    h = layers.Conv2D(8, 3, name="conv")(inputs)
    h = layers.BatchNormalization(name="bn")(h)
    h = layers.ReLU(name="relu")(h)
    h = layers.Dropout(0.3, name="dropout")(h)
    h = layers.Flatten(name="flatten")(h)
    outputs = layers.Dense(4, name="logits")(h)
    return randomize_weights(keras.Model(inputs, outputs, name="conv_bn_dropout"))


def self_attention() -> keras.Model:
    """Single-head self-attention over 8 steps of 16 features, then a Dense head."""
    _seeded()
    inputs = keras.Input((8, 16), name="sequence")
    h = SelfAttention(16, name="attention")(inputs)
    outputs = layers.Dense(4, name="head")(h)
    return randomize_weights(keras.Model(inputs, outputs, name="self_attention"))


def self_attention_layernorm() -> keras.Model:
    """A transformer-style residual block: self-attention, residual add, LayerNormalization."""
    _seeded()
    inputs = keras.Input((8, 16), name="sequence")
    h = SelfAttention(16, name="attention")(inputs)
    h = layers.LayerNormalization(epsilon=1e-3, name="norm")(
        layers.Add(name="residual")([inputs, h])
    )
    outputs = layers.Dense(4, name="head")(h)
    return randomize_weights(keras.Model(inputs, outputs, name="self_attention_layernorm"))


def multi_head_attention() -> keras.Model:
    """Keras MultiHeadAttention (4 heads) self-attention over 6 steps of 32 features."""
    _seeded()
    inputs = keras.Input((6, 32), name="sequence")
    h = layers.MultiHeadAttention(num_heads=4, key_dim=8, name="mha")(inputs, inputs)
    outputs = layers.Dense(8, name="head")(h)
    return randomize_weights(keras.Model(inputs, outputs, name="multi_head_attention"))


def attention_pooling() -> keras.Model:
    """Token ids (0 = padding) → Embedding(mask_zero) → AttentionPooling → Dense logits."""
    _seeded()
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    embedded = layers.Embedding(50, 16, mask_zero=True, name="embedding")(tokens)
    pooled = AttentionPooling(16, name="pooling")(embedded)
    outputs = layers.Dense(3, name="logits")(pooled)
    return randomize_weights(keras.Model(tokens, outputs, name="attention_pooling"))


def mobilenet_v2() -> keras.Model:
    """``keras.applications.MobileNetV2`` on 96x96, random weights, logits out."""
    _seeded()
    model = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), weights=None, classifier_activation=None
    )
    return randomize_weights(model)


def convnext_tiny() -> keras.Model:
    """``keras.applications.ConvNeXtTiny`` on 64x64 (exact gelu: needs the Erfc pass)."""
    _seeded()
    model = keras.applications.ConvNeXtTiny(
        input_shape=(64, 64, 3), weights=None, classifier_activation=None
    )
    return randomize_weights(model)
