"""ONNX ``Range`` (11).

Converter: ours (:func:`convert_range`): integer start/limit/delta known at import (e.g.
``0 .. x.shape[1]``) make a :class:`StaticRange`; otherwise onnx2torch's ``OnnxRange``.
Code form: ``torch.arange(start, limit, delta, dtype=..., device=...)``.
"""

from __future__ import annotations

import numpy as np
import torch
from onnx import helper
from onnx2torch.node_converters.range import OnnxRange
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
from pipeline.to_torch.ops.shape_values import Expr, ShapeArgs, elem_type, known_int_value


class StaticRange(ShapeArgs):
    """``torch.arange`` over ints or expressions over input dims."""

    def __init__(self, start: Expr, limit: Expr, delta: Expr, dtype: torch.dtype) -> None:
        super().__init__((start, limit, delta))
        self.bounds = (start, limit, delta)
        self.dtype = dtype
        # Carries the module's device (the output is made on it).
        self.device_anchor: torch.Tensor
        self.register_buffer("device_anchor", torch.empty(0), persistent=False)

    def forward(self, *sources: torch.Tensor) -> torch.Tensor:
        """The range; ``sources`` are the tensors the bounds read dims from."""
        start, limit, delta = self.resolve(self.bounds, sources)
        return torch.arange(start, limit, delta, dtype=self.dtype, device=self.device_anchor.device)


@override_converter("Range", versions=(11,), produces=(StaticRange, OnnxRange))
def convert_range(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Range → :class:`StaticRange` for integer bounds known at import."""
    bounds = [known_int_value(graph, name) for name in node.input_values]
    onnx_type = elem_type(graph, node.input_values[0])
    if any(b is None or len(b.elems) != 1 for b in bounds) or onnx_type is None:
        return use_fallback(fallback, node, graph, "bounds computed from tensor data")
    start, limit, delta = (b.elems[0] for b in bounds if b is not None)
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
    start, limit, delta = ctx.shape_args(module.bounds, data_inputs=0)
    return (
        f"torch.arange({start}, {limit}, {delta}, dtype={literals.dtype(module.dtype)}, "
        f"device={ctx.device_of}.device)"
    )
