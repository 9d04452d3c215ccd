"""The keras-hub corpus: real ``keras_hub.models`` backbones built tiny from their
constructors (``models/keras_hub.py:<name>``), for models nobody on the project wrote.

Every factory calls the real backbone class (``keras_hub.models.BertBackbone`` …) with no
preset and nothing downloaded, at a tiny size: 2 layers, hidden width 32, 4 heads (2 key/value
heads where the model groups them), vocabulary 128, feed-forward width 64, images 32x32.

Then every variable is made to matter (:func:`randomize`), in the spirit of
``models/applications.py``: each variable the constructor set to one constant is redrawn
around it (zeros, i.e. biases, norm offsets and Gemma's ``1 + scale`` norms, become
N(0, 0.1²); any other constant ``c``, i.e. norm scales, becomes ``c`` x U(0.5, 1.5)), so a
bias that lands in the wrong place changes the outputs.  Variables the constructor already
drew at random keep its draw (its initializers, seeded by :data:`SEED`), so activations stay
the size the architecture intends (embeddings N(0, 0.02²) and so on).

Inputs are keras-hub's dicts: ``token_ids``/``padding_mask`` (and ``segment_ids`` where the
model has them), ``encoder_*``/``decoder_*`` for seq2seq models, ``images`` for vision
models.  The ranges each needs for ``--input-range`` are in :data:`models.catalog.HUB`, which
imports no TensorFlow.  keras-hub is installed by ``make setup`` (the ``hub`` extra plus
``keras-hub`` itself with ``--no-deps``: it declares ``tensorflow-text``, which would pull a
full ``tensorflow`` beside ``tensorflow-cpu``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import ModuleType

import keras
import numpy as np

# The worker imports a factory file with its folder on sys.path, so the sibling is `catalog`.
from catalog import HUB


def _import_keras_hub() -> ModuleType:
    """The installed ``keras_hub`` package, not this file: with ``models/`` on ``sys.path``
    (the worker puts a factory file's folder first), ``import keras_hub`` would find
    ``models/keras_hub.py`` itself."""
    here = os.path.dirname(os.path.abspath(__file__))
    saved = list(sys.path)
    sys.path[:] = [p for p in saved if os.path.abspath(p or os.curdir) != here]
    try:
        import keras_hub
    finally:
        sys.path[:] = saved
    return keras_hub


keras_hub = _import_keras_hub()

models = keras_hub.models

SEED = 1234
VOCAB, LAYERS, HIDDEN, HEADS, KV_HEADS, INTERMEDIATE = 128, 2, 32, 4, 2, 64
MAX_LENGTH = 64
"""Position tables (where the model has one) cover this many tokens."""
IMAGE = (32, 32, 3)


def randomize(model: keras.Model, seed: int = SEED) -> keras.Model:
    """Redraw every variable whose elements are all one constant ``c``: ``c = 0`` becomes
    N(0, 0.1²), any other ``c`` becomes ``c`` x U(0.5, 1.5).  Others keep their draw."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if not variable.dtype.startswith("float"):
            continue
        values = keras.ops.convert_to_numpy(variable)
        if values.size == 0 or not np.all(values == values.flat[0]):
            continue
        constant = float(values.flat[0])
        if constant == 0.0:
            drawn = rng.normal(0.0, 0.1, values.shape)
        else:
            drawn = constant * rng.uniform(0.5, 1.5, values.shape)
        variable.assign(drawn.astype(values.dtype))
    return model


def _build(constructor: Callable[[], keras.Model]) -> keras.Model:
    keras.utils.set_random_seed(SEED)
    return randomize(constructor())


# Text encoders --------------------------------------------------------------------------


def bert() -> keras.Model:
    """``BertBackbone``: token, segment and position embeddings, post-norm encoder, pooler."""
    return _build(
        lambda: models.BertBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            max_sequence_length=MAX_LENGTH,
        )
    )


def distil_bert() -> keras.Model:
    """``DistilBertBackbone``: BERT without segments or pooler."""
    return _build(
        lambda: models.DistilBertBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            max_sequence_length=MAX_LENGTH,
        )
    )


def roberta() -> keras.Model:
    """``RobertaBackbone``."""
    return _build(
        lambda: models.RobertaBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            max_sequence_length=MAX_LENGTH,
        )
    )


def albert() -> keras.Model:
    """``AlbertBackbone``: factorised embedding (16 → 32), one shared layer group."""
    return _build(
        lambda: models.AlbertBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            embedding_dim=16,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            max_sequence_length=MAX_LENGTH,
        )
    )


def electra() -> keras.Model:
    """``ElectraBackbone``: embedding 16 projected to hidden 32."""
    return _build(
        lambda: models.ElectraBackbone(
            vocab_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            embedding_dim=16,
            intermediate_dim=INTERMEDIATE,
            max_sequence_length=MAX_LENGTH,
        )
    )


def deberta_v3() -> keras.Model:
    """``DebertaV3Backbone``: disentangled attention with relative-position buckets."""
    return _build(
        lambda: models.DebertaV3Backbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            max_sequence_length=MAX_LENGTH,
            bucket_size=8,
        )
    )


def xlm_roberta() -> keras.Model:
    """``XLMRobertaBackbone``."""
    return _build(
        lambda: models.XLMRobertaBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            max_sequence_length=MAX_LENGTH,
        )
    )


def f_net() -> keras.Model:
    """``FNetBackbone``: Fourier mixing (2-D FFT) instead of attention."""
    return _build(
        lambda: models.FNetBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            max_sequence_length=MAX_LENGTH,
        )
    )


# Decoders --------------------------------------------------------------------------------


def gpt2() -> keras.Model:
    """``GPT2Backbone``: learned positions, pre-norm causal decoder."""
    return _build(
        lambda: models.GPT2Backbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            max_sequence_length=MAX_LENGTH,
        )
    )


def gpt_neo_x() -> keras.Model:
    """``GPTNeoXBackbone``: partial rotary embedding (25 % of each head)."""
    return _build(
        lambda: models.GPTNeoXBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            max_sequence_length=MAX_LENGTH,
        )
    )


def opt() -> keras.Model:
    """``OPTBackbone``."""
    return _build(
        lambda: models.OPTBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            max_sequence_length=MAX_LENGTH,
        )
    )


def bloom() -> keras.Model:
    """``BloomBackbone``: ALiBi position biases."""
    return _build(
        lambda: models.BloomBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
        )
    )


def llama() -> keras.Model:
    """``LlamaBackbone``: RMSNorm, rotary, grouped-query attention (4 query, 2 kv heads)."""
    return _build(
        lambda: models.LlamaBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
        )
    )


def llama3() -> keras.Model:
    """``Llama3Backbone`` with Llama 3.1's rope frequency scaling."""
    return _build(
        lambda: models.Llama3Backbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            rope_max_wavelength=500000,
            rope_position_scaling_factor=8.0,
            rope_frequency_adjustment_factor=8.0,
            rope_low_freq_factor=1.0,
            rope_high_freq_factor=4.0,
            rope_pretraining_sequence_length=32,
        )
    )


def mistral() -> keras.Model:
    """``MistralBackbone`` with a sliding window of 4 tokens (shorter than the inputs)."""
    return _build(
        lambda: models.MistralBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            sliding_window=4,
        )
    )


def mixtral() -> keras.Model:
    """``MixtralBackbone``: sparse mixture of 4 experts, top 2, sliding window 4."""
    return _build(
        lambda: models.MixtralBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            num_experts=4,
            top_k=2,
            sliding_window=4,
        )
    )


def qwen() -> keras.Model:
    """``QwenBackbone`` (Qwen2): biased q/k/v projections, tied embeddings."""
    return _build(
        lambda: models.QwenBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
        )
    )


def qwen_moe() -> keras.Model:
    """``QwenMoeBackbone``: 4 experts, top 2, plus a gated shared expert."""
    return _build(
        lambda: models.QwenMoeBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            moe_intermediate_dim=32,
            shared_expert_intermediate_dim=INTERMEDIATE,
            num_experts=4,
            top_k=2,
        )
    )


def qwen3() -> keras.Model:
    """``Qwen3Backbone``: query/key RMSNorm."""
    return _build(
        lambda: models.Qwen3Backbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            head_dim=HIDDEN // HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
        )
    )


def gemma() -> keras.Model:
    """``GemmaBackbone`` (Gemma 1): ``1 + scale`` RMSNorm, GeGLU, tied embeddings."""
    return _build(
        lambda: models.GemmaBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            head_dim=HIDDEN // HEADS,
        )
    )


def gemma2() -> keras.Model:
    """``GemmaBackbone`` configured as Gemma 2: post-norms, logit soft caps, alternating
    sliding-window (4 tokens) and global attention."""
    return _build(
        lambda: models.GemmaBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            head_dim=HIDDEN // HEADS,
            query_head_dim_normalize=False,
            use_post_ffw_norm=True,
            use_post_attention_norm=True,
            attention_logit_soft_cap=50.0,
            final_logit_soft_cap=30.0,
            use_sliding_window_attention=True,
            sliding_window_size=4,
        )
    )


def gemma3() -> keras.Model:
    """``Gemma3Backbone``, text only: query/key norms, sliding window 4 on local layers."""
    return _build(
        lambda: models.Gemma3Backbone(
            vocabulary_size=VOCAB,
            image_size=IMAGE[0],
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            head_dim=HIDDEN // HEADS,
            use_post_ffw_norm=True,
            use_post_attention_norm=True,
            use_sliding_window_attention=True,
            sliding_window_size=4,
        )
    )


def phi3() -> keras.Model:
    """``Phi3Backbone``: fused qkv and gate/up projections."""
    return _build(
        lambda: models.Phi3Backbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            max_sequence_length=MAX_LENGTH,
            pretraining_sequence_length=MAX_LENGTH,
        )
    )


def falcon() -> keras.Model:
    """``FalconBackbone``: ALiBi, parallel attention and MLP."""
    return _build(
        lambda: models.FalconBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_attention_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
        )
    )


# Seq2seq --------------------------------------------------------------------------------


def t5() -> keras.Model:
    """``T5Backbone``: relative-position buckets, gated GELU, encoder and decoder."""
    return _build(
        lambda: models.T5Backbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            activation="gelu",
        )
    )


def bart() -> keras.Model:
    """``BartBackbone``: encoder and causal decoder with cross-attention."""
    return _build(
        lambda: models.BartBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            max_sequence_length=MAX_LENGTH,
        )
    )


def whisper() -> keras.Model:
    """``WhisperBackbone``: a 16-mel audio encoder (two convolutions) and a text decoder."""
    return _build(
        lambda: models.WhisperBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            num_mels=16,
            max_encoder_sequence_length=MAX_LENGTH,
            max_decoder_sequence_length=MAX_LENGTH,
        )
    )


# Vision --------------------------------------------------------------------------------


def vit() -> keras.Model:
    """``ViTBackbone``: 8x8 patches of a 32x32 image, class token."""
    return _build(
        lambda: models.ViTBackbone(
            image_shape=IMAGE,
            patch_size=8,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            mlp_dim=INTERMEDIATE,
        )
    )


def deit() -> keras.Model:
    """``DeiTBackbone``: class and distillation tokens."""
    return _build(
        lambda: models.DeiTBackbone(
            image_shape=IMAGE,
            patch_size=8,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
        )
    )


def swin() -> keras.Model:
    """``SwinTransformerBackbone``: 4x4 patches, two stages, shifted 4x4 windows."""
    return _build(
        lambda: models.SwinTransformerBackbone(
            image_shape=IMAGE,
            embed_dim=HIDDEN,
            depths=(2, 2),
            num_heads=(2, 4),
            window_size=4,
            patch_size=4,
            drop_path=0.0,
        )
    )


def dinov2() -> keras.Model:
    """``DINOV2Backbone``: 4x4 patches, layer scale, position table at the image size."""
    return _build(
        lambda: models.DINOV2Backbone(
            patch_size=4,
            num_layers=LAYERS,
            hidden_dim=HIDDEN,
            num_heads=HEADS,
            intermediate_dim=INTERMEDIATE,
            image_shape=IMAGE,
            position_embedding_shape=IMAGE,
        )
    )


def _clip_vision() -> keras.Model:
    return models.CLIPVisionEncoder(
        patch_size=8,
        hidden_dim=HIDDEN,
        num_layers=LAYERS,
        num_heads=HEADS,
        intermediate_dim=INTERMEDIATE,
        image_shape=IMAGE,
    )


def clip_vision() -> keras.Model:
    """``CLIPVisionEncoder`` alone (quick-GELU, pre-norm, class token)."""
    return _build(_clip_vision)


def clip() -> keras.Model:
    """``CLIPBackbone``: vision and text encoders, projections, similarity logits."""
    return _build(
        lambda: models.CLIPBackbone(
            vision_encoder=_clip_vision(),
            text_encoder=models.CLIPTextEncoder(
                vocabulary_size=VOCAB,
                embedding_dim=HIDDEN,
                hidden_dim=HIDDEN,
                num_layers=LAYERS,
                num_heads=HEADS,
                intermediate_dim=INTERMEDIATE,
                max_sequence_length=MAX_LENGTH,
            ),
            projection_dim=HIDDEN,
        )
    )


def _siglip_vision() -> keras.Model:
    return models.SigLIPVisionEncoder(
        patch_size=8,
        hidden_dim=HIDDEN,
        num_layers=LAYERS,
        num_heads=HEADS,
        intermediate_dim=INTERMEDIATE,
        image_shape=IMAGE,
    )


def siglip_vision() -> keras.Model:
    """``SigLIPVisionEncoder`` alone (attention-pooling head)."""
    return _build(_siglip_vision)


def siglip() -> keras.Model:
    """``SigLIPBackbone``: vision and text encoders, sigmoid-loss logits."""
    return _build(
        lambda: models.SigLIPBackbone(
            vision_encoder=_siglip_vision(),
            text_encoder=models.SigLIPTextEncoder(
                vocabulary_size=VOCAB,
                embedding_dim=HIDDEN,
                hidden_dim=HIDDEN,
                num_layers=LAYERS,
                num_heads=HEADS,
                intermediate_dim=INTERMEDIATE,
                # SigLIP adds its whole position table to the tokens (no slicing to the
                # input's length), so the text length is fixed: 8, what inputs drawn from
                # the signature get along a dynamic dimension.
                max_sequence_length=8,
            ),
        )
    )


FACTORIES: dict[str, Callable[[], keras.Model]] = {name: globals()[name] for name in HUB}
"""Every factory of :data:`models.catalog.HUB`, by name."""
