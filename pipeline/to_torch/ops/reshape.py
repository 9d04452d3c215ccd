"""ONNX ``Reshape`` (5, 13, 14, 19, 21).

Converter: ours (:func:`convert_reshape`): a target shape known at import (constant, or
arithmetic on ``x.shape``) makes a :class:`StaticReshape`; otherwise onnx2torch's
``OnnxReshape``.  Code form: ``x.reshape(...)`` (``x.flatten(1)`` where that is what it is).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.node_converters.reshape import OnnxReshape
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    translates,
    use_fallback,
)
from pipeline.to_torch.ops.shape_values import Expr, ShapeArgs, dim_expr, known_int_value


class StaticReshape(ShapeArgs):
    """``torch.reshape`` to a shape whose entries are ints or expressions over input dims."""

    def __init__(self, shape: Sequence[Expr]) -> None:
        super().__init__(shape)
        self.shape = tuple(shape)

    def forward(self, input_tensor: torch.Tensor, *sources: torch.Tensor) -> torch.Tensor:
        """Reshape ``input_tensor``; ``sources`` are the tensors the shape reads dims from."""
        return torch.reshape(input_tensor, self.resolve(self.shape, sources))


@override_converter("Reshape", versions=(5, 13, 14, 19, 21), produces=(StaticReshape, OnnxReshape))
def convert_reshape(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Reshape → :class:`StaticReshape` when the shape input is known at import."""
    data, shape_name = node.input_values[0], node.input_values[1]
    target = known_int_value(graph, shape_name)
    if target is None or target.scalar:
        return use_fallback(fallback, node, graph, "shape is computed from tensor data")
    shape: list[Expr] = list(target.elems)
    if not node.attributes.get("allowzero", 0):
        # ONNX: 0 copies the input's dim (torch would make an empty dim of it).
        shape = [dim_expr(graph, data, i) if e == 0 else e for i, e in enumerate(shape)]
    module = StaticReshape(shape)
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(data, *module.sources), outputs=node.output_values),
    )


@translates(StaticReshape)
def _reshape(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticReshape)
    shape = ctx.shape_args(module.shape)
    in_meta = ctx.metas[0]
    if (
        in_meta is not None
        and len(in_meta.shape) >= 2
        and len(shape) == 2
        and shape[0] == "-1"
        and shape[1] == str(int(torch.Size(in_meta.shape[1:]).numel()))
    ):
        return f"{ctx.args[0]}.flatten(1)"
    comment = ""
    if in_meta is not None and ctx.out is not None and len(in_meta.shape) >= 3:
        dims = list(in_meta.shape)
        if dims[-1] == 1 and list(ctx.out.shape) == [dims[0], 1, *dims[1:-1]]:
            # tf2onnx writes the NHWC -> NCHW transpose of a one-channel image as a reshape.
            comment = "  # channels last -> channels first (one channel)"
    return f"{ctx.args[0]}.reshape({', '.join(shape)}){comment}"
