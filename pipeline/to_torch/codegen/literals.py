"""Python source for constant values: numbers, tuples, dtypes, shape expressions."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from pipeline.to_torch.ops.shape_values import BinOp, DimOf, Expr

_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "//", "mod": "%"}


def number(value: Any) -> str:
    """A Python literal for a scalar: ``3``, ``0.5``, ``True``, ``float("inf")``."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return 'float("nan")'
    if math.isinf(value):
        return 'float("inf")' if value > 0 else '-float("inf")'
    return repr(value)


def ints(values: Sequence[int]) -> str:
    """``(1, 2)`` for a sequence of ints (``(3,)`` for one)."""
    items = ", ".join(str(int(v)) for v in values)
    return f"({items},)" if len(values) == 1 else f"({items})"


def int_or_tuple(values: Sequence[int] | int) -> str:
    """``3`` for ``(3, 3)`` (every element equal), else the tuple."""
    if isinstance(values, int):
        return str(values)
    values = [int(v) for v in values]
    return str(values[0]) if values and len(set(values)) == 1 else ints(values)


def dtype(value: torch.dtype) -> str:
    """``torch.float32`` for ``torch.float32``."""
    return str(value)


def shape_expr(expr: Expr, dim_of: Callable[[DimOf], str]) -> str:
    """Source for an integer expression over tensor dims; ``dim_of`` renders ``x.shape[i]``."""
    if isinstance(expr, int):
        return str(expr)
    if isinstance(expr, DimOf):
        return dim_of(expr)
    assert isinstance(expr, BinOp)
    lhs, rhs = shape_expr(expr.lhs, dim_of), shape_expr(expr.rhs, dim_of)
    if expr.op in ("max", "min"):
        # torch.sym_max keeps a symbolic batch dim symbolic under torch.export.
        return f"torch.sym_{expr.op}({lhs}, {rhs})"
    return f"{_parenthesised(lhs)} {_INFIX[expr.op]} {_parenthesised(rhs)}"


def _parenthesised(text: str) -> str:
    return f"({text})" if " " in text else text
