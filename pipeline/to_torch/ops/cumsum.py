"""ONNX ``CumSum`` (11, 14).

Converter: ours (:func:`convert_cumsum`): the axis known at import (onnx2torch reads it with
``.item()``) makes a :class:`StaticCumSum`; otherwise :class:`DynamicCumSum`, which reads
the axis at run time (onnx2torch's ``OnnxCumSum`` is not used: it defaults ``reverse`` to 1
where ONNX says 0, and sums int32 into int64).  Code form: ``torch.cumsum(x, dim=...)``
(with ``dtype=`` for an integer type narrower than int64: torch would widen it), or the
helper ``onnx_cumsum`` when exclusive/reversed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    refuse,
    register_helper,
    translates,
)
from pipeline.to_torch.ops.shape_values import known_ints

onnx_cumsum: Callable[..., torch.Tensor] = register_helper(
    "onnx_cumsum",
    '''
def onnx_cumsum(x: torch.Tensor, axis: int, exclusive: bool, reverse: bool) -> torch.Tensor:
    """ONNX CumSum with its ``exclusive`` and ``reverse`` attributes."""
    if reverse:
        x = torch.flip(x, (axis,))
    result = torch.cumsum(x, dim=axis, dtype=x.dtype)  # torch alone widens int32 to int64
    if exclusive:
        result = result - x
    return torch.flip(result, (axis,)) if reverse else result
''',
)


class StaticCumSum(nn.Module):
    """ONNX CumSum along a fixed axis, optionally exclusive and/or reversed."""

    def __init__(self, axis: int, exclusive: bool, reverse: bool) -> None:
        super().__init__()
        self.axis = axis
        self.exclusive = exclusive
        self.reverse = reverse

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        """The cumulative sum."""
        return onnx_cumsum(input_tensor, self.axis, self.exclusive, self.reverse)


class DynamicCumSum(nn.Module):
    """ONNX CumSum along an axis given as a tensor (read at run time: does not export)."""

    def __init__(self, exclusive: bool, reverse: bool) -> None:
        super().__init__()
        self.exclusive = exclusive
        self.reverse = reverse

    def forward(self, input_tensor: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
        """The cumulative sum along ``int(axis)``."""
        return onnx_cumsum(input_tensor, int(axis.item()), self.exclusive, self.reverse)


refuse(
    DynamicCumSum,
    "CumSum with an axis computed from tensor data: read at run time, so it neither exports "
    "nor has a code form",
)


@override_converter("CumSum", versions=(11, 14), produces=(StaticCumSum, DynamicCumSum))
def convert_cumsum(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """CumSum → :class:`StaticCumSum` (axis known at import) or :class:`DynamicCumSum`."""
    del fallback  # onnx2torch's OnnxCumSum: wrong default of ``reverse``, widens int32
    exclusive = bool(node.attributes.get("exclusive", 0))
    reverse = bool(node.attributes.get("reverse", 0))
    axis = known_ints(graph, node.input_values[1])
    if axis is None or len(axis) != 1:
        return OperationConverterResult(
            torch_module=DynamicCumSum(exclusive=exclusive, reverse=reverse),
            onnx_mapping=OnnxMapping(inputs=node.input_values[:2], outputs=node.output_values),
        )
    return OperationConverterResult(
        torch_module=StaticCumSum(axis=axis[0], exclusive=exclusive, reverse=reverse),
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


@translates(StaticCumSum)
def _cumsum(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticCumSum)
    meta = ctx.metas[0]
    narrow = meta is not None and not meta.dtype.is_floating_point and meta.dtype != torch.int64
    if not module.exclusive and not module.reverse:
        dtype = f", dtype={literals.dtype(meta.dtype)}" if narrow and meta is not None else ""
        return f"torch.cumsum({ctx.args[0]}, dim={module.axis}{dtype})"
    name = ctx.helper("onnx_cumsum")
    return (
        f"{name}({ctx.args[0]}, {module.axis}, exclusive={module.exclusive}, "
        f"reverse={module.reverse})"
    )
