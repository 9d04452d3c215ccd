"""ONNX ``Equal``, ``Less``, ``LessOrEqual``, ``Greater``, ``GreaterOrEqual``.

Converter: onnx2torch's (``OnnxCompare``) as it is, plus ours (:func:`convert_or_equal`) for
``GreaterOrEqual``/``LessOrEqual`` at opset 16, which onnx2torch registers at 12 only.
Opset 16 only widened their types (bfloat16); the semantics are version 12's, so the same
onnx2torch module converts them.  Keras's attention masks produce them
(``MultiHeadAttention`` with ``use_causal_mask``).  Code form: ``a <= b`` and its kin.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.comparisons import OnnxCompare
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

from pipeline.to_torch.ops.registry import NodeContext, new_converter, translates, uses_onnx2torch

uses_onnx2torch(
    __name__, ("Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"), OnnxCompare
)


@new_converter("LessOrEqual", versions=(16,), produces=(OnnxCompare,))
@new_converter("GreaterOrEqual", versions=(16,), produces=(OnnxCompare,))
def convert_or_equal(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """``GreaterOrEqual``/``LessOrEqual``-16 → onnx2torch's ``OnnxCompare``."""
    del graph  # the comparison needs nothing from the graph
    return OperationConverterResult(
        torch_module=OnnxCompare(operation_type=node.operation_type),
        onnx_mapping=onnx_mapping_from_node(node=node),
    )


_COMPARE = {
    torch.eq: "==",
    torch.less: "<",
    torch.less_equal: "<=",
    torch.greater: ">",
    torch.greater_equal: ">=",
}


@translates(OnnxCompare)
def _compare(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxCompare)
    return f"{ctx.args[0]} {_COMPARE[module.compare_function]} {ctx.args[1]}"
