"""Integer tensors known at import time: constants and shape arithmetic on ``x.shape``.

tf2onnx writes shape computations as ONNX ops on small int64 tensors, e.g.
``Reshape(y, Concat(Slice(Cast(Shape(x)), 0, 1), [1152]))``.  onnx2torch converts them to
tensor ops and reads the result back with ``.tolist()``/``.item()`` at run time, which
``torch.export`` rejects.  This module evaluates such chains once, at import, into
:class:`IntValue`: a 0-D or 1-D vector whose elements are Python ints or symbolic
expressions over tensor dimensions (:class:`DimOf`, :class:`BinOp`).  A converter whose
"shape-like" input is known this way builds a module that computes the Python list from
``x.shape`` in ``forward`` (via :class:`ShapeArgs`): static dims become ints during
``torch.export`` and the batch dim stays a ``SymInt``.

Ops understood on the way (the set tf2onnx uses for shape arithmetic): initializers and
``Constant`` nodes, ``Shape``, ``Cast``, ``Identity``, ``Gather``, ``Slice``, ``Concat``,
``Squeeze``, ``Unsqueeze``, ``Reshape``, ``ReduceProd``/``Sum``/``Max``/``Min``, element-wise
``Add``/``Sub``/``Mul``/``Div``/``Mod``/``Max``/``Min``/``Neg``, and the comparisons,
``Not``/``And``/``Or``/``Xor`` and ``Where`` that tf2onnx writes for ``tf.slice``'s "size -1 means to the end"
(``end = begin + size + (size == -1) * INT_MAX``): a dimension is never negative, so
``Equal(x.shape[1], -1)`` is known to be false whatever the sequence length; nor is it at
or above 1e9, so tf2onnx's tests of a slice end against its ``1e9`` and ``INT32_MAX``
sentinels are decided too.  A whole-number
float (``Cast(x.shape[1], FLOAT)``, a ``Range``'s ``0.0``/``1.0``) is known too, for the
positions of a rotary embedding; it is never divided.  Anything else makes the value unknown
and its consumer falls back to onnx2torch.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from onnx2torch.onnx_graph import OnnxGraph
from torch import nn

from pipeline.core import onnx_io

# Larger integer constants (embedding indices, gather tables) are data, not shapes.
_MAX_CONSTANT_ELEMENTS = 64

_INTEGER_TYPES = {
    onnx.TensorProto.INT8,
    onnx.TensorProto.INT16,
    onnx.TensorProto.INT32,
    onnx.TensorProto.INT64,
    onnx.TensorProto.UINT8,
    onnx.TensorProto.UINT16,
    onnx.TensorProto.UINT32,
    onnx.TensorProto.UINT64,
}


@dataclass(frozen=True)
class DimOf:
    """Dimension ``axis`` of the ONNX value ``value`` (``value.shape[axis]`` at run time)."""

    value: str
    axis: int


@dataclass(frozen=True)
class BinOp:
    """An integer operation on two expressions; ``op`` is a key of ``_BINARY_OPS``."""

    op: str
    lhs: Expr
    rhs: Expr


Expr: TypeAlias = int | DimOf | BinOp


def _trunc_div(a: int, b: int) -> int:
    # ONNX integer Div truncates toward zero; Python's // floors.
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


# Symbolic operands are dimensions (non-negative), so floor division equals truncation there.
_BINARY_OPS: dict[str, tuple[Callable[[int, int], int], Callable[[Any, Any], Any]]] = {
    "add": (operator.add, operator.add),
    "sub": (operator.sub, operator.sub),
    "mul": (operator.mul, operator.mul),
    "div": (_trunc_div, operator.floordiv),
    "mod": (operator.mod, operator.mod),
    "max": (max, torch.sym_max),
    "min": (min, torch.sym_min),
}


def binop(op: str, lhs: Expr, rhs: Expr) -> Expr:
    """``lhs op rhs``, folded to an int when both sides are ints, with x*1 / x+0 removed."""
    if isinstance(lhs, int) and isinstance(rhs, int):
        return _BINARY_OPS[op][0](lhs, rhs)
    if (op == "mul" and rhs == 1) or (op in ("add", "sub") and rhs == 0):
        return lhs
    if (op == "mul" and lhs == 1) or (op == "add" and lhs == 0):
        return rhs
    if op in ("max", "min"):
        # A dimension against a negative clamp (tf2onnx's max(end, -1e9)): decided already.
        for dim, bound in ((lhs, rhs), (rhs, lhs)):
            if isinstance(bound, int) and bound < 0 and _nonnegative(dim):
                return dim if op == "max" else bound
    return BinOp(op, lhs, rhs)


def evaluate(expr: Expr, tensors: dict[str, torch.Tensor]) -> Any:
    """The value of ``expr``: an int, or a ``SymInt`` while ``torch.export`` traces."""
    if isinstance(expr, int):
        return expr
    if isinstance(expr, DimOf):
        return tensors[expr.value].shape[expr.axis]
    return _BINARY_OPS[expr.op][1](evaluate(expr.lhs, tensors), evaluate(expr.rhs, tensors))


def _sources(expr: Expr) -> Iterable[str]:
    if isinstance(expr, DimOf):
        yield expr.value
    elif isinstance(expr, BinOp):
        yield from _sources(expr.lhs)
        yield from _sources(expr.rhs)


@dataclass(frozen=True)
class IntValue:
    """An integer tensor of rank 0 (``scalar``) or 1 whose elements are known expressions."""

    elems: tuple[Expr, ...]
    scalar: bool = False
    is_float: bool = False
    """A floating-point tensor holding whole numbers (``Cast(Shape(x)[1], FLOAT)``): fine for
    ``Range`` and comparisons, never divided (float division does not truncate)."""
    rows: int | None = None
    """Rank 2 with this many rows (``elems`` row by row): ``tf.pad``'s ``[[before, after],
    ...]`` as tf2onnx builds it, before it becomes ONNX's flat ``pads``."""

    def ints(self) -> list[int] | None:
        """The elements as ints, or None if any depends on a run-time dimension."""
        if all(isinstance(e, int) for e in self.elems):
            return [int(e) for e in self.elems]  # type: ignore[arg-type]
        return None


class ShapeArgs(nn.Module):
    """Base for modules whose integer arguments are :class:`Expr` lists over tensor dims.

    ``sources`` names the ONNX values whose shapes the expressions read; a converter appends
    them to the module's ONNX inputs, so ``forward`` receives them after its data inputs.
    """

    def __init__(self, exprs: Iterable[Expr]) -> None:
        super().__init__()
        self.sources: tuple[str, ...] = tuple(dict.fromkeys(s for e in exprs for s in _sources(e)))

    def resolve(self, exprs: Sequence[Expr], source_tensors: Sequence[torch.Tensor]) -> list[Any]:
        """Evaluate ``exprs`` given the source tensors in ``self.sources`` order."""
        tensors = dict(zip(self.sources, source_tensors, strict=True))
        return [evaluate(e, tensors) for e in exprs]


def static_dims(graph: OnnxGraph, name: str) -> list[int | None] | None:
    """The dims of ``name`` from shape inference (None for a symbolic dim), or None if the
    rank is unknown."""
    if name in graph.initializers:
        return [int(d) for d in graph.initializers[name].proto.dims]
    info = graph.value_info.get(name)
    if info is None or not info.type.HasField("tensor_type"):
        return None
    ttype = info.type.tensor_type
    if not ttype.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]


def elem_type(graph: OnnxGraph, name: str) -> int | None:
    """The ONNX element type of ``name`` if known."""
    if name in graph.initializers:
        return int(graph.initializers[name].proto.data_type)
    info = graph.value_info.get(name)
    if info is None or not info.type.HasField("tensor_type"):
        return None
    return int(info.type.tensor_type.elem_type) or None


def dim_expr(graph: OnnxGraph, name: str, axis: int) -> Expr:
    """``name.shape[axis]``: an int if shape inference knows it, else a :class:`DimOf`."""
    dims = static_dims(graph, name)
    if dims is not None and dims[axis] is not None:
        return int(dims[axis])  # type: ignore[arg-type]
    return DimOf(name, axis)


def _from_array(array: np.ndarray) -> IntValue | None:
    if array.ndim == 2 and array.dtype.kind in "iu" and 0 < array.size <= _MAX_CONSTANT_ELEMENTS:
        return IntValue(tuple(int(v) for v in array.reshape(-1)), rows=array.shape[0])
    if array.ndim > 1 or array.size > _MAX_CONSTANT_ELEMENTS:
        return None
    if array.dtype.kind == "f":
        # Whole-number floats (a Range's 0.0 and 1.0, tf2onnx's float clamps of slice ends
        # at +-1e9); other floats are data.
        if not np.all(np.isfinite(array)) or not np.all(array == np.trunc(array)):
            return None
        values = tuple(int(v) for v in array.reshape(-1))
        return IntValue(values, scalar=array.ndim == 0, is_float=True)
    if array.dtype.kind not in "iub":
        return None
    return IntValue(tuple(int(v) for v in array.reshape(-1)), scalar=array.ndim == 0)


def _constant_node_value(node: onnx.NodeProto) -> IntValue | None:
    for attr in node.attribute:
        if attr.name == "value":
            return _from_array(numpy_helper.to_array(attr.t))
        if attr.name == "value_int":
            return IntValue((int(attr.i),), scalar=True)
        if attr.name == "value_ints":
            return IntValue(tuple(int(i) for i in attr.ints))
    return None


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _broadcast(values: Sequence[IntValue]) -> list[tuple[Expr, ...]] | None:
    length = max(len(v.elems) for v in values)
    rows = []
    for v in values:
        if len(v.elems) not in (1, length):
            return None
        rows.append(v.elems * length if len(v.elems) == 1 else v.elems)
    return rows


_ELEMENTWISE = {
    "Add": "add",
    "Sub": "sub",
    "Mul": "mul",
    "Div": "div",
    "Mod": "mod",
    "Max": "max",
    "Min": "min",
}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
_COMPARE = {
    "Equal": operator.eq,
    "Less": operator.lt,
    "LessOrEqual": operator.le,
    "Greater": operator.gt,
    "GreaterOrEqual": operator.ge,
}


_LOGICAL: dict[str, Callable[[Any, Any], Any]] = {
    "And": operator.and_,
    "Or": operator.or_,
    "Xor": operator.xor,
}


def _lower_bound(expr: Expr) -> int | None:
    """A number ``expr`` is never below, whatever the run-time dims, or None.

    A run-time dimension is taken to be at least 1, as ``torch.export`` takes its dynamic
    dimensions to be at least 2: an empty sequence is not a model input worth a guard.
    """
    if isinstance(expr, int):
        return expr
    if isinstance(expr, DimOf):
        return 1
    lhs, rhs = _lower_bound(expr.lhs), _lower_bound(expr.rhs)
    if lhs is None:
        return None
    if expr.op == "sub" and isinstance(expr.rhs, int):
        return lhs - expr.rhs
    if rhs is None:
        return None
    if expr.op == "add":
        return lhs + rhs
    if expr.op == "max":
        return max(lhs, rhs)
    if expr.op == "min":
        return min(lhs, rhs)
    if expr.op in ("mul", "div", "mod") and lhs >= 0 and rhs >= 0:
        return 0
    return None


def _nonnegative(expr: Expr) -> bool:
    """Whether ``expr`` is known to be >= 0 whatever the run-time dims (a dim is)."""
    bound = _lower_bound(expr)
    return bound is not None and bound >= 0


def _compare(op: str, a: Expr, b: Expr) -> int | None:
    """``a op b`` as 0/1 where it is known: both ints, or a dim against a negative number
    (tf2onnx's ``size == -1`` test in ``tf.slice``)."""
    if isinstance(a, int) and isinstance(b, int):
        return int(_COMPARE[op](a, b))
    low_a, low_b = _lower_bound(a), _lower_bound(b)
    if isinstance(b, int) and b < 0 and low_a is not None and low_a > b:
        return int(_COMPARE[op](0, -1))  # any a > b compares with b as 0 with -1
    if isinstance(a, int) and a < 0 and low_b is not None and low_b > a:
        return int(_COMPARE[op](-1, 0))
    # tf2onnx tests slice ends against its "to the end" sentinels (1e9, INT32_MAX): a
    # dimension is taken to be below 1e9, as no tensor here has a billion rows.
    if isinstance(b, int) and b >= _HUGE and _nonnegative(a) and _dims_only(a):
        return int(_COMPARE[op](0, 1))
    if isinstance(a, int) and a >= _HUGE and _nonnegative(b) and _dims_only(b):
        return int(_COMPARE[op](1, 0))
    return None


_HUGE = 10**9
"""At or above this, a number is a sentinel, never a dimension."""


def _dims_only(expr: Expr) -> bool:
    """Whether ``expr`` is one dimension, or a dimension plus or minus a small number."""
    if isinstance(expr, DimOf):
        return True
    return (
        isinstance(expr, BinOp)
        and expr.op in ("add", "sub")
        and isinstance(expr.lhs, DimOf)
        and isinstance(expr.rhs, int)
        and abs(expr.rhs) < 2**16
    )


def _truth(expr: Expr) -> int | None:
    return int(bool(expr)) if isinstance(expr, int) else None


def _mapped(value: IntValue, function: Callable[[Expr], int | None]) -> IntValue | None:
    elems = [function(e) for e in value.elems]
    if any(e is None for e in elems):
        return None
    return IntValue(tuple(elems), value.scalar)  # type: ignore[arg-type]


_REDUCE = {"ReduceProd": "mul", "ReduceSum": "add", "ReduceMax": "max", "ReduceMin": "min"}


def _infer(
    node: onnx.NodeProto, inputs: list[IntValue | None], graph: OnnxGraph
) -> IntValue | None:
    # One branch per ONNX op: the shape-arithmetic subset listed in the module docstring.
    op = node.op_type
    if op == "Shape":
        dims = static_dims(graph, node.input[0])
        if dims is None:
            return None
        rank = len(dims)
        start, end = _attr(node, "start", 0), _attr(node, "end", rank)
        return IntValue(tuple(dim_expr(graph, node.input[0], a) for a in range(rank)[start:end]))
    matrix = _infer_matrix(node, inputs)
    if matrix is not _NOT_A_MATRIX:
        return matrix  # type: ignore[return-value]
    if any(v is None for v in inputs[:1]):
        return None
    first = inputs[0]
    assert first is not None
    if op == "Identity":
        return first
    if op == "Cast":
        to = _attr(node, "to")
        if to in _INTEGER_TYPES:
            return IntValue(first.elems, first.scalar)
        if to == onnx.TensorProto.BOOL:
            return _mapped(first, lambda e: _truth(e))
        if to in _FLOAT_TYPES:
            return IntValue(first.elems, first.scalar, is_float=True)
        return None
    if op in _LOGICAL:
        if len(inputs) != 2 or inputs[1] is None:
            return None
        rows = _broadcast([first, inputs[1]])
        bits = [[_truth(e) for e in row] for row in rows] if rows is not None else None
        if bits is None or any(t is None for row in bits for t in row):
            return None
        combined = [_LOGICAL[op](a, b) for a, b in zip(bits[0], bits[1], strict=True)]
        return IntValue(tuple(int(c) for c in combined), first.scalar and inputs[1].scalar)
    if op == "Not":
        return _mapped(first, lambda e: None if (t := _truth(e)) is None else 1 - t)
    if op in _COMPARE:
        if len(inputs) != 2 or inputs[1] is None:
            return None
        rows = _broadcast([first, inputs[1]])
        if rows is None:
            return None
        compared = [_compare(op, a, b) for a, b in zip(rows[0], rows[1], strict=True)]
        if any(c is None for c in compared):
            return None
        return IntValue(tuple(compared), scalar=first.scalar and inputs[1].scalar)  # type: ignore[arg-type]
    if op == "Where":
        if len(inputs) != 3 or inputs[1] is None or inputs[2] is None:
            return None
        rows = _broadcast([first, inputs[1], inputs[2]])
        truths = [_truth(c) for c in rows[0]] if rows is not None else [None]
        if rows is None or any(t is None for t in truths):
            return None
        return IntValue(
            tuple(a if t else b for t, a, b in zip(truths, rows[1], rows[2], strict=True)),
            scalar=all(v is not None and v.scalar for v in inputs),
            is_float=inputs[1].is_float or inputs[2].is_float,
        )
    if op == "Neg":
        return IntValue(tuple(binop("sub", 0, e) for e in first.elems), first.scalar)
    if op in _ELEMENTWISE:
        if any(v is None for v in inputs):
            return None
        known = [v for v in inputs if v is not None]
        is_float = any(v.is_float for v in known)
        if is_float and op in ("Div", "Mod"):
            return None  # float division does not truncate
        rows = _broadcast(known)
        if rows is None:
            return None
        result = list(rows[0])
        for row in rows[1:]:
            result = [binop(_ELEMENTWISE[op], a, b) for a, b in zip(result, row, strict=True)]
        return IntValue(tuple(result), scalar=all(v.scalar for v in known), is_float=is_float)
    if first.scalar:
        if op == "Unsqueeze":
            return IntValue(first.elems)
        if op == "Reshape" and len(inputs) > 1 and inputs[1] is not None:
            return IntValue(first.elems, scalar=inputs[1].elems == ())
        return None
    # From here on `first` is a 1-D vector.
    if op == "Gather":
        indices = inputs[1].ints() if inputs[1] is not None else None
        if indices is None or _attr(node, "axis", 0) not in (0, -1):
            return None
        assert inputs[1] is not None
        n = len(first.elems)
        if any(not -n <= i < n for i in indices):
            return None
        return IntValue(tuple(first.elems[i] for i in indices), scalar=inputs[1].scalar)
    if op == "Slice":
        args = [v.ints() if v is not None else None for v in inputs[1:]]
        if any(a is None for a in args) or len(args) < 2:
            return None
        starts, ends = args[0], args[1]
        axes = args[2] if len(args) > 2 else [0]
        steps = args[3] if len(args) > 3 else [1]
        if axes not in ([0], [-1]) or starts is None or ends is None or steps is None:
            return None
        # Python's slice clamping is ONNX's, for either sign of step.
        return IntValue(first.elems[slice(starts[0], ends[0], steps[0])])
    if op == "Concat":
        if any(v is None or v.scalar for v in inputs):
            return None
        return IntValue(tuple(e for v in inputs if v is not None for e in v.elems))
    if op == "Squeeze" and len(first.elems) == 1:
        return IntValue(first.elems, scalar=True)
    if op == "Reshape" and len(inputs) > 1 and inputs[1] is not None:
        target = inputs[1].ints()
        if target == []:
            return IntValue(first.elems, scalar=True) if len(first.elems) == 1 else None
        return first if target is not None and len(target) == 1 else None
    if op in _REDUCE and first.elems:
        total: Expr = first.elems[0]
        for e in first.elems[1:]:
            total = binop(_REDUCE[op], total, e)
        return IntValue((total,), scalar=not _attr(node, "keepdims", 1))
    return None


_NOT_A_MATRIX = object()


def _infer_matrix(node: onnx.NodeProto, inputs: list[IntValue | None]) -> object:
    """The rank-2 subset: how tf2onnx assembles ``tf.pad``'s paddings from run-time sizes
    (rows unsqueezed from vectors, concatenated, transposed, flattened to ONNX ``pads``).
    Returns :data:`_NOT_A_MATRIX` where no rank-2 value is involved."""
    op = node.op_type
    first = inputs[0] if inputs else None
    if not any(v is not None and v.rows is not None for v in inputs):
        if op != "Unsqueeze" or first is None or first.scalar:
            return _NOT_A_MATRIX
        axes = _attr(node, "axes")
        if axes is None and len(inputs) > 1 and inputs[1] is not None:
            axes = inputs[1].ints()
        if axes is not None and list(axes) in ([0], [-2]):
            return IntValue(first.elems, rows=1)
        if axes is not None and list(axes) in ([1], [-1]):
            return IntValue(first.elems, rows=len(first.elems))
        return None
    if first is None or first.rows is None or not first.rows:
        return None
    columns = len(first.elems) // first.rows
    if op == "Identity" or (op == "Cast" and _attr(node, "to") in _INTEGER_TYPES):
        return IntValue(first.elems, rows=first.rows)
    if op == "Concat" and _attr(node, "axis", 0) in (0, -2):
        parts = [v for v in inputs if v is not None and v.rows]
        if len(parts) != len(inputs) or any(len(v.elems) != columns * (v.rows or 0) for v in parts):
            return None
        return IntValue(
            tuple(e for v in parts for e in v.elems), rows=sum(v.rows or 0 for v in parts)
        )
    if op == "Transpose" and list(_attr(node, "perm", [1, 0])) == [1, 0]:
        flipped = tuple(
            first.elems[r * columns + c] for c in range(columns) for r in range(first.rows)
        )
        return IntValue(flipped, rows=columns)
    target = inputs[1] if op == "Reshape" and len(inputs) > 1 else None
    if target is not None and target.ints() in ([-1], [len(first.elems)]):
        return IntValue(first.elems)
    return None


_CACHE: weakref.WeakKeyDictionary[OnnxGraph, dict[str, IntValue]] = weakref.WeakKeyDictionary()


def _analyse(graph: OnnxGraph) -> dict[str, IntValue]:
    known: dict[str, IntValue] = {}
    for name, tensor in graph.initializers.items():
        if int(np.prod(tensor.proto.dims)) > _MAX_CONSTANT_ELEMENTS:
            continue  # never a constant (_from_array says None): weights are not read
        value = _from_array(onnx_io.array(tensor.proto))
        if value is not None:
            known[name] = value
    for onnx_node in graph.nodes.values():
        node = onnx_node.proto
        if node.op_type == "Constant":
            value = _constant_node_value(node)
        elif node.domain in ("", "ai.onnx") and len(node.output) == 1:
            value = _infer(node, [known.get(i) for i in node.input], graph)
        else:
            value = None
        if value is not None:
            known[node.output[0]] = value
    return known


def known_int_value(graph: OnnxGraph, name: str) -> IntValue | None:
    """What the import knows about the integer tensor ``name``, or None (also for ``''``)."""
    if not name:
        return None
    if graph not in _CACHE:
        _CACHE[graph] = _analyse(graph)
    return _CACHE[graph].get(name)


def known_ints(graph: OnnxGraph, name: str) -> list[int] | None:
    """The elements of ``name`` if it is a constant integer tensor (possibly computed)."""
    value = known_int_value(graph, name)
    return value.ints() if value is not None else None
