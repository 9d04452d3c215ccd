"""ONNX ``Expand`` (8, 13): bidirectional broadcast.

Converter: ours (:func:`convert_expand`): a shape known at import makes a
:class:`StaticExpand`; otherwise onnx2torch's ``OnnxExpand``.  Code form:
``torch.broadcast_to(x, torch.broadcast_shapes(x.shape, shape))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from onnx2torch.node_converters.expand import OnnxExpand
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    translates,
    use_fallback,
)
from pipeline.to_torch.ops.shape_values import Expr, ShapeArgs, known_int_value


class StaticExpand(ShapeArgs):
    """ONNX Expand: broadcast the input and the target shape against each other."""

    def __init__(self, shape: Sequence[Expr]) -> None:
        super().__init__(shape)
        self.shape = tuple(shape)

    def forward(self, input_tensor: torch.Tensor, *sources: torch.Tensor) -> torch.Tensor:
        """Broadcast ``input_tensor``; ``sources`` are the tensors the shape reads dims from."""
        # Unlike Tensor.expand, ONNX lets a 1 in `shape` keep a larger input dim.
        target = torch.broadcast_shapes(
            input_tensor.shape, tuple(self.resolve(self.shape, sources))
        )
        return torch.broadcast_to(input_tensor, target)


@override_converter("Expand", versions=(8, 13), produces=(StaticExpand, OnnxExpand))
def convert_expand(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Expand → :class:`StaticExpand` when the shape input is known at import."""
    target = known_int_value(graph, node.input_values[1])
    if target is None or target.scalar:
        return use_fallback(fallback, node, graph, "shape is computed from tensor data")
    module = StaticExpand(target.elems)
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(
            inputs=(node.input_values[0], *module.sources), outputs=node.output_values
        ),
    )


@translates(StaticExpand)
def _expand(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticExpand)
    shape = ", ".join(ctx.shape_args(module.shape))
    x = ctx.args[0]
    # ONNX Expand broadcasts both ways: a 1 in the target keeps the input's dim.
    return f"torch.broadcast_to({x}, torch.broadcast_shapes({x}.shape, ({shape},)))"
