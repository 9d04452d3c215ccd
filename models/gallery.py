"""Nineteen small models shaped like the Keras examples gallery (issue 24).

Each function builds one model in a second or two, with seeded random weights everywhere
(``zoo.randomize_weights``: biases and BatchNorm statistics included), from ``keras.layers``
and ``keras.ops``; the custom layer :class:`MaskedProjectionPool` calls ``tf.matmul`` on
its own ``add_weight`` matrix on purpose (a raw TF op on a Keras variable).  The TF-free
index of these models (input ranges, which are slow) is ``tests/test_gallery.py``'s
``GALLERY``; this file imports TensorFlow and is loaded only by the TF worker, as
``models/gallery.py:<function>``.

Where the gallery draws random numbers inside the model (the VAE's sampling layer), the
noise is an input instead, so that TF, ONNX Runtime and torch see the same values.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers as L
from keras import ops

_spec = importlib.util.spec_from_file_location("tf2torch_zoo", Path(__file__).with_name("zoo.py"))
assert _spec is not None and _spec.loader is not None
_zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_zoo)

SEED = 1234
PACKAGE = "tf2torch_gallery"


def _seeded() -> None:
    keras.utils.set_random_seed(SEED)


def _done(model: keras.Model) -> keras.Model:
    return _zoo.randomize_weights(model, SEED)


# ------------------------------------------------------------------ custom layers


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sampling(L.Layer):
    """The VAE's reparameterisation ``z = mean + exp(log_var / 2) * eps``; ``eps`` is an input."""

    def call(self, inputs: list[keras.KerasTensor]) -> keras.KerasTensor:
        z_mean, z_log_var, eps = inputs
        return z_mean + ops.exp(0.5 * z_log_var) * eps


@keras.saving.register_keras_serializable(package=PACKAGE)
class TokenAndPositionEmbedding(L.Layer):
    """Token embedding plus a learned embedding of the position (``ops.arange``)."""

    def __init__(self, maxlen: int, vocab: int, dim: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.maxlen, self.vocab, self.dim = maxlen, vocab, dim
        self.token_emb = L.Embedding(vocab, dim, name="token_emb")
        self.pos_emb = L.Embedding(maxlen, dim, name="pos_emb")

    def call(self, x: keras.KerasTensor) -> keras.KerasTensor:
        positions = ops.arange(0, ops.shape(x)[-1], 1)
        return self.token_emb(x) + self.pos_emb(positions)

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "maxlen": self.maxlen, "vocab": self.vocab, "dim": self.dim}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Patches(L.Layer):
    """ViT's patch extraction with ``keras.ops.image.extract_patches``, flattened to tokens."""

    def __init__(self, size: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.size = size

    def call(self, images: keras.KerasTensor) -> keras.KerasTensor:
        patches = ops.image.extract_patches(images, size=self.size)
        shape = ops.shape(patches)
        return ops.reshape(patches, (shape[0], shape[1] * shape[2], shape[3]))

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PatchEncoder(L.Layer):
    """ViT's patch encoder: a Dense projection plus a learned position embedding."""

    def __init__(self, num_patches: int, dim: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.num_patches, self.dim = num_patches, dim
        self.projection = L.Dense(dim, name="projection")
        self.position_embedding = L.Embedding(num_patches, dim, name="position_embedding")

    def call(self, patch: keras.KerasTensor) -> keras.KerasTensor:
        positions = ops.expand_dims(ops.arange(0, self.num_patches, 1), axis=0)
        return self.projection(patch) + self.position_embedding(positions)

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "num_patches": self.num_patches, "dim": self.dim}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedProjectionPool(L.Layer):
    """``tf.matmul`` by its own ``add_weight`` matrix, then the mean over unmasked steps.

    The raw TF op on a Keras variable is the point: the weight must still become a named
    torch parameter.
    """

    def __init__(self, units: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.supports_masking = True

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.proj = self.add_weight(
            name="proj", shape=(input_shape[-1], self.units), initializer="glorot_uniform"
        )

    def call(
        self, inputs: keras.KerasTensor, mask: keras.KerasTensor | None = None
    ) -> keras.KerasTensor:
        projected = tf.matmul(inputs, self.proj)
        if mask is None:
            return tf.reduce_mean(projected, axis=1)
        weights = tf.cast(mask, projected.dtype)[:, :, None]
        total = tf.reduce_sum(projected * weights, axis=1)
        return total / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)

    def compute_mask(
        self, inputs: keras.KerasTensor, mask: keras.KerasTensor | None = None
    ) -> None:
        return None

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "units": self.units}


CUSTOM_OBJECTS = {
    cls.__name__: cls
    for cls in (Sampling, TokenAndPositionEmbedding, Patches, PatchEncoder, MaskedProjectionPool)
}


# ------------------------------------------------------------------ image models


def unet() -> keras.Model:
    """An image-segmentation U-Net: separable convs, BatchNorm, strided downsampling,
    ``Conv2DTranspose(padding="same", strides=2)`` and ``UpSampling2D`` on the way up, and
    residual projections, as in the gallery's Oxford-pets example."""
    _seeded()
    inputs = keras.Input((32, 32, 3), name="image")
    x = L.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
    x = L.Activation("relu")(L.BatchNormalization(name="stem_bn")(x))
    previous = x
    for i, filters in enumerate((16, 32)):
        x = L.Activation("relu")(x)
        x = L.SeparableConv2D(filters, 3, padding="same", name=f"down{i}_sep")(x)
        x = L.BatchNormalization(name=f"down{i}_bn")(x)
        x = L.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = L.Conv2D(filters, 1, strides=2, padding="same", name=f"down{i}_res")(previous)
        x = previous = L.add([x, residual])
    for i, filters in enumerate((32, 16, 8)):
        x = L.Activation("relu")(x)
        x = L.Conv2DTranspose(filters, 3, padding="same", name=f"up{i}_tconv")(x)
        x = L.BatchNormalization(name=f"up{i}_bn")(x)
        x = L.UpSampling2D(2)(x)
        residual = L.UpSampling2D(2)(previous)
        residual = L.Conv2D(filters, 1, padding="same", name=f"up{i}_res")(residual)
        x = previous = L.add([x, residual])
    outputs = L.Conv2D(3, 3, padding="same", name="logits")(x)
    return _done(keras.Model(inputs, outputs, name="unet"))


def vae() -> keras.Model:
    """A convolutional VAE: strided Conv2D encoder to ``z_mean``/``z_log_var``, a sampling
    layer (``eps`` an input), and a ``Conv2DTranspose(padding="same", strides=2)`` decoder."""
    _seeded()
    image = keras.Input((16, 16, 1), name="image")
    eps = keras.Input((2,), name="eps")
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="enc_conv1")(image)
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="enc_conv2")(x)
    x = L.Dense(16, activation="relu", name="enc_dense")(L.Flatten()(x))
    z_mean = L.Dense(2, name="z_mean")(x)
    z_log_var = L.Dense(2, name="z_log_var")(x)
    z = Sampling(name="sampling")([z_mean, z_log_var, eps])
    y = L.Dense(4 * 4 * 16, activation="relu", name="dec_dense")(z)
    y = L.Reshape((4, 4, 16))(y)
    y = L.Conv2DTranspose(16, 3, strides=2, padding="same", activation="relu", name="dec_t1")(y)
    y = L.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu", name="dec_t2")(y)
    recon = L.Conv2DTranspose(1, 3, padding="same", name="dec_out")(y)
    return _done(keras.Model([image, eps], [recon, z_mean, z_log_var], name="vae"))


def captcha_ocr() -> keras.Model:
    """Captcha OCR: a CNN over a (width, height) image, reshaped to a sequence along the
    width, Dense + Dropout, two bidirectional LSTMs, per-step character logits."""
    _seeded()
    inputs = keras.Input((32, 16, 1), name="image")
    x = L.Conv2D(8, 3, activation="relu", padding="same", name="conv1")(inputs)
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.Conv2D(16, 3, activation="relu", padding="same", name="conv2")(x)
    x = L.MaxPooling2D(2, name="pool2")(x)
    x = L.Reshape((8, 4 * 16), name="reshape")(x)
    x = L.Dense(16, activation="relu", name="dense1")(x)
    x = L.Dropout(0.2)(x)
    x = L.Bidirectional(L.LSTM(12, return_sequences=True, dropout=0.25), name="bilstm1")(x)
    x = L.Bidirectional(L.LSTM(8, return_sequences=True, dropout=0.25), name="bilstm2")(x)
    outputs = L.Dense(11, name="chars")(x)
    return _done(keras.Model(inputs, outputs, name="captcha_ocr"))


def siamese() -> keras.Model:
    """A siamese network: one shared CNN tower on two images, the Euclidean distance
    ``sqrt(maximum(sum_sq, epsilon))``, BatchNorm and a Dense similarity logit."""
    _seeded()
    tower_in = keras.Input((12, 12, 1))
    t = L.Conv2D(4, 3, activation="tanh", name="tower_conv1")(tower_in)
    t = L.AveragePooling2D(2)(t)
    t = L.Conv2D(8, 3, activation="tanh", name="tower_conv2")(t)
    t = L.Flatten()(L.AveragePooling2D(2)(t))
    t = L.Dense(10, activation="tanh", name="tower_dense")(L.BatchNormalization(name="tower_bn")(t))
    tower = keras.Model(tower_in, t, name="tower")
    left = keras.Input((12, 12, 1), name="left")
    right = keras.Input((12, 12, 1), name="right")

    def distance(pair: list[keras.KerasTensor]) -> keras.KerasTensor:
        a, b = pair
        sum_square = ops.sum(ops.square(a - b), axis=1, keepdims=True)
        return ops.sqrt(ops.maximum(sum_square, keras.backend.epsilon()))

    d = L.Lambda(distance, name="distance")([tower(left), tower(right)])
    d = L.BatchNormalization(name="merge_bn")(d)
    outputs = L.Dense(1, name="similarity")(d)
    return _done(keras.Model([left, right], outputs, name="siamese"))


def _tnet(x: keras.KerasTensor, k: int, name: str) -> keras.KerasTensor:
    """PointNet's T-net: a learned (k, k) transform (initialised near the identity)."""
    h = x
    for i, units in enumerate((8, 16)):
        h = L.Conv1D(units, 1, name=f"{name}_conv{i}")(h)
        h = L.Activation("relu")(L.BatchNormalization(momentum=0.0, name=f"{name}_bn{i}")(h))
    h = L.GlobalMaxPooling1D()(h)
    h = L.Dense(8, activation="relu", name=f"{name}_dense")(h)
    eye = keras.initializers.Constant(np.eye(k).flatten())
    h = L.Dense(k * k, kernel_initializer="zeros", bias_initializer=eye, name=f"{name}_eye")(h)
    matrix = L.Reshape((k, k))(h)
    return L.Dot(axes=(2, 1))([x, matrix])


def pointnet() -> keras.Model:
    """PointNet classification: T-nets on points and features, pointwise Conv1D + BatchNorm,
    global max pooling, Dense head."""
    _seeded()
    inputs = keras.Input((32, 3), name="points")
    x = _tnet(inputs, 3, "tnet_in")
    x = L.Conv1D(8, 1, name="conv_a")(x)
    x = L.Activation("relu")(L.BatchNormalization(name="bn_a")(x))
    x = _tnet(x, 8, "tnet_feat")
    x = L.Conv1D(16, 1, name="conv_b")(x)
    x = L.Activation("relu")(L.BatchNormalization(name="bn_b")(x))
    x = L.GlobalMaxPooling1D()(x)
    x = L.Dropout(0.3)(L.Dense(16, activation="relu", name="head_dense")(x))
    outputs = L.Dense(5, name="logits")(x)
    return _done(keras.Model(inputs, outputs, name="pointnet"))


def _transformer_mlp(x: keras.KerasTensor, units: tuple[int, ...], name: str) -> keras.KerasTensor:
    for i, n in enumerate(units):
        x = L.Dropout(0.1)(L.Dense(n, activation="gelu", name=f"{name}_{i}")(x))
    return x


def vit() -> keras.Model:
    """A Vision Transformer: ``extract_patches`` tokens, a patch encoder with learned
    positions, two pre-norm blocks of MultiHeadAttention and a gelu MLP, then a Dense head."""
    _seeded()
    inputs = keras.Input((16, 16, 3), name="image")
    patches = Patches(4, name="patches")(inputs)
    x = PatchEncoder(16, 16, name="patch_encoder")(patches)
    for i in range(2):
        h = L.LayerNormalization(epsilon=1e-6, name=f"block{i}_ln1")(x)
        h = L.MultiHeadAttention(2, 8, dropout=0.1, name=f"block{i}_mha")(h, h)
        x = L.Add()([h, x])
        h = L.LayerNormalization(epsilon=1e-6, name=f"block{i}_ln2")(x)
        x = L.Add()([_transformer_mlp(h, (32, 16), f"block{i}_mlp"), x])
    x = L.Flatten()(L.LayerNormalization(epsilon=1e-6, name="final_ln")(x))
    x = _transformer_mlp(L.Dropout(0.5)(x), (16,), "head_mlp")
    outputs = L.Dense(4, name="logits")(x)
    return _done(keras.Model(inputs, outputs, name="vit"))


def mlp_mixer() -> keras.Model:
    """MLP-Mixer: patches by a strided Conv2D, token-mixing MLPs across patches (``Permute``)
    and channel-mixing MLPs, LayerNorm, residuals, global average pooling."""
    _seeded()
    inputs = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(12, 4, strides=4, name="patchify")(inputs)
    x = L.Reshape((16, 12))(x)
    for i in range(2):
        h = L.LayerNormalization(epsilon=1e-6, name=f"mix{i}_ln1")(x)
        h = L.Permute((2, 1))(h)
        h = L.Dense(16, activation="gelu", name=f"mix{i}_token1")(h)
        h = L.Dense(16, name=f"mix{i}_token2")(h)
        x = L.Add()([x, L.Permute((2, 1))(h)])
        h = L.LayerNormalization(epsilon=1e-6, name=f"mix{i}_ln2")(x)
        h = L.Dense(24, activation="gelu", name=f"mix{i}_chan1")(h)
        h = L.Dense(12, name=f"mix{i}_chan2")(L.Dropout(0.2)(h))
        x = L.Add()([x, h])
    x = L.GlobalAveragePooling1D()(x)
    outputs = L.Dense(4, name="logits")(L.Dropout(0.2)(x))
    return _done(keras.Model(inputs, outputs, name="mlp_mixer"))


def dcgan() -> keras.Model:
    """A DCGAN generator (Dense → Reshape → strided same-padded ``Conv2DTranspose`` +
    LeakyReLU → tanh image) feeding its discriminator (strided Conv2D + LeakyReLU → logit);
    both the image and the logit are outputs."""
    _seeded()
    noise = keras.Input((8,), name="noise")
    g = L.Reshape((4, 4, 16))(L.Dense(4 * 4 * 16, name="gen_dense")(noise))
    g = L.LeakyReLU(0.2)(L.Conv2DTranspose(16, 4, strides=2, padding="same", name="gen_t1")(g))
    g = L.LeakyReLU(0.2)(L.Conv2DTranspose(8, 4, strides=2, padding="same", name="gen_t2")(g))
    image = L.Conv2D(1, 5, padding="same", activation="tanh", name="gen_out")(g)
    d = L.LeakyReLU(0.2)(L.Conv2D(8, 4, strides=2, padding="same", name="disc_c1")(image))
    d = L.LeakyReLU(0.2)(L.Conv2D(16, 4, strides=2, padding="same", name="disc_c2")(d))
    logit = L.Dense(1, name="disc_logit")(L.Dropout(0.2)(L.Flatten()(d)))
    return _done(keras.Model(noise, [image, logit], name="dcgan"))


def conv3d_video() -> keras.Model:
    """A video classifier: Conv3D → BatchNorm → ReLU → MaxPool3D, twice, then global average
    pooling and a Dense head.  Eight frames, so that a still video (every frame the same)
    gives exact ties in the first pool's windows (frames 2-3 and 4-5 see the same
    neighbourhood)."""
    _seeded()
    inputs = keras.Input((8, 12, 12, 2), name="video")
    x = inputs
    for i, filters in enumerate((4, 8)):
        x = L.Conv3D(filters, 3, padding="same", name=f"conv{i}")(x)
        x = L.ReLU()(L.BatchNormalization(name=f"bn{i}")(x))
        x = L.MaxPooling3D(2, name=f"pool{i}")(x)
    x = L.GlobalAveragePooling3D()(x)
    outputs = L.Dense(3, name="logits")(x)
    return _done(keras.Model(inputs, outputs, name="conv3d_video"))


def group_norm_block() -> keras.Model:
    """A diffusion-style residual block: GroupNormalization → swish → Conv2D, twice, plus a
    1x1 projection of the input."""
    _seeded()
    inputs = keras.Input((8, 8, 8), name="image")
    h = L.GroupNormalization(groups=4, name="gn1")(inputs)
    h = L.Conv2D(16, 3, padding="same", name="conv1")(L.Activation("swish")(h))
    h = L.GroupNormalization(groups=4, name="gn2")(h)
    h = L.Conv2D(16, 3, padding="same", name="conv2")(L.Activation("swish")(h))
    skip = L.Conv2D(16, 1, name="skip")(inputs)
    x = L.Add()([h, skip])
    outputs = L.Dense(4, name="logits")(L.GlobalAveragePooling2D()(x))
    return _done(keras.Model(inputs, outputs, name="group_norm_block"))


def conv_lstm2d() -> keras.Model:
    """A next-frame model: ConvLSTM2D over a short video, BatchNorm, a Conv2D head."""
    _seeded()
    inputs = keras.Input((4, 8, 8, 1), name="frames")
    x = L.ConvLSTM2D(4, 3, padding="same", return_sequences=False, name="convlstm")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    outputs = L.Conv2D(1, 3, padding="same", name="next_frame")(x)
    return _done(keras.Model(inputs, outputs, name="conv_lstm2d"))


# ------------------------------------------------------------------ sequence models


def wavenet() -> keras.Model:
    """WaveNet: a causal Conv1D, dilated causal Conv1Ds with gated ``tanh * sigmoid``
    activations, residual and skip connections, then 1x1 convs over the summed skips."""
    _seeded()
    inputs = keras.Input((32, 1), name="audio")
    x = L.Conv1D(8, 2, padding="causal", name="causal_in")(inputs)
    skips = []
    for i, rate in enumerate((1, 2, 4, 8)):
        tanh_out = L.Conv1D(
            8, 2, dilation_rate=rate, padding="causal", activation="tanh", name=f"filter{i}"
        )(x)
        sigm_out = L.Conv1D(
            8, 2, dilation_rate=rate, padding="causal", activation="sigmoid", name=f"gate{i}"
        )(x)
        z = L.Multiply()([tanh_out, sigm_out])
        skips.append(L.Conv1D(8, 1, name=f"skip{i}")(z))
        x = L.Add()([x, L.Conv1D(8, 1, name=f"res{i}")(z)])
    out = L.Activation("relu")(L.Add()(skips))
    out = L.Conv1D(8, 1, activation="relu", name="post1")(out)
    outputs = L.Conv1D(4, 1, name="post2")(out)
    return _done(keras.Model(inputs, outputs, name="wavenet"))


def ticket_classifier() -> keras.Model:
    """The multi-input, multi-output ticket classifier: title and body token sequences
    through a shared-vocabulary Embedding and LSTMs, multi-hot tags, concatenated into a
    priority score and department logits."""
    _seeded()
    title = keras.Input((6,), dtype="int32", name="title")
    body = keras.Input((10,), dtype="int32", name="body")
    tags = keras.Input((5,), name="tags")
    title_features = L.LSTM(8, name="title_lstm")(L.Embedding(30, 8, name="title_emb")(title))
    body_features = L.LSTM(6, name="body_lstm")(L.Embedding(30, 8, name="body_emb")(body))
    x = L.Concatenate()([title_features, body_features, tags])
    priority = L.Dense(1, name="priority")(x)
    department = L.Dense(4, name="department")(x)
    return _done(keras.Model([title, body, tags], [priority, department], name="tickets"))


def _encoder_block(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    h = L.MultiHeadAttention(2, 4, dropout=0.1, name=f"{name}_mha")(x, x)
    x = L.LayerNormalization(epsilon=1e-6, name=f"{name}_ln1")(x + L.Dropout(0.1)(h))
    h = L.Dense(16, activation="relu", name=f"{name}_ffn1")(x)
    h = L.Dense(8, name=f"{name}_ffn2")(h)
    return L.LayerNormalization(epsilon=1e-6, name=f"{name}_ln2")(x + L.Dropout(0.1)(h))


def text_transformer() -> keras.Model:
    """Text classification with a transformer: token + position embedding (a custom layer
    with ``ops.arange``), a MultiHeadAttention block, global average pooling, Dense head."""
    _seeded()
    tokens = keras.Input((10,), dtype="int32", name="tokens")
    x = TokenAndPositionEmbedding(10, 40, 8, name="embedding")(tokens)
    x = _encoder_block(x, "block")
    x = L.Dropout(0.1)(L.GlobalAveragePooling1D()(x))
    x = L.Dense(8, activation="relu", name="hidden")(x)
    outputs = L.Dense(2, name="logits")(x)
    return _done(keras.Model(tokens, outputs, name="text_transformer"))


def timeseries_transformer() -> keras.Model:
    """Time-series classification with a transformer: pre-norm MultiHeadAttention blocks
    with a Conv1D (kernel 1) feed-forward, channels-first global average pooling."""
    _seeded()
    inputs = keras.Input((16, 2), name="series")
    x = inputs
    for i in range(2):
        h = L.LayerNormalization(epsilon=1e-6, name=f"block{i}_ln1")(x)
        h = L.MultiHeadAttention(2, 4, dropout=0.1, name=f"block{i}_mha")(h, h)
        res = L.Dropout(0.1)(h) + x
        h = L.LayerNormalization(epsilon=1e-6, name=f"block{i}_ln2")(res)
        h = L.Conv1D(4, 1, activation="relu", name=f"block{i}_ff1")(h)
        h = L.Conv1D(2, 1, name=f"block{i}_ff2")(L.Dropout(0.1)(h))
        x = h + res
    x = L.GlobalAveragePooling1D(data_format="channels_first")(x)
    x = L.Dropout(0.1)(L.Dense(8, activation="relu", name="mlp")(x))
    outputs = L.Dense(3, name="logits")(x)
    return _done(keras.Model(inputs, outputs, name="timeseries_transformer"))


def seq2seq_lstm() -> keras.Model:
    """Character-level seq2seq: an encoder LSTM with ``return_state=True`` whose final
    ``h``/``c`` are the decoder LSTM's ``initial_state``, then per-step Dense logits."""
    _seeded()
    encoder_in = keras.Input((6, 5), name="encoder_in")
    decoder_in = keras.Input((4, 7), name="decoder_in")
    _, state_h, state_c = L.LSTM(8, return_state=True, name="encoder")(encoder_in)
    decoded = L.LSTM(8, return_sequences=True, name="decoder")(
        decoder_in, initial_state=[state_h, state_c]
    )
    outputs = L.Dense(7, name="logits")(decoded)
    return _done(keras.Model([encoder_in, decoder_in], outputs, name="seq2seq_lstm"))


def argmax_head() -> keras.Model:
    """A classifier whose graph ends in ``argmax`` (an integer output) beside its logits."""
    _seeded()
    inputs = keras.Input((12,), name="features")
    x = L.Dense(16, activation="relu", name="hidden")(inputs)
    logits = L.Dense(5, name="logits")(x)
    label = L.Lambda(lambda t: ops.argmax(t, axis=-1), name="label")(logits)
    return _done(keras.Model(inputs, [logits, label], name="argmax_head"))


def custom_matmul_pool() -> keras.Model:
    """Embedding(mask_zero=True) → :class:`MaskedProjectionPool` (``tf.matmul`` by its own
    ``add_weight`` matrix, then the masked mean) → Dense."""
    _seeded()
    tokens = keras.Input((8,), dtype="int32", name="tokens")
    x = L.Embedding(20, 6, mask_zero=True, name="embedding")(tokens)
    x = MaskedProjectionPool(5, name="pool")(x)
    outputs = L.Dense(3, name="logits")(x)
    return _done(keras.Model(tokens, outputs, name="custom_matmul_pool"))


def masked_lstm() -> keras.Model:
    """The Keras text tutorial's model: Embedding(mask_zero=True) → LSTM → Dense."""
    _seeded()
    tokens = keras.Input((8,), dtype="int32", name="tokens")
    x = L.Embedding(20, 6, mask_zero=True, name="embedding")(tokens)
    x = L.LSTM(7, name="lstm")(x)
    outputs = L.Dense(3, name="logits")(x)
    return _done(keras.Model(tokens, outputs, name="masked_lstm"))
