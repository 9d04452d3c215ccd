"""Modules with weights: ONNX ``Conv`` (and ``Gemm``'s ``nn.Linear``, whose op home is
:mod:`pipeline.to_torch.ops.arithmetic`).

Converters: onnx2torch's as they are (``torch.nn`` modules holding the weights; asymmetric
padding makes an ``nn.Sequential(pad, conv)`` that ``codegen/simplify.py`` splits).  Code
form: ``self.<path>(x)`` (:func:`~pipeline.to_torch.ops.registry.call_attribute`): the module
is an attribute of the generated class, built by ``codegen/modules.py``.  (``ConvTranspose``
lives in :mod:`pipeline.to_torch.ops.conv_transpose`, the normalizations in
:mod:`pipeline.to_torch.ops.normalization`.)  Also the
``torch.nn`` modules with weights our own passes make (``nn.Embedding``, ``nn.GroupNorm``,
``nn.PReLU``).
"""

from __future__ import annotations

from torch import nn

from pipeline.to_torch.ops.registry import call_attribute, translates, uses_onnx2torch

uses_onnx2torch(__name__, ("Conv",), nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Sequential)

translates(
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.GroupNorm,
    nn.Embedding,
    nn.PReLU,
)(call_attribute)
