"""Pooling: ONNX ``MaxPool`` and ``AveragePool``.

Converters: ours for ``MaxPool`` (:func:`convert_max_pool`): ``nn.MaxPool*d``, padding
included when it is symmetric and at most half the (dilated) kernel (torch's limit), else an
``nn.Sequential(pad with -inf, pool)`` that ``codegen/simplify.py`` splits into ``F.pad`` and
the pool; ``auto_pad`` SAME_UPPER/SAME_LOWER becomes those pads at import
(:func:`same_pads`, from the input's static spatial sizes; NotImplementedError when a
stride above 1 needs a size unknown at import).  With the ``Indices`` output:
:class:`MaxPoolWithIndices`, calling the helper ``max_pool_with_indices`` (torch counts
indices within each (n, c) plane, ONNX over the whole tensor, column-major for
``storage_order=1``).  Ours for
``AveragePool`` (:func:`convert_average_pool`): ``nn.AvgPool*d`` where torch computes what
ONNX does (symmetric padding at most half the kernel, no dilation, no ``ceil_mode`` over
padding), else :class:`AveragePool`, which pads, sums each window with a depthwise
convolution of ones and divides by the count of the elements ONNX counts
(``count_include_pad``: the padding or not; never what ``ceil_mode`` adds).  That covers
Keras ``AveragePooling2D(padding="same")`` (tf2onnx: asymmetric pads, padding not counted),
``auto_pad`` SAME_* and ``dilations`` (opset 19), which onnx2torch refuses or ignores.

Code forms: ``F.max_pool2d(x, kernel, stride=...)`` and ``F.avg_pool2d(...)``, defaults
left out; :class:`AveragePool` calls the helper ``average_pool(x, ...)`` written into
``model.py`` (the same source its ``forward`` runs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from onnx2torch.node_converters.pad import OnnxPadStatic
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    override_converter,
    register_helper,
    translates,
)

_AVERAGE_POOL_SOURCE = '''
def average_pool(
    x: torch.Tensor,
    kernel_size: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...] | None = None,
    ceil_mode: bool = False,
    count_include_pad: bool = False,
) -> torch.Tensor:
    """ONNX AveragePool: the mean of each window of ``kernel_size`` (its elements
    ``dilation`` apart, every ``stride``) over ``x`` padded by ``padding`` (F.pad's order).
    The mean divides by the number of elements of ``x`` in the window, plus the padding's
    if ``count_include_pad``; a ``ceil_mode`` partial window at the end counts neither."""
    dims = len(kernel_size)
    dilation = dilation or (1,) * dims
    extra = []  # ceil_mode: room for a last partial window, unless it starts in the padding
    for j in range(dims if ceil_mode else 0):  # F.pad's order: the last dim first
        i = dims - 1 - j
        size, before, after = x.shape[2 + i], padding[2 * j], padding[2 * j + 1]
        span = size + before + after - (kernel_size[i] - 1) * dilation[i] - 1
        windows = -(-span // stride[i]) + 1
        if (windows - 1) * stride[i] >= size + before:
            windows -= 1
        extra += [0, max((windows - 1) * stride[i] - span, 0)]
    conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    ones = torch.ones(1, 1, *kernel_size, dtype=x.dtype, device=x.device)
    channels = x.shape[1]
    padded = F.pad(x, padding)
    counted = F.pad(torch.ones_like(x[:1, :1]), padding, value=float(count_include_pad))
    if extra:
        padded, counted = F.pad(padded, extra), F.pad(counted, extra)
    sums = conv(padded, ones.expand(channels, *ones.shape[1:]), stride=stride,
                dilation=dilation, groups=channels)
    counts = conv(counted, ones, stride=stride, dilation=dilation)
    return sums / counts
'''
average_pool: Callable[..., torch.Tensor] = register_helper("average_pool", _AVERAGE_POOL_SOURCE)


class AveragePool(nn.Module):
    """ONNX AveragePool where torch's ``avg_pool`` differs: see :func:`average_pool`'s
    source above."""

    def __init__(
        self,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.dilation = tuple(dilation)
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The window means."""
        return average_pool(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            self.count_include_pad,
        )


_AVG_POOL_CLASSES: dict[int, type[nn.Module]] = {
    1: nn.AvgPool1d,
    2: nn.AvgPool2d,
    3: nn.AvgPool3d,
}


def input_spatial_sizes(node: OnnxNode, graph: OnnxGraph) -> list[int | None] | None:
    """The static sizes of the spatial dims of ``node``'s first input (NC... layout)."""
    info = graph.value_info.get(node.input_values[0])
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    return [
        d.dim_value if d.HasField("dim_value") else None
        for d in info.type.tensor_type.shape.dim[2:]
    ]


def same_pads(
    auto_pad: str,
    sizes: Sequence[int | None],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[int] | None:
    """ONNX pads (begins, then ends) of ``auto_pad`` SAME_UPPER/SAME_LOWER: the output is
    ``ceil(size / stride)``; None if that needs a size unknown at import."""
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        if size is None:
            if s != 1:
                return None
            total = (k - 1) * d  # stride 1: the output is as long as the input
        else:
            out = math.ceil(size / s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def explicit_pads(
    node: OnnxNode,
    graph: OnnxGraph,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[int]:
    """``node``'s ONNX pads (begins, then ends), ``auto_pad`` resolved; NotImplementedError
    for SAME_* with a stride above 1 over a spatial size unknown at import."""
    rank = len(kernel)
    auto_pad = node.attributes.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        sizes = input_spatial_sizes(node, graph) or [None] * rank
        pads = same_pads(auto_pad, sizes, kernel, strides, dilations)
        if pads is None:
            raise NotImplementedError(
                f"{node.operation_type} ({node.name}): auto_pad {auto_pad} with strides "
                f"{list(strides)} needs the input's spatial sizes known at import "
                f"(known: {sizes})"
            )
        return pads
    if auto_pad == "VALID":
        return [0] * 2 * rank
    return list(node.attributes.get("pads", [0] * 2 * rank))


@override_converter(
    "AveragePool",
    versions=(7, 10, 11),
    produces=(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, AveragePool),
)
def convert_average_pool(
    node: OnnxNode, graph: OnnxGraph, _fallback: TConverter | None
) -> OperationConverterResult:
    """AveragePool → ``nn.AvgPool{n}d`` when torch's is exact, else :class:`AveragePool`."""
    attributes = node.attributes
    kernel = list(attributes["kernel_shape"])
    rank = len(kernel)
    if rank not in _AVG_POOL_CLASSES:
        raise NotImplementedError(f"AveragePool with {rank} spatial dims")
    strides = list(attributes.get("strides", [1] * rank))
    dilations = list(attributes.get("dilations", [1] * rank))
    ceil_mode = bool(attributes.get("ceil_mode", 0))
    count_include_pad = bool(attributes.get("count_include_pad", 0))
    pads = explicit_pads(node, graph, kernel, strides, dilations)
    begins, ends = pads[:rank], pads[rank:]
    torch_exact = (
        begins == ends
        and all(p <= k // 2 for p, k in zip(begins, kernel, strict=True))
        and set(dilations) == {1}
        and not (ceil_mode and any(pads))
    )
    module: nn.Module
    if torch_exact:
        module = _AVG_POOL_CLASSES[rank](
            kernel_size=kernel,
            stride=strides,
            padding=begins,
            ceil_mode=ceil_mode,
            count_include_pad=count_include_pad,
        )
    else:
        torch_padding = [p for b, e in zip(begins[::-1], ends[::-1], strict=True) for p in (b, e)]
        module = AveragePool(
            kernel, strides, torch_padding, dilations, ceil_mode, count_include_pad
        )
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


def _tuple_or_int(values: Sequence[int]) -> str:
    return literals.int_or_tuple(list(values))


def _pool_args(module: nn.Module, names: Sequence[str], defaults: dict[str, Any]) -> str:
    parts = []
    for name in names:
        value = getattr(module, name)
        if name == "stride" and value == module.kernel_size:
            continue
        value = list(value) if isinstance(value, list | tuple) else value
        if value == defaults.get(name) or (
            isinstance(value, list) and set(value) == {defaults.get(name)}
        ):
            continue
        text = _tuple_or_int(value) if isinstance(value, list) else literals.number(value)
        parts.append(f"{name}={text}")
    return "".join(f", {p}" for p in parts)


_MAX_POOL_CLASSES: dict[int, type[nn.MaxPool1d | nn.MaxPool2d | nn.MaxPool3d]] = {
    1: nn.MaxPool1d,
    2: nn.MaxPool2d,
    3: nn.MaxPool3d,
}

_MAX_POOL_WITH_INDICES_SOURCE = '''
def max_pool_with_indices(
    x: torch.Tensor,
    kernel_size: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    ceil_mode: bool = False,
    storage_order: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ONNX MaxPool with its Indices output.  torch's indices count within each (n, c)
    plane; ONNX's over the whole tensor, and column-major for ``storage_order=1`` (2-D)."""
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[len(kernel_size) - 1]
    values, indices = pool(
        x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True
    )
    if storage_order == 1:
        height, width = x.shape[2], x.shape[3]
        indices = (indices % width) * height + indices // width
    plane = x.shape[2:].numel()
    planes = torch.arange(x.shape[0] * x.shape[1], device=x.device)
    offsets = planes.reshape(x.shape[0], x.shape[1], *[1] * len(kernel_size)) * plane
    return values, indices + offsets
'''
max_pool_with_indices: Callable[..., tuple[torch.Tensor, torch.Tensor]] = register_helper(
    "max_pool_with_indices", _MAX_POOL_WITH_INDICES_SOURCE
)


class MaxPoolWithIndices(nn.Module):
    """ONNX MaxPool with its ``Indices`` output: see :func:`max_pool_with_indices`."""

    def __init__(
        self,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        padding: Sequence[int],
        dilation: Sequence[int],
        ceil_mode: bool,
        storage_order: int,
    ) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.stride = tuple(stride)
        self.padding = tuple(padding)
        self.dilation = tuple(dilation)
        self.ceil_mode = ceil_mode
        self.storage_order = storage_order

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The window maxima and their ONNX indices."""
        return max_pool_with_indices(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            self.storage_order,
        )


@override_converter(
    "MaxPool",
    versions=(8, 10, 11, 12),
    produces=(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Sequential, MaxPoolWithIndices),
)
def convert_max_pool(
    node: OnnxNode, graph: OnnxGraph, _fallback: TConverter | None
) -> OperationConverterResult:
    """MaxPool → ``nn.MaxPool{n}d``, after an ``F.pad`` with -inf where torch's own padding
    cannot say it; :class:`MaxPoolWithIndices` when ``Indices`` is an output."""
    attributes = node.attributes
    kernel = list(attributes["kernel_shape"])
    rank = len(kernel)
    if rank not in _MAX_POOL_CLASSES:
        raise NotImplementedError(f"MaxPool ({node.name}) with {rank} spatial dims")
    strides = list(attributes.get("strides", [1] * rank))
    dilations = list(attributes.get("dilations", [1] * rank))
    ceil_mode = bool(attributes.get("ceil_mode", 0))
    storage_order = int(attributes.get("storage_order", 0))
    pads = explicit_pads(node, graph, kernel, strides, dilations)
    begins, ends = pads[:rank], pads[rank:]
    # torch pads symmetrically, at most half the dilated kernel.
    native = begins == ends and all(
        2 * p <= (k - 1) * d + 1 for p, k, d in zip(begins, kernel, dilations, strict=True)
    )
    with_indices = len([o for o in node.output_values if o]) > 1
    module: nn.Module
    if with_indices:
        if not native:
            raise NotImplementedError(
                f"MaxPool ({node.name}): Indices with pads {pads} torch cannot apply itself"
            )
        if storage_order and rank != 2:
            raise NotImplementedError(f"MaxPool ({node.name}): storage_order=1 in {rank}-D")
        module = MaxPoolWithIndices(kernel, strides, begins, dilations, ceil_mode, storage_order)
    else:
        module = _MAX_POOL_CLASSES[rank](
            kernel_size=tuple(kernel),
            stride=tuple(strides),
            padding=tuple(begins) if native else 0,
            dilation=tuple(dilations),
            ceil_mode=ceil_mode,
        )
        if not native:
            pad = OnnxPadStatic.create_from_onnx_params(
                onnx_pads=pads, constant_value=float("-inf")
            )
            module = nn.Sequential(pad, module)
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


@translates(MaxPoolWithIndices)
def _max_pool_with_indices(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, MaxPoolWithIndices)
    text = (
        f"{ctx.helper('max_pool_with_indices')}({ctx.args[0]}, "
        f"{literals.ints(module.kernel_size)}, {literals.ints(module.stride)}, "
        f"{literals.ints(module.padding)}, {literals.ints(module.dilation)}"
    )
    if module.ceil_mode:
        text += ", ceil_mode=True"
    if module.storage_order:
        text += f", storage_order={module.storage_order}"
    return text + ")"


@translates(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
def _max_pool(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.MaxPool1d | nn.MaxPool2d | nn.MaxPool3d)
    spatial = type(module).__name__[-2:].lower()
    kernel = module.kernel_size
    kernel_text = _tuple_or_int(list(kernel)) if isinstance(kernel, list | tuple) else kernel
    extra = _pool_args(
        module,
        ["stride", "padding", "dilation", "ceil_mode"],
        {"padding": 0, "dilation": 1, "ceil_mode": False},
    )
    return f"F.max_pool{spatial}({ctx.args[0]}, {kernel_text}{extra})"


@translates(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
def _avg_pool(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, nn.AvgPool1d | nn.AvgPool2d | nn.AvgPool3d)
    spatial = type(module).__name__[-2:].lower()
    kernel = module.kernel_size
    kernel_text = _tuple_or_int(list(kernel)) if isinstance(kernel, list | tuple) else kernel
    extra = _pool_args(
        module,
        ["stride", "padding", "ceil_mode", "count_include_pad"],
        {"padding": 0, "ceil_mode": False, "count_include_pad": True},
    )
    return f"F.avg_pool{spatial}({ctx.args[0]}, {kernel_text}{extra})"


@translates(AveragePool)
def _average_pool(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, AveragePool)
    text = (
        f"{ctx.helper('average_pool')}({ctx.args[0]}, {literals.ints(module.kernel_size)}, "
        f"stride={literals.ints(module.stride)}, padding={literals.ints(module.padding)}"
    )
    if set(module.dilation) != {1}:
        text += f", dilation={literals.ints(module.dilation)}"
    if module.ceil_mode:
        text += ", ceil_mode=True"
    if module.count_include_pad:
        text += ", count_include_pad=True"
    return text + ")"
