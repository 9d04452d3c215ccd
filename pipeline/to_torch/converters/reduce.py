"""Reduce ops whose axes are an input (ReduceSum 13+, the others 18+), axes known at import."""

from __future__ import annotations

from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.converters.registry import override_converter, use_fallback
from pipeline.to_torch.converters.shape_values import known_ints, static_dims

_AXES_INPUT_SINCE = {
    "ReduceSum": (13,),
    "ReduceMax": (18, 20),
    "ReduceMin": (18, 20),
    "ReduceMean": (18,),
    "ReduceProd": (18,),
    "ReduceL1": (18,),
    "ReduceL2": (18,),
    "ReduceLogSum": (18,),
    "ReduceLogSumExp": (18,),
    "ReduceSumSquare": (18,),
}


def convert_reduce(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Reduce → onnx2torch's static-axes module (or identity for ``noop_with_empty_axes``)."""
    data = node.input_values[0]
    axes_name = node.input_values[1] if len(node.input_values) > 1 else ""
    axes = known_ints(graph, axes_name) if axes_name else []
    dims = static_dims(graph, data)
    if axes is None or (dims is None and any(a < 0 for a in axes)):
        return use_fallback(fallback, node, graph, "axes computed from tensor data")
    module: nn.Module
    if not axes and node.attributes.get("noop_with_empty_axes", 0):
        module = nn.Identity()
    else:
        rank = len(dims) if dims is not None else 0
        module = OnnxReduceStaticAxes(
            operation_type=node.operation_type,
            axes=[a + rank if a < 0 else a for a in axes] or None,
            keepdims=node.attributes.get("keepdims", 1),
        )
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(data,), outputs=node.output_values),
    )


for _op_type, _versions in _AXES_INPUT_SINCE.items():
    override_converter(_op_type, versions=_versions)(convert_reduce)
