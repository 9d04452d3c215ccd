"""Layout and indexing: ONNX ``Transpose``, ``Flatten``, ``Concat``, ``Gather``, ``Shape``
and ``Identity``; and FX's own ``operator.getitem`` (one output of a multi-output op).

Converters: onnx2torch's as they are.  Code forms: ``x.permute(...)`` (with a comment naming
the NHWC/NCHW change), ``x.flatten(...)``, ``torch.cat([...], dim=...)``, indexing
``x[:, idx]``, ``torch.tensor(x.shape[a:b], device=...)``.  ``Identity`` (onnx2torch's
``OnnxCopyIdentity``) is removed by ``codegen/simplify.py``.
"""

from __future__ import annotations

import operator

import torch
from onnx2torch.node_converters.concat import OnnxConcat
from onnx2torch.node_converters.flatten import OnnxFlatten
from onnx2torch.node_converters.gather import OnnxGather
from onnx2torch.node_converters.identity import OnnxCopyIdentity
from onnx2torch.node_converters.shape import OnnxShape
from onnx2torch.node_converters.transpose import OnnxTranspose
from torch import nn

from pipeline.to_torch.ops.registry import NodeContext, translates, uses_onnx2torch

uses_onnx2torch(__name__, ("Transpose",), OnnxTranspose)
uses_onnx2torch(__name__, ("Flatten",), OnnxFlatten, nn.Flatten)
uses_onnx2torch(__name__, ("Concat",), OnnxConcat)
uses_onnx2torch(__name__, ("Gather",), OnnxGather)
uses_onnx2torch(__name__, ("Shape",), OnnxShape)
uses_onnx2torch(__name__, ("Identity",), OnnxCopyIdentity)


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


@translates(OnnxFlatten, nn.Flatten)
def _flatten(ctx: NodeContext) -> str:
    module = ctx.module
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


@translates(OnnxShape)
def _shape(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxShape)
    x = ctx.args[0]
    start, end = module._start, module._end
    dims = f"{x}.shape"
    if start or end is not None:
        dims += f"[{start or ''}:{'' if end is None else end}]"
    return f"torch.tensor({dims}, device={x}.device)"


@translates(operator.getitem)  # type: ignore[arg-type]
def _getitem(ctx: NodeContext) -> str:
    return f"{ctx.args[0]}[{ctx.args[1]}]"
