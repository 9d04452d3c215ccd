"""Layout and indexing: ONNX ``Transpose``, ``Flatten``, ``Concat``, ``Gather``, ``Shape``
and ``Identity``; and FX's own ``operator.getitem`` (one output of a multi-output op).

Converters: onnx2torch's as they are, but ours for ``Flatten`` (:func:`convert_flatten`: a
negative axis counted from the rank, and axis 0, which onnx2torch's module fails on) and
``Shape`` (:func:`convert_shape`: :class:`ShapeOf`, onnx2torch's ``OnnxShape`` made int64
when ``start``/``end`` select no dim, where ``torch.tensor([])`` is float32; the code form
then says ``dtype=torch.int64``).  Code forms: ``x.permute(...)`` (with a comment naming
the NHWC/NCHW change), ``x.flatten(...)``, ``torch.cat([...], dim=...)``, indexing
``x[:, idx]``, ``x.reshape(1, -1)`` (Flatten at axis 0), ``torch.tensor(x.shape[a:b], device=...)``.  ``Identity`` (onnx2torch's
``OnnxCopyIdentity``) is removed by ``codegen/simplify.py``.
"""

from __future__ import annotations

import operator

import onnx
import torch
from onnx2torch.node_converters.concat import OnnxConcat
from onnx2torch.node_converters.flatten import OnnxFlatten
from onnx2torch.node_converters.gather import OnnxGather
from onnx2torch.node_converters.identity import OnnxCopyIdentity
from onnx2torch.node_converters.registry import TConverter, add_converter, get_converter
from onnx2torch.node_converters.shape import OnnxShape
from onnx2torch.node_converters.transpose import OnnxTranspose
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    translates,
    uses_onnx2torch,
)

uses_onnx2torch(__name__, ("Transpose",), OnnxTranspose)
uses_onnx2torch(__name__, ("Concat",), OnnxConcat)
uses_onnx2torch(__name__, ("Gather",), OnnxGather)
uses_onnx2torch(__name__, ("Identity",), OnnxCopyIdentity)


def _register_identity_versions() -> None:
    """onnx2torch's Identity converter (``OnnxCopyIdentity``) also for the Identity versions
    after 16 (19, 21, 23...: new element types only, the same meaning).

    The importer appends Identity nodes at the model's opset (one per graph output), so
    without these every model at opset 19 or later failed to import.
    """
    converter = get_converter(operation_type="Identity", version=16)
    versions = {
        onnx.defs.get_schema("Identity", max_inclusive_version=v).since_version
        for v in range(17, onnx.defs.onnx_opset_version() + 1)
    }
    for version in sorted(versions - {16}):
        try:
            get_converter(operation_type="Identity", version=version)
        except NotImplementedError:
            add_converter(operation_type="Identity", version=version)(converter)


_register_identity_versions()


@translates(OnnxTranspose)
def _transpose(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxTranspose)
    perm = module.perm if module.perm is not None else list(range(ctx.rank()))[::-1]
    layout = _LAYOUTS.get(tuple(perm), "")
    return f"{ctx.args[0]}.permute({', '.join(str(p) for p in perm)}){layout}"


_LAYOUTS = {
    (0, 2, 3, 1): "  # channels first -> channels last",
    (0, 3, 1, 2): "  # channels last -> channels first",
    (0, 2, 1): "  # (batch, channels, length) <-> (batch, length, channels)",
    (1, 0, 2): "  # (batch, time, features) <-> (time, batch, features)",
    (0, 2, 3, 4, 1): "  # channels first -> channels last",
    (0, 4, 1, 2, 3): "  # channels last -> channels first",
}
"""Trailing comments for the layout changes Keras models make (NHWC <-> NCHW)."""


class FlattenToRow(nn.Module):
    """ONNX Flatten at axis 0: the whole tensor as one row, shape ``(1, x.numel())``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as one row."""
        return x.reshape(1, -1)


@override_converter(
    "Flatten", versions=(9, 11, 13), produces=(OnnxFlatten, nn.Flatten, FlattenToRow)
)
def convert_flatten(
    node: OnnxNode, graph: OnnxGraph, _fallback: TConverter | None
) -> OperationConverterResult:
    """Flatten → ``nn.Flatten`` (axis 1), ``OnnxFlatten`` or :class:`FlattenToRow` (axis 0)."""
    axis = int(node.attributes.get("axis", 1))
    if axis < 0:
        info = graph.value_info.get(node.input_values[0])
        if info is None or not info.type.tensor_type.HasField("shape"):
            raise NotImplementedError(f"Flatten ({node.name}): negative axis, rank unknown")
        axis += len(info.type.tensor_type.shape.dim)
    module = FlattenToRow() if axis == 0 else OnnxFlatten.maybe_create_simple_flatten(axis)
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


@translates(OnnxFlatten, nn.Flatten, FlattenToRow)
def _flatten(ctx: NodeContext) -> str:
    module = ctx.module
    if isinstance(module, FlattenToRow):
        return f"{ctx.args[0]}.reshape(1, -1)"
    if isinstance(module, nn.Flatten):
        return f"{ctx.args[0]}.flatten({module.start_dim}, {module.end_dim})"
    assert isinstance(module, OnnxFlatten)
    return f"{ctx.args[0]}.flatten(0, {module.axis - 1}).flatten(1)"


@translates(OnnxConcat)
def _concat(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxConcat)
    return f"torch.cat([{', '.join(ctx.args)}], dim={module.axis})"


@translates(OnnxGather)
def _gather(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxGather)
    axis = module._axis
    if axis < 0:
        axis += ctx.rank(0)
    index_meta = ctx.metas[1]
    indices = ctx.args[1]
    if index_meta is not None and index_meta.dtype not in (torch.int64, torch.int32):
        indices = f"{indices}.long()"
    return f"{ctx.args[0]}[{', '.join([':'] * axis + [indices])}]"


class ShapeOf(OnnxShape):
    """onnx2torch's ``OnnxShape``, but int64 also when the slice selects no dim."""

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        """``input_tensor.shape[start:end]`` as an int64 tensor."""
        dims = input_tensor.shape[self._start : self._end]
        return torch.tensor(dims, dtype=torch.int64, device=input_tensor.device)


@override_converter("Shape", versions=(1, 13, 15), produces=(ShapeOf,))
def convert_shape(
    node: OnnxNode, graph: OnnxGraph, _fallback: TConverter | None
) -> OperationConverterResult:
    """Shape → :class:`ShapeOf` (``start``/``end`` from opset 15)."""
    del graph
    end = node.attributes.get("end")
    return OperationConverterResult(
        torch_module=ShapeOf(start=int(node.attributes.get("start", 0)), end=end),
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


@translates(OnnxShape, ShapeOf)
def _shape(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxShape)
    x = ctx.args[0]
    start, end = module._start, module._end
    dims = f"{x}.shape"
    if start or end is not None:
        dims += f"[{start or ''}:{'' if end is None else end}]"
    if not range(ctx.rank())[start:end]:  # torch.tensor([]) would be float32
        return f"torch.tensor({dims}, dtype=torch.int64, device={x}.device)"
    return f"torch.tensor({dims}, device={x}.device)"


@translates(operator.getitem)  # type: ignore[arg-type]
def _getitem(ctx: NodeContext) -> str:
    return f"{ctx.args[0]}[{ctx.args[1]}]"
