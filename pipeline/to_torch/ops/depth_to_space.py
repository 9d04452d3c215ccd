"""ONNX ``DepthToSpace`` (11, 13).

Converter: ours (:func:`convert_depth_to_space`): mode CRD is onnx2torch's
``OnnxDepthToSpace`` (``torch.pixel_shuffle``); mode DCR (the default, and what tf2onnx
writes for ``tf.nn.depth_to_space``), which onnx2torch refuses, is :class:`DepthToSpaceDCR`.

Code forms: ``F.pixel_shuffle(x, 2)`` for CRD; for DCR the channels split as (block row,
block column, channel), moved next to the rows and columns they fill:
``x.unflatten(1, (2, 2, -1)).permute(0, 3, 4, 1, 5, 2).flatten(4, 5).flatten(2, 3)``.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.depth_to_space import OnnxDepthToSpace
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.ops.registry import NodeContext, override_converter, translates


class DepthToSpaceDCR(nn.Module):
    """ONNX DepthToSpace, mode DCR: channel ``(i * b + j) * C + c`` goes to channel ``c``,
    row offset ``i``, column offset ``j`` of each ``b x b`` block."""

    def __init__(self, blocksize: int) -> None:
        super().__init__()
        self.blocksize = blocksize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, b*b*C, H, W) → (N, C, H*b, W*b)."""
        b = self.blocksize
        return x.unflatten(1, (b, b, -1)).permute(0, 3, 4, 1, 5, 2).flatten(4, 5).flatten(2, 3)


@override_converter("DepthToSpace", versions=(11, 13), produces=(OnnxDepthToSpace, DepthToSpaceDCR))
def convert_depth_to_space(
    node: OnnxNode, graph: OnnxGraph, _fallback: TConverter | None
) -> OperationConverterResult:
    """DepthToSpace → ``OnnxDepthToSpace`` (CRD) or :class:`DepthToSpaceDCR`."""
    del graph
    blocksize = int(node.attributes["blocksize"])
    mode = node.attributes.get("mode", "DCR")
    module: nn.Module
    if mode == "CRD":
        module = OnnxDepthToSpace(blocksize=blocksize)
    elif mode == "DCR":
        module = DepthToSpaceDCR(blocksize)
    else:
        raise NotImplementedError(f"DepthToSpace ({node.name}): mode {mode!r}")
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


@translates(OnnxDepthToSpace)
def _depth_to_space_crd(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxDepthToSpace)
    return f"F.pixel_shuffle({ctx.args[0]}, {module._upscale_factor})"


@translates(DepthToSpaceDCR)
def _depth_to_space_dcr(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, DepthToSpaceDCR)
    b = module.blocksize
    return (
        f"{ctx.args[0]}.unflatten(1, ({b}, {b}, -1)).permute(0, 3, 4, 1, 5, 2)"
        ".flatten(4, 5).flatten(2, 3)"
    )
