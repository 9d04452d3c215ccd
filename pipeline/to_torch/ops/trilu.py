"""ONNX ``Trilu`` (14); onnx2torch has no converter.

Converter: ours (:func:`convert_trilu`), for a ``k`` known at import (absent: 0), making
:class:`Trilu`.  Code form: ``torch.triu(x, diagonal=k)`` (``upper=1``, the default) or
``torch.tril(x, diagonal=k)``.
"""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.ops.registry import NodeContext, new_converter, translates
from pipeline.to_torch.ops.shape_values import known_ints


class Trilu(nn.Module):
    """The upper (``torch.triu``) or lower (``torch.tril``) triangle of the last two axes."""

    def __init__(self, upper: bool, k: int) -> None:
        super().__init__()
        self.upper = upper
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the other triangle zeroed."""
        return torch.triu(x, self.k) if self.upper else torch.tril(x, self.k)


@new_converter("Trilu", versions=(14,), produces=(Trilu,))
def convert_trilu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Trilu → :class:`Trilu`; NotImplementedError if ``k`` is computed at run time."""
    k_name = node.input_values[1] if len(node.input_values) > 1 else ""
    k = known_ints(graph, k_name) if k_name else [0]
    if k is None or len(k) != 1:
        raise NotImplementedError(f"Trilu ({node.name}): k computed from tensor data")
    return OperationConverterResult(
        torch_module=Trilu(upper=bool(node.attributes.get("upper", 1)), k=k[0]),
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


@translates(Trilu)
def _trilu(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, Trilu)
    function = "triu" if module.upper else "tril"
    diagonal = f", diagonal={module.k}" if module.k else ""
    return f"torch.{function}({ctx.args[0]}{diagonal})"
