"""ONNX ``Pad`` (11, 13, 18, 19, 21: pads as an input).

Converter: ours (:func:`convert_pad`): pads and constant value known at import make
onnx2torch's ``OnnxPadStatic``; constant-mode pads computed from run-time sizes (``tf.pad``
by ``length - n``, PaliGemma's response mask) make :class:`ShapePad`, which reads them from
``x.shape``; otherwise onnx2torch's ``OnnxPadDynamic``.  Code form of both (``OnnxPadStatic``
is also the padding onnx2torch puts before an asymmetric conv or pool):
``F.pad(x, pads, mode=..., value=...)``, the pads in torch's order (last axis first).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.node_converters.pad import OnnxPadDynamic, OnnxPadStatic
from onnx2torch.node_converters.registry import TConverter
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
from pipeline.to_torch.ops.shape_values import Expr, ShapeArgs, known_int_value, known_ints


def torch_order(pads: list[Expr]) -> list[Expr]:
    """ONNX ``[b0, b1, ..., a0, a1, ...]`` as ``F.pad``'s ``[b_last, a_last, ..., b0, a0]``."""
    n = len(pads) // 2
    return [p for axis in reversed(range(n)) for p in (pads[axis], pads[axis + n])]


class ShapePad(ShapeArgs):
    """Constant padding whose sizes are expressions over input dims."""

    def __init__(self, pads: list[Expr], value: float) -> None:
        super().__init__(pads)
        self.pads = pads
        self.value = value

    def forward(self, x: torch.Tensor, *sources: torch.Tensor) -> torch.Tensor:
        """``x`` padded; ``sources`` are the tensors the pads read dims from."""
        pads = torch_order(self.resolve(self.pads, sources))
        return F.pad(x, pads, value=self.value)  # type: ignore[arg-type]


@override_converter(
    "Pad", versions=(11, 13, 18, 19, 21), produces=(OnnxPadStatic, ShapePad, OnnxPadDynamic)
)
def convert_pad(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Pad → onnx2torch's ``OnnxPadStatic`` when pads and the fill value are constants."""
    names = [*node.input_values, "", "", ""]
    pads = known_ints(graph, names[1])
    try:
        value = float(get_const_value(names[2], graph)) if names[2] else 0.0
    except KeyError:
        return use_fallback(fallback, node, graph, "pad value computed from tensor data")
    shaped = known_int_value(graph, names[1])
    mode = node.attributes.get("mode", "constant")
    dynamic = pads is None and shaped is not None and shaped.rows is None and not names[3]
    if dynamic and shaped is not None and mode == "constant" and not shaped.is_float:
        module = ShapePad(list(shaped.elems), value)
        return OperationConverterResult(
            torch_module=module,
            onnx_mapping=OnnxMapping(
                inputs=(names[0], *module.sources), outputs=node.output_values
            ),
        )
    if pads is None or names[3]:
        return use_fallback(fallback, node, graph, "pads computed from tensor data, or axes")
    module = OnnxPadStatic.create_from_onnx_params(
        onnx_pads=pads, onnx_mode=node.attributes.get("mode", "constant"), constant_value=value
    )
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(names[0],), outputs=node.output_values),
    )


@translates(OnnxPadStatic)
def _pad(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxPadStatic)
    pads = list(module.pads)
    while len(pads) > 2 and pads[-2:] == [0, 0]:
        pads = pads[:-2]
    args = f"{ctx.args[0]}, {literals.ints(pads)}"
    if module.mode != "constant":
        return f'F.pad({args}, mode="{module.mode}")'
    if module.constant_value:
        return f"F.pad({args}, value={literals.number(module.constant_value)})"
    return f"F.pad({args})"


@translates(ShapePad)
def _shape_pad(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, ShapePad)
    pads = torch_order(list(ctx.shape_args(module.pads)))  # type: ignore[arg-type]
    while len(pads) > 2 and pads[-2:] == ["0", "0"]:
        pads = pads[:-2]
    value = f", value={literals.number(module.value)}" if module.value else ""
    return f"F.pad({ctx.args[0]}, [{', '.join(str(p) for p in pads)}]{value})"
