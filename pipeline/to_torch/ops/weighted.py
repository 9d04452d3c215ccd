"""Modules with weights: ONNX ``Conv``, ``ConvTranspose``, ``BatchNormalization``,
``LayerNormalization`` and ``InstanceNormalization`` (and ``Gemm``'s ``nn.Linear``, whose op
home is :mod:`pipeline.to_torch.ops.arithmetic`).

Converters: onnx2torch's as they are (``torch.nn`` modules holding the weights; asymmetric
padding makes an ``nn.Sequential(pad, conv)`` that ``codegen/simplify.py`` splits).  Code
form: ``self.<path>(x)`` (:func:`~pipeline.to_torch.ops.registry.call_attribute`): the module
is an attribute of the generated class, built by ``codegen/modules.py``.  Also the
``torch.nn`` modules with weights our own passes make (``nn.Embedding``, ``nn.GroupNorm``,
``nn.PReLU``).
"""

from __future__ import annotations

from onnx2torch.node_converters.batch_norm import OnnxBatchNorm
from onnx2torch.node_converters.instance_norm import OnnxInstanceNorm
from onnx2torch.node_converters.layer_norm import OnnxLayerNorm
from torch import nn

from pipeline.to_torch.ops.registry import call_attribute, translates, uses_onnx2torch

uses_onnx2torch(__name__, ("Conv",), nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Sequential)
uses_onnx2torch(
    __name__,
    ("ConvTranspose",),
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Sequential,
)
uses_onnx2torch(
    __name__,
    ("BatchNormalization",),
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    OnnxBatchNorm,
)
uses_onnx2torch(__name__, ("LayerNormalization",), nn.LayerNorm, OnnxLayerNorm)
uses_onnx2torch(
    __name__,
    ("InstanceNormalization",),
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    OnnxInstanceNorm,
)

translates(
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.Embedding,
    nn.PReLU,
)(call_attribute)
