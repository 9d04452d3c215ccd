"""ONNX ``TopK`` (10, 11).

Converter: ours (:func:`convert_topk`): ``k`` known at import (onnx2torch passes a tensor
``k`` to ``torch.topk``) makes a :class:`StaticTopK`; otherwise onnx2torch's ``OnnxTopK``.
Code form: ``torch.topk(x, k, dim=..., largest=..., sorted=...)``.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.node_converters.topk import OnnxTopK
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    translates,
    use_fallback,
)
from pipeline.to_torch.ops.shape_values import known_ints


class StaticTopK(nn.Module):
    """``torch.topk`` with a fixed ``k``; returns (values, indices) like ONNX."""

    def __init__(self, k: int, axis: int, largest: bool, sorted_: bool) -> None:
        super().__init__()
        self.k = k
        self.axis = axis
        self.largest = largest
        self.sorted = sorted_

    def forward(self, input_tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values and int64 indices of the ``k`` largest (or smallest) elements."""
        result = torch.topk(
            input_tensor, self.k, dim=self.axis, largest=self.largest, sorted=self.sorted
        )
        return result.values, result.indices


@override_converter("TopK", versions=(10, 11), produces=(StaticTopK, OnnxTopK))
def convert_topk(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """TopK → :class:`StaticTopK` when ``k`` is a constant."""
    k = known_ints(graph, node.input_values[1])
    if k is None or len(k) != 1:
        return use_fallback(fallback, node, graph, "k computed from tensor data")
    module = StaticTopK(
        k=k[0],
        axis=node.attributes.get("axis", -1),
        largest=bool(node.attributes.get("largest", 1)),
        sorted_=bool(node.attributes.get("sorted", 1)),
    )
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


@translates(StaticTopK)
def _topk(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticTopK)
    return (
        f"torch.topk({ctx.args[0]}, {module.k}, dim={module.axis}, "
        f"largest={module.largest}, sorted={module.sorted})"
    )
