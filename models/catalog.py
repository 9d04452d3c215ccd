"""The zoo's index, importable without TensorFlow: what each model in ``zoo.py`` needs.

``expected`` is what the pipeline does with the model today: ``"pass"`` (all three pairs
agree) or ``"unsupported"`` (the import stage lists ops no converter handles yet).
``slow`` models (real networks) are left out of the default test run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: the factory ``zoo.py:<name>`` and how to run it."""

    name: str
    expected: str = "pass"
    slow: bool = False
    input_ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    keep_batchnorm: bool = False
    """Convert with ``--keep-batchnorm`` (BatchNorm as ``nn.BatchNorm*d``, fully trainable)."""


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("scale_layer_net"),
        ZooEntry("dense_relu"),
        ZooEntry("dense_sigmoid"),
        ZooEntry("dense_mlp"),
        ZooEntry("linear_regression"),
        ZooEntry("cnn"),
        ZooEntry("lstm"),
        ZooEntry("gru"),
        ZooEntry("bidirectional_lstm"),
        ZooEntry("conv_bn_dropout", keep_batchnorm=True),
        ZooEntry("self_attention"),
        ZooEntry("self_attention_layernorm"),
        ZooEntry("multi_head_attention"),
        ZooEntry("attention_pooling", input_ranges={"tokens": (0, 50)}),
        ZooEntry("mobilenet_v2", slow=True, keep_batchnorm=True),
        ZooEntry("convnext_tiny", slow=True),
    )
}


CORPUS: dict[str, int] = {
    "ConvNeXtTiny": 64,
    "ConvNeXtSmall": 64,
    "ConvNeXtBase": 64,
    "ConvNeXtLarge": 64,
    "ConvNeXtXLarge": 64,
    "DenseNet121": 64,
    "DenseNet169": 64,
    "DenseNet201": 64,
    "EfficientNetB0": 64,
    "EfficientNetB1": 64,
    "EfficientNetB2": 64,
    "EfficientNetB3": 64,
    "EfficientNetB4": 64,
    "EfficientNetB5": 64,
    "EfficientNetB6": 64,
    "EfficientNetB7": 64,
    "EfficientNetV2B0": 64,
    "EfficientNetV2B1": 64,
    "EfficientNetV2B2": 64,
    "EfficientNetV2B3": 64,
    "EfficientNetV2S": 64,
    "EfficientNetV2M": 64,
    "EfficientNetV2L": 64,
    "InceptionResNetV2": 96,
    "InceptionV3": 96,
    "MobileNet": 64,
    "MobileNetV2": 64,
    "MobileNetV3Small": 64,
    "MobileNetV3Large": 64,
    "NASNetMobile": 64,
    "NASNetLarge": 64,
    "ResNet50": 96,
    "ResNet101": 64,
    "ResNet152": 64,
    "ResNet50V2": 64,
    "ResNet101V2": 64,
    "ResNet152V2": 64,
    "VGG16": 64,
    "VGG19": 64,
    "Xception": 96,
}
"""Network name (the ``keras.applications`` constructor) → square input size."""


TEXT: dict[str, dict[str, tuple[int, int]]] = {
    "bert_encoder": {"token_ids": (0, 64), "segment_ids": (0, 2), "padding_mask": (0, 2)},
    "gpt_decoder": {"token_ids": (0, 64), "padding_mask": (0, 2)},
}
"""keras-hub-style text backbones in ``models/text.py`` → the ``--input-range`` of each input."""


@dataclass(frozen=True)
class HubEntry:
    """One keras-hub backbone of ``models/keras_hub.py``: the factory ``keras_hub.py:<name>``,
    the ``--input-range`` of each integer input, and whether the default suite runs it."""

    name: str
    input_ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    slow: bool = True
    """Left out of the default test run (``make test-slow`` runs it)."""


HUB_VOCAB = 128
"""The vocabulary of every tiny keras-hub text backbone (``models/keras_hub.py``)."""

# Padding masks are drawn 0 or 1 per token: a row may be all padding, and a decoder's first
# query may see only padded keys.  Measured on every backbone below (a batch with one row all
# padding): outputs stay finite, keras-hub masks with a large negative, never -inf.
# ``slow=False``: the default suite runs those (one text encoder, one decoder LLM with RoPE and
# grouped-query attention, one vision transformer); ``make test-slow``/``make keras-hub`` run all.
_ENCODER = {"token_ids": (0, HUB_VOCAB), "segment_ids": (0, 2), "padding_mask": (0, 2)}
_TOKENS = {"token_ids": (0, HUB_VOCAB), "padding_mask": (0, 2)}
_SEQ2SEQ = {
    "encoder_token_ids": (0, HUB_VOCAB),
    "encoder_padding_mask": (0, 2),
    "decoder_token_ids": (0, HUB_VOCAB),
    "decoder_padding_mask": (0, 2),
}
_DECODER_ONLY = {"decoder_token_ids": (0, HUB_VOCAB), "decoder_padding_mask": (0, 2)}

HUB: dict[str, HubEntry] = {
    e.name: e
    for e in (
        # text encoders
        HubEntry("bert", _ENCODER, slow=False),
        HubEntry("distil_bert", _TOKENS),
        HubEntry("roberta", _TOKENS),
        HubEntry("albert", _ENCODER),
        HubEntry("electra", _ENCODER),
        HubEntry("deberta_v3", _TOKENS),
        HubEntry("xlm_roberta", _TOKENS),
        HubEntry("f_net", {"token_ids": (0, HUB_VOCAB), "segment_ids": (0, 4)}),
        # decoders
        HubEntry("gpt2", _TOKENS),
        HubEntry("gpt_neo_x", _TOKENS),
        HubEntry("opt", _TOKENS),
        HubEntry("bloom", _TOKENS),
        HubEntry("llama", _TOKENS, slow=False),
        HubEntry("llama3", _TOKENS),
        HubEntry("mistral", _TOKENS),
        HubEntry("mixtral", _TOKENS),
        HubEntry("qwen", _TOKENS),
        HubEntry("qwen_moe", _TOKENS),
        HubEntry("qwen3", _TOKENS),
        HubEntry("gemma", _TOKENS),
        HubEntry("gemma2", _TOKENS),
        HubEntry("gemma3", _TOKENS),
        HubEntry("phi3", _TOKENS),
        HubEntry("falcon", _TOKENS),
        # seq2seq
        HubEntry("t5", _SEQ2SEQ),
        HubEntry("bart", _SEQ2SEQ),
        HubEntry("whisper", _DECODER_ONLY),
        # vision
        HubEntry("vit", slow=False),
        HubEntry("deit"),
        HubEntry("swin"),
        HubEntry("dinov2"),
        HubEntry("clip_vision"),
        HubEntry("clip", {"token_ids": (0, HUB_VOCAB)}),
        HubEntry("siglip_vision"),
        HubEntry("siglip", {"token_ids": (0, HUB_VOCAB)}),
        # added toward every backbone
        HubEntry("esm", {"token_ids": (0, HUB_VOCAB)}),
        HubEntry("roformer_v2", {"token_ids": (0, HUB_VOCAB), "segment_ids": (0, 2)}),
        HubEntry("smollm3", _TOKENS),
        HubEntry("qwen3_moe", _TOKENS),
        HubEntry("gpt_oss", _TOKENS),
        HubEntry("t5gemma", _SEQ2SEQ),
        HubEntry("moonshine", {"decoder_token_ids": (0, HUB_VOCAB)}),
        HubEntry("xlnet", _ENCODER),
        HubEntry("rwkv7", _TOKENS),
        HubEntry("pali_gemma", {**_TOKENS, "response_mask": (0, 2)}),
        HubEntry("dinov3"),
        HubEntry("depth_anything"),
        HubEntry("hgnetv2"),
        HubEntry("qwen3_5", _TOKENS),
        HubEntry("qwen3_5_moe", _TOKENS),
        HubEntry("gemma4", {**_TOKENS, "position_ids": (0, 8)}),
        HubEntry("t5gemma2", _SEQ2SEQ),
        HubEntry(
            "edrec", {"encoder_token_ids": (0, HUB_VOCAB), "decoder_token_ids": (0, HUB_VOCAB)}
        ),
        HubEntry("metaclip2", {"token_ids": (0, HUB_VOCAB)}),
        HubEntry("vit_det"),
        HubEntry("mit"),
        HubEntry("segformer"),
        HubEntry("resnet"),
        HubEntry("vgg"),
        HubEntry("densenet"),
        HubEntry("xception"),
        HubEntry("cspnet"),
        HubEntry("mobilenet"),
    )
}
"""keras-hub backbones in ``models/keras_hub.py`` → their input ranges and suite."""
