"""ONNX ``Range`` (11).

Converter: ours (:func:`convert_range`): start/limit/delta known at import (integers, e.g.
``0 .. x.shape[1]``, or constant floats) make a :class:`StaticRange`; otherwise
:class:`DynamicRange`, which reads them at run time (onnx2torch's ``OnnxRange`` is not used:
it makes int64 of an int32 Range).  Both keep the ONNX element type.  Code form of both:
``torch.arange(start, limit, delta, dtype=..., device=...)``; for :class:`StaticRange` the
bounds are numbers or read from ``x.shape`` (exports with a dynamic batch dimension), for
:class:`DynamicRange` they are the 0-d tensors themselves.  That one is data-dependent (the
output's length is the bounds' values): it runs eagerly, but ``torch.export`` does not trace
it with bounds that are tensor data.
"""

from __future__ import annotations

import numpy as np
import torch
from onnx import helper
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from pipeline.core import onnx_io
from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    translates,
)
from pipeline.to_torch.ops.shape_values import Expr, ShapeArgs, elem_type, known_int_value


class StaticRange(ShapeArgs):
    """``torch.arange`` over ints, expressions over input dims, or constant floats."""

    def __init__(
        self, start: Expr | float, limit: Expr | float, delta: Expr | float, dtype: torch.dtype
    ) -> None:
        super().__init__(b for b in (start, limit, delta) if not isinstance(b, float))
        self.bounds = (start, limit, delta)
        self.dtype = dtype
        # Carries the module's device (the output is made on it).
        self.device_anchor: torch.Tensor
        self.register_buffer("device_anchor", torch.empty(0), persistent=False)

    def forward(self, *sources: torch.Tensor) -> torch.Tensor:
        """The range; ``sources`` are the tensors the bounds read dims from."""
        start, limit, delta = (
            b if isinstance(b, float) else self.resolve((b,), sources)[0] for b in self.bounds
        )
        return torch.arange(start, limit, delta, dtype=self.dtype, device=self.device_anchor.device)


class DynamicRange(nn.Module):
    """``torch.arange`` over bounds given as tensors (read at run time: does not export)."""

    def forward(
        self, start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor
    ) -> torch.Tensor:
        """The range, of ``start``'s dtype."""
        return torch.arange(
            start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device
        )


def _constant_float(graph: OnnxGraph, name: str) -> float | None:
    """A floating-point scalar initializer's value (None otherwise)."""
    tensor = graph.initializers.get(name)
    if tensor is None:
        return None
    array = onnx_io.array(tensor.proto)
    if array.size != 1 or array.dtype.kind != "f":
        return None
    return float(array.reshape(-1)[0])


@override_converter("Range", versions=(11,), produces=(StaticRange, DynamicRange))
def convert_range(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Range → :class:`StaticRange` for bounds known at import, else :class:`DynamicRange`."""
    del fallback  # onnx2torch's OnnxRange ignores the element type (int32 → int64)
    known = [known_int_value(graph, name) for name in node.input_values]
    bounds: list[Expr | float] = []
    for name, value in zip(node.input_values, known, strict=True):
        number = _constant_float(graph, name)
        if value is not None and len(value.elems) == 1:
            bounds.append(value.elems[0])  # an int, or a whole-number float written as one
        elif number is not None:
            bounds.append(number)
    onnx_type = elem_type(graph, node.input_values[0])
    if len(bounds) != 3 or onnx_type is None:
        return OperationConverterResult(
            torch_module=DynamicRange(), onnx_mapping=onnx_mapping_from_node(node)
        )
    start, limit, delta = bounds
    dtype = torch.from_numpy(np.empty(0, dtype=helper.tensor_dtype_to_np_dtype(onnx_type))).dtype
    module = StaticRange(start, limit, delta, dtype)
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=module.sources, outputs=node.output_values),
    )


@translates(StaticRange)
def _range(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticRange)
    start, limit, delta = (
        literals.number(b) if isinstance(b, float) else ctx.shape_args((b,), data_inputs=0)[0]
        for b in module.bounds
    )
    return (
        f"torch.arange({start}, {limit}, {delta}, dtype={literals.dtype(module.dtype)}, "
        f"device={ctx.device_of}.device)"
    )


@translates(DynamicRange)
def _dynamic_range(ctx: NodeContext) -> str:
    start, limit, delta = ctx.args
    meta = ctx.out if ctx.out is not None else ctx.metas[0]
    dtype = f", dtype={literals.dtype(meta.dtype)}" if meta is not None else ""
    return (
        f"torch.arange({start}, {limit}, {delta}{dtype}, device={ctx.device_of}.device)"
        "  # bounds from tensor data: does not export"
    )
