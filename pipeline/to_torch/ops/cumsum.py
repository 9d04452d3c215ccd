"""ONNX ``CumSum`` (11, 14).

Converter: ours (:func:`convert_cumsum`): the axis known at import (onnx2torch reads it with
``.item()``) makes a :class:`StaticCumSum`; otherwise onnx2torch's ``OnnxCumSum``.  Code
form: ``torch.cumsum(x, dim=...)``, or the helper ``onnx_cumsum`` when exclusive/reversed.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.cumsum import OnnxCumSum
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    register_helper,
    translates,
    use_fallback,
)
from pipeline.to_torch.ops.shape_values import known_ints


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


@override_converter("CumSum", versions=(11, 14), produces=(StaticCumSum, OnnxCumSum))
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


@translates(StaticCumSum)
def _cumsum(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticCumSum)
    if not module.exclusive and not module.reverse:
        return f"torch.cumsum({ctx.args[0]}, dim={module.axis})"
    name = ctx.helper("onnx_cumsum")
    return (
        f"{name}({ctx.args[0]}, {module.axis}, exclusive={module.exclusive}, "
        f"reverse={module.reverse})"
    )


register_helper(
    "onnx_cumsum",
    '''
def onnx_cumsum(x: torch.Tensor, axis: int, exclusive: bool, reverse: bool) -> torch.Tensor:
    """ONNX CumSum with its ``exclusive`` and ``reverse`` attributes."""
    if reverse:
        x = torch.flip(x, (axis,))
    result = torch.cumsum(x, dim=axis)
    if exclusive:
        result = result - x
    return torch.flip(result, (axis,)) if reverse else result
''',
)
