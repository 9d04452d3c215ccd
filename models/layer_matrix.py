"""The Keras layer matrix: one small model per public ``keras.layers`` class, with its common
options, as data.

Each :class:`Case` is a layer class name, its keyword arguments and its input specs; :func:`build`
turns a case into a functional model with a given Keras module (``keras`` for Keras 3, or
``tf_keras`` for Keras 2), so the same case runs both ways.  Every model gets seeded random
weights, and every variable the constructor set to a constant (biases, norm offsets and scales,
moving statistics) is redrawn around it (``applications.randomize_constants``): a bias that went
nowhere must change an output.  A layer without weights of its own is fed through a ``Dense``
lead-in on each float input, so the gradient check differentiates *through* it.

Classes that cannot be a case are listed with the reason: :data:`REFUSED` (string inputs, which
tf2torch refuses by name) and :data:`NOT_APPLICABLE` (no inference graph of their own).
``tests/test_layer_matrix.py`` checks that every public ``keras.layers`` class is in exactly one
of the three, so a class a new Keras adds fails until it is placed.

This module imports no TensorFlow at import time (pytest reads the data); the TF worker loads
each case as the factory ``layer_matrix.py:<case id>`` (module ``__getattr__``).  For Keras 2,
``python models/layer_matrix.py save CASE_ID PATH`` writes the case with ``tf_keras`` (``.h5``
or a SavedModel directory).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

SEED = 1234


@dataclass(frozen=True)
class In:
    """One model input: shape without the batch, dtype, and for integers a half-open range."""

    shape: tuple[int | None, ...]
    dtype: str = "float32"
    range: tuple[int, int] | None = None


@dataclass(frozen=True)
class Sub:
    """A layer passed to another layer's constructor (``Bidirectional(LSTM(...))``) or applied
    after the layer under test (:attr:`Case.then`)."""

    layer: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __init__(self, layer: str, **kwargs: Any) -> None:
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "kwargs", kwargs)


@dataclass(frozen=True)
class Fn:
    """A named module-level function passed as a keyword argument (``Lambda``'s function)."""

    name: str


@dataclass(frozen=True)
class Case:
    """One row of the matrix: ``layer(**kwargs)`` called on inputs of ``inputs``.

    - ``call``: ``"single"`` (one tensor), ``"list"`` (``layer([a, b])``, merging layers) or
      ``"args"`` (``layer(a, b)``, ``MultiHeadAttention(query, value)``).
    - ``then``: a layer applied to the output (a mask consumer after ``Masking``).
    - ``lead_in``: a ``Dense`` before each float input; ``None`` adds it when the layer has no
      trainable weights of its own (so gradients flow through the layer under test).
    - ``tag``: the case id's suffix (default: from the kwargs).
    """

    layer: str
    inputs: tuple[In, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    call: str = "single"
    then: Sub | None = None
    lead_in: bool | None = None
    tag: str | None = None

    @property
    def id(self) -> str:
        """A Python identifier naming the case (the factory name): ``Conv2D_padding_same``."""
        if self.tag is not None:
            suffix = self.tag
        else:
            suffix = "_".join(f"{k}_{_short(v)}" for k, v in self.kwargs.items())
        text = f"{self.layer}_{suffix}" if suffix else self.layer
        return re.sub(r"_+", "_", re.sub(r"\W", "_", text)).strip("_")

    def classes(self) -> set[str]:
        """Every ``keras.layers`` class this case builds (nested and ``then`` layers too)."""
        found = {self.layer}
        pending: list[Any] = [*self.kwargs.values(), self.then]
        while pending:
            value = pending.pop()
            if isinstance(value, Sub):
                found.add(value.layer)
                pending.extend(value.kwargs.values())
            elif isinstance(value, list | tuple):
                pending.extend(value)
        return found


def _short(value: Any) -> str:
    if isinstance(value, Sub):
        return value.layer
    if isinstance(value, Fn):
        return value.name
    if isinstance(value, list | tuple):
        return "x".join(_short(v) for v in value)
    return str(value)


# Shapes the cases share (batch left out; the pipeline draws batch 2).
VEC = In((6,))
SEQ = In((5, 4))
SEQ8 = In((5, 8))
IMG = In((8, 8, 3))
IMG4 = In((8, 8, 4))
VOL = In((4, 6, 6, 2))
SIGNAL = In((64,))
TOKENS = In((6,), "int32", (0, 10))
IDS = In((4,), "int32", (0, 6))


def _c(layer: str, /, *inputs: In, tag: str | None = None, **kwargs: Any) -> Case:
    return Case(layer, tuple(inputs), kwargs, tag=tag)


ACTIVATIONS = (
    "relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "softmax", "log_softmax", "softplus",
    "softsign", "elu", "selu", "gelu", "silu", "hard_silu", "mish", "leaky_relu", "exponential",
    "linear",
)  # fmt: skip
"""The activation names ``Activation`` is tried with (Keras's common ones)."""

MERGING = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")

RANDOM_AUGMENTATION: dict[str, dict[str, Any]] = {
    "RandomBrightness": {"factor": 0.2},
    "RandomContrast": {"factor": 0.2},
    "RandomFlip": {},
    "RandomRotation": {"factor": 0.1},
    "RandomTranslation": {"height_factor": 0.1, "width_factor": 0.1},
    "RandomZoom": {"height_factor": 0.1},
    "RandomHue": {"factor": 0.1},
    "RandomSaturation": {"factor": 0.1},
    "RandomSharpness": {"factor": 0.1},
    "RandomShear": {"x_factor": 0.1},
    "RandomPerspective": {},
    "RandomPosterization": {"factor": (1, 4)},
    "RandomInvert": {},
    "RandomGrayscale": {},
    "RandomGaussianBlur": {},
    "RandomErasing": {},
    "RandomElasticTransform": {},
    "RandomColorJitter": {"brightness_factor": 0.1},
    "RandomColorDegeneration": {"factor": 0.1},
    "RandAugment": {},
    "AugMix": {},
    "CutMix": {},
    "MixUp": {},
}
"""Augmentation layers: random in training, the identity at inference (``training=False``,
which is how the pipeline calls a model)."""


def _cases() -> list[Case]:
    cases: list[Case] = [
        # Core
        _c("Dense", VEC, units=4),
        _c("Dense", SEQ, units=3, activation="relu", use_bias=False),
        _c("EinsumDense", VEC, equation="ab,bc->ac", output_shape=4, bias_axes="c"),
        _c("EinsumDense", SEQ, tag="seq", equation="abc,cd->abd", output_shape=(None, 3)),
        _c("Embedding", TOKENS, input_dim=10, output_dim=4),
        _c("ReversibleEmbedding", TOKENS, input_dim=10, output_dim=4),
        _c("Identity", SEQ),
        _c("Lambda", SEQ, function=Fn("square_plus_one")),
        _c("Masking", SEQ, mask_value=0.0),
        Case("Masking", (SEQ,), {"mask_value": 0.0}, then=Sub("LSTM", units=3), tag="then_LSTM"),
        Case(
            "Embedding",
            (TOKENS,),
            {"input_dim": 10, "output_dim": 4, "mask_zero": True},
            then=Sub("LSTM", units=3),
            tag="mask_zero_then_LSTM",
        ),
        # Activations
        *[_c("Activation", SEQ, tag=name, activation=name) for name in ACTIVATIONS],
        _c("ELU", SEQ, alpha=0.5),
        _c("LeakyReLU", SEQ, negative_slope=0.2),
        _c("PReLU", SEQ),
        _c("PReLU", IMG, shared_axes=[1, 2]),
        _c("ReLU", SEQ),
        _c("ReLU", SEQ, tag="max6_slope_threshold", max_value=6.0, negative_slope=0.1, threshold=0.5),
        _c("Softmax", SEQ),
        _c("Softmax", SEQ, axis=1),
        # Merging
        *[Case(name, (SEQ, SEQ), call="list") for name in MERGING],
        Case("Concatenate", (SEQ, SEQ), call="list"),
        Case("Concatenate", (SEQ, In((3, 4))), {"axis": 1}, call="list"),
        Case("Dot", (VEC, VEC), {"axes": 1}, call="list"),
        Case("Dot", (SEQ, In((3, 4))), {"axes": (2, 2)}, call="list"),
        Case("Dot", (VEC, VEC), {"axes": 1, "normalize": True}, call="list"),
        # Attention
        Case("Attention", (SEQ, In((3, 4))), call="list"),
        Case("Attention", (SEQ, In((3, 4))), {"use_scale": True, "score_mode": "concat"}, call="list"),
        Case("AdditiveAttention", (SEQ, In((3, 4))), call="list"),
        Case("MultiHeadAttention", (SEQ8, SEQ8), {"num_heads": 2, "key_dim": 4}, call="args"),
        Case("MultiHeadAttention", (SEQ8, In((3, 6))), {"num_heads": 2, "key_dim": 3, "value_dim": 5, "output_shape": 7}, call="args", tag="cross"),
        Case("GroupQueryAttention", (SEQ8, SEQ8), {"head_dim": 4, "num_query_heads": 4, "num_key_value_heads": 2}, call="args"),
        # Convolution
        _c("Conv1D", SEQ, filters=3, kernel_size=3),
        _c("Conv1D", SEQ, filters=3, kernel_size=3, padding="same", strides=2),
        _c("Conv1D", SEQ, filters=3, kernel_size=2, padding="causal", dilation_rate=2),
        _c("Conv1D", SEQ, filters=4, kernel_size=3, groups=2),
        _c("Conv2D", IMG, filters=4, kernel_size=3),
        _c("Conv2D", IMG, filters=4, kernel_size=3, padding="same", strides=2),
        _c("Conv2D", IMG, filters=4, kernel_size=3, padding="same", dilation_rate=2),
        _c("Conv2D", IMG4, filters=4, kernel_size=3, groups=2),
        _c("Conv2D", IMG, filters=4, kernel_size=(1, 3), strides=(2, 1), activation="relu"),
        _c("Conv3D", VOL, filters=3, kernel_size=3),
        _c("Conv3D", VOL, filters=3, kernel_size=3, padding="same", strides=2),
        _c("Conv1DTranspose", SEQ, filters=3, kernel_size=3),
        _c("Conv1DTranspose", SEQ, filters=3, kernel_size=3, padding="same", strides=2),
        _c("Conv2DTranspose", IMG, filters=4, kernel_size=3, strides=2),
        _c("Conv2DTranspose", IMG, filters=4, kernel_size=3, padding="same", strides=2),
        _c("Conv2DTranspose", IMG, filters=4, kernel_size=3, padding="same", dilation_rate=2),
        _c("Conv3DTranspose", VOL, filters=3, kernel_size=3, padding="same", strides=2),
        _c("DepthwiseConv1D", SEQ, kernel_size=3),
        _c("DepthwiseConv1D", SEQ, kernel_size=3, padding="same", depth_multiplier=2),
        _c("DepthwiseConv2D", IMG, kernel_size=3),
        _c("DepthwiseConv2D", IMG, kernel_size=3, padding="same", depth_multiplier=2),
        _c("DepthwiseConv2D", IMG, kernel_size=3, strides=2),
        _c("SeparableConv1D", SEQ, filters=3, kernel_size=3),
        _c("SeparableConv1D", SEQ, filters=3, kernel_size=3, padding="same", depth_multiplier=2),
        _c("SeparableConv2D", IMG, filters=4, kernel_size=3),
        _c("SeparableConv2D", IMG, filters=4, kernel_size=3, padding="same", strides=2),
        # Pooling
        _c("MaxPooling1D", SEQ, pool_size=2),
        _c("MaxPooling1D", SEQ, pool_size=3, strides=1, padding="same"),
        _c("MaxPooling2D", IMG, pool_size=2),
        _c("MaxPooling2D", IMG, pool_size=3, strides=2, padding="same"),
        _c("MaxPooling3D", VOL, pool_size=2),
        _c("MaxPooling3D", VOL, pool_size=3, strides=2, padding="same"),
        _c("AveragePooling1D", SEQ, pool_size=2),
        _c("AveragePooling1D", SEQ, pool_size=3, strides=1, padding="same"),
        _c("AveragePooling2D", IMG, pool_size=2),
        _c("AveragePooling2D", IMG, pool_size=3, strides=2, padding="same"),
        _c("AveragePooling2D", IMG, pool_size=2, strides=1, padding="same"),
        _c("AveragePooling3D", VOL, pool_size=2),
        _c("AveragePooling3D", VOL, pool_size=3, strides=2, padding="same"),
        _c("GlobalAveragePooling1D", SEQ),
        _c("GlobalAveragePooling2D", IMG),
        _c("GlobalAveragePooling2D", IMG, keepdims=True),
        _c("GlobalAveragePooling3D", VOL),
        _c("GlobalMaxPooling1D", SEQ),
        _c("GlobalMaxPooling2D", IMG),
        _c("GlobalMaxPooling2D", IMG, keepdims=True),
        _c("GlobalMaxPooling3D", VOL),
        _c("AdaptiveAveragePooling1D", In((6, 4)), output_size=3),
        _c("AdaptiveAveragePooling2D", IMG, output_size=(4, 2)),
        _c("AdaptiveAveragePooling2D", In((7, 7, 3)), tag="uneven", output_size=3),
        _c("AdaptiveAveragePooling3D", VOL, output_size=2),
        _c("AdaptiveMaxPooling1D", In((6, 4)), output_size=3),
        _c("AdaptiveMaxPooling2D", IMG, output_size=(4, 2)),
        _c("AdaptiveMaxPooling3D", VOL, output_size=2),
        # Normalization
        _c("BatchNormalization", IMG),
        _c("BatchNormalization", SEQ, axis=1),
        _c("BatchNormalization", IMG, center=False, scale=False),
        _c("LayerNormalization", SEQ),
        _c("LayerNormalization", IMG, axis=[1, 2, 3]),
        _c("LayerNormalization", SEQ, rms_scaling=True),
        _c("GroupNormalization", IMG4, groups=2),
        _c("GroupNormalization", SEQ, groups=-1),
        _c("RMSNormalization", SEQ),
        _c("UnitNormalization", SEQ),
        _c("UnitNormalization", IMG, axis=[1, 2]),
        _c("SpectralNormalization", VEC, layer=Sub("Dense", units=4)),
        _c("SpectralNormalization", IMG, layer=Sub("Conv2D", filters=4, kernel_size=3)),
        _c("Normalization", SEQ, mean=[0.1, -0.2, 0.3, 0.0], variance=[1.5, 0.5, 2.0, 1.0]),
        _c("Normalization", SEQ, tag="invert", mean=[0.1, -0.2, 0.3, 0.0], variance=[1.5, 0.5, 2.0, 1.0], invert=True),
        # Regularization (the identity at inference)
        _c("Dropout", SEQ, rate=0.5),
        _c("AlphaDropout", SEQ, rate=0.5),
        _c("GaussianDropout", SEQ, rate=0.5),
        _c("GaussianNoise", SEQ, stddev=0.5),
        _c("SpatialDropout1D", SEQ, rate=0.5),
        _c("SpatialDropout2D", IMG, rate=0.5),
        _c("SpatialDropout3D", VOL, rate=0.5),
        _c("ActivityRegularization", SEQ, l1=0.01),
        # Reshaping
        _c("Cropping1D", SEQ, cropping=(1, 2)),
        _c("Cropping2D", IMG, cropping=((1, 2), (0, 1))),
        _c("Cropping3D", VOL, cropping=1),
        _c("Flatten", IMG),
        _c("Permute", SEQ, dims=(2, 1)),
        _c("Permute", VOL, dims=(3, 1, 4, 2)),
        _c("RepeatVector", VEC, n=3),
        _c("Reshape", SEQ, target_shape=(2, 10)),
        _c("Reshape", IMG, target_shape=(-1, 3)),
        _c("UpSampling1D", SEQ, size=2),
        _c("UpSampling2D", IMG, size=2),
        _c("UpSampling2D", IMG, size=(2, 3), interpolation="bilinear"),
        _c("UpSampling3D", VOL, size=2),
        _c("ZeroPadding1D", SEQ, padding=(1, 2)),
        _c("ZeroPadding2D", IMG, padding=((1, 2), (0, 1))),
        _c("ZeroPadding3D", VOL, padding=1),
        # Recurrent
        _c("LSTM", SEQ, units=3),
        _c("LSTM", SEQ, units=3, return_sequences=True),
        _c("LSTM", SEQ, units=3, return_state=True),
        _c("LSTM", SEQ, units=3, go_backwards=True),
        _c("LSTM", SEQ, units=3, return_sequences=True, return_state=True, go_backwards=True),
        _c("GRU", SEQ, units=3),
        _c("GRU", SEQ, units=3, return_sequences=True),
        _c("GRU", SEQ, units=3, reset_after=False),
        _c("GRU", SEQ, units=3, return_state=True, go_backwards=True),
        _c("SimpleRNN", SEQ, units=3),
        _c("SimpleRNN", SEQ, units=3, return_sequences=True, go_backwards=True),
        _c("RNN", SEQ, cell=Sub("LSTMCell", units=3)),
        _c("RNN", SEQ, cell=Sub("GRUCell", units=3)),
        _c("RNN", SEQ, cell=Sub("SimpleRNNCell", units=3), return_sequences=True),
        _c("RNN", SEQ, tag="stacked", cell=Sub("StackedRNNCells", cells=[Sub("LSTMCell", units=3), Sub("GRUCell", units=2)])),
        _c("Bidirectional", SEQ, layer=Sub("LSTM", units=3, return_sequences=True)),
        _c("Bidirectional", SEQ, layer=Sub("GRU", units=3), merge_mode="sum"),
        _c("TimeDistributed", SEQ, layer=Sub("Dense", units=3)),
        _c("TimeDistributed", In((3, 8, 8, 2)), layer=Sub("Conv2D", filters=2, kernel_size=3)),
        _c("ConvLSTM1D", In((3, 8, 2)), filters=2, kernel_size=3),
        _c("ConvLSTM2D", In((3, 6, 6, 2)), filters=2, kernel_size=3, padding="same"),
        _c("ConvLSTM3D", In((2, 4, 4, 4, 1)), filters=2, kernel_size=3),
        # Preprocessing that computes at inference
        Case("CategoryEncoding", (IDS,), {"num_tokens": 6, "output_mode": "multi_hot"}, then=Sub("Dense", units=3)),
        Case("CategoryEncoding", (IDS,), {"num_tokens": 6, "output_mode": "count"}, then=Sub("Dense", units=3)),
        Case("CategoryEncoding", (In((1,), "int32", (0, 6)),), {"num_tokens": 6, "output_mode": "one_hot"}, then=Sub("Dense", units=3)),
        Case("Discretization", (SEQ,), {"bin_boundaries": [-0.5, 0.0, 0.5]}, lead_in=False),
        Case("Hashing", (IDS,), {"num_bins": 5}),
        Case("HashedCrossing", (In((1,), "int32", (0, 6)), In((1,), "int32", (0, 6))), {"num_bins": 5}, call="list"),
        Case("IntegerLookup", (IDS,), {"vocabulary": [1, 2, 4]}),
        _c("Rescaling", SEQ, scale=0.5, offset=0.1),
        _c("Resizing", IMG, height=4, width=6),
        _c("Resizing", IMG, height=12, width=12, interpolation="nearest"),
        _c("Resizing", IMG, height=5, width=4, crop_to_aspect_ratio=True),
        _c("CenterCrop", IMG, height=4, width=6),
        _c("MelSpectrogram", SIGNAL, fft_length=32, sequence_stride=8, sequence_length=16, num_mel_bins=8, sampling_rate=800),
        _c("STFTSpectrogram", In((64, 1)), frame_length=16, frame_step=8, fft_length=16, window=None),
        _c("AutoContrast", IMG),
        _c("Equalization", IMG),
        _c("Solarization", IMG, addition_factor=0.0, threshold_factor=0.5),
        # A histogram of the input: no gradient flows through it, so no lead-in either.
        Case("ContrastLimitedAdaptiveHistogramEqualization", (In((8, 8, 1)),), {"tile_grid_size": (2, 2)}, lead_in=False),
        _c("RandomCrop", IMG, height=4, width=6),
        _c("Pipeline", IMG, tag="rescale_crop", layers=[Sub("Rescaling", scale=0.5), Sub("CenterCrop", height=4, width=4)]),
        *[Case(name, (IMG,), kwargs, tag="") for name, kwargs in RANDOM_AUGMENTATION.items()],
    ]  # fmt: skip
    return cases


CASES: dict[str, Case] = {}
for _case in _cases():
    if _case.id in CASES:
        raise ValueError(f"two layer-matrix cases are both {_case.id}")
    CASES[_case.id] = _case

_UNSUPPORTED = "UnsupportedOpsError: import: "
KNOWN_FAILURES: dict[str, str] = {
    # TF ops tf2onnx leaves as they are (no ONNX form): ONNX Runtime cannot run them either.
    "Hashing_num_bins_5": _UNSUPPORTED + "1 unsupported op type(s): StringToHashBucketFast",
    "HashedCrossing_num_bins_5": _UNSUPPORTED + "1 unsupported op type(s): SparseCross",
    "IntegerLookup_vocabulary_1x2x4": _UNSUPPORTED + "1 unsupported op type(s): LookupTableFindV2",
    # tf.math.bincount: ONNX Unique/Compress/Size, which no converter handles (data-dependent
    # shapes).
    "CategoryEncoding_num_tokens_6_output_mode_multi_hot": _UNSUPPORTED + "3 unsupported op type(s): Compress",
    "CategoryEncoding_num_tokens_6_output_mode_count": _UNSUPPORTED + "3 unsupported op type(s): Compress",
    # The STFT: tf2onnx's RFFT with Real/Imag (TF ops), no converter.
    "MelSpectrogram_fft_length_32_sequence_stride_8_sequence_length_16_num_mel_bins_8_sampling_rate_800": _UNSUPPORTED + "3 unsupported op type(s): Imag",
    # The crop box is float arithmetic on the input's (static) shape, which the import does
    # not fold: the Slice bounds are tensors, and torch.export refuses to read them.
    "Resizing_height_5_width_4_crop_to_aspect_ratio_True": "ExportError: torch.export failed: GuardOnDataDependentSymNode",
    # Keras 3.15 cannot build it into a functional model ("... is part of a cycle").
    "Equalization": "BadInputError: factory",
}  # fmt: skip
"""Cases that do not pass today, each with the start of its one-line reason (the error or
the failed check, as ``tests/test_layer_matrix.py`` words it).  The matrix test holds each to
it: a case here that starts passing, or fails another way, fails the test until this entry is
removed or reworded.  Never an internal error: those are bugs to fix."""

REFUSED: dict[str, str] = {
    "TextVectorization": "takes strings, which have no torch dtype: tokenize outside the model "
    "and feed integer ids (convert refuses a string input by name)",
    "StringLookup": "takes strings, which have no torch dtype: look strings up outside the "
    "model and feed integer ids (convert refuses a string input by name)",
}
"""Classes that take strings, refused by name, with the reason."""

KERAS2_KNOWN_FAILURES: dict[str, str] = {
    # Keras 3's legacy loader drops a multi-axis UnitNormalization's axes: refused, named.
    "UnitNormalization_axis_1x2": "BadInputError: Keras 2 layer",
    # Keras 2 writes Discretization with dtype int64; the exported graph then casts the float
    # input to int64 before Bucketize while Keras's eager call buckets the floats: the gate
    # fails it (max abs 2 on inputs in (-1, 0)). Not localised yet.
    "Discretization_bin_boundaries_0_5x0_0x0_5": "tf-ort discretization: max_abs 2",
}
"""Cases that fail only as Keras 2 files, ``.h5`` or SavedModel (on top of
:data:`KNOWN_FAILURES`, which hold on every route)."""


def known_failure(route: str, case_id: str) -> str | None:
    """The recorded start of ``case_id``'s failure on ``route`` (``keras3``, ``keras2_h5``,
    ``keras2_savedmodel``), or None when it must pass."""
    if route.startswith("keras2") and case_id in KERAS2_KNOWN_FAILURES:
        return KERAS2_KNOWN_FAILURES[case_id]
    return KNOWN_FAILURES.get(case_id)

NOT_APPLICABLE: dict[str, str] = {
    "InputLayer": "the model's input itself: every case has one",
    "InputSpec": "not a layer: the input contract a layer declares",
    "Layer": "the base class: custom layers are converted through patches (README, "
    "'Writing a patch')",
    "Wrapper": "abstract base of Bidirectional and TimeDistributed, which are cases",
    "FlaxLayer": "wraps a Flax module: runs only on the JAX backend",
    "JaxLayer": "wraps a JAX function: runs only on the JAX backend",
    "TorchModuleWrapper": "wraps a torch.nn.Module: runs only on the torch backend",
    "TFSMLayer": "wraps a whole SavedModel endpoint: convert that SavedModel directly",
    "MaxNumBoundingBoxes": "pads bounding-box dicts in tf.data pipelines; no tensor graph",
}
"""Classes with no inference graph of their own to convert, with the reason."""


def covered_classes() -> set[str]:
    """Every class name some case builds."""
    return set().union(*(case.classes() for case in CASES.values()))


def input_ranges(case: Case) -> dict[str, tuple[int, int]]:
    """The integer inputs' ranges by input name (what ``ConvertOptions.input_ranges`` takes)."""
    return {
        _input_name(i): spec.range for i, spec in enumerate(case.inputs) if spec.range is not None
    }


def _input_name(index: int) -> str:
    return "x" if index == 0 else f"x{index}"


# ---------------------------------------------------------------------------------------------
# Building (imports Keras; runs in the TF worker or in the Keras 2 writer subprocess)


def square_plus_one(x: Any) -> Any:
    """``Lambda``'s function: ``x * x + 1``."""
    return x * x + 1.0


FUNCTIONS: dict[str, Callable[[Any], Any]] = {"square_plus_one": square_plus_one}


def _resolve(value: Any, keras_module: Any) -> Any:
    if isinstance(value, Sub):
        return _layer(value.layer, value.kwargs, keras_module)
    if isinstance(value, Fn):
        return FUNCTIONS[value.name]
    if isinstance(value, list):
        return [_resolve(v, keras_module) for v in value]
    return value


def _layer(name: str, kwargs: Mapping[str, Any], keras_module: Any) -> Any:
    cls = getattr(keras_module.layers, name, None)
    if cls is None:
        raise LookupError(f"{keras_module.__name__}.layers has no {name}")
    return cls(**{k: _resolve(v, keras_module) for k, v in kwargs.items()})


def _model(case: Case, keras_module: Any, lead_in: bool) -> tuple[Any, Any]:
    inputs = [
        keras_module.Input(shape=spec.shape, dtype=spec.dtype, name=_input_name(i))
        for i, spec in enumerate(case.inputs)
    ]
    feeds = list(inputs)
    if lead_in:
        feeds = [
            keras_module.layers.Dense(spec.shape[-1], name=f"lead_in_{i}")(tensor)
            if spec.dtype.startswith("float") and spec.shape[-1] is not None
            else tensor
            for i, (spec, tensor) in enumerate(zip(case.inputs, feeds, strict=True))
        ]
    layer = _layer(case.layer, case.kwargs, keras_module)
    if case.call == "list":
        outputs = layer(feeds)
    elif case.call == "args":
        outputs = layer(*feeds)
    else:
        outputs = layer(feeds[0])
    if case.then is not None:
        outputs = _layer(case.then.layer, case.then.kwargs, keras_module)(outputs)
    return keras_module.Model(inputs, outputs, name=case.id), layer


def build(case: Case, keras_module: Any) -> Any:
    """The case as a functional model built with ``keras_module`` (``keras`` or
    ``tf_keras``), with seeded random weights and every constant-valued variable redrawn."""
    import numpy as np

    keras_module.utils.set_random_seed(SEED)
    model, layer = _model(case, keras_module, lead_in=bool(case.lead_in))
    if case.lead_in is None and not layer.trainable_weights and case.then is None:
        keras_module.utils.set_random_seed(SEED)
        model, _ = _model(case, keras_module, lead_in=True)
    # A sibling of this file; the worker imports factory files with their folder on sys.path.
    from applications import randomize_constants

    randomize_constants(model.weights, np.random.default_rng(SEED))
    return model


def __getattr__(name: str) -> Callable[[], Any]:
    """``layer_matrix.py:<case id>``: the factory of that case, built with Keras 3."""
    if name not in CASES:
        raise AttributeError(name)

    def factory() -> Any:
        import keras

        return build(CASES[name], keras)

    factory.__name__ = name
    return factory


def save_keras2(case_id: str, path: str) -> None:
    """Build ``case_id`` with ``tf_keras`` (Keras 2) and save it at ``path``: ``.h5`` file, or
    a SavedModel directory for any other path."""
    import tf_keras

    model = build(CASES[case_id], tf_keras)
    if path.endswith(".h5"):
        model.save(path)
    else:
        tf_keras.models.save_model(model, path, save_format="tf")


if __name__ == "__main__":
    # python models/layer_matrix.py save CASE_ID PATH
    if len(sys.argv) != 4 or sys.argv[1] != "save":
        sys.exit("usage: python models/layer_matrix.py save CASE_ID PATH")
    save_keras2(sys.argv[2], sys.argv[3])
