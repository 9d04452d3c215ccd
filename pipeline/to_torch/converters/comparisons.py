"""``GreaterOrEqual``/``LessOrEqual`` at opset 16 (onnx2torch registers them at 12 only).

Opset 16 only widened their types (bfloat16); the semantics are version 12's, so the same
onnx2torch module (``OnnxCompare``) converts them.  Keras's attention masks produce them
(``MultiHeadAttention`` with ``use_causal_mask``).
"""

from __future__ import annotations

from onnx2torch.node_converters.comparisons import OnnxCompare
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node


@add_converter(operation_type="LessOrEqual", version=16)
@add_converter(operation_type="GreaterOrEqual", version=16)
def convert_or_equal(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """``GreaterOrEqual``/``LessOrEqual``-16 → onnx2torch's ``OnnxCompare``."""
    del graph  # the comparison needs nothing from the graph
    return OperationConverterResult(
        torch_module=OnnxCompare(operation_type=node.operation_type),
        onnx_mapping=onnx_mapping_from_node(node=node),
    )
