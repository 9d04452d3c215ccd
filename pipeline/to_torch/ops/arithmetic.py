"""Arithmetic: ONNX ``Add``, ``Sub``, ``Mul``, ``Div``, ``Pow``, ``Sqrt``, ``Neg``,
``Reciprocal``, ``MatMul``, ``Gemm``, ``Max``, ``Min``, ``Sum``, ``Cast``, ``Where``,
``And``, ``Or``, ``Xor``, ``Not`` and the unary functions (``Abs``, ``Exp``, ``Log``,
``Tanh``, ``Sin``...).

Converters: onnx2torch's as they are.  Code forms: Python operators where they mean the same
(``a + b``, ``a @ b``, ``a / b``; ONNX integer ``Div`` truncates, so
``torch.div(..., rounding_mode="trunc")``), else ``torch.<function>(...)``.  A ``Gemm`` that
is one Dense kernel is onnx2torch's ``nn.Linear``, written in :mod:`pipeline.to_torch.ops.weighted`.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
from onnx2torch.node_converters.cast import OnnxCast
from onnx2torch.node_converters.functions import OnnxFunction
from onnx2torch.node_converters.gemm import OnnxGemm
from onnx2torch.node_converters.logical import OnnxLogical, OnnxNot
from onnx2torch.node_converters.matmul import OnnxMatMul
from onnx2torch.node_converters.min_max import OnnxMinMax
from onnx2torch.node_converters.neg import OnnxNeg
from onnx2torch.node_converters.pow import OnnxPow, OnnxSqrt
from onnx2torch.node_converters.reciprocal import OnnxReciprocal
from onnx2torch.node_converters.sum import OnnxSum
from onnx2torch.node_converters.where import OnnxWhere
from torch import nn

from pipeline.to_torch.codegen import literals
from pipeline.to_torch.ops.registry import (
    NodeContext,
    UntranslatableError,
    translates,
    uses_onnx2torch,
)

uses_onnx2torch(__name__, ("Add", "Sub", "Mul", "Div"), OnnxBinaryMathOperation)
uses_onnx2torch(__name__, ("Pow",), OnnxPow)
uses_onnx2torch(__name__, ("Sqrt",), OnnxSqrt)
uses_onnx2torch(__name__, ("Neg",), OnnxNeg)
uses_onnx2torch(__name__, ("Reciprocal",), OnnxReciprocal)
uses_onnx2torch(__name__, ("MatMul",), OnnxMatMul)
uses_onnx2torch(__name__, ("Gemm",), OnnxGemm, nn.Linear)
uses_onnx2torch(__name__, ("Max", "Min"), OnnxMinMax)
uses_onnx2torch(__name__, ("Sum",), OnnxSum)
uses_onnx2torch(__name__, ("Cast",), OnnxCast)
uses_onnx2torch(__name__, ("Where",), OnnxWhere)
uses_onnx2torch(__name__, ("And", "Or", "Xor"), OnnxLogical)
uses_onnx2torch(__name__, ("Not",), OnnxNot)
uses_onnx2torch(
    __name__,
    ("Abs", "Acos", "Asin", "Atan", "Cos", "Exp", "Log", "Sign", "Sin", "Tan", "Tanh"),
    OnnxFunction,
)


_UNARY: dict[type, str] = {
    OnnxNeg: "-{x}",
    OnnxNot: "torch.logical_not({x})",
    OnnxSqrt: "torch.sqrt({x})",
    OnnxReciprocal: "torch.reciprocal({x})",
}


def _unary(ctx: NodeContext) -> str:
    return _UNARY[type(ctx.module)].format(x=ctx.args[0])


for _cls in _UNARY:
    translates(_cls)(_unary)


_FUNCTIONS = {
    torch.abs: "abs",
    torch.acos: "acos",
    torch.asin: "asin",
    torch.atan: "atan",
    torch.cos: "cos",
    torch.exp: "exp",
    torch.log: "log",
    torch.sign: "sign",
    torch.sin: "sin",
    torch.tan: "tan",
    torch.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    torch.ceil: "ceil",
    torch.floor: "floor",
    torch.round: "round",
}


@translates(OnnxFunction)
def _function(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxFunction)
    name = _FUNCTIONS.get(module.function)
    if name is None:
        raise UntranslatableError(f"OnnxFunction({module.function})")
    return f"torch.{name}({ctx.args[0]})"


_BINARY = {torch.add: "+", torch.sub: "-", torch.mul: "*"}


@translates(OnnxBinaryMathOperation)
def _binary(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxBinaryMathOperation)
    if module.broadcast == 1 and module.axis is not None:
        raise UntranslatableError("OnnxBinaryMathOperation with old-style broadcast")
    a, b = ctx.args
    symbol = _BINARY.get(module.math_op_function)
    if symbol is not None:
        return f"{a} {symbol} {b}"
    if ctx.is_float(0) or ctx.is_float(1):
        return f"{a} / {b}"
    return f'torch.div({a}, {b}, rounding_mode="trunc")'  # ONNX integer Div truncates


@translates(OnnxPow)
def _pow(ctx: NodeContext) -> str:
    return f"torch.pow({ctx.args[0]}, {ctx.args[1]})"


@translates(OnnxMatMul)
def _matmul(ctx: NodeContext) -> str:
    return f"{ctx.args[0]} @ {ctx.args[1]}"


@translates(OnnxGemm)
def _gemm(ctx: NodeContext) -> str:
    # A Gemm whose weight is not one Dense kernel (so no nn.Linear): alpha*A'B' + beta*C.
    gemm = ctx.module
    assert isinstance(gemm, OnnxGemm)
    a = f"{ctx.args[0]}.T" if gemm.trans_a else ctx.args[0]
    b = f"{ctx.args[1]}.T" if gemm.trans_b else ctx.args[1]
    product = f"({a} @ {b})" + (f" * {gemm.alpha!r}" if gemm.alpha != 1.0 else "")
    if len(ctx.args) < 3:
        return product
    bias = ctx.args[2] + (f" * {gemm.beta!r}" if gemm.beta != 1.0 else "")
    return f"{product} + {bias}"


@translates(OnnxLogical)
def _logical(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxLogical)
    return f"torch.{module.logic_op_function.__name__}({ctx.args[0]}, {ctx.args[1]})"


@translates(OnnxWhere)
def _where(ctx: NodeContext) -> str:
    return f"torch.where({', '.join(ctx.args)})"


@translates(OnnxMinMax)
def _min_max(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxMinMax)
    function = "maximum" if module._operator is torch.max else "minimum"
    result = ctx.args[0]
    for other in ctx.args[1:]:
        result = f"torch.{function}({result}, {other})"
    return result


@translates(OnnxSum)
def _sum(ctx: NodeContext) -> str:
    return " + ".join(ctx.args)


@translates(OnnxCast)
def _cast(ctx: NodeContext) -> str:
    module = ctx.module
    assert isinstance(module, OnnxCast)
    return f"{ctx.args[0]}.to({literals.dtype(module.torch_dtype)})"
