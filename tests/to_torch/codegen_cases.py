"""Small Keras models for the block-class and idiom tests of the generated code.

Loaded by the TF worker as ``codegen_cases.py:<function>``; never imported by pytest (it
imports TensorFlow).  Every variable gets seeded random values (biases included), so a
block wired to the wrong weights or an idiom computing another function fails the check.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers as L


def _randomized(model: keras.Model, seed: int = 0) -> keras.Model:
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        shape = tuple(variable.shape)
        scale = 1.0 / np.sqrt(shape[0]) if len(shape) >= 2 else 0.3
        value = rng.normal(0.0, scale, shape)
        if "variance" in variable.name or "gamma" in variable.name:
            value = rng.uniform(0.5, 1.5, shape)
        variable.assign(value.astype(variable.dtype))
    return model


@keras.saving.register_keras_serializable(package="tf2torch_codegen_cases")
def gelu_tanh(x: keras.KerasTensor) -> keras.KerasTensor:
    """GELU in its tanh form (a named function: the float64 twin reloads the model)."""
    return keras.ops.gelu(x, approximate=True)


def gelu_swish_blocks() -> keras.Model:
    """Three residual MLP blocks (Dense → GELU → Dense → swish, + input), then a head with
    hard-swish and tanh-GELU: the blocks repeat with the same shapes (one class, a loop)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,), name="features")
    x = L.Dense(16, name="stem")(inputs)
    for i in range(1, 4):
        h = L.Dense(32, name=f"block_{i}_expand")(x)
        h = L.Activation("gelu", name=f"block_{i}_gelu")(h)
        h = L.Dense(16, name=f"block_{i}_project")(h)
        h = L.Activation("silu", name=f"block_{i}_swish")(h)
        x = L.Add(name=f"block_{i}_add")([x, h])
    x = L.Dense(16, name="head")(x)
    x = L.Activation("hard_swish", name="head_hard_swish")(x)
    x = L.Dense(8, name="neck")(x)
    x = L.Activation(gelu_tanh, name="neck_gelu")(x)
    outputs = L.Dense(4, name="logits")(x)
    return _randomized(keras.Model(inputs, outputs, name="gelu_swish_blocks"))


def conv_stages() -> keras.Model:
    """Conv blocks that differ in channels and stride, some with a residual add (as in
    MobileNetV2): one class with ``__init__`` arguments and a ``residual`` flag."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3), name="image")
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    plan = [(8, 1), (8, 1), (12, 2), (12, 1)]
    channels = 8
    for i, (filters, stride) in enumerate(plan, start=1):
        h = L.Conv2D(filters, 3, strides=stride, padding="same", name=f"block_{i}_conv")(x)
        h = L.BatchNormalization(name=f"block_{i}_bn")(h)
        h = L.ReLU(name=f"block_{i}_relu")(h)
        h = L.Conv2D(filters, 1, name=f"block_{i}_project")(h)
        if stride == 1 and filters == channels:
            h = L.Add(name=f"block_{i}_add")([x, h])
        x, channels = h, filters
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(5, name="logits")(x)
    return _randomized(keras.Model(inputs, outputs, name="conv_stages"))


def attention_blocks() -> keras.Model:
    """Two pre-norm blocks of Keras MultiHeadAttention with a causal mask and a residual
    add, then logits: each attention becomes one ``softmax(masked scores) @ v`` (Keras's
    masked softmax), and the two blocks are one class."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 16), name="sequence")
    x = L.Dense(16, name="stem")(inputs)
    for i in (1, 2):
        h = L.LayerNormalization(name=f"block_{i}_norm")(x)
        h = L.MultiHeadAttention(num_heads=2, key_dim=8, name=f"block_{i}_mha")(
            h, h, use_causal_mask=True
        )
        x = L.Add(name=f"block_{i}_add")([x, h])
    outputs = L.Dense(4, name="logits")(x)
    return _randomized(keras.Model(inputs, outputs, name="attention_blocks"))


def padded_attention() -> keras.Model:
    """Token ids (0 = padding) → Embedding(mask_zero) → Keras MultiHeadAttention → logits:
    the padding mask reaches the attention for queries and keys, so a padded query's row
    has every key masked, where Keras's masked softmax attends uniformly."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = L.Embedding(20, 16, mask_zero=True, name="embed")(tokens)
    h = L.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(x, x)
    outputs = L.Dense(4, name="logits")(h)
    return _randomized(keras.Model(tokens, outputs, name="padded_attention"))
