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

# The worker imports a factory file with its folder on sys.path, so the siblings are
# `applications` and `catalog`.
from applications import randomize_constants
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
    floating = [v for v in model.weights if v.dtype.startswith("float")]
    randomize_constants(floating, np.random.default_rng(seed))
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


# Added toward "every backbone" (keras-hub 0.32.0) ----------------------------------------


def esm() -> keras.Model:
    """``ESMBackbone`` (ESM-2): rotary positions, padding taken from token 0."""
    return _build(
        lambda: models.ESMBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            max_sequence_length=MAX_LENGTH,
            dropout=0.0,
        )
    )


def roformer_v2() -> keras.Model:
    """``RoformerV2Backbone``: rotary attention, scale-only norms, mask from token 0."""
    return _build(
        lambda: models.RoformerV2Backbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            head_size=HIDDEN // HEADS,
            dropout=0.0,
        )
    )


def smollm3() -> keras.Model:
    """``SmolLM3Backbone``: rotary on the first layer only (the second is NoPE)."""
    return _build(
        lambda: models.SmolLM3Backbone(
            vocabulary_size=VOCAB,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            num_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            attention_bias=False,
            attention_dropout=0.0,
            rope_layer_enabled_list=[True, False],
            layer_types=["attention"] * LAYERS,
            mlp_bias=False,
            layer_norm_epsilon=1e-6,
            max_position_embeddings=MAX_LENGTH,
            rope_theta=10000.0,
            partial_rotary_factor=1.0,
        )
    )


def qwen3_moe() -> keras.Model:
    """``Qwen3MoeBackbone``: query/key norms, 4 experts, top 2."""
    return _build(
        lambda: models.Qwen3MoeBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            moe_intermediate_dim=32,
            num_experts=4,
            head_dim=HIDDEN // HEADS,
            top_k=2,
            norm_top_k_prob=True,
        )
    )


def gpt_oss() -> keras.Model:
    """``GptOssBackbone``: attention sinks, 4 experts top 2, sliding window 4."""
    return _build(
        lambda: models.GptOssBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_query_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            num_key_value_heads=KV_HEADS,
            num_experts=4,
            top_k=2,
            sliding_window=4,
            head_dim=HIDDEN // HEADS,
        )
    )


def t5gemma() -> keras.Model:
    """``T5GemmaBackbone``: Gemma-2 style encoder and decoder, sliding (4) then full layers."""
    return _build(
        lambda: models.T5GemmaBackbone(
            vocabulary_size=VOCAB,
            encoder_hidden_dim=HIDDEN,
            encoder_intermediate_dim=INTERMEDIATE,
            encoder_num_layers=LAYERS,
            encoder_num_attention_heads=HEADS,
            encoder_num_key_value_heads=KV_HEADS,
            encoder_head_dim=HIDDEN // HEADS,
            encoder_layer_types=["sliding_attention", "full_attention"],
            decoder_hidden_dim=HIDDEN,
            decoder_intermediate_dim=INTERMEDIATE,
            decoder_num_layers=LAYERS,
            decoder_num_attention_heads=HEADS,
            decoder_num_key_value_heads=KV_HEADS,
            decoder_head_dim=HIDDEN // HEADS,
            decoder_layer_types=["sliding_attention", "full_attention"],
            sliding_window=4,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
        )
    )


MOONSHINE_AUDIO = 2048
"""Moonshine's raw-audio length: its unpadded convolutions (kernel 127 stride 64, 7/3, 3/2)
need at least 895 samples, more than a drawn dynamic axis gets, so the length is fixed."""


def moonshine() -> keras.Model:
    """``MoonshineBackbone``: raw-audio convolutional front end, encoder, SwiGLU decoder, fed
    through fixed-length audio inputs (:data:`MOONSHINE_AUDIO`); the masks are boolean."""

    def construct() -> keras.Model:
        backbone = models.MoonshineBackbone(
            vocabulary_size=VOCAB,
            filter_dim=HIDDEN,
            encoder_num_layers=LAYERS,
            decoder_num_layers=LAYERS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            encoder_num_heads=HEADS,
            decoder_num_heads=HEADS,
            max_position_embeddings=MAX_LENGTH,
        )
        inputs = {
            "encoder_input_values": keras.Input((MOONSHINE_AUDIO, 1), name="encoder_input_values"),
            "encoder_padding_mask": keras.Input(
                (MOONSHINE_AUDIO,), dtype="bool", name="encoder_padding_mask"
            ),
            "decoder_token_ids": keras.Input((None,), dtype="int32", name="decoder_token_ids"),
            "decoder_padding_mask": keras.Input((None,), dtype="bool", name="decoder_padding_mask"),
        }
        return keras.Model(inputs, backbone(inputs), name="moonshine")

    return _build(construct)


def xlnet() -> keras.Model:
    """``XLNetBackbone``: two-stream relative attention with segment biases."""
    return _build(
        lambda: models.XLNetBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
        )
    )


RWKV_LENGTH = 8
"""RWKV-7's sequence length: on TensorFlow its recurrence is a Python loop over
``range(T)``, so the length must be static."""


def rwkv7() -> keras.Model:
    """``RWKV7Backbone``: the RWKV-7 time-mix recurrence (head size 8) and channel mix, fed
    through fixed-length inputs (:data:`RWKV_LENGTH`)."""

    def construct() -> keras.Model:
        backbone = models.RWKV7Backbone(
            hidden_size=HIDDEN,
            head_size=HIDDEN // HEADS,
            num_layers=LAYERS,
            vocabulary_size=VOCAB,
            intermediate_dim=INTERMEDIATE,
            gate_lora=16,
            mv_lora=8,
            aaa_lora=8,
            decay_lora=8,
        )
        inputs = {
            "token_ids": keras.Input((RWKV_LENGTH,), dtype="int32", name="token_ids"),
            "padding_mask": keras.Input((RWKV_LENGTH,), dtype="int32", name="padding_mask"),
        }
        return keras.Model(inputs, backbone(inputs), name="rwkv7")

    return _build(construct)


def pali_gemma() -> keras.Model:
    """``PaliGemmaBackbone``: a SigLIP-style ViT (8x8 patches) prefixed to a Gemma decoder."""
    return _build(
        lambda: models.PaliGemmaBackbone(
            vocabulary_size=VOCAB,
            image_size=IMAGE[0],
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            head_dim=HIDDEN // HEADS,
            vit_patch_size=8,
            vit_num_heads=HEADS,
            vit_hidden_dim=HIDDEN,
            vit_num_layers=LAYERS,
            vit_intermediate_dim=INTERMEDIATE,
        )
    )


def dinov3() -> keras.Model:
    """``DINOV3Backbone``: 4x4 patches, 4 register tokens, 2-D rotary attention."""
    return _build(
        lambda: models.DINOV3Backbone(
            patch_size=4,
            num_layers=LAYERS,
            hidden_dim=HIDDEN,
            num_heads=HEADS,
            intermediate_dim=INTERMEDIATE,
            image_shape=IMAGE,
        )
    )


def depth_anything() -> keras.Model:
    """``DepthAnythingBackbone``: a DINOv2 encoder (4x4 patches), reassemble/fusion neck and
    depth head over both layers' features."""
    return _build(
        lambda: models.DepthAnythingBackbone(
            image_encoder=models.DINOV2Backbone(
                patch_size=4,
                num_layers=LAYERS,
                hidden_dim=HIDDEN,
                num_heads=HEADS,
                intermediate_dim=INTERMEDIATE,
                image_shape=IMAGE,
                position_embedding_shape=IMAGE,
            ),
            reassemble_factors=[2, 0.5],
            neck_hidden_dims=[16, 32],
            fusion_hidden_dim=HIDDEN,
            head_hidden_dim=16,
            head_in_index=-1,
            feature_keys=["stage1", "stage2"],
        )
    )


def hgnetv2() -> keras.Model:
    """``HGNetV2Backbone``: two stages, learnable affine blocks, one light-conv stage."""
    return _build(
        lambda: models.HGNetV2Backbone(
            depths=[1, 1],
            embedding_size=16,
            hidden_sizes=[32, 64],
            stem_channels=[3, 8, 16],
            hidden_act="relu",
            use_learnable_affine_block=True,
            stackwise_stage_filters=[(16, 8, 32, 1, 2, 3), (32, 16, 64, 1, 2, 3)],
            apply_downsample=[False, True],
            use_lightweight_conv_block=[False, True],
            image_shape=IMAGE,
        )
    )


def qwen3_5() -> keras.Model:
    """``Qwen3_5Backbone``, text only: a gated delta-net linear-attention layer then a full
    attention layer (partial rotary)."""
    return _build(
        lambda: models.Qwen3_5Backbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            head_dim=HIDDEN // HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            layer_types=["linear_attention", "full_attention"],
            linear_num_key_heads=2,
            linear_num_value_heads=4,
            linear_key_head_dim=8,
            linear_value_head_dim=8,
        )
    )


def qwen3_5_moe() -> keras.Model:
    """``Qwen3_5MoeBackbone``, text only: linear then full attention, 4 experts top 2 plus
    a shared expert."""
    return _build(
        lambda: models.Qwen3_5MoeBackbone(
            vocabulary_size=VOCAB,
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            head_dim=HIDDEN // HEADS,
            hidden_dim=HIDDEN,
            moe_intermediate_dim=32,
            shared_expert_intermediate_size=INTERMEDIATE,
            num_experts=4,
            top_k=2,
            layer_types=["linear_attention", "full_attention"],
            linear_num_key_heads=2,
            linear_num_value_heads=4,
            linear_key_head_dim=8,
            linear_value_head_dim=8,
        )
    )


def gemma4() -> keras.Model:
    """``Gemma4Backbone``, text only: sliding window 4 then a global layer."""
    return _build(
        lambda: models.Gemma4Backbone(
            vocabulary_size=VOCAB,
            image_size=IMAGE[0],
            num_layers=LAYERS,
            num_query_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            head_dim=HIDDEN // HEADS,
            sliding_window_size=4,
            sliding_window_pattern=2,
        )
    )


def t5gemma2() -> keras.Model:
    """``T5Gemma2Backbone``, text only: query/key norms, sliding (4) then full layers."""
    return _build(
        lambda: models.T5Gemma2Backbone(
            vocabulary_size=VOCAB,
            encoder_hidden_dim=HIDDEN,
            encoder_intermediate_dim=INTERMEDIATE,
            encoder_num_layers=LAYERS,
            encoder_num_attention_heads=HEADS,
            encoder_num_key_value_heads=KV_HEADS,
            encoder_head_dim=HIDDEN // HEADS,
            encoder_layer_types=["sliding_attention", "full_attention"],
            decoder_hidden_dim=HIDDEN,
            decoder_intermediate_dim=INTERMEDIATE,
            decoder_num_layers=LAYERS,
            decoder_num_attention_heads=HEADS,
            decoder_num_key_value_heads=KV_HEADS,
            decoder_head_dim=HIDDEN // HEADS,
            decoder_layer_types=["sliding_attention", "full_attention"],
            sliding_window=4,
        )
    )


def edrec() -> keras.Model:
    """``EdRecBackbone``: encoder-decoder recommender transformer (boolean masks)."""
    return _build(
        lambda: models.EdRecBackbone(
            vocab_size=VOCAB,
            num_layers_enc=LAYERS,
            num_layers_dec=LAYERS,
            hidden_dim=HIDDEN,
            intermediate_dim=INTERMEDIATE,
            num_heads=HEADS,
        )
    )


def metaclip2() -> keras.Model:
    """``MetaCLIP2Backbone``: CLIP-style vision and text encoders."""
    return _build(
        lambda: models.MetaCLIP2Backbone(
            vision_encoder=models.MetaCLIP2VisionEncoder(
                patch_size=8,
                hidden_dim=HIDDEN,
                num_layers=LAYERS,
                num_heads=HEADS,
                intermediate_dim=INTERMEDIATE,
                image_shape=IMAGE,
            ),
            text_encoder=models.MetaCLIP2TextEncoder(
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


def vit_det() -> keras.Model:
    """``ViTDetBackbone``: 4x4 patches, windowed (4) then global attention, relative
    positions, convolutional neck."""
    return _build(
        lambda: models.ViTDetBackbone(
            hidden_size=HIDDEN,
            num_layers=LAYERS,
            intermediate_dim=INTERMEDIATE,
            num_heads=HEADS,
            global_attention_layer_indices=[1],
            image_shape=IMAGE,
            patch_size=4,
            num_output_channels=16,
            window_size=4,
        )
    )


def _mit() -> keras.Model:
    return models.MiTBackbone(
        layerwise_depths=[1, 1],
        num_layers=LAYERS,
        layerwise_num_heads=[1, 2],
        layerwise_sr_ratios=[2, 1],
        max_drop_path_rate=0.0,
        layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2],
        image_shape=IMAGE,
        hidden_dims=[16, HIDDEN],
    )


def mit() -> keras.Model:
    """``MiTBackbone`` (SegFormer's Mix Transformer): two stages, spatial-reduction attention."""
    return _build(_mit)


def segformer() -> keras.Model:
    """``SegFormerBackbone``: the MiT encoder and an all-MLP decoder."""
    return _build(lambda: models.SegFormerBackbone(image_encoder=_mit(), projection_filters=16))


def resnet() -> keras.Model:
    """``ResNetBackbone``: ResNet-v2 (pre-activation) basic blocks, two stages."""
    return _build(
        lambda: models.ResNetBackbone(
            input_conv_filters=[64],  # the constructor requires 64 wide first stages
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 32],
            stackwise_num_blocks=[1, 1],
            stackwise_num_strides=[1, 2],
            block_type="basic_block",
            use_pre_activation=True,
            image_shape=IMAGE,
        )
    )


def vgg() -> keras.Model:
    """``VGGBackbone``: two conv stages with max pooling."""
    return _build(
        lambda: models.VGGBackbone(
            stackwise_num_repeats=[1, 2], stackwise_num_filters=[16, 32], image_shape=IMAGE
        )
    )


def densenet() -> keras.Model:
    """``DenseNetBackbone``: two dense blocks, growth rate 8."""
    return _build(
        lambda: models.DenseNetBackbone(
            stackwise_num_repeats=[2, 2], image_shape=IMAGE, growth_rate=8
        )
    )


def xception() -> keras.Model:
    """``XceptionBackbone``: separable-convolution stages."""
    return _build(
        lambda: models.XceptionBackbone(
            stackwise_conv_filters=[[16, 32], [32, 64]],
            stackwise_pooling=[True, False],
            image_shape=IMAGE,
        )
    )


def cspnet() -> keras.Model:
    """``CSPNetBackbone``: cross-stage partial dark blocks."""
    return _build(
        lambda: models.CSPNetBackbone(
            stem_filters=16,
            stem_kernel_size=3,
            stem_strides=1,
            stackwise_depth=[1, 1],
            stackwise_strides=[1, 2],
            stackwise_num_filters=[16, 32],
            block_type="dark_block",
            stage_type="dark",
            image_shape=IMAGE,
        )
    )


def mobilenet() -> keras.Model:
    """``MobileNetBackbone`` (v3 style): inverted residuals with squeeze-and-excite."""
    return _build(
        lambda: models.MobileNetBackbone(
            stackwise_expansion=[[16, 24], [48, 48]],
            stackwise_num_blocks=[2, 2],
            stackwise_num_filters=[[8, 8], [16, 16]],
            stackwise_kernel_size=[[3, 3], [5, 5]],
            stackwise_num_strides=[[2, 1], [2, 1]],
            stackwise_se_ratio=[[None, None], [0.25, 0.25]],
            stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
            stackwise_padding=[[1, 1], [2, 2]],
            output_num_filters=32,
            depthwise_filters=8,
            depthwise_stride=1,
            depthwise_residual=False,
            last_layer_filter=32,
            squeeze_and_excite=0.5,
            image_shape=IMAGE,
        )
    )


FACTORIES: dict[str, Callable[[], keras.Model]] = {name: globals()[name] for name in HUB}
"""Every factory of :data:`models.catalog.HUB`, by name."""
