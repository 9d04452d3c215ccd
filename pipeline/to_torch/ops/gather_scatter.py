"""Indexing by tensors of indices: ONNX ``GatherElements``, ``GatherND`` and ``ScatterND``.

Converters: ours, each building a module of this file (onnx2torch's ``GatherElements`` fails
on negative indices, its ``GatherND`` refuses ``batch_dims``, its ``ScatterND`` refuses a
``reduction`` and reads the indices with ``.tolist()``, which does not export).

Code forms:

- GatherElements: ``torch.gather(x, 1, indices % x.shape[1])`` (``%`` makes ONNX's negative
  indices count from the end);
- GatherND: advanced indexing ``x[indices[..., 0], indices[..., 1]]`` (with ``batch_dims=1``
  a leading ``torch.arange(x.shape[0])`` index lines the batches up); with ``batch_dims``
  above 1 the helper ``gather_nd`` flattens the batch dims into one, indexes as for 1 and
  unflattens them back (sizes read from the tensors, so it exports with dynamic dims);
- ScatterND: ``x.index_put((indices[..., 0], ...), updates)`` (``accumulate=True`` for
  ``reduction="add"``); ``reduction="mul"`` calls the helper ``scatter_nd_multiply``.
"""

from __future__ import annotations

from typing import Any

import torch
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    register_helper,
    translates,
)


def _mapping(node: OnnxNode) -> OnnxMapping:
    return OnnxMapping(inputs=tuple(node.input_values), outputs=node.output_values)


# -------------------------------------------------------------------------- GatherElements


class GatherElements(nn.Module):
    """ONNX GatherElements along ``axis`` (negative indices count from the end)."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """``x`` gathered at ``indices`` along the axis."""
        return torch.gather(x, self.axis, indices.long() % x.shape[self.axis])


@override_converter("GatherElements", versions=(11, 13), produces=(GatherElements,))
def convert_gather_elements(
    node: OnnxNode, graph: OnnxGraph, _fallback: TConverter | None
) -> OperationConverterResult:
    """GatherElements → :class:`GatherElements`."""
    del graph
    return OperationConverterResult(
        torch_module=GatherElements(int(node.attributes.get("axis", 0))),
        onnx_mapping=_mapping(node),
    )


def _long(ctx: NodeContext, index: int) -> str:
    meta = ctx.metas[index]
    text = ctx.args[index]
    return text if meta is not None and meta.dtype == torch.int64 else f"{text}.long()"


@translates(GatherElements)
def _gather_elements(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, GatherElements)
    axis = module.axis % ctx.rank(0)
    x = ctx.args[0]
    return f"torch.gather({x}, {axis}, {_long(ctx, 1)} % {x}.shape[{axis}])"


# -------------------------------------------------------------------------------- GatherND


def _index_tuple(x: torch.Tensor, indices: torch.Tensor, batch_dims: int) -> tuple[Any, ...]:
    """The advanced index of ONNX GatherND/ScatterND: one tensor per indexed dim."""
    columns = indices.long().unbind(-1)
    if batch_dims == 0:
        return tuple(columns)
    batch = torch.arange(x.shape[0], device=x.device).reshape(-1, *[1] * (indices.dim() - 2))
    return (batch, *columns)


_GATHER_ND = '''
def gather_nd(x: torch.Tensor, indices: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """ONNX GatherND with ``batch_dims`` >= 1: the first ``batch_dims`` dims of ``x`` and
    ``indices`` are batch dims, flattened into one; each batch entry of ``x`` is indexed by
    its own entries of ``indices`` (their last dim: one index per following dim of ``x``)."""
    batch_shape = indices.shape[:batch_dims]
    x = x.flatten(0, batch_dims - 1)
    indices = indices.long().flatten(0, batch_dims - 1)
    batch = torch.arange(x.shape[0], device=x.device).reshape(-1, *[1] * (indices.dim() - 2))
    return x[(batch, *indices.unbind(-1))].unflatten(0, batch_shape)
'''
gather_nd = register_helper("gather_nd", _GATHER_ND)


class GatherND(nn.Module):
    """ONNX GatherND with any ``batch_dims``."""

    def __init__(self, batch_dims: int) -> None:
        super().__init__()
        self.batch_dims = batch_dims

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The slices of ``x`` that the last dim of ``indices`` points at."""
        if self.batch_dims > 1:
            result: torch.Tensor = gather_nd(x, indices, self.batch_dims)
            return result
        return x[_index_tuple(x, indices, self.batch_dims)]


@override_converter("GatherND", versions=(11, 12, 13), produces=(GatherND,))
def convert_gather_nd(
    node: OnnxNode, graph: OnnxGraph, _fallback: TConverter | None
) -> OperationConverterResult:
    """GatherND → :class:`GatherND`."""
    del graph
    batch_dims = int(node.attributes.get("batch_dims", 0))
    if batch_dims < 0:
        raise NotImplementedError(f"GatherND ({node.name}): batch_dims={batch_dims}")
    return OperationConverterResult(torch_module=GatherND(batch_dims), onnx_mapping=_mapping(node))


def _index_source(ctx: NodeContext, batch_dims: int) -> str:
    """``indices[..., 0], indices[..., 1]`` (the indexed dims, from the static last dim of
    the indices), after ``torch.arange(x.shape[0])`` shaped to line up with the batch."""
    meta = ctx.metas[1]
    if meta is None or not isinstance(meta.shape[-1], int):
        raise NotImplementedError("GatherND/ScatterND: indices' last dim unknown")
    indices = _long(ctx, 1)
    if indices.endswith(".long()"):
        indices = f"({indices})" if not indices.isidentifier() else indices
    columns = [f"{indices}[..., {k}]" for k in range(meta.shape[-1])]
    if batch_dims:
        x = ctx.args[0]
        ones = ", 1" * (len(meta.shape) - 2)
        columns.insert(0, f"torch.arange({x}.shape[0], device={x}.device).reshape(-1{ones})")
    return ", ".join(columns)


@translates(GatherND)
def _gather_nd(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, GatherND)
    if module.batch_dims > 1:
        x, indices = ctx.args[0], ctx.args[1]
        return f"{ctx.helper('gather_nd')}({x}, {indices}, batch_dims={module.batch_dims})"
    return f"{ctx.args[0]}[{_index_source(ctx, module.batch_dims)}]"


# ------------------------------------------------------------------------------- ScatterND

_SCATTER_ND_MULTIPLY = '''
def scatter_nd_multiply(
    x: torch.Tensor, index: tuple[torch.Tensor, ...], updates: torch.Tensor
) -> torch.Tensor:
    """ONNX ScatterND with reduction="mul": ``x`` with the entries at ``index`` (one index
    tensor per leading dim of ``x``) multiplied by ``updates``, repeated indices each time."""
    indexed = len(index)
    flat_index = torch.zeros_like(index[0])
    for dim, column in enumerate(index):  # row-major position in x's first `indexed` dims
        flat_index = flat_index * x.shape[dim] + column % x.shape[dim]
    flat_x = x.flatten(0, indexed - 1)
    flat_updates = updates.reshape(-1, *flat_x.shape[1:])
    return flat_x.index_reduce(0, flat_index.reshape(-1), flat_updates, "prod").reshape(x.shape)
'''
scatter_nd_multiply = register_helper("scatter_nd_multiply", _SCATTER_ND_MULTIPLY)


class ScatterND(nn.Module):
    """ONNX ScatterND with ``reduction`` none, add or mul."""

    def __init__(self, reduction: str) -> None:
        super().__init__()
        self.reduction = reduction

    def forward(
        self, x: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor
    ) -> torch.Tensor:
        """``x`` with ``updates`` written (added, multiplied) at ``indices``."""
        index = _index_tuple(x, indices, 0)
        if self.reduction == "mul":
            result: torch.Tensor = scatter_nd_multiply(x, index, updates)
            return result
        return x.index_put(index, updates, accumulate=self.reduction == "add")


@override_converter("ScatterND", versions=(11, 13, 16), produces=(ScatterND,))
def convert_scatter_nd(
    node: OnnxNode, graph: OnnxGraph, _fallback: TConverter | None
) -> OperationConverterResult:
    """ScatterND → :class:`ScatterND`; NotImplementedError for reductions max/min."""
    del graph
    reduction = node.attributes.get("reduction", "none")
    if reduction not in ("none", "add", "mul"):
        raise NotImplementedError(f"ScatterND ({node.name}): reduction {reduction!r}")
    return OperationConverterResult(torch_module=ScatterND(reduction), onnx_mapping=_mapping(node))


@translates(ScatterND)
def _scatter_nd(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, ScatterND)
    x, updates = ctx.args[0], ctx.args[2]
    index = _index_source(ctx, 0)
    if module.reduction == "mul":
        return f"{ctx.helper('scatter_nd_multiply')}({x}, ({index},), {updates})"
    accumulate = ", accumulate=True" if module.reduction == "add" else ""
    return f"{x}.index_put(({index},), {updates}{accumulate})"
