"""ONNX ``IsNaN`` (9, 13, 20) and ``IsInf`` (10, 20).

IsNaN: onnx2torch's converter (``OnnxIsNaN``), registered for opset 20 too (it only adds
element types); code form ``torch.isnan(x)``.
IsInf: converter ours (:func:`convert_isinf`; onnx2torch's ignores ``detect_positive`` and
``detect_negative``), module :class:`IsInf`; code form ``torch.isinf(x)``,
``torch.isposinf(x)`` or ``torch.isneginf(x)``.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.isinf import OnnxIsInf
from onnx2torch.node_converters.isnan import OnnxIsNaN
from onnx2torch.node_converters.registry import TConverter, get_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.ops.registry import (
    NodeContext,
    new_converter,
    override_converter,
    translates,
    uses_onnx2torch,
)

uses_onnx2torch(__name__, ("IsNaN",), OnnxIsNaN)
_ISNAN_13 = get_converter("IsNaN", 13)


@new_converter("IsNaN", versions=(20,), produces=(OnnxIsNaN,))
def convert_isnan_20(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """IsNaN 20 (adds float8 types) → onnx2torch's converter of IsNaN 13."""
    return _ISNAN_13(node, graph)


@translates(OnnxIsNaN)
def _isnan(ctx: NodeContext) -> str:
    return f"torch.isnan({ctx.args[0]})"


class IsInf(nn.Module):
    """ONNX IsInf: which elements are +inf (``detect_positive``) or -inf (``detect_negative``)."""

    def __init__(self, detect_positive: bool, detect_negative: bool) -> None:
        super().__init__()
        self.detect_positive = detect_positive
        self.detect_negative = detect_negative

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A bool tensor shaped like ``x``."""
        if self.detect_positive and self.detect_negative:
            return torch.isinf(x)
        if self.detect_positive:
            return torch.isposinf(x)
        if self.detect_negative:
            return torch.isneginf(x)
        return torch.zeros_like(x, dtype=torch.bool)


def convert_isinf(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """IsInf → :class:`IsInf`."""
    del graph
    module = IsInf(
        detect_positive=bool(node.attributes.get("detect_positive", 1)),
        detect_negative=bool(node.attributes.get("detect_negative", 1)),
    )
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


@override_converter("IsInf", versions=(10,), produces=(IsInf,))
def _convert_isinf_10(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    del fallback  # onnx2torch's ignores the attributes
    return convert_isinf(node, graph)


new_converter("IsInf", versions=(20,), produces=(IsInf,))(convert_isinf)


@translates(OnnxIsInf)
def _onnx2torch_isinf(ctx: NodeContext) -> str:
    # Not produced (our converter replaces onnx2torch's); the same meaning as its forward.
    return f"torch.isinf({ctx.args[0]})"


@translates(IsInf)
def _isinf(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, IsInf)
    x = ctx.args[0]
    if module.detect_positive and module.detect_negative:
        return f"torch.isinf({x})"
    if module.detect_positive:
        return f"torch.isposinf({x})"
    if module.detect_negative:
        return f"torch.isneginf({x})"
    return f"torch.zeros_like({x}, dtype=torch.bool)"
