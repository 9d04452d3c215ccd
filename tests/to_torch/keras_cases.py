"""Small Keras models for the provenance tests, built fresh (Keras's own initial values:
zero biases, ones and zeros in the normalisations), so equal values are everywhere.

Loaded by the TF worker as ``keras_cases.py:<function>``; never imported by pytest (it
imports TensorFlow).  One function per case of issue 10's "Why" and per layout.
"""

from __future__ import annotations

import keras
from keras import layers as L


@keras.saving.register_keras_serializable(package="tf2torch_cases")
class ChannelScale(L.Layer):
    """``x * scale`` with a per-channel ``add_weight`` scale (ones), trainable or not."""

    def __init__(self, trainable_scale: bool = True, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.trainable_scale = trainable_scale

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.scale = self.add_weight(
            name="scale",
            shape=(input_shape[-1],),
            initializer="ones",
            trainable=self.trainable_scale,
        )

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        return inputs * self.scale


def _seed() -> None:
    keras.utils.set_random_seed(0)


def two_scales_after_conv() -> keras.Model:
    """Conv → ScaleLayer (trainable) → ScaleLayer (frozen), per channel: grappler used to
    multiply the two gains into one constant."""
    _seed()
    x = keras.Input((8, 8, 3), name="image")
    h = L.Conv2D(4, 3, name="conv")(x)
    h = ChannelScale(True, name="scale_a")(h)
    h = ChannelScale(False, name="scale_b")(h)
    return keras.Model(x, L.Dense(2, name="head")(L.Flatten()(h)))


def twin_layernorms() -> keras.Model:
    """Two LayerNorms of one width (equal ones/zeros) and Dense layers with zero biases."""
    _seed()
    x = keras.Input((5, 12), name="seq")
    h = L.LayerNormalization(name="ln_a")(L.Dense(12, name="d1")(x))
    h = L.LayerNormalization(name="ln_b")(L.Dense(12, name="d2")(h))
    return keras.Model(x, L.Dense(3, name="head")(h))


def fresh_bilstm() -> keras.Model:
    """A fresh Bidirectional(LSTM): the backward bias equals the forward one."""
    _seed()
    x = keras.Input((6, 4), name="seq")
    h = L.Bidirectional(L.LSTM(5), name="bilstm")(x)
    return keras.Model(x, L.Dense(2, name="head")(h))


def depth_multiplier_4() -> keras.Model:
    """DepthwiseConv2D(depth_multiplier=4): kernel (3, 3, 3, 4) → torch (12, 1, 3, 3)."""
    _seed()
    x = keras.Input((8, 8, 3), name="image")
    h = L.DepthwiseConv2D(3, depth_multiplier=4, name="dw")(x)
    return keras.Model(x, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(h)))


def convnext_block() -> keras.Model:
    """A ConvNeXt block: depthwise 7x7 Conv2D(groups=C), LayerNorm, pointwise MLP with gelu,
    layer scale, residual."""
    _seed()
    x = keras.Input((8, 8, 16), name="image")
    h = L.Conv2D(16, 7, padding="same", groups=16, name="dwconv")(x)
    h = L.LayerNormalization(epsilon=1e-6, name="ln")(h)
    h = L.Dense(64, activation="gelu", name="pw1")(h)
    h = L.Dense(16, name="pw2")(h)
    h = ChannelScale(name="layer_scale")(h)
    h = L.Add(name="residual")([x, h])
    return keras.Model(x, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(h)))


def densenet_block() -> keras.Model:
    """DenseNet's BN → ReLU → Conv (no bias), concatenated with its input, then BN."""
    _seed()
    x = keras.Input((8, 8, 6), name="image")
    h = L.Conv2D(4, 1, use_bias=False, name="conv")(L.ReLU()(L.BatchNormalization(name="bn")(x)))
    h = L.BatchNormalization(name="bn2")(L.Concatenate()([x, h]))
    return keras.Model(x, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(h)))


def separable_bn() -> keras.Model:
    """SeparableConv2D (depth multiplier 2) followed by BatchNormalization."""
    _seed()
    x = keras.Input((8, 8, 3), name="image")
    h = L.BatchNormalization(name="bn")(L.SeparableConv2D(6, 3, depth_multiplier=2, name="sep")(x))
    return keras.Model(x, L.Dense(2, name="head")(L.Flatten()(h)))


def conv_1d_3d_transposed() -> keras.Model:
    """Conv1D, Conv3D, Conv2DTranspose and Conv1DTranspose side by side."""
    _seed()
    a = keras.Input((10, 3), name="seq")
    b = keras.Input((4, 6, 6, 2), name="vol")
    c = keras.Input((5, 5, 3), name="image")
    parts = [
        L.GlobalAveragePooling1D()(L.Conv1D(5, 3, name="c1")(a)),
        L.GlobalAveragePooling3D()(L.Conv3D(4, 2, name="c3")(b)),
        L.GlobalAveragePooling2D()(L.Conv2DTranspose(4, 3, strides=2, name="t2")(c)),
        L.GlobalAveragePooling1D()(L.Conv1DTranspose(3, 3, name="t1")(a)),
    ]
    return keras.Model([a, b, c], L.Dense(2, name="head")(L.Concatenate()(parts)))


def norms_and_prelu() -> keras.Model:
    """LayerNormalization without scale, without center and with rms_scaling;
    GroupNormalization; BatchNormalization without scale/center; PReLU; an Embedding."""
    _seed()
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    image = keras.Input((6, 6, 8), name="image")
    h = L.Embedding(20, 8, name="embedding")(tokens)
    h = L.LayerNormalization(scale=False, name="ln_no_scale")(L.Dense(8, name="d1")(h))
    h = L.LayerNormalization(center=False, name="ln_no_center")(h)
    h = L.LayerNormalization(rms_scaling=True, name="ln_rms")(h)
    g = L.GroupNormalization(groups=4, name="gn")(L.Conv2D(8, 3, name="conv")(image))
    g = L.BatchNormalization(scale=False, name="bn_no_scale")(g)
    g = L.BatchNormalization(center=False, name="bn_no_center")(g)
    g = L.PReLU(shared_axes=[1, 2], name="prelu")(g)
    merged = L.Concatenate()([L.GlobalAveragePooling1D()(h), L.GlobalAveragePooling2D()(g)])
    return keras.Model([tokens, image], L.Dense(2, name="head")(merged))


def multi_head_attention() -> keras.Model:
    """MultiHeadAttention: EinsumDense kernels (32, 4, 8) and biases (4, 8)."""
    _seed()
    x = keras.Input((6, 32), name="seq")
    h = L.MultiHeadAttention(num_heads=4, key_dim=8, name="mha")(x, x)
    return keras.Model(x, L.Dense(2, name="head")(h))


def shared_dense() -> keras.Model:
    """One Dense layer called on two inputs: one parameter, used twice."""
    _seed()
    a = keras.Input((4,), name="a")
    b = keras.Input((4,), name="b")
    dense = L.Dense(3, name="shared")
    return keras.Model([a, b], L.Add()([dense(a), dense(b)]))


def dict_inputs() -> keras.Model:
    """keras-hub style inputs: a dict of ``token_ids`` and ``padding_mask``."""
    _seed()
    inputs = {
        "token_ids": keras.Input((6,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input((6,), dtype="int32", name="padding_mask"),
    }
    h = L.Embedding(30, 8, name="embedding")(inputs["token_ids"])
    mask = keras.ops.expand_dims(keras.ops.cast(inputs["padding_mask"], "float32"), -1)
    pooled = keras.ops.sum(h * mask, axis=1)
    return keras.Model(inputs, L.Dense(2, name="head")(pooled))
