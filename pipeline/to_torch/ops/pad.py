"""ONNX ``Pad`` (11, 13, 18, 19, 21: pads as an input).

Converter: ours (:func:`convert_pad`): pads and constant value known at import make
onnx2torch's ``OnnxPadStatic``; otherwise onnx2torch's ``OnnxPadDynamic``.  Code form of
``OnnxPadStatic`` (also the padding onnx2torch puts before an asymmetric conv or pool):
``F.pad(x, pads, mode=..., value=...)``.
"""

from __future__ import annotations

from onnx2torch.node_converters.pad import OnnxPadDynamic, OnnxPadStatic
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    translates,
    use_fallback,
)
from pipeline.to_torch.ops.shape_values import known_ints


@override_converter("Pad", versions=(11, 13, 18, 19, 21), produces=(OnnxPadStatic, OnnxPadDynamic))
def convert_pad(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Pad → onnx2torch's ``OnnxPadStatic`` when pads and the fill value are constants."""
    names = [*node.input_values, "", "", ""]
    pads = known_ints(graph, names[1])
    if pads is None or names[3]:
        return use_fallback(fallback, node, graph, "pads computed from tensor data, or axes")
    try:
        value = float(get_const_value(names[2], graph)) if names[2] else 0.0
    except KeyError:
        return use_fallback(fallback, node, graph, "pad value computed from tensor data")
    module = OnnxPadStatic.create_from_onnx_params(
        onnx_pads=pads, onnx_mode=node.attributes.get("mode", "constant"), constant_value=value
    )
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(names[0],), outputs=node.output_values),
    )


@translates(OnnxPadStatic)
def _pad(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxPadStatic)
    pads = list(module.pads)
    while len(pads) > 2 and pads[-2:] == [0, 0]:
        pads = pads[:-2]
    args = f"{ctx.args[0]}, {literals.ints(pads)}"
    if module.mode != "constant":
        return f'F.pad({args}, mode="{module.mode}")'
    if module.constant_value:
        return f"F.pad({args}, value={literals.number(module.constant_value)})"
    return f"F.pad({args})"
