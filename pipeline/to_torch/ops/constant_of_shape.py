"""ONNX ``ConstantOfShape`` (9, 20, 21).

Converter: ours (:func:`convert_constant_of_shape`): a shape known at import makes a
:class:`StaticConstantOfShape`; otherwise :class:`DynamicConstantOfShape` (not onnx2torch's
``OnnxConstantOfShape``, whose fill value is a buffer: a weight of ``model.py``).  Code form:
``torch.full((d0, d1), value, dtype=..., device=...)``, each ``d`` an int or read from
``x.shape`` at run time (exports with a dynamic batch dimension).

A shape that is tensor data at run time (a graph input, or computed from values rather than
dims) makes :class:`DynamicConstantOfShape`, whose code form reads the values:
``torch.full(shape.tolist(), value, ...)``.  That is the only way to write it, and it is
data-dependent: it runs eagerly (``model.py`` works as a plain module) but ``torch.export``
cannot trace it (the output's shape is a tensor's contents).  Chosen over refusing in codegen
because such a graph has no exportable form at all; the static path is kept for every shape
known at import, so a Keras model (whose shapes tf2onnx builds from ``Shape`` of a tensor)
still gets the exportable form.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    translates,
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


class DynamicConstantOfShape(nn.Module):
    """``torch.full`` of a shape read from a 1-D int64 tensor's values (does not export)."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.fill_value: bool | int | float = value.reshape(()).item()
        self.dtype = value.dtype

    def forward(self, shape: torch.Tensor) -> torch.Tensor:
        """The filled tensor of shape ``shape.tolist()``."""
        return torch.full(shape.tolist(), self.fill_value, dtype=self.dtype, device=shape.device)


@override_converter(
    "ConstantOfShape",
    versions=(9, 20, 21),
    produces=(StaticConstantOfShape, DynamicConstantOfShape),
)
def convert_constant_of_shape(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """ConstantOfShape → :class:`StaticConstantOfShape` when the shape is known at import."""
    del fallback  # onnx2torch's OnnxConstantOfShape: its fill value would be a weight
    value_attr = node.attributes.get("value")
    value = value_attr.to_torch() if value_attr is not None else torch.tensor(0.0)
    shape = known_int_value(graph, node.input_values[0])
    if shape is None or shape.scalar:
        return OperationConverterResult(
            torch_module=DynamicConstantOfShape(value), onnx_mapping=onnx_mapping_from_node(node)
        )
    module = StaticConstantOfShape(shape.elems, value)
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=module.sources, outputs=node.output_values),
    )


@translates(DynamicConstantOfShape)
def _constant_of_shape_dynamic(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, DynamicConstantOfShape)
    shape = ctx.args[0]
    value = literals.number(module.fill_value)
    return (
        f"torch.full({shape}.tolist(), {value}, dtype={literals.dtype(module.dtype)}, "
        f"device={shape}.device)  # shape read from tensor data: does not export"
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
