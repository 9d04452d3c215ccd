"""CumSum with the axis known at import (onnx2torch reads it with ``.item()``)."""

from __future__ import annotations

import torch
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.converters.registry import override_converter, use_fallback
from pipeline.to_torch.converters.shape_values import known_ints


class StaticCumSum(nn.Module):
    """ONNX CumSum along a fixed axis, optionally exclusive and/or reversed."""

    def __init__(self, axis: int, exclusive: bool, reverse: bool) -> None:
        super().__init__()
        self.axis = axis
        self.exclusive = exclusive
        self.reverse = reverse

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        """The cumulative sum."""
        x = torch.flip(input_tensor, (self.axis,)) if self.reverse else input_tensor
        result = torch.cumsum(x, dim=self.axis)
        if self.exclusive:
            result = result - x
        return torch.flip(result, (self.axis,)) if self.reverse else result


@override_converter("CumSum", versions=(11, 14))
def convert_cumsum(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """CumSum → :class:`StaticCumSum`.

    Also fixes onnx2torch's default of ``reverse`` (it uses 1; ONNX says 0).
    """
    axis = known_ints(graph, node.input_values[1])
    if axis is None or len(axis) != 1:
        return use_fallback(fallback, node, graph, "axis computed from tensor data")
    module = StaticCumSum(
        axis=axis[0],
        exclusive=bool(node.attributes.get("exclusive", 0)),
        reverse=bool(node.attributes.get("reverse", 0)),
    )
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )
