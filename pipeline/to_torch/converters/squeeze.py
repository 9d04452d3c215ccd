"""Squeeze (opset 13+, axes as an input) with axes known at import."""

from __future__ import annotations

from onnx2torch.node_converters.registry import TConverter
from onnx2torch.node_converters.squeeze import OnnxSqueezeStaticAxes
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from pipeline.to_torch.converters.registry import override_converter, use_fallback
from pipeline.to_torch.converters.shape_values import known_ints, static_dims


@override_converter("Squeeze", versions=(13, 21))
def convert_squeeze(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Squeeze → onnx2torch's static-axes module, axes normalised to non-negative."""
    data = node.input_values[0]
    dims = static_dims(graph, data)
    axes_name = node.input_values[1] if len(node.input_values) > 1 else ""
    axes = known_ints(graph, axes_name) if axes_name else None
    if dims is None or (axes_name and axes is None):
        return use_fallback(fallback, node, graph, "axes or input rank unknown at import")
    if axes is None:
        # No axes: every dim of size 1.  A symbolic dim (the batch) is never squeezed here,
        # which is what a model that works for any batch size means.
        axes = [i for i, d in enumerate(dims) if d == 1]
    axes = [a + len(dims) if a < 0 else a for a in axes]
    return OperationConverterResult(
        torch_module=OnnxSqueezeStaticAxes(axes=axes),
        onnx_mapping=OnnxMapping(inputs=(data,), outputs=node.output_values),
    )
