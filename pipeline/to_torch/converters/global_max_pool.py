"""GlobalMaxPool, which onnx2torch lacks (Keras ``GlobalMaxPooling*D`` with keepdims after
tf2onnx's layout transposes; found by the fuzzer)."""

from __future__ import annotations

import torch
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult


class GlobalMaxPool(torch.nn.Module):
    """Max over every spatial axis (all after N and C), keeping them as size 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` of shape ``(N, C, *spatial)`` → ``(N, C, 1, ..., 1)``."""
        return torch.amax(x, dim=tuple(range(2, x.dim())), keepdim=True)


@add_converter(operation_type="GlobalMaxPool", version=1)
def convert_global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """GlobalMaxPool → :class:`GlobalMaxPool`."""
    return OperationConverterResult(
        torch_module=GlobalMaxPool(),
        onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values),
    )
