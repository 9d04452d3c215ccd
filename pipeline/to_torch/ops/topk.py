"""ONNX ``TopK`` (10, 11).

Converter: ours (:func:`convert_topk`): ``k`` known at import (onnx2torch passes a tensor
``k`` to ``torch.topk``) makes a :class:`StaticTopK`; otherwise :class:`DynamicTopK`, which
reads ``k`` at run time (does not export; onnx2torch's ``OnnxTopK`` is not used: its order of
equal values is not ONNX's).
ONNX (and Keras' ``top_k``) put the lower index first among equal values; ``torch.topk``
does not promise any order there, so both the module and the code form take the first ``k``
of a stable sort.  Code form: the helper ``onnx_topk`` (``torch.sort(..., stable=True)``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    refuse,
    register_helper,
    translates,
)
from pipeline.to_torch.ops.shape_values import known_ints

onnx_topk: Callable[..., tuple[torch.Tensor, torch.Tensor]] = register_helper(
    "onnx_topk",
    '''
def onnx_topk(
    x: torch.Tensor, k: int, dim: int, largest: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk, but with the lower index first among equal values (as ONNX TopK)."""
    values, indices = torch.sort(x, dim=dim, descending=largest, stable=True)
    return values.narrow(dim, 0, k), indices.narrow(dim, 0, k)
''',
)


class StaticTopK(nn.Module):
    """ONNX TopK with a fixed ``k``; returns (values, indices) like ONNX, the lower index
    first among equal values."""

    def __init__(self, k: int, axis: int, largest: bool, sorted_: bool) -> None:
        super().__init__()
        self.k = k
        self.axis = axis
        self.largest = largest
        self.sorted = sorted_

    def forward(self, input_tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values and int64 indices of the ``k`` largest (or smallest) elements."""
        return onnx_topk(input_tensor, self.k, self.axis, self.largest)


class DynamicTopK(nn.Module):
    """ONNX TopK with ``k`` given as a tensor (read at run time: does not export)."""

    def __init__(self, axis: int, largest: bool) -> None:
        super().__init__()
        self.axis = axis
        self.largest = largest

    def forward(
        self, input_tensor: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Values and int64 indices of the ``k`` largest (or smallest) elements."""
        return onnx_topk(input_tensor, int(k.reshape(-1)[0].item()), self.axis, self.largest)


refuse(
    DynamicTopK,
    "TopK with k computed from tensor data: read at run time, so it neither exports nor has "
    "a code form",
)


@override_converter("TopK", versions=(10, 11), produces=(StaticTopK, DynamicTopK))
def convert_topk(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """TopK → :class:`StaticTopK` when ``k`` is a constant."""
    del fallback  # onnx2torch's OnnxTopK: torch.topk's order of equal values
    k = known_ints(graph, node.input_values[1])
    if k is None or len(k) != 1:
        dynamic = DynamicTopK(
            axis=node.attributes.get("axis", -1),
            largest=bool(node.attributes.get("largest", 1)),
        )
        return OperationConverterResult(
            torch_module=dynamic,
            onnx_mapping=OnnxMapping(inputs=node.input_values[:2], outputs=node.output_values),
        )
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
    name = ctx.helper("onnx_topk")
    return f"{name}({ctx.args[0]}, {module.k}, dim={module.axis}, largest={module.largest})"
