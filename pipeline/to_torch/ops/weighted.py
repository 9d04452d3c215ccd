"""Modules with weights: ONNX ``Conv`` (and ``Gemm``'s ``nn.Linear``, whose op home is
:mod:`pipeline.to_torch.ops.arithmetic`).

Converters: onnx2torch's (``torch.nn`` modules holding the weights; asymmetric padding
makes an ``nn.Sequential(pad, conv)`` that ``codegen/simplify.py`` splits), behind ours for
``Conv`` (:func:`convert_conv`), which turns ``auto_pad`` SAME_UPPER/SAME_LOWER (refused by
onnx2torch) into the explicit pads they stand for, computed at import from the kernel,
strides, dilations and the input's static spatial sizes
(:func:`~pipeline.to_torch.ops.pooling.same_pads`; NotImplementedError when a stride above 1
needs a size unknown at import), then hands onnx2torch's converter the node with those pads.  Code
form: ``self.<path>(x)`` (:func:`~pipeline.to_torch.ops.registry.call_attribute`): the module
is an attribute of the generated class, built by ``codegen/modules.py``.  (``ConvTranspose``
lives in :mod:`pipeline.to_torch.ops.conv_transpose`, the normalizations in
:mod:`pipeline.to_torch.ops.normalization`.)  Also the
``torch.nn`` modules with weights our own passes make (``nn.Embedding``, ``nn.GroupNorm``,
``nn.PReLU``).
"""

from __future__ import annotations

from onnx import helper
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult
from torch import nn

from pipeline.to_torch.ops.pooling import explicit_pads
from pipeline.to_torch.ops.registry import (
    call_attribute,
    override_converter,
    translates,
    use_fallback,
)


@override_converter(
    "Conv", versions=(1, 11), produces=(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Sequential)
)
def convert_conv(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Conv → onnx2torch's converter, ``auto_pad`` SAME_* first made explicit ``pads``."""
    auto_pad = node.attributes.get("auto_pad", "NOTSET")
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return use_fallback(fallback, node, graph, "no converter")
    weight = graph.initializers.get(node.input_values[1])
    kernel = node.attributes.get("kernel_shape")
    if kernel is None and weight is None:
        raise NotImplementedError(f"Conv ({node.name}): {auto_pad} with a run-time weight")
    kernel = list(kernel if kernel is not None else weight.proto.dims[2:])
    rank = len(kernel)
    strides = list(node.attributes.get("strides", [1] * rank))
    dilations = list(node.attributes.get("dilations", [1] * rank))
    pads = explicit_pads(node, graph, kernel, strides, dilations)
    proto = helper.make_node(
        node.proto.op_type, node.proto.input, node.proto.output, name=node.proto.name
    )
    proto.attribute.extend(a for a in node.proto.attribute if a.name not in ("auto_pad", "pads"))
    proto.attribute.append(helper.make_attribute("pads", pads))
    return use_fallback(fallback, OnnxNode(proto, node.unique_name), graph, "no converter")


translates(
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.GroupNorm,
    nn.Embedding,
    nn.PReLU,
)(call_attribute)
