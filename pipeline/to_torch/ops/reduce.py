"""ONNX ``ReduceSum``, ``ReduceMean``, ``ReduceMax``, ``ReduceMin``, ``ReduceProd``,
``ReduceL1``, ``ReduceL2``, ``ReduceLogSum``, ``ReduceLogSumExp``, ``ReduceSumSquare``.

Converter: ours (:func:`convert_reduce`) where the axes are an input (ReduceSum 13+, the
others 18+) known at import: onnx2torch's ``OnnxReduceStaticAxes`` (or ``nn.Identity`` for
``noop_with_empty_axes``); otherwise onnx2torch's.  Earlier versions (axes an
attribute): ours too (:func:`convert_reduce_axes_attribute`, axes made non-negative), else
onnx2torch's (``OnnxReduceStaticAxes``, ``OnnxReduceSumStaticAxes``).
Code form: ``x.sum(dim=..., keepdim=...)`` and its kin; ``ReduceProd`` over several axes
(torch's ``prod`` takes one) is a chain ``x.prod(dim=2).prod(dim=1)``, over all of them
without ``keepdims`` ``x.prod()``.

ONNX keeps the input's type; torch sums and multiplies small integers into int64.  A
``ReduceSum``/``ReduceProd``/``ReduceSumSquare`` of an integer input narrower than int64 (a
count of int32 mask entries, Keras ``Discretization``) is an :class:`IntegerReduce`, code form
the same reduction then ``.to(torch.int32)``.

``ReduceMax``/``ReduceMin`` over an empty set: ONNX gives the type's lowest (highest) value,
-inf (+inf) for floats, False (True) for bool; torch's ``amax``/``amin`` raise.  When a
reduced dim is 0 in the input's static shape at import, the converter makes
:class:`ReduceEmpty`, code form ``x.new_full((x.shape[0], 1), -float("inf"))`` (the kept
sizes read from ``x.shape``; exportable).  A reduced dim unknown at import keeps the plain
``x.amax(...)``: guarding every max over a dynamic dim would make the common code unreadable
for a case Keras models do not produce, and torch fails loudly (IndexError), not silently,
if such a dim turns out empty at run time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from onnx import TensorProto, helper
from onnx2torch.node_converters.reduce import (
    OnnxReduceStaticAxes,
    OnnxReduceSumDynamicAxes,
    OnnxReduceSumStaticAxes,
)
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult
from torch import nn

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    UntranslatableError,
    dim_arg,
    override_converter,
    translates,
    use_fallback,
)
from pipeline.to_torch.ops.shape_values import elem_type, known_ints, static_dims


class IntegerReduce(OnnxReduceStaticAxes):
    """onnx2torch's static-axes reduction, cast back to the input's integer ``dtype`` (torch's
    ``sum``/``prod`` of an int32 tensor is int64; ONNX's is int32)."""

    def __init__(
        self, operation_type: str, axes: list[int] | None, keepdims: int, dtype: torch.dtype
    ) -> None:
        super().__init__(operation_type=operation_type, axes=axes, keepdims=keepdims)
        self.dtype = dtype

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        """The reduction, in ``dtype``."""
        return super().forward(input_tensor).to(self.dtype)


_WIDENED_BY_TORCH = {"ReduceSum", "ReduceProd", "ReduceSumSquare"}
_NARROW_INTEGERS: dict[int, torch.dtype] = {
    TensorProto.INT8: torch.int8,
    TensorProto.INT16: torch.int16,
    TensorProto.INT32: torch.int32,
    TensorProto.UINT8: torch.uint8,
}


class ReduceEmpty(nn.Module):
    """ReduceMax/ReduceMin over an empty set: ``fill`` (the type's lowest or highest value)
    in the shape the reduction would have."""

    def __init__(self, axes: Sequence[int], keepdims: bool, fill: bool | int | float) -> None:
        super().__init__()
        self.axes = tuple(axes)
        self.keepdims = keepdims
        self.fill = fill

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A tensor of ``fill`` of ``x``'s dtype."""
        shape = [1 if i in self.axes else n for i, n in enumerate(x.shape)]
        if not self.keepdims:
            shape = [n for i, n in enumerate(shape) if i not in self.axes]
        return x.new_full(shape, self.fill)


def _empty_reduce(
    node: OnnxNode, graph: OnnxGraph, axes: Sequence[int], keepdims: bool
) -> ReduceEmpty | None:
    """A :class:`ReduceEmpty` if ``node`` is ReduceMax/ReduceMin with a reduced dim of
    static size 0 (``axes`` non-negative; empty: all), else None."""
    data = node.input_values[0]
    dims, onnx_type = static_dims(graph, data), elem_type(graph, data)
    if node.operation_type not in ("ReduceMax", "ReduceMin") or dims is None or not onnx_type:
        return None
    axes = list(axes) or list(range(len(dims)))
    if not any(dims[a] == 0 for a in axes):
        return None
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type))
    largest = node.operation_type == "ReduceMin"
    fill: bool | int | float
    if dtype == np.bool_:
        fill = largest
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        fill = int(info.max if largest else info.min)
    else:
        fill = float("inf") if largest else -float("inf")
    return ReduceEmpty(axes, keepdims, fill)


_AXES_INPUT_SINCE: dict[str, tuple[int, ...]] = {
    "ReduceSum": (13,),
    "ReduceMax": (18, 20),
    "ReduceMin": (18, 20),
    "ReduceMean": (18,),
    "ReduceProd": (18,),
    "ReduceL1": (18,),
    "ReduceL2": (18,),
    "ReduceLogSum": (18,),
    "ReduceLogSumExp": (18,),
    "ReduceSumSquare": (18,),
}


def convert_reduce(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Reduce → onnx2torch's static-axes module (or identity for ``noop_with_empty_axes``)."""
    data = node.input_values[0]
    axes_name = node.input_values[1] if len(node.input_values) > 1 else ""
    axes = known_ints(graph, axes_name) if axes_name else []
    dims = static_dims(graph, data)
    if axes is None or (dims is None and any(a < 0 for a in axes)):
        return use_fallback(fallback, node, graph, "axes computed from tensor data")
    if not axes and node.attributes.get("noop_with_empty_axes", 0):
        return OperationConverterResult(
            torch_module=nn.Identity(),
            onnx_mapping=OnnxMapping(inputs=(data,), outputs=node.output_values),
        )
    return _reduce_over(node, graph, axes, dims)


def _reduce_over(
    node: OnnxNode, graph: OnnxGraph, axes: list[int], dims: list[int | None] | None
) -> OperationConverterResult:
    """The static-axes reduction of ``node``'s first input over ``axes``, made non-negative
    (onnx2torch's module reduces the wrong axes for a negative one when ``keepdims=0``)."""
    rank = len(dims) if dims is not None else 0
    axes = [a + rank if a < 0 else a for a in axes]
    keepdims = node.attributes.get("keepdims", 1)
    narrow = _NARROW_INTEGERS.get(elem_type(graph, node.input_values[0]) or 0)
    module: nn.Module
    if narrow is not None and node.operation_type in _WIDENED_BY_TORCH:
        module = IntegerReduce(node.operation_type, axes or None, keepdims, narrow)
    else:
        module = _empty_reduce(node, graph, axes, bool(keepdims)) or OnnxReduceStaticAxes(
            operation_type=node.operation_type, axes=axes or None, keepdims=keepdims
        )
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
    )


_AXES_ATTRIBUTE_VERSIONS: dict[str, tuple[int, ...]] = {
    op_type: (1, 11, 12, 13) if op_type in ("ReduceMax", "ReduceMin") else (1, 11, 13)
    for op_type in _AXES_INPUT_SINCE
}
_AXES_ATTRIBUTE_VERSIONS["ReduceSum"] = (1, 11)


def convert_reduce_axes_attribute(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Reduce with an ``axes`` attribute → ``OnnxReduceStaticAxes`` with the axes made
    non-negative (onnx2torch's module reduces the wrong axes for a negative one when
    ``keepdims=0``); onnx2torch's own if the rank is unknown."""
    data = node.input_values[0]
    axes = list(node.attributes.get("axes", []) or [])
    dims = static_dims(graph, data)
    if dims is None and any(a < 0 for a in axes):
        return use_fallback(fallback, node, graph, "negative axes of an input of unknown rank")
    return _reduce_over(node, graph, axes, dims)


for _op_type, _versions in _AXES_ATTRIBUTE_VERSIONS.items():
    override_converter(
        _op_type,
        versions=_versions,
        produces=(OnnxReduceStaticAxes, OnnxReduceSumStaticAxes, ReduceEmpty, IntegerReduce),
    )(convert_reduce_axes_attribute)


for _op_type, _versions in _AXES_INPUT_SINCE.items():
    override_converter(
        _op_type,
        versions=_versions,
        produces=(
            OnnxReduceStaticAxes,
            OnnxReduceSumStaticAxes,
            OnnxReduceSumDynamicAxes,
            nn.Identity,
            ReduceEmpty,
            IntegerReduce,
        ),
    )(convert_reduce)


@translates(OnnxReduceStaticAxes, OnnxReduceSumStaticAxes)
def _reduce(ctx: NodeContext) -> str:
    module = ctx.module
    x = ctx.args[0]
    if isinstance(module, OnnxReduceSumStaticAxes):
        operation, axes, keepdims = "ReduceSum", module._axes, bool(module._keepdims)
        if not axes and module._noop_with_empty_axes:
            return x
    else:
        assert isinstance(module, OnnxReduceStaticAxes)
        operation, axes, keepdims = module.operation_type, module.axes, module.keepdims
    axes = list(axes) if axes else list(range(ctx.rank()))
    dims = f"dim={dim_arg(axes)}, keepdim={keepdims}"
    method = {
        "ReduceMean": "mean",
        "ReduceSum": "sum",
        "ReduceMax": "amax",
        "ReduceMin": "amin",
    }.get(operation)
    if method is not None:
        return f"{x}.{method}({dims})"
    if operation == "ReduceProd":
        if len(axes) == ctx.rank() and not keepdims:
            return f"{x}.prod()"
        # One axis at a time, the last first so the others keep their numbers.
        ordered = sorted({a % ctx.rank() for a in axes}, reverse=True)
        return x + "".join(f".prod(dim={a}, keepdim={keepdims})" for a in ordered)
    if operation == "ReduceLogSum":
        return f"torch.log({x}.sum({dims}))"
    if operation == "ReduceSumSquare":
        return f"{x}.square().sum({dims})"
    if operation == "ReduceL2":
        return f"torch.linalg.vector_norm({x}, 2, {dims})"
    if operation == "ReduceL1":
        return f"torch.linalg.vector_norm({x}, 1, {dims})"
    if operation == "ReduceLogSumExp":
        return f"torch.logsumexp({x}, {dims})"
    raise UntranslatableError(f"{type(module).__name__}({operation})")


@translates(IntegerReduce)
def _integer_reduce(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, IntegerReduce)
    return f"{_reduce(ctx)}.to({module.dtype})"


@translates(ReduceEmpty)
def _reduce_empty(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, ReduceEmpty)
    x = ctx.args[0]
    sizes = [
        "1" if i in module.axes else f"{x}.shape[{i}]"
        for i in range(ctx.rank())
        if module.keepdims or i not in module.axes
    ]
    shape = f"({', '.join(sizes)},)" if len(sizes) == 1 else f"({', '.join(sizes)})"
    return f"{x}.new_full({shape}, {literals.number(module.fill)})  # max/min of an empty set"
