"""ONNX ``Tile`` (6, 13).

Converter: ours (:func:`convert_tile`): repeats known at import make a :class:`StaticTile`;
otherwise onnx2torch's ``OnnxTile``.  Code form: ``x.repeat(...)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.node_converters.tile import OnnxTile
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


class StaticTile(ShapeArgs):
    """``Tensor.repeat`` with repeats that are ints or expressions over input dims."""

    def __init__(self, repeats: Sequence[Expr]) -> None:
        super().__init__(repeats)
        self.repeats = tuple(repeats)

    def forward(self, input_tensor: torch.Tensor, *sources: torch.Tensor) -> torch.Tensor:
        """Tile ``input_tensor``; ``sources`` are the tensors the repeats read dims from."""
        return input_tensor.repeat(self.resolve(self.repeats, sources))


@override_converter("Tile", versions=(6, 13), produces=(StaticTile, OnnxTile))
def convert_tile(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Tile → :class:`StaticTile` when the repeats input is known at import."""
    repeats = known_int_value(graph, node.input_values[1])
    if repeats is None or repeats.scalar:
        return use_fallback(fallback, node, graph, "repeats are computed from tensor data")
    module = StaticTile(repeats.elems)
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(
            inputs=(node.input_values[0], *module.sources), outputs=node.output_values
        ),
    )


@translates(StaticTile)
def _tile(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticTile)
    return f"{ctx.args[0]}.repeat({', '.join(ctx.shape_args(module.repeats))})"
