"""keras-hub-style text backbones built from Keras layers: dict inputs, padding and causal
masks, a dynamic sequence length (``(None, None)`` token inputs), dict outputs.

``bert_encoder`` takes ``token_ids``, ``segment_ids`` and ``padding_mask`` (as keras-hub's
``BertBackbone`` does) and returns ``sequence_output`` and ``pooled_output``; ``gpt_decoder``
takes ``token_ids`` and ``padding_mask`` and returns next-token ``logits`` under a causal mask.
Convert them with ``--input-range token_ids=0:64 --input-range segment_ids=0:2
--input-range padding_mask=0:2`` (the catalog's ``TEXT`` entries say so).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

VOCAB, WIDTH, HEADS, MAX_LENGTH = 64, 32, 4, 32
SEED = 7


class PositionEmbedding(layers.Layer):
    """A learned position table (``add_weight``) sliced to the input's sequence length."""

    def __init__(self, max_length: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.table = self.add_weight(
            shape=(self.max_length, input_shape[-1]), initializer="glorot_uniform", name="table"
        )

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        length = ops.shape(inputs)[1]
        return ops.expand_dims(self.table[:length], 0)

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "max_length": self.max_length}


def _block(
    x: keras.KerasTensor, mask: keras.KerasTensor, i: int, causal: bool
) -> keras.KerasTensor:
    attention = layers.MultiHeadAttention(HEADS, WIDTH // HEADS, name=f"block{i}_attention")
    attended = attention(x, x, attention_mask=mask, use_causal_mask=causal)
    x = layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_norm1")(x + attended)
    hidden = layers.Dense(WIDTH * 2, activation="gelu", name=f"block{i}_ffn_in")(x)
    out = layers.Dense(WIDTH, name=f"block{i}_ffn_out")(hidden)
    return layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_norm2")(x + out)


def _attention_mask(padding_mask: keras.KerasTensor) -> keras.KerasTensor:
    # (batch, length) 0/1 → (batch, 1, length): every query attends to the unpadded keys
    # (MultiHeadAttention broadcasts it over queries and heads).
    return ops.cast(ops.expand_dims(padding_mask, 1), "bool")


def _randomize(model: keras.Model) -> keras.Model:
    rng = np.random.default_rng(SEED)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if len(shape) >= 2:
            value = rng.normal(
                0.0, 1.0 / np.sqrt(shape[-2] if len(shape) == 2 else shape[0]), shape
            )
        elif "gamma" in variable.path:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        variable.assign(value.astype(variable.dtype))
    return model


def bert_encoder() -> keras.Model:
    """A two-block BERT-style encoder with keras-hub's dict inputs and outputs."""
    keras.utils.set_random_seed(SEED)
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    segment_ids = keras.Input((None,), dtype="int32", name="segment_ids")
    padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
    x = layers.Embedding(VOCAB, WIDTH, name="token_embedding")(token_ids)
    x = x + layers.Embedding(2, WIDTH, name="segment_embedding")(segment_ids)
    x = x + PositionEmbedding(MAX_LENGTH, name="position_embedding")(x)
    x = layers.LayerNormalization(epsilon=1e-5, name="embeddings_norm")(x)
    mask = _attention_mask(padding_mask)
    for i in range(2):
        x = _block(x, mask, i, causal=False)
    pooled = layers.Dense(WIDTH, activation="tanh", name="pooler")(x[:, 0, :])
    inputs = {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}
    outputs = {"sequence_output": x, "pooled_output": pooled}
    return _randomize(keras.Model(inputs, outputs, name="bert_encoder"))


def gpt_decoder() -> keras.Model:
    """A two-block GPT-style causal decoder: dict inputs, next-token logits."""
    keras.utils.set_random_seed(SEED)
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
    x = layers.Embedding(VOCAB, WIDTH, name="token_embedding")(token_ids)
    x = x + PositionEmbedding(MAX_LENGTH, name="position_embedding")(x)
    mask = _attention_mask(padding_mask)
    for i in range(2):
        x = _block(x, mask, i, causal=True)
    logits = layers.Dense(VOCAB, name="lm_head")(x)
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    return _randomize(keras.Model(inputs, {"logits": logits}, name="gpt_decoder"))


CUSTOM_OBJECTS = {"PositionEmbedding": PositionEmbedding}
