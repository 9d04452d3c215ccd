"""Modules with weights: ONNX ``Conv`` (and ``Gemm``'s ``nn.Linear``, whose op home is
:mod:`pipeline.to_torch.ops.arithmetic`).

Converters: onnx2torch's (``torch.nn`` modules holding the weights; asymmetric padding
makes an ``nn.Sequential(pad, conv)`` that ``codegen/simplify.py`` splits), behind ours for
``Conv`` (:func:`convert_conv`), which turns ``auto_pad`` SAME_UPPER/SAME_LOWER (refused by
onnx2torch) into the explicit pads they stand for, computed at import from the kernel,
strides, dilations and the input's static spatial sizes
(:func:`~pipeline.to_torch.ops.pooling.same_pads`; NotImplementedError when a stride above 1
needs a size unknown at import), then hands onnx2torch's converter the node with those pads.  Code
form: ``self.<path>(x)`` (:func:`~pipeline.to_torch.ops.registry.call_attribute`): the module
is an attribute of the generated class, built by ``codegen/modules.py``.  (``ConvTranspose``
lives in :mod:`pipeline.to_torch.ops.conv_transpose`, the normalizations in
:mod:`pipeline.to_torch.ops.normalization`.)  Also the
``torch.nn`` modules with weights our own passes make (``nn.Embedding``, ``nn.GroupNorm``,
``nn.PReLU``).

A ``Conv`` whose weight (or bias) is computed at run time rather than an initializer (Keras
``ConvLSTM*D``: the loop body splits and transposes the kernel it receives as a loop input)
is :class:`RunTimeWeightConv`: ``F.conv{1,2,3}d(x, weight, bias, ...)`` with the weight as
an input, so the Keras kernel stays the one ``nn.Parameter`` it came from and gradients flow
to it.  All of Conv's attributes: ``strides``, ``dilations``, ``group``, ``pads`` (asymmetric
ones become an ``F.pad`` before the convolution) and ``auto_pad`` (SAME_* resolved at import
as above, the kernel size from ``kernel_shape`` or the weight's inferred shape).  Code form:
``F.conv2d(x, w, b, stride=..., padding=...)``, defaults left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from onnx import helper
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.pooling import explicit_pads
from pipeline.to_torch.ops.registry import (
    NodeContext,
    UntranslatableError,
    call_attribute,
    override_converter,
    static_dims,
    translates,
    use_fallback,
)

_CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class RunTimeWeightConv(nn.Module):
    """ONNX ``Conv`` whose weight (and bias) are inputs: ``forward(x, weight, bias=None)``.

    ``pad`` (``F.pad``'s order: the last dim first) is applied before the convolution when
    ONNX's pads are not symmetric; otherwise ``padding`` is torch's own.  ``stride``,
    ``padding`` and ``dilation`` are an int (every dim alike) or one value per spatial dim.
    """

    def __init__(
        self,
        stride: int | tuple[int, ...],
        padding: int | tuple[int, ...],
        dilation: int | tuple[int, ...],
        groups: int,
        pad: tuple[int, ...] | None,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.pad = pad

    def extra_repr(self) -> str:
        return (
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, pad={self.pad}"
        )

    def forward(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The convolution of ``x`` by ``weight`` (ONNX layout ``(out, in / group, *k)``)."""
        conv = _CONV_FUNCTIONS.get(weight.dim() - 2)
        if conv is None:
            raise NotImplementedError(f"Conv with {weight.dim() - 2} spatial dims")
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return conv(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


def _compact(values: Sequence[int]) -> int | tuple[int, ...]:
    """``1`` for ``[1, 1]``: one int when every spatial dim has the same value."""
    return int(values[0]) if len(set(values)) == 1 else tuple(int(v) for v in values)


def _weight_kernel(node: OnnxNode, graph: OnnxGraph) -> list[int] | None:
    """The kernel's spatial sizes from ``kernel_shape`` or the weight's inferred shape."""
    kernel = node.attributes.get("kernel_shape")
    if kernel is not None:
        return list(kernel)
    return static_dims(graph, node.input_values[1], 2)


def convert_run_time_weight_conv(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Conv with a weight or bias that is not an initializer → :class:`RunTimeWeightConv`."""
    attributes = node.attributes
    auto_pad = attributes.get("auto_pad", "NOTSET")
    strides: list[int] = list(attributes.get("strides", []))
    dilations: list[int] = list(attributes.get("dilations", []))
    pads: list[int] = []
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        kernel = _weight_kernel(node, graph)
        if kernel is None:
            raise NotImplementedError(
                f"Conv ({node.name}): auto_pad {auto_pad} with a run-time weight of unknown "
                "kernel size (give the node kernel_shape)"
            )
        ones = [1] * len(kernel)
        pads = explicit_pads(node, graph, kernel, strides or ones, dilations or ones)
    elif auto_pad != "VALID":
        pads = list(attributes.get("pads", []))
    rank = len(pads) // 2
    begins, ends = pads[:rank], pads[rank:]
    padding: int | tuple[int, ...] = 0
    pad: tuple[int, ...] | None = None
    if begins == ends:
        padding = _compact(begins) if begins else 0
    else:  # F.pad's order: the last spatial dim first, (begin, end) each
        pad = tuple(p for b, e in zip(begins[::-1], ends[::-1], strict=True) for p in (b, e))
    module = RunTimeWeightConv(
        stride=_compact(strides) if strides else 1,
        padding=padding,
        dilation=_compact(dilations) if dilations else 1,
        groups=int(attributes.get("group", 1)),
        pad=pad,
    )
    inputs = tuple(name for name in node.input_values if name)
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=inputs, outputs=node.output_values),
    )


@override_converter(
    "Conv",
    versions=(1, 11),
    produces=(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Sequential, RunTimeWeightConv),
)
def convert_conv(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Conv → onnx2torch's converter, ``auto_pad`` SAME_* first made explicit ``pads``;
    a weight or bias computed at run time → :class:`RunTimeWeightConv`."""
    if any(name and name not in graph.initializers for name in node.input_values[1:3]):
        return convert_run_time_weight_conv(node, graph)
    auto_pad = node.attributes.get("auto_pad", "NOTSET")
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return use_fallback(fallback, node, graph, "no converter")
    weight = graph.initializers.get(node.input_values[1])
    kernel = node.attributes.get("kernel_shape")
    if kernel is None and weight is None:
        raise NotImplementedError(f"Conv ({node.name}): {auto_pad} with a run-time weight")
    kernel = list(kernel if kernel is not None else weight.proto.dims[2:])
    rank = len(kernel)
    strides = list(node.attributes.get("strides", [1] * rank))
    dilations = list(node.attributes.get("dilations", [1] * rank))
    pads = explicit_pads(node, graph, kernel, strides, dilations)
    proto = helper.make_node(
        node.proto.op_type, node.proto.input, node.proto.output, name=node.proto.name
    )
    proto.attribute.extend(a for a in node.proto.attribute if a.name not in ("auto_pad", "pads"))
    proto.attribute.append(helper.make_attribute("pads", pads))
    return use_fallback(fallback, OnnxNode(proto, node.unique_name), graph, "no converter")


translates(
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.GroupNorm,
    nn.Embedding,
    nn.PReLU,
)(call_attribute)


@translates(RunTimeWeightConv)
def _run_time_weight_conv(ctx: NodeContext) -> str:
    """``F.conv2d(x, w, b, stride=2, padding=1)``; ``x`` first padded by ``F.pad`` when the
    padding is not symmetric."""
    module = ctx.module
    assert isinstance(module, RunTimeWeightConv)
    meta = ctx.metas[1] if len(ctx.metas) > 1 else None
    if meta is None or len(meta.shape) - 2 not in _CONV_FUNCTIONS:
        raise UntranslatableError("RunTimeWeightConv (the weight's rank is unknown)")
    x = ctx.args[0]
    if module.pad is not None:
        x = f"F.pad({x}, {literals.ints(module.pad)})"
    parts = [x, *ctx.args[1:]]
    for name, value, default in (
        ("stride", module.stride, 1),
        ("padding", module.padding, 0),
        ("dilation", module.dilation, 1),
        ("groups", module.groups, 1),
    ):
        if value != default:
            parts.append(f"{name}={literals.int_or_tuple(value)}")
    return f"F.conv{len(meta.shape) - 2}d({', '.join(parts)})"
