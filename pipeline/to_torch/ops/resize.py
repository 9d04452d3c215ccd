"""ONNX ``Resize`` (11, 13).

Converter: ours (:func:`convert_resize`): scales that are constants or sizes known at import
make a :class:`StaticResize`; otherwise onnx2torch's ``OnnxResize``.  Code form:
``F.interpolate(x, size=... | scale_factor=..., mode=..., align_corners=...)``.

Attribute handling (modes, warnings about coordinate transforms) stays onnx2torch's: we call
its converter and reuse the mode and ``align_corners`` it chose.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.node_converters.resize import OnnxResize, _onnx_mode_to_torch_mode
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    translates,
    use_fallback,
)
from pipeline.to_torch.ops.shape_values import Expr, ShapeArgs, known_int_value


class StaticResize(ShapeArgs):
    """``F.interpolate`` over the spatial dims with fixed scales or (symbolic) sizes."""

    def __init__(
        self,
        onnx_mode: str,
        align_corners: bool | None,
        scales: Sequence[float] | None,
        sizes: Sequence[Expr] | None,
    ) -> None:
        super().__init__(sizes or ())
        self.onnx_mode = onnx_mode
        self.align_corners = align_corners
        self.scales = list(scales) if scales is not None else None
        self.sizes = tuple(sizes) if sizes is not None else None

    def forward(self, input_tensor: torch.Tensor, *sources: torch.Tensor) -> torch.Tensor:
        """Resize the dims after (batch, channel); ``sources`` feed symbolic sizes."""
        return torch.nn.functional.interpolate(
            input_tensor,
            size=self.resolve(self.sizes, sources) if self.sizes is not None else None,
            scale_factor=self.scales,
            mode=_onnx_mode_to_torch_mode(self.onnx_mode, input_tensor.dim() - 2),
            align_corners=self.align_corners,
        )


def _const_floats(graph: OnnxGraph, name: str) -> list[float] | None:
    if not name:
        return None
    try:
        value = get_const_value(name, graph)
    except KeyError:
        return None
    return (
        [float(v) for v in value.reshape(-1).tolist()] if isinstance(value, torch.Tensor) else None
    )


@override_converter("Resize", versions=(11, 13), produces=(StaticResize, OnnxResize))
def convert_resize(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Resize → :class:`StaticResize` when scales are constants or sizes are known."""
    reference = use_fallback(fallback, node, graph, "no converter")
    names = [*node.input_values, "", "", ""]
    scales = _const_floats(graph, names[2])
    sizes = known_int_value(graph, names[3]) if names[3] else None
    resize = reference.torch_module
    if not isinstance(resize, OnnxResize) or not resize.ignore_roi:
        return reference
    if scales and sizes is None:
        if scales[:2] != [1.0, 1.0]:
            raise NotImplementedError("Resize: torch cannot scale the batch or channel dims")
        module = StaticResize(resize.onnx_mode, resize.align_corners, scales[2:], None)
    elif sizes is not None and not scales:
        module = StaticResize(resize.onnx_mode, resize.align_corners, None, sizes.elems[2:])
    else:
        return reference
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(names[0], *module.sources), outputs=node.output_values),
    )


@translates(StaticResize)
def _resize(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticResize)
    x = ctx.args[0]
    mode = _onnx_mode_to_torch_mode(module.onnx_mode, ctx.rank() - 2)
    if module.sizes is not None:
        size = f"size=({', '.join(ctx.shape_args(module.sizes))},)"
    else:
        assert module.scales is not None
        size = f"scale_factor=({', '.join(literals.number(s) for s in module.scales)},)"
    corners = f", align_corners={module.align_corners}" if module.align_corners is not None else ""
    return f'F.interpolate({x}, {size}, mode="{mode}"{corners})'
