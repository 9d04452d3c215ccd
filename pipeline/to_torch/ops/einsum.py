"""ONNX ``Einsum`` (12).

Converter: ours (:func:`convert_einsum`): onnx2torch's ``OnnxEinsum`` with the equation's
spaces removed (ONNX allows ``"i, i"``; torch's parser counts the space as a subscript).
Code form: ``torch.einsum("bij,bjk->bik", a, b)``.
"""

from __future__ import annotations

from onnx2torch.node_converters.einsum import OnnxEinsum
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

from pipeline.to_torch.ops.registry import NodeContext, override_converter, translates


@override_converter("Einsum", versions=(12,), produces=(OnnxEinsum,))
def convert_einsum(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Einsum → ``OnnxEinsum`` with the equation without spaces."""
    del graph, fallback
    equation = node.attributes["equation"]
    if isinstance(equation, bytes):
        equation = equation.decode()
    return OperationConverterResult(
        torch_module=OnnxEinsum(equation="".join(equation.split())),
        onnx_mapping=onnx_mapping_from_node(node),
    )


@translates(OnnxEinsum)
def _einsum(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxEinsum)
    return f"torch.einsum({module.equation!r}, {', '.join(ctx.args)})"
