"""Pad (opset 11+, pads as an input) with pads and constant value known at import."""

from __future__ import annotations

from onnx2torch.node_converters.pad import OnnxPadStatic
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

from pipeline.to_torch.converters.registry import override_converter, use_fallback
from pipeline.to_torch.converters.shape_values import known_ints


@override_converter("Pad", versions=(11, 13, 18, 19, 21))
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
