"""ONNX ``Slice`` (10, 11, 13).

Converter: ours (:func:`convert_slice`): starts/ends/axes/steps known at import (ends may be
arithmetic on ``x.shape``) make a :class:`StaticSlice`.  Starts or ends computed from tensor
data (a ``Loop`` body slicing at its iteration number) with axes and positive steps known at
import make a :class:`RunTimeSlice`, which reads them with ``int()`` each call (eager code;
``torch.export`` cannot trace it).  Otherwise onnx2torch's ``OnnxSlice``.
Code form: basic indexing ``x[a:b, :, ::2]`` (a flip first for negative steps), with
``int(starts[0])`` bounds for :class:`RunTimeSlice`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from onnx2torch.node_converters.registry import TConverter
from onnx2torch.node_converters.slice import OnnxSlice
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from pipeline.to_torch.ops.registry import (
    NodeContext,
    dim_arg,
    override_converter,
    translates,
    use_fallback,
)
from pipeline.to_torch.ops.shape_values import (
    Expr,
    ShapeArgs,
    known_int_value,
    known_ints,
    static_dims,
)

OPEN_END = 2**31 - 1
"""Ends at or past this (tf2onnx writes INT32_MAX or INT64_MAX for "to the end") are open."""


def _open(bound: object, is_start: bool) -> object:
    # A literal 0 start or a huge end slices nothing away: write it as an open bound, because
    # comparing a symbolic (dynamic batch) size with 2**31 - 1 makes torch.export add the guard
    # `batch < 2147483647`, which then violates the unbounded `batch` Dim.
    if isinstance(bound, int) and (
        (is_start and bound == 0) or (not is_start and bound >= OPEN_END)
    ):
        return None
    return bound


class AxisSlice(NamedTuple):
    """``x[start:end:step]`` along ``axis`` (step > 0), after flipping it if ``flip``."""

    axis: int
    start: Expr
    end: Expr
    step: int
    flip: bool


class StaticSlice(ShapeArgs):
    """Basic indexing with one :class:`AxisSlice` per sliced axis."""

    def __init__(self, slices: list[AxisSlice]) -> None:
        super().__init__([e for s in slices for e in (s.start, s.end)])
        self.slices = slices
        self.flip_dims = [s.axis for s in slices if s.flip]
        self.rank = max(s.axis for s in slices) + 1

    def forward(self, input_tensor: torch.Tensor, *sources: torch.Tensor) -> torch.Tensor:
        """Slice ``input_tensor``; ``sources`` are the tensors starts/ends read dims from."""
        if self.flip_dims:
            input_tensor = torch.flip(input_tensor, self.flip_dims)
        bounds = self.resolve([e for s in self.slices for e in (s.start, s.end)], sources)
        index: list[slice] = [slice(None)] * self.rank
        for i, s in enumerate(self.slices):
            start, end = bounds[2 * i], bounds[2 * i + 1]
            index[s.axis] = slice(_open(start, True), _open(end, False), s.step)
        return input_tensor[tuple(index)]


def _axis_slice(axis: int, start: Expr, end: Expr, step: int, dim: int | None) -> AxisSlice | None:
    if step > 0:
        # Python's slice clamping matches ONNX's for positive steps.
        return AxisSlice(axis, start, end, step, flip=False)
    if dim is None or not isinstance(start, int) or not isinstance(end, int):
        return None
    # torch has no negative steps: slice the flipped axis.  slice.indices clamps as ONNX does.
    start_c, end_c, _ = slice(start, end, step).indices(dim)
    return AxisSlice(axis, dim - 1 - start_c, dim - 1 - end_c, -step, flip=True)


class RunTimeSlice(torch.nn.Module):
    """Basic indexing with bounds read from the ``starts`` and ``ends`` tensors at run time
    (``axes`` non-negative, ``steps`` positive: Python's clamping is ONNX's)."""

    def __init__(self, axes: list[int], steps: list[int]) -> None:
        super().__init__()
        self.axes = axes
        self.steps = steps
        self.rank = max(axes) + 1

    def extra_repr(self) -> str:
        return f"axes={self.axes}, steps={self.steps}"

    def forward(self, x: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """``x`` sliced along ``axes`` from ``starts`` to ``ends``."""
        index: list[slice] = [slice(None)] * self.rank
        for i, (axis, step) in enumerate(zip(self.axes, self.steps, strict=True)):
            index[axis] = slice(int(starts[i]), int(ends[i]), step)
        return x[tuple(index)]


def _run_time_slice(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Slice with bounds from tensor data → :class:`RunTimeSlice` where axes and positive
    steps are known at import, else onnx2torch's ``OnnxSlice``."""
    names = [*node.input_values, "", ""]
    axes = known_ints(graph, names[3]) if names[3] else None
    steps = known_ints(graph, names[4]) if names[4] else None
    dims = static_dims(graph, names[0])
    if (names[3] and axes is None) or (names[4] and steps is None):
        return use_fallback(fallback, node, graph, "slice axes/steps are computed from data")
    if axes is None:  # every axis from 0, as many as the starts have elements
        count = static_dims(graph, names[1])
        if count is None or len(count) != 1 or count[0] is None:
            return use_fallback(fallback, node, graph, "slice bounds of unknown length")
        axes = list(range(count[0]))
    if any(a < 0 for a in axes):
        if dims is None:
            return use_fallback(fallback, node, graph, "negative axes on a tensor of unknown rank")
        axes = [a + len(dims) if a < 0 else a for a in axes]
    steps = steps if steps is not None else [1] * len(axes)
    if any(step <= 0 for step in steps):
        return use_fallback(fallback, node, graph, "negative step with bounds from tensor data")
    return OperationConverterResult(
        torch_module=RunTimeSlice(list(axes), list(steps)),
        onnx_mapping=OnnxMapping(inputs=tuple(names[:3]), outputs=node.output_values),
    )


@override_converter("Slice", versions=(10, 11, 13), produces=(StaticSlice, RunTimeSlice, OnnxSlice))
def convert_slice(
    node: OnnxNode, graph: OnnxGraph, fallback: TConverter | None
) -> OperationConverterResult:
    """Slice → :class:`StaticSlice` when its index inputs are known at import."""
    names = [*node.input_values, "", ""]
    data = names[0]
    starts, ends = known_int_value(graph, names[1]), known_int_value(graph, names[2])
    axes = known_ints(graph, names[3]) if names[3] else None
    steps = known_ints(graph, names[4]) if names[4] else None
    dims = static_dims(graph, data)
    if (
        starts is None
        or ends is None
        or (names[3] and axes is None)
        or (names[4] and steps is None)
    ):
        return _run_time_slice(node, graph, fallback)
    axes = axes if axes is not None else list(range(len(starts.elems)))
    steps = steps if steps is not None else [1] * len(axes)
    if any(a < 0 for a in axes) and dims is None:
        return use_fallback(fallback, node, graph, "negative axes on a tensor of unknown rank")
    slices = []
    for axis, start, end, step in zip(axes, starts.elems, ends.elems, steps, strict=True):
        axis = axis + len(dims) if axis < 0 and dims is not None else axis
        axis_slice = _axis_slice(axis, start, end, step, dims[axis] if dims else None)
        if axis_slice is None:
            return use_fallback(fallback, node, graph, "negative step on a dynamic axis")
        slices.append(axis_slice)
    module = StaticSlice(slices)
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(data, *module.sources), outputs=node.output_values),
    )


@translates(StaticSlice)
def _slice(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, StaticSlice)
    x = ctx.args[0]
    if module.flip_dims:
        x = f"{x}.flip({dim_arg(module.flip_dims)})"
    bounds = ctx.shape_args([e for s in module.slices for e in (s.start, s.end)])
    index = [":"] * module.rank
    for i, s in enumerate(module.slices):
        start, end = bounds[2 * i], bounds[2 * i + 1]
        start = "" if start == "0" else start
        # ONNX writes "to the end" as a huge end (INT32_MAX, INT64_MAX).
        end = "" if end.lstrip("-").isdigit() and int(end) >= 2**31 - 1 else end
        index[s.axis] = f"{start}:{end}" + (f":{s.step}" if s.step != 1 else "")
    while index and index[-1] == ":":
        index.pop()
    return f"{x}[{', '.join(index)}]" if index else x


@translates(RunTimeSlice)
def _run_time_slice_code(ctx: NodeContext) -> str:
    """``x[:, int(starts[0]):int(ends[0])]``."""
    module = ctx.module
    assert isinstance(module, RunTimeSlice)
    x, starts, ends = ctx.args[:3]
    index = [":"] * module.rank
    for i, (axis, step) in enumerate(zip(module.axes, module.steps, strict=True)):
        index[axis] = f"int({starts}[{i}]):int({ends}[{i}])" + (f":{step}" if step != 1 else "")
    return f"{x}[{', '.join(index)}]"
