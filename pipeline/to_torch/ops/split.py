"""ONNX ``Split`` (13, 18).

Converter: ours (:func:`convert_split`): no sizes input makes :class:`SplitChunks`, sizes
known at import onnx2torch's static ``OnnxSplit``; otherwise onnx2torch's ``OnnxSplit13``.
Code form: ``torch.split(x, ceil(dim / n), dim=axis)`` for :class:`SplitChunks`,
``torch.split(x, [2, 3], dim=axis)`` for ``OnnxSplit`` with sizes (without: opset 2/11's
equal parts, ``x.shape[axis] // n``).
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.node_converters.split import OnnxSplit, OnnxSplit13
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


class SplitChunks(nn.Module):
    """ONNX Split into ``num_outputs`` chunks of ceil(dim / num_outputs), the last smaller."""

    def __init__(self, axis: int, num_outputs: int) -> None:
        super().__init__()
        self.axis = axis
        self.num_outputs = num_outputs

    def forward(self, input_tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The chunks, in order."""
        size = -(-input_tensor.shape[self.axis] // self.num_outputs)
        return tuple(torch.split(input_tensor, size, dim=self.axis))


@override_converter("Split", versions=(13, 18), produces=(SplitChunks, OnnxSplit, OnnxSplit13))
def convert_split(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Split → onnx2torch's static ``OnnxSplit`` or :class:`SplitChunks`."""
    data = node.input_values[0]
    axis = node.attributes.get("axis", 0)
    num_outputs = len(node.output_values)
    split_name = node.input_values[1] if len(node.input_values) > 1 else ""
    module: nn.Module
    if not split_name:
        module = SplitChunks(axis=axis, num_outputs=num_outputs)
    else:
        split = known_ints(graph, split_name)
        if split is None:
            return use_fallback(fallback, node, graph, "split sizes computed from tensor data")
        module = OnnxSplit(num_splits=num_outputs, axis=axis, split=split)
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(data,), outputs=node.output_values),
    )


@translates(SplitChunks)
def _split(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, SplitChunks)
    x = ctx.args[0]
    size = f"-(-{x}.shape[{module.axis}] // {module.num_outputs})"
    return f"torch.split({x}, {size}, dim={module.axis})"


@translates(OnnxSplit)
def _split_sizes(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxSplit)
    x = ctx.args[0]
    if module.split is None:  # Split 2/11 without sizes: equal parts (as onnx2torch's forward)
        return (
            f"torch.split({x}, {x}.shape[{module.axis}] // {module.num_splits}, dim={module.axis})"
        )
    sizes = ", ".join(str(int(size)) for size in module.split)
    return f"torch.split({x}, [{sizes}], dim={module.axis})"
