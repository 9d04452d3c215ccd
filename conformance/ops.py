"""The ONNX ops a Keras model reaches our importer with.

:data:`KERAS_OPS` is what tf2onnx 1.17 emits for Keras layers and ``keras.ops`` (read from its
handlers in ``tf2onnx/onnx_opset/``, ``graph_builder.py``, ``rewriter/`` and ``optimizer/``:
the ONNX op types they create, plus TF ops whose handler keeps the TF name because it is the
ONNX name), and the ops our own fixup passes write (``Gemm``, ``LayerNormalization``).  Left
out on purpose: ops tf2onnx only makes for TF ops no Keras layer produces (quantisation,
random sampling, string and sequence ops, ``NonMaxSuppression``, ``RoiAlign``, ``Det``,
``Unique``, TFLite's ``HardSwish``), ops it never makes (``Mish``, ``Trilu``, ``ReduceL2``;
``HardSigmoid`` only appears as an LSTM activation attribute, not as a node) and the
opset < 9 ``Upsample``.

``tests/conformance/test_conformance.py`` checks every entry is a default-domain ONNX op that
tf2onnx's source names and that ONNX has node tests for.
"""

from __future__ import annotations

KERAS_OPS: tuple[str, ...] = (
    # Dense, convolution, pooling, normalisation
    "MatMul", "Gemm", "Conv", "ConvTranspose", "MaxPool", "AveragePool",
    "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "InstanceNormalization",
    "LayerNormalization", "LpNormalization", "Dropout", "Identity",
    # element-wise arithmetic and activations
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Neg", "Abs", "Sign", "Reciprocal", "Sqrt",
    "Exp", "Log", "Erf", "Sin", "Cos", "Atan", "Floor", "Ceil", "Round", "Max", "Min", "Sum",
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softplus", "Softsign",
    "Softmax", "LogSoftmax", "Clip", "IsNaN", "IsInf",
    # comparisons and logic
    "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Not", "And", "Or", "Xor",
    "Where",
    # shapes and data movement
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice",
    "Gather", "GatherElements", "GatherND", "ScatterND", "ScatterElements", "Expand", "Tile",
    "Pad", "Resize", "DepthToSpace", "SpaceToDepth", "Shape", "Size", "Range",
    "ConstantOfShape", "Cast", "NonZero", "Compress", "EyeLike", "ReverseSequence", "OneHot",
    # reductions and friends
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ArgMax", "ArgMin",
    "CumSum", "TopK", "Einsum",
    # recurrent layers (Keras 3 GRU and masked LSTM arrive as Loop)
    "LSTM", "GRU", "Loop", "If",
)  # fmt: skip
"""ONNX op types (default domain) tf2onnx and our passes emit for Keras models."""
