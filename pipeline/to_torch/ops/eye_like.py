"""ONNX ``EyeLike`` (9) and ``NonZero`` (9, 13): tensors made from another's shape or values.

Converters: onnx2torch's for ``EyeLike`` (``OnnxEyeLike``); ours for ``NonZero``
(:class:`NonZero`: onnx2torch's returns torch's ``(n, rank)`` layout, ONNX wants
``(rank, n)``).

Code forms: ``torch.eye(x.shape[0], x.shape[1], dtype=..., device=x.device)``, shifted to
diagonal ``k`` with ``torch.ones(...).triu(k).tril(k)``; ``torch.nonzero(x).T``.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.eye_like import OnnxEyeLike
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from onnx2torch.utils.dtype import onnx_dtype_to_torch_dtype
from torch import nn

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    translates,
    uses_onnx2torch,
)

uses_onnx2torch(__name__, ("EyeLike",), OnnxEyeLike)


@translates(OnnxEyeLike)
def _eye_like(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxEyeLike)
    x = ctx.args[0]
    meta = ctx.metas[0]
    if module.dtype is not None:
        dtype = onnx_dtype_to_torch_dtype(module.dtype)
    elif meta is not None:
        dtype = meta.dtype
    else:
        raise NotImplementedError("EyeLike: input dtype unknown")
    assert isinstance(dtype, torch.dtype)
    args = f"{x}.shape[0], {x}.shape[1], dtype={literals.dtype(dtype)}, device={x}.device"
    if module.k == 0:
        return f"torch.eye({args})"
    return f"torch.ones({args}).triu({module.k}).tril({module.k})  # ones on diagonal {module.k}"


class NonZero(nn.Module):
    """ONNX NonZero: the indices of the non-zero elements, one row per dim of ``x``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(rank, count) indices."""
        return torch.nonzero(x).T


@override_converter("NonZero", versions=(13,), produces=(NonZero,))
def convert_non_zero(
    node: OnnxNode, graph: OnnxGraph, _fallback: TConverter | None
) -> OperationConverterResult:
    """NonZero → :class:`NonZero`."""
    del graph
    return OperationConverterResult(
        torch_module=NonZero(),
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


@translates(NonZero)
def _non_zero(ctx: NodeContext) -> str:
    return f"torch.nonzero({ctx.args[0]}).T"
