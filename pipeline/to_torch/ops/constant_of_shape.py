"""ONNX ``ConstantOfShape`` (9, 20, 21).

Converter: ours (:func:`convert_constant_of_shape`): a shape known at import makes a
:class:`StaticConstantOfShape`; otherwise onnx2torch's ``OnnxConstantOfShape``.  Code form:
``torch.full(shape, value, dtype=..., device=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from onnx2torch.node_converters.constant_of_shape import OnnxConstantOfShape
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    translates,
    use_fallback,
)
from pipeline.to_torch.ops.shape_values import Expr, ShapeArgs, known_int_value


class StaticConstantOfShape(ShapeArgs):
    """``torch.full`` of a shape that is ints or expressions over input dims."""

    def __init__(self, shape: Sequence[Expr], value: torch.Tensor) -> None:
        super().__init__(shape)
        self.shape = tuple(shape)
        # A Python scalar, not a buffer read with .item(): export can't trace that.
        self.fill_value: bool | int | float = value.reshape(()).item()
        self.dtype = value.dtype
        # Carries the module's device (the output is made on it).
        self.device_anchor: torch.Tensor
        self.register_buffer("device_anchor", torch.empty(0), persistent=False)

    def forward(self, *sources: torch.Tensor) -> torch.Tensor:
        """The filled tensor; ``sources`` are the tensors the shape reads dims from."""
        return torch.full(
            self.resolve(self.shape, sources),
            self.fill_value,
            dtype=self.dtype,
            device=self.device_anchor.device,
        )


@override_converter(
    "ConstantOfShape",
    versions=(9, 20, 21),
    produces=(StaticConstantOfShape, OnnxConstantOfShape),
)
def convert_constant_of_shape(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """ConstantOfShape → :class:`StaticConstantOfShape` when the shape is known at import."""
    shape = known_int_value(graph, node.input_values[0])
    if shape is None or shape.scalar:
        return use_fallback(fallback, node, graph, "shape is computed from tensor data")
    value_attr = node.attributes.get("value")
    value = value_attr.to_torch() if value_attr is not None else torch.tensor(0.0)
    module = StaticConstantOfShape(shape.elems, value)
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=module.sources, outputs=node.output_values),
    )


@translates(StaticConstantOfShape)
def _constant_of_shape(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticConstantOfShape)
    shape = ", ".join(ctx.shape_args(module.shape, data_inputs=0))
    return (
        f"torch.full(({shape},), {literals.number(module.fill_value)}, "
        f"dtype={literals.dtype(module.dtype)}, device={ctx.device_of}.device)"
    )
