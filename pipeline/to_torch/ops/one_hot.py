"""ONNX ``OneHot`` (9, 11); onnx2torch has no converter.

Converter: ours (:func:`convert_one_hot`), for a ``depth`` known at import (a Keras export
has it as a constant), making :class:`OneHot`.  ONNX semantics: ``indices`` (any numeric
type, cast to integers) in ``[-depth, depth)`` (negative ones count from the end; any other
index gives a row of "off" values), ``values`` = ``[off, on]`` of the output's type, the new
axis at ``axis`` (default -1, the last).  Code form: the helper ``onnx_one_hot``
(a comparison with ``torch.arange(depth)`` rather than ``F.one_hot``, which raises on an
out-of-range index and checks the indices' values, so does not ``torch.export``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.core import onnx_io
from pipeline.to_torch.ops.registry import (
    NodeContext,
    new_converter,
    register_helper,
    translates,
)
from pipeline.to_torch.ops.shape_values import known_ints

one_hot: Callable[..., torch.Tensor] = register_helper(
    "onnx_one_hot",
    '''
def onnx_one_hot(
    indices: torch.Tensor, depth: int, values: torch.Tensor, axis: int
) -> torch.Tensor:
    """ONNX OneHot: ``values[1]`` where ``indices`` (wrapped if negative) hits, else
    ``values[0]``; the new axis of size ``depth`` at ``axis``."""
    indices = indices.to(torch.int64)
    indices = torch.where(indices < 0, indices + depth, indices)
    hot = indices.unsqueeze(-1) == torch.arange(depth, device=indices.device)
    if axis != -1:
        hot = hot.movedim(-1, axis)
    return torch.where(hot, values[1], values[0])
''',
)


class OneHot(nn.Module):
    """ONNX OneHot with a fixed ``depth`` and ``axis``; takes ``indices`` and ``values``."""

    def __init__(self, depth: int, axis: int) -> None:
        super().__init__()
        self.depth = depth
        self.axis = axis

    def forward(self, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The one-hot tensor, of ``values``' dtype."""
        return one_hot(indices, self.depth, values, self.axis)


def _known_depth(graph: OnnxGraph, name: str) -> int | None:
    ints = known_ints(graph, name)
    if ints is not None and len(ints) == 1:
        return ints[0]
    tensor = graph.initializers.get(name)  # a float depth (ONNX allows any numeric type)
    if tensor is None:
        return None
    array = onnx_io.array(tensor.proto)
    if array.size != 1 or not np.isfinite(array).all():
        return None
    return int(array.reshape(-1)[0])


@new_converter("OneHot", versions=(9, 11), produces=(OneHot,))
def convert_one_hot(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """OneHot → :class:`OneHot`; NotImplementedError if ``depth`` is computed at run time."""
    indices, depth_name, values = node.input_values
    depth = _known_depth(graph, depth_name)
    if depth is None:
        raise NotImplementedError(
            f"OneHot ({node.name}): depth computed from tensor data (the output's shape)"
        )
    return OperationConverterResult(
        torch_module=OneHot(depth=depth, axis=node.attributes.get("axis", -1)),
        onnx_mapping=OnnxMapping(inputs=(indices, values), outputs=node.output_values),
    )


@translates(OneHot)
def _one_hot(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OneHot)
    name = ctx.helper("onnx_one_hot")
    indices, values = ctx.args
    return f"{name}({indices}, {module.depth}, {values}, axis={module.axis})"
