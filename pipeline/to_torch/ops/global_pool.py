"""ONNX ``GlobalMaxPool`` and ``GlobalAveragePool``.

GlobalMaxPool: converter ours (:func:`convert_global_max_pool`, onnx2torch lacks one; Keras
``GlobalMaxPooling*D`` with keepdims after tf2onnx's layout transposes, found by the fuzzer),
module :class:`GlobalMaxPool`; code form ``x.amax(dim=(2, 3), keepdim=True)``.
GlobalAveragePool: onnx2torch's converter as it is; code form ``x.mean(dim=(2, 3),
keepdim=True)``.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.global_average_pool import (
    OnnxGlobalAveragePool,
    OnnxGlobalAveragePoolWithKnownInputShape,
)
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from pipeline.to_torch.ops.registry import (
    NodeContext,
    dim_arg,
    new_converter,
    translates,
    uses_onnx2torch,
)


class GlobalMaxPool(torch.nn.Module):
    """Max over every spatial axis (all after N and C), keeping them as size 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` of shape ``(N, C, *spatial)`` → ``(N, C, 1, ..., 1)``."""
        return torch.amax(x, dim=tuple(range(2, x.dim())), keepdim=True)


@new_converter("GlobalMaxPool", versions=(1,), produces=(GlobalMaxPool,))
def convert_global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """GlobalMaxPool → :class:`GlobalMaxPool`."""
    return OperationConverterResult(
        torch_module=GlobalMaxPool(),
        onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values),
    )


@translates(GlobalMaxPool)
def _global_max_pool(ctx: NodeContext) -> str:
    axes = list(range(2, ctx.rank()))
    return f"{ctx.args[0]}.amax(dim={dim_arg(axes)}, keepdim=True)"


uses_onnx2torch(
    __name__,
    ("GlobalAveragePool",),
    OnnxGlobalAveragePool,
    OnnxGlobalAveragePoolWithKnownInputShape,
)


@translates(OnnxGlobalAveragePool, OnnxGlobalAveragePoolWithKnownInputShape)
def _global_average_pool(ctx: NodeContext) -> str:
    axes = list(range(2, ctx.rank()))
    return f"{ctx.args[0]}.mean(dim={dim_arg(axes)}, keepdim=True)"
