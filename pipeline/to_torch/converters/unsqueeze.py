"""Unsqueeze (opset 13+, axes as an input) with axes known at import."""

from __future__ import annotations

from onnx2torch.node_converters.registry import TConverter
from onnx2torch.node_converters.unsqueeze import OnnxUnsqueezeStaticAxes
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from pipeline.to_torch.converters.registry import override_converter, use_fallback
from pipeline.to_torch.converters.shape_values import known_ints, static_dims


@override_converter("Unsqueeze", versions=(13, 21))
def convert_unsqueeze(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Unsqueeze → onnx2torch's static-axes module, axes normalised to non-negative.

    onnx2torch already handles initializer/Constant axes, but sorts negative axes wrongly
    and misses axes computed from constants.
    """
    data = node.input_values[0]
    axes = known_ints(graph, node.input_values[1])
    dims = static_dims(graph, data)
    if axes is None or (dims is None and any(a < 0 for a in axes)):
        return use_fallback(fallback, node, graph, "axes or input rank unknown at import")
    out_rank = len(dims) + len(axes) if dims is not None else 0
    axes = [a + out_rank if a < 0 else a for a in axes]
    return OperationConverterResult(
        torch_module=OnnxUnsqueezeStaticAxes(axes=axes),
        onnx_mapping=OnnxMapping(inputs=(data,), outputs=node.output_values),
    )
