"""ONNX ``ConvTranspose`` (1, 11).

Converter: ours (:func:`convert_conv_transpose`), because onnx2torch's refuses asymmetric
padding (Keras ``Conv2DTranspose(padding="same", strides=2)``: tf2onnx writes pads like
``[0, 0, 1, 1]``), ``auto_pad`` SAME and ignores ``output_shape``.  It builds an
``nn.ConvTranspose{1,2,3}d`` holding ONNX's ``W`` (and ``B``) unchanged, with the symmetric
part of the padding as torch's ``padding``; what is left is cut off after it by a
:class:`CropOutput` (an ``nn.Sequential(conv, crop)``, which ``codegen/simplify.py`` splits
into the convolution at the Sequential's path and a slicing statement).  An output larger
than the full transposed convolution (``output_shape``, ``output_padding``) is torch's
``output_padding`` (it computes the extra rows: the bias).

Code forms: ``self.<path>(x)`` for the convolution (built by ``codegen/modules.py``), and
basic slicing ``y[:, :, :-1, :-1]`` for :class:`CropOutput`.

Pads: ONNX gives ``output = stride * (in - 1) + output_padding + (k - 1) * dilation + 1 -
pads_begin - pads_end``.  With ``output_shape`` (or ``auto_pad`` SAME_*), the total padding
is split as ONNX's spec says (SAME_UPPER puts the odd one at the end, otherwise at the
beginning); ``output_shape`` needs the input's spatial sizes known at import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.ops.registry import (
    NodeContext,
    call_attribute,
    override_converter,
    static_dims,
    translates,
)

_CLASSES: dict[int, Callable[..., nn.modules.conv._ConvTransposeNd]] = {
    1: nn.ConvTranspose1d,
    2: nn.ConvTranspose2d,
    3: nn.ConvTranspose3d,
}


class CropOutput(nn.Module):
    """Cut ``begin[i]`` elements off the start and ``end[i]`` off the end of spatial dim
    ``i`` (dims after batch and channel)."""

    def __init__(self, begin: Sequence[int], end: Sequence[int]) -> None:
        super().__init__()
        self.begin = list(begin)
        self.end = list(end)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the borders cut off."""
        return x[_crop_index(self.begin, self.end)]

    def extra_repr(self) -> str:
        return f"begin={self.begin}, end={self.end}"


def _crop_index(begin: Sequence[int], end: Sequence[int]) -> tuple[slice, ...]:
    crops = [slice(b or None, -e if e else None) for b, e in zip(begin, end, strict=True)]
    return (slice(None), slice(None), *crops)


def _split(total: int, upper: bool) -> tuple[int, int]:
    """ONNX's split of a total padding into (begin, end)."""
    return (total // 2, total - total // 2) if upper else (total - total // 2, total // 2)


def onnx_pads(
    node: OnnxNode, graph: OnnxGraph, kernel: Sequence[int]
) -> tuple[list[int], list[int]]:
    """(begin, end) padding per spatial dim, from ``pads``, ``auto_pad`` or ``output_shape``
    (negative: the output is longer than the full transposed convolution there)."""
    attributes = node.attributes
    rank = len(kernel)
    strides = list(attributes.get("strides", [1] * rank))
    dilations = list(attributes.get("dilations", [1] * rank))
    output_padding = list(attributes.get("output_padding", [0] * rank))
    auto_pad = attributes.get("auto_pad", "NOTSET")
    full_minus_input = [  # full length - stride * input length (independent of the input)
        -s + p + (k - 1) * d + 1
        for s, p, k, d in zip(strides, output_padding, kernel, dilations, strict=True)
    ]
    output_shape = attributes.get("output_shape")
    if output_shape is not None:
        sizes = static_dims(graph, node.input_values[0], 2)
        if sizes is None:
            raise NotImplementedError(
                f"ConvTranspose ({node.name}): output_shape with input sizes unknown at import"
            )
        totals = [
            s * n + extra - out
            for s, n, extra, out in zip(
                strides, sizes, full_minus_input, list(output_shape)[-rank:], strict=True
            )
        ]
        pairs = [_split(t, auto_pad == "SAME_UPPER") for t in totals]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        # Output length stride * input: total padding is the full length minus that.
        pairs = [_split(t, auto_pad == "SAME_UPPER") for t in full_minus_input]
    elif auto_pad == "VALID":
        pairs = [(0, 0)] * rank
    else:
        pads = list(attributes.get("pads", [0] * 2 * rank))
        pairs = list(zip(pads[:rank], pads[rank:], strict=True))
    return [b for b, _ in pairs], [e for _, e in pairs]


@override_converter(
    "ConvTranspose",
    versions=(1, 11),
    produces=(
        nn.ConvTranspose1d,
        nn.ConvTranspose2d,
        nn.ConvTranspose3d,
        nn.Sequential,
        CropOutput,
    ),
)
def convert_conv_transpose(
    node: OnnxNode, graph: OnnxGraph, _fallback: TConverter | None
) -> OperationConverterResult:
    """ConvTranspose → ``nn.ConvTranspose{n}d``, then a :class:`CropOutput` if the padding
    is not symmetric."""
    names = [*node.input_values, "", ""]
    try:
        weight = graph.initializers[names[1]].to_torch()
        bias = graph.initializers[names[2]].to_torch() if names[2] else None
    except KeyError as exc:
        raise NotImplementedError(
            f"ConvTranspose ({node.name}): weights computed at run time ({exc})"
        ) from exc
    attributes = node.attributes
    kernel = list(attributes.get("kernel_shape", weight.shape[2:]))
    rank = len(kernel)
    if rank not in _CLASSES:
        raise NotImplementedError(f"ConvTranspose with {rank} spatial dims")
    strides = list(attributes.get("strides", [1] * rank))
    dilations = list(attributes.get("dilations", [1] * rank))
    output_padding = list(attributes.get("output_padding", [0] * rank))
    begin, end = onnx_pads(node, graph, kernel)
    if any(b < 0 for b in begin):
        raise NotImplementedError(
            f"ConvTranspose ({node.name}): output extended before the start ({begin})"
        )
    padding = [max(0, min(b, e)) for b, e in zip(begin, end, strict=True)]
    # An output longer than the full convolution at the end: torch's output_padding.
    torch_output_padding = [p + max(0, -e) for p, e in zip(output_padding, end, strict=True)]
    for q, s, d in zip(torch_output_padding, strides, dilations, strict=True):
        if q >= max(s, d):
            raise NotImplementedError(
                f"ConvTranspose ({node.name}): output padding {q} not below stride {s} "
                f"or dilation {d}"
            )
    groups = int(attributes.get("group", 1))
    conv = _CLASSES[rank](
        in_channels=weight.shape[0],
        out_channels=weight.shape[1] * groups,
        kernel_size=kernel,
        stride=strides,
        padding=padding,
        output_padding=torch_output_padding,
        groups=groups,
        bias=bias is not None,
        dilation=dilations,
    )
    with torch.no_grad():
        conv.weight.data = weight
        if bias is not None:
            assert conv.bias is not None
            conv.bias.data = bias
    crop_begin = [b - p for b, p in zip(begin, padding, strict=True)]
    crop_end = [max(0, e) - p for e, p in zip(end, padding, strict=True)]
    module: nn.Module = conv
    if any(crop_begin) or any(crop_end):
        module = nn.Sequential(conv, CropOutput(crop_begin, crop_end))
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(names[0],), outputs=node.output_values),
    )


translates(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)(call_attribute)


@translates(CropOutput)
def _crop(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, CropOutput)
    parts = [":", ":"]
    for b, e in zip(module.begin, module.end, strict=True):
        parts.append(f"{b or ''}:{-e if e else ''}")
    while parts[-1] == ":":
        parts.pop()
    return f"{ctx.args[0]}[{', '.join(parts)}]"
